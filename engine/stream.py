"""Reading the slot over a streaming replication connection (what pg_recvlogical does).

The SQL functions (pg_logical_slot_peek_binary_changes) decode the whole batch
before returning its first row, and every call re-decodes the WAL from the
slot's restart_lsn. A walsender connection (`replication=database`,
`START_REPLICATION SLOT ... LOGICAL`) streams pgoutput while it decodes, so the
server decodes the next messages while this process folds the previous ones,
and a stream kept open across batches decodes the WAL once.

Crash safety is the batch protocol's: nothing is acknowledged (standby status
update) until the destination has committed, so a crash replays from the slot's
confirmed position and the destination's checkpoint skips what it already has.

Messages on the stream (PostgreSQL's "Streaming Replication Protocol"):
  'w' XLogData: start LSN, end of WAL, send time (3 x int64), then one pgoutput message;
  'k' keepalive: end of WAL (the position the walsender has read up to), send time,
      reply requested (byte);
  'r' (ours) standby status update: written, flushed, applied LSNs, time, reply requested.
"""

import contextlib
import logging
import select
import struct
import time
from datetime import UTC, datetime

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import make_conninfo

from engine.fold import _fastfold
from engine.preflight import describe_connection_error

# the compiled message loop (engine/_fastfold.pyx), where it is built from this source;
# else _stream_messages does the same, slower
_compiled_messages = _fastfold.stream_messages if _fastfold is not None else None

log = logging.getLogger(__name__)

_keepalive = struct.Struct("!QqB")
_lsn = struct.Struct("!Q")
_status_update = struct.Struct("!cQQQqB")
POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
SLOT_BUSY_WAIT_SECONDS = 10  # a walsender that just ended may hold the slot a moment longer
IDLE_WAIT_SECONDS = 1.0  # poll interval while waiting for the walsender
# How long to let the walsender's messages gather once the socket is empty. It sends
# each message as it decodes it; a reader woken for every one makes the kernel carry
# one small TCP segment per message, which cost the walsender as much CPU as decoding
# (bench/README.md, "Letting messages gather"). While this process waits, the receive
# window fills and the walsender's next sends are queued and go out in large segments.
GATHER_SECONDS = 0.005
COMMAND_TIMEOUT_SECONDS = 60
# Inside a transaction the walsender sends without pause (it decoded the whole
# transaction before its Begin): silence this many times the idle timeout is a fault.
STALL_FACTOR = 6


# What a message loop returns to read() (engine/_fastfold.pyx holds the same numbers).
NOTHING, ENDED, CAUGHT_UP, ENOUGH, KEEPALIVE = 0, -1, 1, 2, 3


def _stream_messages(pgconn, feed, count, upto_changes, flush_lsn, in_transaction):
    """read()'s hot part, for every message: hand each 'w' message's pgoutput to `feed`
    until a commit ends the read (caught up to `flush_lsn`, or `upto_changes` messages),
    and return to read() for anything else. Returns (status, count, in_transaction,
    whether a message came, the keepalive). engine/_fastfold.pyx's stream_messages is
    this loop compiled (used when built); this one is the reference and the fallback."""
    get = pgconn.get_copy_data
    got = False
    while True:
        nbytes, data = get(1)
        if nbytes <= 0:
            return (NOTHING if nbytes == 0 else ENDED), count, in_transaction, got, None
        got = True
        kind = data[0]
        if kind == 107:  # 'k'
            return KEEPALIVE, count, in_transaction, got, data
        if kind != 119:  # not 'w'
            continue
        message = bytes(data[25:])
        feed(message)
        count += 1
        first = message[0]
        if first == 66:  # 'B'
            in_transaction = True
        elif first == 67:  # 'C'
            in_transaction = False
            (end_lsn,) = _lsn.unpack_from(message, 10)
            if end_lsn >= flush_lsn:
                return CAUGHT_UP, count, in_transaction, got, None
            if count >= upto_changes:
                return ENOUGH, count, in_transaction, got, None
        elif first == 77 and not in_transaction:  # a non-transactional logical message
            (lsn,) = _lsn.unpack_from(message, 2)
            if lsn >= flush_lsn:
                return CAUGHT_UP, count, in_transaction, got, None


class StreamError(Exception):
    """The replication connection failed; the message says why (never a secret)."""


def _now_us() -> int:
    return int((datetime.now(UTC) - POSTGRES_EPOCH).total_seconds() * 1_000_000)


def _error_text(pgconn) -> str:
    return (pgconn.error_message or b"").decode("utf-8", "replace").strip()


class ReplicationStream:
    """One walsender connection streaming a slot's pgoutput messages from its
    confirmed position. Not thread-safe; one reader."""

    # Which loop reads the messages: "compiled" (engine/_fastfold.pyx's stream_messages,
    # when built; else "python") or "python" (_stream_messages, the reference).
    message_loop = "compiled"

    def __init__(self, connect_kwargs: dict, options: str, slot: str, publication: str):
        self.connect_kwargs = connect_kwargs
        self.options = options
        self.slot = slot
        self.publication = publication
        self.pgconn = None
        self.last_activity = 0.0
        self.acknowledged = 0  # the last position acknowledged to the walsender

    # -- connection -----------------------------------------------------------

    def open(self) -> "ReplicationStream":
        kwargs = {k: v for k, v in self.connect_kwargs.items() if v is not None}
        conninfo = make_conninfo(**kwargs, replication="database", options=self.options)
        deadline = time.monotonic() + SLOT_BUSY_WAIT_SECONDS
        while True:
            pgconn = pq.PGconn.connect(conninfo.encode())
            if pgconn.status != pq.ConnStatus.OK:
                error = psycopg.OperationalError(_error_text(pgconn))
                pgconn.finish()
                raise StreamError(
                    "Source: "
                    + describe_connection_error(error, kwargs.get("host"), kwargs.get("port"))
                    + " (replication connection)"
                )
            query = sql.SQL(
                "START_REPLICATION SLOT {} LOGICAL 0/0 (proto_version '1', publication_names {}, messages 'true')"
            ).format(sql.Identifier(self.slot), sql.Literal(sql.Identifier(self.publication).as_string(None)))
            result = self._command(pgconn, query.as_string(None).encode())
            if result.status == pq.ExecStatus.COPY_BOTH:
                break
            message = (result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"").decode()
            state = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
            pgconn.finish()
            if state == "55006" and time.monotonic() < deadline:  # slot still held by the last walsender
                time.sleep(0.1)
                continue
            raise StreamError(f"Source: could not stream replication slot {self.slot}: {message}")
        self.pgconn = pgconn
        self.last_activity = time.monotonic()
        return self

    def _command(self, pgconn, query: bytes):
        deadline = time.monotonic() + COMMAND_TIMEOUT_SECONDS
        pgconn.send_query(query)
        while pgconn.flush():
            select.select([], [pgconn.socket], [], IDLE_WAIT_SECONDS)
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                return pgconn.get_result()
            if time.monotonic() > deadline:
                pgconn.finish()
                raise StreamError(
                    f"Source: starting to stream replication slot {self.slot} got no answer "
                    f"in {COMMAND_TIMEOUT_SECONDS} s."
                )
            select.select([pgconn.socket], [], [], IDLE_WAIT_SECONDS)

    def close(self) -> None:
        """End the stream and wait for the walsender to release the slot, so that
        the next run (or a DROP of the slot) finds it free."""
        pgconn, self.pgconn = self.pgconn, None
        if pgconn is None:
            return
        try:
            if pgconn.status == pq.ConnStatus.OK:
                pgconn.put_copy_end()
                deadline = time.monotonic() + SLOT_BUSY_WAIT_SECONDS
                while time.monotonic() < deadline:
                    pgconn.flush()
                    pgconn.consume_input()
                    while True:
                        nbytes, _ = pgconn.get_copy_data(1)
                        if nbytes <= 0:
                            break
                    if not pgconn.is_busy():
                        result = pgconn.get_result()
                        if result is None:
                            break
                        continue
                    select.select([pgconn.socket], [], [], 0.2)
        except psycopg.Error:
            pass  # the connection is going away anyway
        finally:
            pgconn.finish()

    # -- reading --------------------------------------------------------------

    def read(self, upto_changes: int, flush_lsn: int, timeout: float, feed) -> tuple[int, bool]:
        """Hand messages of whole transactions to `feed`, at least `upto_changes`
        of them unless the stream catches up first: it has sent every transaction
        that committed before `flush_lsn` (the source's flush position before this
        read). Returns (messages, caught_up)."""
        pgconn = self.pgconn
        count = 0
        in_transaction = False
        idle_since = None
        drained = False  # libpq's buffer ran dry and the socket was read since
        messages = _stream_messages
        if self.message_loop == "compiled" and _compiled_messages is not None:
            messages = _compiled_messages
        while True:
            status, count, in_transaction, got, keepalive = messages(
                pgconn, feed, count, upto_changes, flush_lsn, in_transaction
            )
            if got:
                idle_since = None
            if status == CAUGHT_UP:
                return count, True
            if status == ENOUGH:
                return count, False
            if status == KEEPALIVE:
                wal_end, _, reply = _keepalive.unpack_from(keepalive, 1)
                if not in_transaction and wal_end >= flush_lsn:
                    return count, True
                # Answering re-arms the walsender's ping, so the next keepalive
                # comes as soon as it has read further (it moves nothing).
                self._send_status(self.acknowledged)
                continue
            if status == NOTHING:
                if got or not drained:  # libpq's buffer ran dry: take what the socket holds
                    drained = True
                    with contextlib.suppress(psycopg.OperationalError):  # get_copy_data reports it
                        pgconn.consume_input()
                    continue
                drained = False
                now = time.monotonic()
                self.last_activity = now
                if idle_since is None:
                    idle_since = now
                elif not in_transaction and now - idle_since > timeout:
                    return count, True
                elif now - idle_since > timeout * STALL_FACTOR:
                    raise StreamError(
                        f"Source: the replication stream of slot {self.slot} stalled inside a transaction "
                        f"for {timeout * STALL_FACTOR:.0f} s."
                    )
                time.sleep(GATHER_SECONDS)  # the socket is empty: let messages gather
                select.select([pgconn.socket], [], [], IDLE_WAIT_SECONDS)
                with contextlib.suppress(psycopg.OperationalError):  # get_copy_data reports it
                    pgconn.consume_input()
                continue
            error = self._ended_reason()
            self.close()
            raise StreamError(f"Source: the replication stream of slot {self.slot} ended: {error}")

    def _ended_reason(self) -> str:
        """Why the server ended the stream, in its own words: libpq keeps the server's
        error (e.g. "terminating connection due to administrator command") in the
        pending result, not in the connection's error message."""
        pgconn = self.pgconn
        texts = []
        with contextlib.suppress(psycopg.Error):
            for _ in range(5):  # an error result, then None; never loop on a broken connection
                result = pgconn.get_result()
                if result is None:
                    break
                text = (result.error_message or b"").decode("utf-8", "replace").strip()
                if text:
                    texts.append(text)
        text = texts[0] if texts else _error_text(pgconn)
        return text.splitlines()[0] if text else "no reason given"

    def ended(self) -> str | None:
        """None while the walsender's connection is open, else the server's reason. Reads
        no message off a live stream; a dead one's unread messages are read again from
        the slot by the next stream."""
        pgconn = self.pgconn
        if pgconn is None:
            return "the stream was closed"
        for _ in range(2):  # the first read may take the server's error, the second the EOF
            with contextlib.suppress(psycopg.OperationalError):
                pgconn.consume_input()
        if pgconn.status == pq.ConnStatus.OK:
            return None
        with contextlib.suppress(psycopg.Error):
            while pgconn.get_copy_data(1)[0] > 0:
                pass
        return self._ended_reason()

    # -- acknowledging ----------------------------------------------------------

    def _send_status(self, lsn: int) -> None:
        self.pgconn.put_copy_data(_status_update.pack(b"r", lsn, lsn, lsn, _now_us(), 0))
        while self.pgconn.flush():
            select.select([], [self.pgconn.socket], [], IDLE_WAIT_SECONDS)
        self.last_activity = time.monotonic()

    def acknowledge(self, lsn: int) -> None:
        """Tell the walsender the destination has everything up to `lsn`: the slot's
        confirmed position moves there (only ever call this after the destination commit)."""
        self._send_status(lsn)
        self.acknowledged = lsn
