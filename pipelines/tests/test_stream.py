"""The streaming read path kept open across batches (one Engine, many run_batch
calls) and applying each batch in parts, beside the SQL peek path: same
destination, nothing lost or doubled when a part fails after its read, and the
slot is free again once the run ends."""

import psycopg
import pytest

from engine.fold import TableSpec
from engine.runner import Engine
from engine.source import SourceDatabase
from engine.writers.duckdb import DuckDBWriter

BIG = "".join(chr(65 + i * 7 % 26) for i in range(30000))  # TOASTed, compresses badly


@pytest.fixture
def source(source_database):
    conn = psycopg.connect(**source_database, autocommit=True, options="-c synchronous_commit=on")
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, qty int, note text, doc jsonb, tags int[])")
    conn.execute(
        "INSERT INTO items SELECT g, g, 'n' || g, jsonb_build_object('g', g), ARRAY[g, g + 1] FROM generate_series(1, 5) g"
    )
    yield conn
    conn.close()


def make_engine(source_database, tmp_path, read_path="stream", writer=None):
    """Parts of 2 changes: a batch of 5 is applied as several destination transactions."""
    db = SourceDatabase(source_database)
    writer = writer or DuckDBWriter({"path": str(tmp_path / f"{read_path}.duckdb")})
    engine = Engine(
        db,
        writer,
        pipeline_key="p",
        slot="s_" + read_path,
        publication="pub",
        tables=[TableSpec("public", "items", "items")],
        max_changes_per_transaction=2,
        read_path=read_path,
    )
    engine.prepare()
    engine.snapshot_table(engine.tables[("public", "items")])
    return db, writer, engine


def workload(conn):
    """Several small transactions: batches of 5 changes end mid-workload, so that
    the stream is read in several batches over one connection."""
    for n in range(6, 30):
        conn.execute("INSERT INTO items VALUES (%s, %s, %s, %s, %s)", [n, n, f"n{n}", f'{{"g": {n}}}', [n]])
    conn.execute("UPDATE items SET note = %s WHERE id = 7", [BIG])
    conn.execute("UPDATE items SET qty = qty + 100 WHERE id BETWEEN 3 AND 12")  # note of 7 UNCHANGED
    conn.execute("UPDATE items SET id = 107 WHERE id = 7")  # key change, TOASTed note unchanged
    conn.execute("DELETE FROM items WHERE id IN (2, 20)")


def catch_up(engine):
    batches = 0
    while True:
        outcome = engine.run_batch(max_changes=5)
        batches += 1
        if outcome.caught_up:
            return batches


def destination_rows(writer):
    conn = writer._connection()
    return conn.execute("SELECT id, qty, note, CAST(doc AS VARCHAR), tags FROM items ORDER BY id").fetchall()


def source_rows(conn):
    return [
        (i, q, n, d.replace(" ", ""), t)
        for i, q, n, d, t in conn.execute("SELECT id, qty, note, doc::text, tags FROM items ORDER BY id")
    ]


def normal(rows):
    return [(i, q, n, d.replace(" ", ""), t) for i, q, n, d, t in rows]


@pytest.mark.parametrize("read_path", ["stream", "peek"])
def test_both_read_paths_catch_up_in_several_batches_to_the_same_rows(
    source, source_database, tmp_path, read_path
):
    db, writer, engine = make_engine(source_database, tmp_path, read_path)
    try:
        workload(source)
        assert catch_up(engine) > 3
        assert normal(destination_rows(writer)) == source_rows(source)
        state = db.slot_state(engine.slot)
        assert state.confirmed_flush_lsn >= writer.read_checkpoint("p")
    finally:
        db.close()
        writer.close()


def test_a_batch_that_fails_after_its_read_is_read_again_by_the_same_engine(
    source, source_database, tmp_path
):
    db, writer, engine = make_engine(source_database, tmp_path)
    try:
        workload(source)
        engine.run_batch(max_changes=5)  # the stream is open now, positioned after the first batch

        def fail(batch):
            raise RuntimeError("crash after the destination commit, before the slot moved")

        engine.after_apply = fail
        with pytest.raises(RuntimeError):
            engine.run_batch(max_changes=5)
        engine.after_apply = None
        replay = engine.run_batch(max_changes=5)  # read again from the slot; the destination has it already
        assert replay.skipped_transactions > 0

        def fail_before_commit():
            raise RuntimeError("crash before the destination commit")

        writer.before_commit_hook = fail_before_commit
        with pytest.raises(RuntimeError):
            engine.run_batch(max_changes=5)
        writer.before_commit_hook = None
        catch_up(engine)
        assert normal(destination_rows(writer)) == source_rows(source)
    finally:
        db.close()
        writer.close()


def test_the_slot_is_free_as_soon_as_the_run_ends(source, source_database, tmp_path):
    db, writer, engine = make_engine(source_database, tmp_path)
    workload(source)
    engine.run_batch(max_changes=5)
    assert db.streaming(engine.slot)
    db.close()
    writer.close()
    with SourceDatabase(source_database) as other:
        assert other.drop_slot(engine.slot)  # not "in use"
