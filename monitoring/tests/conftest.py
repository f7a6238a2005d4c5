"""Fixtures for the WAL monitoring tests: real source databases with slots, real WAL,
a local webhook receiver, a port that refuses and a socket that never answers."""

import contextlib
import json
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from rosetta.pgcluster import free_port
from sources.tests.conftest import replica_cluster  # noqa: F401 - a server with password authentication
from sources.tests.factories import SourceFactory

SEGMENT = re.compile(r"^[0-9A-F]{24}$")


@pytest.fixture(autouse=True)
def notifications_inline():
    """The notification task runs in the test's process as soon as it is queued, so a test
    sees the emails of one tick right after it. test_notifications_never_block_a_tick
    runs it on a real worker instead."""
    from rosetta.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture(autouse=True)
def monitoring_settings(settings):
    settings.ROSETTA_CONNECT_TIMEOUT = 2  # psycopg's minimum
    settings.ROSETTA_STATEMENT_TIMEOUT_MS = 5000
    settings.ROSETTA_ALERT_EMAILS = ["ops@example.com"]
    settings.ROSETTA_ALERT_WEBHOOK_URL = ""
    settings.ROSETTA_ALERT_WEBHOOK_TIMEOUT = 1
    settings.ROSETTA_ALERT_REPEAT_MINUTES = 60
    settings.ROSETTA_PROBE_FAILURES_ALERT = 3
    return settings


def run_sql(conn_kwargs: dict, query: str, params=None) -> list:
    with psycopg.connect(**conn_kwargs, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def current_lsn(conn_kwargs: dict) -> int:
    return run_sql(conn_kwargs, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")[0][0]


def generate_wal(conn_kwargs: dict, at_least: int) -> int:
    """Insert rows until at least `at_least` bytes of WAL were written; returns how many were."""
    start = current_lsn(conn_kwargs)
    with psycopg.connect(**conn_kwargs, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS filler (id bigserial PRIMARY KEY, payload text)")
        while current_lsn(conn_kwargs) - start < at_least:
            conn.execute(
                "INSERT INTO filler (payload) SELECT repeat(md5(g::text), 30) FROM generate_series(1, 300) g"
            )
    return current_lsn(conn_kwargs) - start


def create_slot(conn_kwargs: dict, name: str) -> None:
    run_sql(conn_kwargs, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [name])


def pg_wal_segments_bytes(pg_cluster) -> int:
    """What `ls pg_wal` shows: the real size of the segment files on disk."""
    wal_dir = pg_cluster.data_dir / "pg_wal"
    return sum(path.stat().st_size for path in wal_dir.iterdir() if SEGMENT.match(path.name))


@pytest.fixture
def make_source(make_database, pg_cluster):
    """A Source row pointing at a fresh database on the test cluster; `.conn` holds its connect kwargs."""

    def make(**overrides):
        dbname = make_database("wal")
        fields = {
            "pg_host": "127.0.0.1",
            "pg_port": pg_cluster.port,
            "pg_database": dbname,
            "pg_username": "postgres",
            "pg_password": "",
            "sslmode": "disable",
            **overrides,
        }
        source = SourceFactory(**fields)
        source.conn = {"host": "127.0.0.1", "port": pg_cluster.port, "dbname": dbname, "user": "postgres"}
        return source

    return make


@pytest.fixture
def make_role(pg_cluster):
    """Login roles (trust auth on the test cluster), dropped afterwards."""
    created = []

    def make(*grants: str) -> str:
        name = f"probe_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {name} LOGIN")
            for grant in grants:
                conn.execute(f"GRANT {grant} TO {name}")
        created.append(name)
        return name

    yield make
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        for name in created:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [name])
            conn.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture
def cluster_setting(pg_cluster):
    """ALTER SYSTEM a reloadable setting for one test; reset afterwards."""
    changed = []

    def set_(name: str, value: str) -> None:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        changed.append(name)
        deadline = time.monotonic() + 5
        expected = run_sql(
            {"host": "127.0.0.1", "port": pg_cluster.port, "dbname": "postgres", "user": "postgres"},
            "SELECT pg_size_pretty(pg_size_bytes(%s))",
            [value],
        )[0][0]
        while time.monotonic() < deadline:
            shown = run_sql(
                {"host": "127.0.0.1", "port": pg_cluster.port, "dbname": "postgres", "user": "postgres"},
                "SELECT pg_size_pretty(pg_size_bytes(current_setting(%s)))",
                [name],
            )[0][0]
            if shown == expected:
                return
            time.sleep(0.05)

    yield set_
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        for name in changed:
            conn.execute(f"ALTER SYSTEM RESET {name}")
        conn.execute("SELECT pg_reload_conf()")


class WebhookReceiver:
    """A local HTTP server that records JSON POSTs; can fail or stall on demand."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail_next = 0
        self.stall_seconds = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.stall_seconds:
                    time.sleep(receiver.stall_seconds)
                receiver.requests.append(json.loads(body))
                status = 200
                if receiver.fail_next:
                    receiver.fail_next -= 1
                    status = 500
                try:
                    self.send_response(status)
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up waiting (the timeout test)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token-xyz"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [request["text"] for request in self.requests]


@pytest.fixture
def webhook(monitoring_settings):
    receiver = WebhookReceiver()
    monitoring_settings.ROSETTA_ALERT_WEBHOOK_URL = receiver.url
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def hanging_port():
    """A socket that accepts TCP connections (the kernel completes them) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def refusing_port():
    return free_port()


class StallingProxy:
    """Lets a client connect to PostgreSQL through it, then swallows every query:
    a server that stops answering once the connection is up."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.clients_gone = 0  # clients that closed their connection
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._startup_then_swallow, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def _startup_then_swallow(self, client, upstream):
        try:
            header = client.recv(4, socket.MSG_WAITALL)
            length = int.from_bytes(header, "big")
            upstream.sendall(header + client.recv(length - 4, socket.MSG_WAITALL))
            while client.recv(65536):
                pass  # queries never reach the server
        except OSError:
            pass
        self.clients_gone += 1

    def close(self):
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def stalling_port(pg_cluster):
    proxy = StallingProxy(pg_cluster.port)
    yield proxy.port
    proxy.close()


def make_slot_lost(source, cluster_setting) -> None:
    """max_slot_wal_keep_size 1MB, more WAL than that, checkpoints: PostgreSQL drops the slot's WAL."""
    cluster_setting("max_slot_wal_keep_size", "1MB")
    for _ in range(10):
        generate_wal(source.conn, 20 * 1024 * 1024)
        run_sql(source.conn, "CHECKPOINT")
        status = run_sql(
            source.conn,
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
            [source.slot_name],
        )[0][0]
        if status == "lost":
            return
    raise AssertionError(f"slot {source.slot_name} is {status}, not lost")
