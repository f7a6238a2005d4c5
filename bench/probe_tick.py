"""One WAL probe tick over many sources when some servers misbehave: its duration and query count.

    .venv/bin/python bench/probe_tick.py [--sources 1000] [--stalled 20] [--refusing 20]
        [--slots 2] [--connect-timeout 2] [--statement-timeout-ms 5000] [--cap 180]

Starts a throwaway PostgreSQL cluster, migrates a fresh metadata database and creates
--sources sources. Of them, --stalled point at servers that stall: half at a socket
that accepts the connection and never answers, half at a proxy that lets the
connection and authentication through to the real server and then swallows every
query (a server that freezes once connected). --refusing point at closed ports.
The others point at the cluster, which has --slots logical replication slots.

Runs monitoring.services.probe_sources (what the Beat task runs) twice: the first tick
records a previous probe for every source, the second is measured: wall-clock
seconds and the number of metadata queries. A tick still running after --cap seconds
is reported as such (the process then exits).

Goal (issue 12): under 10 s at 1,000 sources with 40 bad servers, and a query count
that does not grow with the number of slots.
"""

import argparse
import contextlib
import os
import re
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet  # noqa: E402

from rosetta.pgcluster import Cluster, free_port  # noqa: E402

METADATA_DB = "rosetta_bench"
GOAL_S = 10


def setup_django(cluster: Cluster, args) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="rosetta.settings",
        DATABASE_URL=cluster.url(METADATA_DB),
        CONN_MAX_AGE="600",
        DEBUG="false",
        LOG_LEVEL="CRITICAL",
        ROSETTA_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        CELERY_BROKER_URL="redis://127.0.0.1:6379/13",
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        ROSETTA_CONNECT_TIMEOUT=str(args.connect_timeout),
        ROSETTA_STATEMENT_TIMEOUT_MS=str(args.statement_timeout_ms),
    )
    import django

    django.setup()


def silent_listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def tick(cap: float):
    """Run one probe tick in a thread; (seconds, queries, metrics) or (None, ...) past the cap."""
    from django.db import connection

    from monitoring.services import probe_sources

    outcome = {"queries": 0}

    def count(execute, sql, params, many, context):
        outcome["queries"] += 1
        return execute(sql, params, many, context)

    import monitoring.services as services

    recording = {"seconds": 0.0}
    record_probes = services.record_probes

    def timed_record(batch):  # how long the caller's thread spends recording
        started = time.perf_counter()
        try:
            return record_probes(batch)
        finally:
            recording["seconds"] += time.perf_counter() - started

    def run():
        services.record_probes = timed_record
        try:
            with connection.execute_wrapper(count):
                outcome["metrics"] = probe_sources()
        finally:
            services.record_probes = record_probes
        outcome["recording"] = recording["seconds"]

    started = time.perf_counter()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(cap)
    seconds = time.perf_counter() - started
    if thread.is_alive():
        return None, None, None
    print(f"    (of which recording metric rows in the caller's thread: {outcome['recording']:.2f} s)")
    return seconds, outcome["queries"], outcome["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--stalled", type=int, default=20)
    parser.add_argument("--refusing", type=int, default=20)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--connect-timeout", type=int, default=2)
    parser.add_argument("--statement-timeout-ms", type=int, default=5000)
    parser.add_argument("--cap", type=float, default=180)
    args = parser.parse_args()

    cluster = Cluster(settings={"max_connections": "300"}).start()
    listeners, proxies = [], []
    try:
        import psycopg

        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{METADATA_DB}"')
            for index in range(args.slots):
                conn.execute(
                    "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [f"slot_{index:03d}"]
                )
        setup_django(cluster, args)
        from django.conf import settings
        from django.core.management import call_command

        from monitoring.tests.conftest import StallingProxy
        from sources.models import Source

        call_command("migrate", verbosity=0)
        ports = {}
        step = max(1, args.sources // max(1, args.stalled + args.refusing))
        bad = list(range(0, args.sources, step))[: args.stalled + args.refusing]
        for number, index in enumerate(bad):
            if number < args.stalled and number % 2 == 0:
                listeners.append(silent_listener())
                ports[index] = listeners[-1].getsockname()[1]
            elif number < args.stalled:
                proxies.append(StallingProxy(cluster.port))
                ports[index] = proxies[-1].port
            else:
                ports[index] = free_port()
        Source.objects.bulk_create(
            Source(
                name=f"source-{i:05d}",
                pg_host="127.0.0.1",
                pg_port=ports.get(i, cluster.port),
                pg_database="postgres",
                pg_username="postgres",
                slot_name=f"slot_{i:03d}",
                publication_name=f"pub_{i:05d}",
            )
            for i in range(args.sources)
        )
        print(
            f"WAL probe tick: {args.sources} sources, {args.stalled} stalled ({len(listeners)} never answer, "
            f"{len(proxies)} freeze after authentication), {args.refusing} refusing; {args.slots} slots on the "
            f"server; connect timeout {settings.ROSETTA_CONNECT_TIMEOUT} s, statement timeout "
            f"{settings.ROSETTA_STATEMENT_TIMEOUT_MS} ms, {settings.ROSETTA_PROBE_MAX_PARALLEL} in parallel",
            flush=True,
        )
        for label in ("first tick (no history)", "second tick (measured)"):
            seconds, queries, metrics = tick(args.cap)
            if seconds is None:
                print(f"  {label}: NOT FINISHED after {args.cap:.0f} s", flush=True)
                return
            failed = [metric for metric in metrics if not metric.ok]
            print(
                f"  {label}: {seconds:.2f} s, {queries} metadata queries; {len(metrics) - len(failed)} ok, "
                f"{len(failed)} failed",
                flush=True,
            )
        verdict = "yes" if seconds < GOAL_S else "NO"
        print(f"  goal < {GOAL_S} s: {verdict}")
        errors = Counter(re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", "<host:port>", metric.error) for metric in failed)
        for error, count in sorted(errors.items()):
            print(f"  {count:4d} x {error}")
    finally:
        for listener in listeners:
            listener.close()
        for proxy in proxies:
            proxy.close()
        from django.db import connections

        with contextlib.suppress(Exception):
            connections.close_all()
        cluster.stop()


if __name__ == "__main__":
    try:
        main()
    except Exception:
        import traceback

        traceback.print_exc()
    sys.stdout.flush()
    os._exit(0)  # a tick past the cap leaves probe threads behind (the old code): do not wait for them
