"""The WAL probe: what one PostgreSQL server's WAL and replication slots look like now.

Plain psycopg, no Django: connection settings in, ProbeResult out. A probe never
raises for a server problem; it returns a failed result that says why in words.
"""

import contextlib
import datetime as dt
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field

import psycopg

from engine.heartbeat import emit_heartbeat
from engine.lsn import format_lsn, parse_lsn
from engine.preflight import describe_connection_error

# pg_ls_waldir() also lists .history, .partial and archive_status files: count segments only.
SEGMENT_NAME = "^[0-9A-F]{24}$"
WATCHED_SETTINGS = ("max_slot_wal_keep_size", "max_wal_size", "wal_keep_size", "wal_segment_size")


@dataclass
class SlotReading:
    slot_name: str
    plugin: str | None
    slot_type: str
    database: str | None
    active: bool
    restart_lsn: str | None
    confirmed_flush_lsn: str | None
    retained_bytes: int | None  # current LSN - restart_lsn: the WAL this slot pins on disk
    unconfirmed_bytes: int | None  # current LSN - confirmed_flush_lsn: what the consumer has not confirmed
    wal_status: str | None
    safe_wal_size: int | None  # bytes until the slot is lost; None when unlimited


@dataclass
class ProbeResult:
    ok: bool
    probed_at: dt.datetime
    duration_ms: int = 0
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    in_recovery: bool = False
    current_lsn: str | None = None
    wal_dir_bytes: int | None = None
    wal_segments: int | None = None
    slots: list[SlotReading] = field(default_factory=list)
    settings: dict[str, int] = field(default_factory=dict)
    heartbeat_lsn: str | None = None
    system_identifier: str = ""  # pg_control_system(); "" when the role may not read it


def probe_server(
    connect_kwargs: dict, *, statement_timeout_ms: int, heartbeat: bool = False, handle=None
) -> ProbeResult:
    """Connect with the caller's connect_timeout, then read WAL and slot state.

    statement_timeout is set in the startup packet, so even the first query is bounded
    on the server's side. A server that stops answering altogether is cut by the
    caller through `handle` (see ProbeHandle); TCP keepalives and tcp_user_timeout
    let the kernel drop a connection whose peer has vanished.
    """
    started = time.monotonic()
    probed_at = dt.datetime.now(dt.UTC)
    host, port = connect_kwargs.get("host"), connect_kwargs.get("port")
    kwargs = {
        **connect_kwargs,
        "options": f"-c statement_timeout={int(statement_timeout_ms)}",
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
        "tcp_user_timeout": int(statement_timeout_ms) + 2000,
    }
    try:
        conn = psycopg.connect(**kwargs, autocommit=True)
        try:
            if handle is not None:
                handle.attach(conn)
            result = _read_server(conn, probed_at, heartbeat)
        finally:
            if handle is not None:
                handle.detach()
            conn.close()
    except psycopg.errors.QueryCanceled:
        result = ProbeResult(
            ok=False,
            probed_at=probed_at,
            error=f"The server did not answer a probe query within {statement_timeout_ms} ms "
            "(statement_timeout).",
        )
    except psycopg.Error as error:
        result = ProbeResult(
            ok=False, probed_at=probed_at, error=describe_connection_error(error, host, port)
        )
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


def _read_server(conn: psycopg.Connection, probed_at: dt.datetime, heartbeat: bool) -> ProbeResult:
    result = ProbeResult(ok=True, probed_at=probed_at)
    if heartbeat:
        # Before the LSN is read, so the slot figures below already include it.
        try:
            result.heartbeat_lsn = format_lsn(emit_heartbeat(conn))
        except psycopg.errors.InsufficientPrivilege:
            result.warnings.append(
                "The heartbeat was not written: the role may not call pg_logical_emit_message()."
            )
        except psycopg.DatabaseError as error:  # e.g. a standby in recovery: still measure the rest
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            result.warnings.append(f"The heartbeat was not written: {reason}")

    # One round trip for the server's identity, position and settings. The system
    # identifier tells servers apart (a standby shares its primary's): sources on one
    # server see the same slots, which are judged once per server.
    # On a standby there is no current write position: use what it has received.
    position = (
        "pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() "
        "THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END)::text, "
        "(SELECT json_object_agg(name, pg_size_bytes(current_setting(name))) FROM unnest(%s::text[]) AS name)"
    )
    try:
        row = conn.execute(
            f"SELECT {position}, (SELECT system_identifier::text FROM pg_control_system())",
            [list(WATCHED_SETTINGS)],
        ).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        row = (*conn.execute(f"SELECT {position}", [list(WATCHED_SETTINGS)]).fetchone(), "")
    result.in_recovery, result.current_lsn, settings, result.system_identifier = row
    result.settings = {name: int(value) for name, value in (settings or {}).items()}

    try:
        segments, size = conn.execute(
            "SELECT count(*), coalesce(sum(size), 0)::bigint FROM pg_ls_waldir() WHERE name ~ %s",
            [SEGMENT_NAME],
        ).fetchone()
        result.wal_segments, result.wal_dir_bytes = int(segments), int(size)
    except psycopg.errors.InsufficientPrivilege:
        user = conn.info.user
        result.warnings.append(
            f"WAL directory size not recorded: the role {user} may not call pg_ls_waldir(). "
            f"Grant it with: GRANT pg_monitor TO {user};"
        )

    rows = conn.execute(
        """
        SELECT slot_name::text, plugin::text, slot_type, database::text, active,
               restart_lsn::text, confirmed_flush_lsn::text,
               pg_wal_lsn_diff(%(lsn)s::pg_lsn, restart_lsn)::bigint,
               pg_wal_lsn_diff(%(lsn)s::pg_lsn, confirmed_flush_lsn)::bigint,
               wal_status, safe_wal_size
        FROM pg_replication_slots
        ORDER BY slot_name
        """,
        {"lsn": result.current_lsn},
    ).fetchall()
    result.slots = [SlotReading(*row) for row in rows]

    return result


class ProbeHandle:
    """The connection of one running probe, so the tick can cut it at the socket level.

    shutdown() on the socket wakes a thread blocked reading from a server that never
    answers: its query fails at once, it closes the connection and ends. The lock
    makes sure a socket is only shut down while its probe still holds it, never a
    file descriptor the process has since reused.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._conn = None
        self.cut = False

    def attach(self, conn) -> None:
        with self._lock:
            if self.cut:
                self._shutdown(conn)
            self._conn = conn

    def detach(self) -> None:
        with self._lock:
            self._conn = None

    def cut_connection(self) -> None:
        with self._lock:
            self.cut = True
            if self._conn is not None:
                self._shutdown(self._conn)

    @staticmethod
    def _shutdown(conn) -> None:
        try:
            fd = conn.pgconn.socket
        except psycopg.Error:
            return
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def probe_many(
    targets: dict,
    *,
    statement_timeout_ms: int,
    max_parallel: int = 16,
    grace_seconds: float = 2.0,
    patience_seconds: float = 1.0,
    on_result=None,
) -> dict:
    """Probe every target concurrently: {key: (connect_kwargs, heartbeat)} -> {key: ProbeResult}.

    The whole tick is bounded by connect timeout + statement timeout + grace, whatever
    the servers do and whatever max_parallel is: at that deadline every probe still
    running has its socket shut down (its thread then ends) and gets a failed result,
    as does any target that never got its turn. max_parallel bounds the probes that
    are working; one running longer than patience_seconds (a healthy probe takes
    milliseconds) stops counting against it, so stalled servers cannot hold every
    slot. on_result(key, result) is called from the caller's thread as each target
    finishes, so the caller can record them as they come.
    """
    connect_timeout = max([kwargs.get("connect_timeout") or 10 for kwargs, _ in targets.values()] or [10])
    bound = connect_timeout + statement_timeout_ms / 1000 + grace_seconds
    started_at = time.monotonic()
    deadline = started_at + bound
    pending = list(targets)
    pending.reverse()  # pop() from the end keeps the caller's order
    running: dict = {}  # key -> (thread, handle, started, box)
    cut: list = []  # threads whose connection was shut down, joined before returning
    final: dict = {}

    def timed_out(key, waited: float, started: bool) -> ProbeResult:
        kwargs = targets[key][0]
        where = f"{kwargs.get('host')}:{kwargs.get('port')}"
        if started:
            error = (
                f"{where} did not answer within {bound:.0f} s (connect timeout {connect_timeout} s + "
                f"statement timeout {statement_timeout_ms / 1000:g} s + {grace_seconds:g} s): "
                "the connection was closed."
            )
        else:
            error = (
                f"{where} was not probed: the tick's limit of {bound:.0f} s ran out before its turn "
                f"(too many servers did not answer; ROSETTA_PROBE_MAX_PARALLEL is {max_parallel})."
            )
        return ProbeResult(
            ok=False, probed_at=dt.datetime.now(dt.UTC), duration_ms=int(waited * 1000), error=error
        )

    def run(key, connect_kwargs, heartbeat, handle, box):
        try:
            box.append(
                probe_server(
                    connect_kwargs,
                    statement_timeout_ms=statement_timeout_ms,
                    heartbeat=heartbeat,
                    handle=handle,
                )
            )
        except Exception as error:  # noqa: BLE001 - one broken probe must not lose the others
            box.append(
                ProbeResult(
                    ok=False, probed_at=dt.datetime.now(dt.UTC), error=f"Probe error: {type(error).__name__}"
                )
            )

    finished: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def dispatch():
        try:
            while (pending or running) and not stop.is_set():
                now = time.monotonic()
                for key, (thread, handle, started, box) in list(running.items()):
                    if box:
                        del running[key]
                        finished.put((key, box[0]))
                    elif now >= deadline:
                        handle.cut_connection()
                        del running[key]
                        cut.append(thread)
                        finished.put((key, timed_out(key, now - started, started=True)))
                if now >= deadline:
                    while pending:
                        key = pending.pop()
                        finished.put((key, timed_out(key, 0, started=False)))
                    break
                working = sum(1 for _, _, started, _ in running.values() if now - started < patience_seconds)
                while pending and working < max(1, max_parallel):
                    key = pending.pop()
                    connect_kwargs, heartbeat = targets[key]
                    handle, box = ProbeHandle(), []
                    thread = threading.Thread(
                        target=run,
                        args=(key, connect_kwargs, heartbeat, handle, box),
                        daemon=True,
                        name=f"wal-probe-{key}",
                    )
                    running[key] = (thread, handle, time.monotonic(), box)
                    thread.start()
                    working += 1
                time.sleep(0.005)
        finally:
            for thread, handle, _, _ in running.values():
                handle.cut_connection()
                cut.append(thread)
            # A cut thread ends at once; one still connecting ends by its connect_timeout.
            join_until = time.monotonic() + connect_timeout + 1
            for thread in cut:
                thread.join(max(0.0, join_until - time.monotonic()))

    # Probes are started and cut in a thread of their own, so the caller's recording of
    # results (on_result) never delays them.
    dispatcher = threading.Thread(target=dispatch, daemon=True, name="wal-probe-dispatch")
    dispatcher.start()
    try:
        while len(final) < len(targets):
            try:
                key, result = finished.get(timeout=0.05)
            except queue.Empty:
                if not dispatcher.is_alive() and finished.empty():
                    break
                continue
            final[key] = result
            if on_result is not None:
                on_result(key, result)
    finally:
        # Also when the caller is interrupted (a task's time limit): no socket outlives the tick.
        stop.set()
        dispatcher.join()
    return final


def wal_rate(previous_lsn: str | None, previous_at, current_lsn: str | None, current_at) -> float | None:
    """Bytes of WAL written per second between two probes; None when it cannot be known."""
    before, after = parse_lsn(previous_lsn), parse_lsn(current_lsn)
    if before is None or after is None or previous_at is None:
        return None
    seconds = (current_at - previous_at).total_seconds()
    if seconds <= 0 or after < before:  # a different or restored server: no rate
        return None
    return (after - before) / seconds
