"""The PostgreSQL writer's transaction per part: how many round trips it costs (each one is a
network latency when the destination is not next door), a key first inserted in the part
that the target holds already, and two writers on one checkpoint."""

import logging
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import pq

from engine.fold import _fastfold
from engine.writers import postgres
from engine.writers.postgres import PostgresWriter

from .batches import make_batch, relation_of, table_changes, wait_until_waiting_for_a_lock

pytestmark = pytest.mark.skipif(
    _fastfold is None, reason="engine/_fastfold is not built (scripts/build_fastfold.sh builds it)"
)


@pytest.fixture
def writer(pg_destination):
    writer = PostgresWriter(pg_destination)
    writer.binary_copy_min_rows = 0  # the binary COPY, as a run's parts of thousands of rows take
    yield writer
    writer.close()


def table(source_conn, name: str):
    source_conn.execute(f"CREATE TABLE public.{name} (id int PRIMARY KEY, v text)")
    return relation_of(source_conn, "public", name)


def changes(relation, keys, lsn: int, fresh=True, value="v"):
    """Upserts of `keys` as the fold makes them (text values); fresh: first inserted in the part."""
    upserts = {(str(n),): ({"id": str(n), "v": f"{value}{n}"}, lsn) for n in keys}
    return table_changes(relation, upserts=upserts, fresh=list(upserts) if fresh else (), text_values=True)


def round_trips(writer, batch) -> int:
    """Times the writer waited for the destination's answer while it applied `batch`
    (libpq's trace): for each query its ReadyForQuery, and for a COPY also the
    CopyInResponse before its data."""
    conn = writer._connection()
    with tempfile.TemporaryFile(mode="w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            writer.apply_batch("pipeline-1", batch)
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        return sum(1 for line in trace if "\tReadyForQuery" in line or "\tCopyInResponse" in line)


def test_a_part_costs_four_round_trips_and_two_more_for_its_merge(writer, source_conn, pg_reader):
    """BEGIN with the checkpoint's read and the target's lock and types; the COPY (two:
    the server's go-ahead, then its end); the checkpoint's write with the COMMIT. Rows
    of keys already there take the staging table, its COPY and the merge instead, part
    after part (psycopg does not prepare the merge after five). Each round trip is a
    latency of the network between the worker and the destination, paid per part."""
    relation = table(source_conn, "items")
    writer.apply_batch("pipeline-1", make_batch(changes(relation, range(0, 10), lsn=10), end_lsn=10))

    inserts = make_batch(changes(relation, range(10, 20), lsn=20), end_lsn=20)
    assert round_trips(writer, inserts) == 4

    for lsn in range(30, 100, 10):
        updates = make_batch(
            changes(relation, range(0, 20), lsn=lsn, fresh=False, value=f"{lsn} "), end_lsn=lsn
        )
        assert round_trips(writer, updates) == 6

    stored = pg_reader.execute("SELECT count(*), min(v), max(_rosetta_lsn) FROM analytics.items").fetchone()
    assert stored == (20, "90 0", 90)
    assert writer.read_checkpoint("pipeline-1") == 90


def test_a_fresh_key_found_in_the_target_rolls_the_part_back_and_merges_that_table(
    writer, source_conn, pg_reader, caplog, monkeypatch
):
    """A soft-deleted row, a row written by hand: the fresh rows' COPY fails on its key and
    takes the part's transaction with it. The part is applied again, that table's rows merged;
    nothing is counted or written twice, and the table's later parts are merged at once."""
    caplog.set_level(logging.INFO, logger="engine.writers.postgres")
    first, second = table(source_conn, "first"), table(source_conn, "second")
    writer.apply_batch(
        "pipeline-1",
        make_batch(changes(first, [0], lsn=10), changes(second, [0], lsn=10), end_lsn=10),
    )
    pg_reader.execute("INSERT INTO analytics.second (id, v) VALUES (2, 'by hand'), (4, 'by hand')")

    result = writer.apply_batch(
        "pipeline-1",
        make_batch(changes(first, [1, 2], lsn=20), changes(second, [1, 2], lsn=20), end_lsn=20),
    )
    assert (result.inserted, result.updated) == (3, 1)  # second's 2 was there: updated
    assert caplog.text.count("is already in analytics.second: merging instead") == 1

    part = make_batch(changes(second, [3, 4], lsn=30), end_lsn=30)
    writer.prepare_batch(part)  # in the run's reading thread: made for the merge it will take
    made_in_the_transaction = []
    monkeypatch.setattr(postgres, "_copy_binary", lambda *a: made_in_the_transaction.append(a))
    result = writer.apply_batch("pipeline-1", part)
    assert (result.inserted, result.updated) == (1, 1)
    assert caplog.text.count("merging instead") == 1  # no COPY tried this time
    assert made_in_the_transaction == []  # the payload made ahead was the one sent

    rows = "SELECT id, v, _rosetta_lsn FROM analytics.{} ORDER BY id"
    assert pg_reader.execute(rows.format("first")).fetchall() == [(0, "v0", 10), (1, "v1", 20), (2, "v2", 20)]
    assert pg_reader.execute(rows.format("second")).fetchall() == [
        (0, "v0", 10),
        (1, "v1", 20),
        (2, "v2", 20),
        (3, "v3", 30),
        (4, "v4", 30),
    ]
    assert writer.read_checkpoint("pipeline-1") == 30


def test_a_second_writer_of_the_pipeline_waits_for_the_first_and_finds_the_part_applied(
    writer, pg_destination, source_conn, pg_reader
):
    """The checkpoint's row is locked in the part's first round trip, as long as the part's
    transaction lasts: a second writer of the same pipeline (a run that should not overlap
    this one, but does) waits, then finds the part applied and writes nothing."""
    relation = table(source_conn, "items")
    writer.apply_batch("pipeline-1", make_batch(changes(relation, [0], lsn=10), end_lsn=10))
    part = make_batch(changes(relation, [1], lsn=20, fresh=False), end_lsn=20)
    other = PostgresWriter(pg_destination)
    other.read_checkpoint("pipeline-1")  # connected, so that its backend is there to watch
    other_pid = other._connection().info.backend_pid
    results = {}

    def apply_the_same_part():
        try:
            results["other"] = other.apply_batch("pipeline-1", part)
        except BaseException as error:  # shown by the assertion below
            results["other"] = error

    def meanwhile():
        thread.start()
        wait_until_waiting_for_a_lock(pg_reader, other_pid, "the second writer")

    thread = threading.Thread(target=apply_the_same_part)
    writer.before_commit_hook = meanwhile
    try:
        result = writer.apply_batch("pipeline-1", part)
    finally:
        writer.before_commit_hook = None
        thread.join(30)
        other.close()
    assert result.inserted == 1
    assert not thread.is_alive()
    assert not isinstance(results["other"], BaseException), results["other"]
    assert results["other"].inserted == 0
    assert "were already applied" in results["other"].notes[0]
    assert pg_reader.execute("SELECT count(*) FROM analytics.items").fetchone() == (2,)


def test_a_failed_part_has_the_writer_check_its_tables_again(writer, source_conn, pg_reader):
    """What the writer verified of a target table is not trusted after a part fails: a table
    dropped by hand fails the next part, and the part after it finds the table missing and
    makes it again, as a new run's writer would."""
    relation = table(source_conn, "items")
    writer.apply_batch("pipeline-1", make_batch(changes(relation, [0], lsn=10), end_lsn=10))
    pg_reader.execute("DROP TABLE analytics.items")
    part = make_batch(changes(relation, [1], lsn=20), end_lsn=20)
    with pytest.raises(psycopg.errors.UndefinedTable):
        writer.apply_batch("pipeline-1", part)
    writer.apply_batch("pipeline-1", part)
    assert pg_reader.execute("SELECT id, v FROM analytics.items").fetchall() == [(1, "v1")]
    assert writer.read_checkpoint("pipeline-1") == 20


def test_a_part_that_truncates_a_table_locks_it_by_its_truncate_first(writer, source_conn, pg_reader):
    """A TRUNCATE waits for the table's readers. The part must not hold a weaker lock on the
    table meanwhile (the first round trip's, for a table it knows): a reader's next step
    that needs more than reading (CREATE INDEX, here) would then deadlock with it, and
    PostgreSQL would abort one of the two."""
    relation = table(source_conn, "items")
    writer.apply_batch("pipeline-1", make_batch(changes(relation, [0], lsn=10), end_lsn=10))
    part = changes(relation, [1], lsn=20)
    part.truncated = True
    pid = writer._connection().info.backend_pid
    pool = ThreadPoolExecutor(1)
    with psycopg.connect(pg_reader.info.dsn) as reader:
        reader.execute("SELECT count(*) FROM analytics.items")  # a transaction that read the table
        applied = pool.submit(writer.apply_batch, "pipeline-1", make_batch(part, end_lsn=20))
        try:
            wait_until_waiting_for_a_lock(pg_reader, pid, "the part")
            reader.execute("CREATE INDEX ON analytics.items (v)")
        finally:
            reader.commit()
    result = applied.result(timeout=30)  # raises what the writer raised
    pool.shutdown()
    assert result.inserted == 1
    assert pg_reader.execute("SELECT id, v FROM analytics.items").fetchall() == [(1, "v1")]
