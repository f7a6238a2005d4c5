"""The replication stream's message loop, pure Python (engine.stream._stream_messages,
the reference) and compiled (engine/_fastfold.pyx), against a real walsender: the same
messages fed, the same counts and caught-up answers, the same keepalive answer, stall
error and stream-ended error, whichever loop read them."""

import os
import signal
import threading
import time

import psycopg
import pytest

from engine import stream
from engine.source import _options
from engine.stream import ReplicationStream, StreamError

LOOPS = ["python", "compiled"]


def needs_compiled(loop):
    if loop == "compiled" and stream._compiled_messages is None:
        pytest.skip("engine/_fastfold is not built (scripts/build_fastfold.sh builds it)")


@pytest.fixture
def source(source_database):
    conn = psycopg.connect(**source_database, autocommit=True, options="-c synchronous_commit=on")
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
    conn.execute("CREATE TABLE unpublished (id int)")
    conn.execute("CREATE PUBLICATION pub FOR TABLE items")
    yield conn
    conn.close()


def flush_lsn(conn) -> int:
    (lsn,) = conn.execute("SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn").fetchone()
    return int(lsn)


def open_stream(source_database, slot, loop, monkeypatch):
    if loop == "compiled, not built":  # the fallback: the Python loop
        monkeypatch.setattr(stream, "_compiled_messages", None)
        loop = "compiled"
    monkeypatch.setattr(ReplicationStream, "message_loop", loop)
    return ReplicationStream(source_database, _options(0), slot, "pub").open()


def workload(conn):
    """Transactions of several sizes, a non-transactional logical message among them."""
    for n in range(20):
        with conn.transaction():
            for k in range(n % 4 + 1):
                conn.execute("INSERT INTO items VALUES (%s, %s)", [n * 10 + k, f"n{n}"])
        if n == 7:
            conn.execute("SELECT pg_logical_emit_message(false, 'rosetta', 'between')")
    conn.execute("UPDATE items SET note = 'x' WHERE id < 50")
    conn.execute("DELETE FROM items WHERE id % 3 = 0")


def test_the_compiled_loop_is_built_and_read_uses_it():
    if stream._compiled_messages is None:
        pytest.skip("engine/_fastfold is not built")
    from engine import _fastfold

    assert ReplicationStream.message_loop == "compiled"
    assert stream._compiled_messages is _fastfold.stream_messages
    for name in ("NOTHING", "ENDED", "CAUGHT_UP", "ENOUGH", "KEEPALIVE"):
        assert getattr(_fastfold, name) == getattr(stream, name)


@pytest.mark.parametrize("upto", [1, 7, 1000])
def test_both_loops_feed_the_same_messages_and_return_the_same_reads(
    source, source_database, monkeypatch, upto
):
    needs_compiled("compiled")
    loops = [*LOOPS, "compiled, not built"]
    for n, _ in enumerate(loops):
        source.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [f"s_{n}"])
    workload(source)
    flush = flush_lsn(source)
    seen = {}
    for n, loop in enumerate(loops):
        fed, reads = [], []
        reader = open_stream(source_database, f"s_{n}", loop, monkeypatch)
        try:
            while True:
                before = len(fed)
                count, caught_up = reader.read(upto, flush, 5.0, fed.append)
                reads.append((count, caught_up))
                assert count == len(fed) - before
                assert bytes(fed[-1][:1]) == b"C"  # reads end on a commit: whole transactions
                if caught_up:
                    break
        finally:
            reader.close()
        assert all(type(message) is bytes for message in fed)
        seen[loop] = (fed, reads)
    assert seen["python"] == seen["compiled"] == seen["compiled, not built"]
    fed, reads = seen["python"]
    assert len(reads) > 1 if upto < 1000 else len(reads) == 1
    assert sum(1 for message in fed if message[:1] == b"M") == 1


@pytest.mark.parametrize("loop", LOOPS)
def test_a_keepalive_past_the_flush_position_ends_the_read_and_one_before_it_is_answered(
    source, source_database, monkeypatch, loop
):
    needs_compiled(loop)
    source.execute("SELECT pg_create_logical_replication_slot('s_k', 'pgoutput')")
    source.execute("INSERT INTO items VALUES (1, 'one')")
    source.execute("INSERT INTO unpublished VALUES (1)")  # WAL past the last published commit
    flush = flush_lsn(source)
    reader = open_stream(source_database, "s_k", loop, monkeypatch)
    try:
        started = time.monotonic()
        # Only a keepalive reporting the walsender's read position at `flush` can end
        # this read before the (long) idle timeout: the last commit lies before it.
        assert reader.read(1000, flush, 30.0, [].append) == (4, True)  # Begin, Relation, Insert, Commit
        assert time.monotonic() - started < 10
    finally:
        reader.close()

    # Past the end of WAL: keepalives that report a position before `flush + 1` are
    # answered, and the read goes on until one reports the WAL written a second later
    # (or written meanwhile by the server itself: a standby snapshot every 15 s).
    reader = open_stream(source_database, "s_k", loop, monkeypatch)

    def write_later():
        time.sleep(1)
        with psycopg.connect(**source_database, autocommit=True) as other:
            other.execute("INSERT INTO unpublished VALUES (2)")

    writer = threading.Thread(target=write_later)
    try:
        started = time.monotonic()
        writer.start()
        assert reader.read(1000, flush + 1, 30.0, [].append) == (4, True)
        assert time.monotonic() - started < 10
        assert flush_lsn(source) > flush  # it did not end before the WAL went past flush
        (answered,) = source.execute(
            "SELECT reply_time IS NOT NULL FROM pg_stat_replication "
            "WHERE pid = (SELECT active_pid FROM pg_replication_slots WHERE slot_name = 's_k')"
        ).fetchone()
        assert answered  # a standby status update, which only a keepalive's answer sends here
    finally:
        writer.join()
        reader.close()


def walsender_pid(conn, slot) -> int:
    (pid,) = conn.execute(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", [slot]
    ).fetchone()
    return pid


@pytest.mark.parametrize("loop", LOOPS)
def test_a_walsender_silent_inside_a_transaction_is_a_stall(source, source_database, monkeypatch, loop):
    needs_compiled(loop)
    source.execute("SELECT pg_create_logical_replication_slot('s_st', 'pgoutput')")
    # One transaction far larger than the socket's buffers: stopped after its Begin,
    # the walsender leaves the loop inside the transaction with nothing to read.
    source.execute("INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(1, 100000) g")
    flush = flush_lsn(source)
    reader = open_stream(source_database, "s_st", loop, monkeypatch)
    pid = walsender_pid(source, "s_st")
    stopped = []

    def feed(message):
        if message[:1] == b"B" and not stopped:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)

    try:
        started = time.monotonic()
        with pytest.raises(StreamError, match="stalled inside a transaction for 1 s"):
            reader.read(10**6, flush, 0.2, feed)
        assert time.monotonic() - started >= 1.2
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        reader.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_walsender_terminated_mid_read_ends_it_with_the_servers_message(
    source, source_database, monkeypatch, loop
):
    needs_compiled(loop)
    source.execute("SELECT pg_create_logical_replication_slot('s_end', 'pgoutput')")
    source.execute("INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(1, 100000) g")
    flush = flush_lsn(source)
    reader = open_stream(source_database, "s_end", loop, monkeypatch)
    pid = walsender_pid(source, "s_end")
    terminated = []

    def feed(message):
        if message[:1] == b"B" and not terminated:
            source.execute("SELECT pg_terminate_backend(%s)", [pid])
            terminated.append(pid)

    with pytest.raises(StreamError, match="ended: .*terminating connection due to administrator command"):
        reader.read(10**6, flush, 5.0, feed)
    assert reader.pgconn is None  # closed by the read


def test_the_reader_lets_messages_gather_instead_of_waking_for_each(source, source_database, monkeypatch):
    """The walsender sends each message as it decodes it. A reader that waits on the
    socket whenever libpq's buffer is empty is woken for nearly every message, and the
    kernel carries one small segment per message (the walsender then spent as much CPU
    on sending as on decoding). The reader drains the socket first, and once it is
    empty waits a few milliseconds for messages to gather: a backlog of 20,000 changes
    is read in a few dozen waits."""
    source.execute("SELECT pg_create_logical_replication_slot('gather', 'pgoutput')")
    for start in range(0, 20_000, 1_000):
        source.execute(
            "INSERT INTO items SELECT g, 'x' FROM generate_series(%s::int, %s::int) g", [start, start + 999]
        )
    end = flush_lsn(source)
    waits = []
    real_select = stream.select.select

    class CountingSelect:
        @staticmethod
        def select(readable, writable, errors, timeout):
            if readable and not writable:
                waits.append(timeout)
            return real_select(readable, writable, errors, timeout)

    monkeypatch.setattr(stream, "select", CountingSelect)
    reader = ReplicationStream(source_database, _options(0), "gather", "pub").open()
    try:
        fed = []
        read, caught_up = reader.read(10**9, end, 5.0, fed.append)
    finally:
        reader.close()
    assert caught_up and read == len(fed) == 20_041  # the inserts, Begin and Commit of each, one Relation
    assert len(waits) < 200, f"{len(waits)} waits for {read} messages"
