"""The heartbeat: a tiny logical message written into a source database so that its
replication slots can move on while the database itself is idle.

Both the WAL probe (a source's heartbeat option) and a run that has caught up write it.
It is non-transactional on purpose: the decoder hands it over at once with its own
LSN, a position it has certainly read past, so a slot confirmed there skips nothing
(the flush LSN alone is not safe: the walwriter may have flushed half of a commit
record). A transactional message would instead arrive as an empty transaction of its
own, which a run would count as work.
"""

import datetime as dt

import psycopg

from .lsn import parse_lsn

HEARTBEAT_PREFIX = "rosetta_heartbeat"


def emit_heartbeat(conn: psycopg.Connection) -> int:
    """Write the heartbeat (its content: the time, for whoever reads the WAL) and return its LSN.
    Raises psycopg errors as they come (no privilege, a standby in recovery)."""
    (lsn,) = conn.execute(
        "SELECT pg_logical_emit_message(false, %s, %s)::text",
        [HEARTBEAT_PREFIX, dt.datetime.now(dt.UTC).isoformat()],
    ).fetchone()
    return parse_lsn(lsn)
