"""The PostgreSQL writer on rows the fold kept as pgoutput's bytes (BatchBuilder.wire_rows,
engine/_fastfold.pyx WireRow): folded from a real slot's bytes, applied, and compared with
the source, on every way a part's rows can go: the prepared binary COPY that reads them
where they are, and each way that makes them into dicts first."""

import psycopg
import pytest

from engine.fold import BatchBuilder, TableSpec, _fastfold
from pipelines.tests.test_pgoutput import peek

pytestmark = pytest.mark.skipif(
    _fastfold is None, reason="engine/_fastfold is not built (scripts/build_fastfold.sh builds it)"
)

SPEC = TableSpec("public", "items", "items")
COLUMNS = "id, v, at::text, n::text"  # as text: infinity and NaN read back too


@pytest.fixture
def source(source_conn):
    source_conn.execute("SET synchronous_commit = on")  # a change is decoded once flushed
    source_conn.execute("CREATE TABLE public.items (id int PRIMARY KEY, v text, at timestamptz, n numeric)")
    source_conn.execute("CREATE PUBLICATION p FOR TABLE public.items")
    source_conn.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
    yield source_conn
    source_conn.execute("SELECT pg_drop_replication_slot('s')")


@pytest.fixture
def writer(pg_writer):
    pg_writer.binary_copy_min_rows = 0  # the binary COPY, as a run's parts of thousands of rows take
    return pg_writer


def fold(source, checkpoint: int = 0):
    """The slot's changes since the last call, folded as a run folds them for this writer."""
    builder = BatchBuilder(checkpoint, {SPEC.key: SPEC}, text_values=True, wire_rows=True)
    for data in peek(source):
        builder.feed(data)
    return builder.finish()


def kept_as_bytes(batch) -> int:
    return sum(type(row) is _fastfold.WireRow for row, _ in batch.tables[SPEC.key].upserts.values())


def assert_same_rows(source, pg_reader):
    query = f"SELECT {COLUMNS} FROM {{}} ORDER BY id"
    assert (
        pg_reader.execute(query.format("analytics.items")).fetchall()
        == source.execute(query.format("public.items")).fetchall()
    )


def test_rows_kept_as_bytes_go_by_the_prepared_copy_as_they_are(source, writer, pg_reader):
    source.execute(
        "INSERT INTO items SELECT g, 'item ' || g || ' é', '2026-01-01'::timestamptz + g * interval '1 hour', "
        "g / 7.0 FROM generate_series(1, 50) g"
    )
    source.execute("INSERT INTO items VALUES (51, NULL, NULL, NULL)")
    batch = fold(source)
    assert kept_as_bytes(batch) == 51
    writer.prepare_batch(batch)
    assert kept_as_bytes(batch) == 51  # the payload was made from them: nothing else reads them
    writer.apply_batch("p1", batch)
    assert_same_rows(source, pg_reader)

    source.execute("UPDATE items SET v = v || ' again', n = n * 2 WHERE id <= 30")
    source.execute("DELETE FROM items WHERE id > 45")
    batch = fold(source)
    writer.prepare_batch(batch)
    assert kept_as_bytes(batch) == 30  # the merge's payload too
    writer.apply_batch("p1", batch)
    assert_same_rows(source, pg_reader)


def test_a_value_the_binary_copy_does_not_take_has_the_rows_made_into_dicts(source, writer, pg_reader):
    source.execute("INSERT INTO items SELECT g, 'x', now(), g FROM generate_series(1, 20) g")
    source.execute("INSERT INTO items VALUES (21, 'y', 'infinity', 'NaN')")  # sent as text
    batch = fold(source)
    writer.prepare_batch(batch)
    assert kept_as_bytes(batch) == 0
    writer.apply_batch("p1", batch)
    assert_same_rows(source, pg_reader)


def test_a_part_applied_without_being_prepared_has_its_rows_made_into_dicts(source, writer, pg_reader):
    """As the peek read path applies its batches."""
    source.execute("INSERT INTO items SELECT g, 'x' || g, now(), g FROM generate_series(1, 20) g")
    writer.apply_batch("p1", fold(source))
    assert_same_rows(source, pg_reader)


def test_a_target_type_changed_after_the_payload_was_made_takes_the_rows_as_dicts(
    source, writer, pg_reader, pg_destination
):
    source.execute("INSERT INTO items SELECT g, 'x' || g, now(), g FROM generate_series(1, 20) g")
    writer.apply_batch("p1", fold(source))
    source.execute("INSERT INTO items SELECT g, 'y' || g, now(), g FROM generate_series(21, 40) g")
    batch = fold(source)
    writer.prepare_batch(batch)
    assert kept_as_bytes(batch) == 20
    pg_reader.execute(
        "ALTER TABLE analytics.items ALTER n TYPE float8"
    )  # the payload's numeric no longer fits
    writer.apply_batch("p1", batch)
    assert kept_as_bytes(batch) == 0
    assert pg_reader.execute("SELECT count(*), sum(n) FROM analytics.items").fetchone() == (40, 820.0)


def test_a_fresh_key_found_in_the_target_is_merged_from_the_rows_dicts(source, writer, pg_reader):
    source.execute("INSERT INTO items SELECT g, 'x' || g, now(), g FROM generate_series(1, 5) g")
    writer.apply_batch("p1", fold(source))
    source.execute("INSERT INTO items SELECT g, 'y' || g, now(), g FROM generate_series(6, 25) g")
    batch = fold(source)
    writer.prepare_batch(batch)
    with psycopg.connect(pg_reader.info.dsn, autocommit=True) as by_hand:
        by_hand.execute("INSERT INTO analytics.items (id, v) VALUES (10, 'written by hand')")
    writer.apply_batch("p1", batch)
    assert_same_rows(source, pg_reader)
