"""The WAL probe: what one PostgreSQL server's WAL and replication slots look like now.

Plain psycopg, no Django: connection settings in, ProbeResult out. A probe never
raises for a server problem; it returns a failed result that says why in words.
"""

import datetime as dt
import threading
import time
from dataclasses import dataclass, field

import psycopg

from sources.preflight import describe_connection_error

# pg_ls_waldir() also lists .history, .partial and archive_status files: count segments only.
SEGMENT_NAME = "^[0-9A-F]{24}$"
WATCHED_SETTINGS = ("max_slot_wal_keep_size", "max_wal_size", "wal_keep_size", "wal_segment_size")
HEARTBEAT_PREFIX = "rosetta_heartbeat"


def parse_lsn(text: str | None) -> int | None:
    """'16/B374D848' -> its position as an integer (a position in the WAL stream, not a size)."""
    if not text:
        return None
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(position: int | None) -> str:
    if position is None:
        return ""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


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


def probe_server(connect_kwargs: dict, *, statement_timeout_ms: int, heartbeat: bool = False) -> ProbeResult:
    """Connect with the caller's connect_timeout, then read WAL and slot state.

    statement_timeout is set in the startup packet, so even the first query is bounded.
    """
    started = time.monotonic()
    probed_at = dt.datetime.now(dt.UTC)
    host, port = connect_kwargs.get("host"), connect_kwargs.get("port")
    kwargs = {**connect_kwargs, "options": f"-c statement_timeout={int(statement_timeout_ms)}"}
    try:
        with psycopg.connect(**kwargs, autocommit=True) as conn:
            result = _read_server(conn, probed_at, heartbeat)
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
            result.heartbeat_lsn = conn.execute(
                "SELECT pg_logical_emit_message(true, %s, %s)::text",
                [HEARTBEAT_PREFIX, probed_at.isoformat()],
            ).fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:
            result.warnings.append(
                "The heartbeat was not written: the role may not call pg_logical_emit_message()."
            )
        except psycopg.DatabaseError as error:  # e.g. a standby in recovery: still measure the rest
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            result.warnings.append(f"The heartbeat was not written: {reason}")

    # On a standby there is no current write position: use what it has received.
    result.in_recovery, result.current_lsn = conn.execute(
        "SELECT pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() "
        "THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END)::text"
    ).fetchone()

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

    result.settings = dict(
        conn.execute(
            "SELECT name, pg_size_bytes(current_setting(name)) FROM unnest(%s::text[]) AS name",
            [list(WATCHED_SETTINGS)],
        ).fetchall()
    )
    return result


def probe_many(
    targets: dict,
    *,
    statement_timeout_ms: int,
    max_parallel: int = 16,
    grace_seconds: float = 2.0,
) -> dict:
    """Probe every target concurrently: {key: (connect_kwargs, heartbeat)} -> {key: ProbeResult}.

    Each probe runs in a daemon thread with its own deadline (connect timeout +
    statement timeout + grace). A server that stops answering after the connection
    is up gets a failed result at its deadline while the others finish; the stuck
    thread is abandoned instead of delaying or blocking the caller.
    """
    results: dict = {}
    started: dict = {}
    gate = threading.BoundedSemaphore(max(1, max_parallel))

    def run(key, connect_kwargs, heartbeat):
        with gate:
            started[key] = time.monotonic()
            try:
                results[key] = probe_server(
                    connect_kwargs, statement_timeout_ms=statement_timeout_ms, heartbeat=heartbeat
                )
            except Exception as error:  # noqa: BLE001 - one broken probe must not lose the others
                results[key] = ProbeResult(
                    ok=False, probed_at=dt.datetime.now(dt.UTC), error=f"Probe error: {type(error).__name__}"
                )

    threads = {}
    for key, (connect_kwargs, heartbeat) in targets.items():
        thread = threading.Thread(
            target=run, args=(key, connect_kwargs, heartbeat), daemon=True, name=f"wal-probe-{key}"
        )
        thread.start()
        threads[key] = thread

    final: dict = {}
    while len(final) < len(threads):
        for key, thread in threads.items():
            if key in final:
                continue
            if not thread.is_alive():
                final[key] = results[key]
                continue
            connect_kwargs = targets[key][0]
            deadline = (
                (connect_kwargs.get("connect_timeout") or 10) + statement_timeout_ms / 1000 + grace_seconds
            )
            if key in started and time.monotonic() - started[key] > deadline:
                final[key] = ProbeResult(
                    ok=False,
                    probed_at=dt.datetime.now(dt.UTC),
                    duration_ms=int(deadline * 1000),
                    error=f"No answer from {connect_kwargs.get('host')}:{connect_kwargs.get('port')} "
                    f"within {deadline:.0f} s: the probe was abandoned.",
                )
        time.sleep(0.02)
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
