"""Writer.prepare_batch: the work a run's reading thread does on a part ahead of its apply
(the PostgreSQL writer's binary COPYs are tested in test_writer_binary_copy.py). A part
applied after prepare_batch must store what it stores without."""

import duckdb
import pytest

from engine.batch import UNCHANGED
from engine.writers import duckdb as duckdb_writer
from engine.writers.duckdb import DuckDBWriter

from .batches import make_batch, relation_of, table_changes


@pytest.fixture
def relation(source_conn):
    source_conn.execute(
        "CREATE TABLE public.items (id int PRIMARY KEY, amount numeric(12,2), note text, tags int[], "
        "details jsonb, seen timestamptz)"
    )
    return relation_of(source_conn, "public", "items")


def part(relation, target: str, first: int, count: int, lsn: int, unchanged_every: int = 0):
    upserts = {}
    for n in range(first, first + count):
        row = {
            "id": str(n),
            "amount": f"{n}.25",
            "note": None if n % 5 == 0 else f"note {n}, é\ttab",
            "tags": "{1,NULL,3}" if n % 2 else None,
            "details": f'{{"n": {n}, "tags": ["a", "b"]}}',
            "seen": f"2024-02-29 13:14:{n % 60:02d}.123456+00",
        }
        if unchanged_every and n % unchanged_every == 0:
            row["details"] = UNCHANGED
        upserts[(str(n),)] = (row, lsn + n)
    changes = table_changes(relation, upserts=upserts, target_table=target, text_values=True)
    return make_batch(changes, end_lsn=lsn + first + count)


def stored(path, schema: str, target: str) -> list[tuple]:
    with duckdb.connect(path, read_only=True) as conn:
        return conn.execute(
            f'SELECT id, amount, note, tags, details, seen, _rosetta_lsn FROM "{schema}"."{target}" ORDER BY id'
        ).fetchall()


@pytest.mark.parametrize("unchanged_every", [0, 4])
def test_a_duckdb_part_prepared_ahead_stores_what_it_stores_unprepared(
    tmp_path, relation, unchanged_every, monkeypatch
):
    """And the apply makes string arrays only where prepare_batch left them to it: the
    int[] column, and the columns of rows with an unchanged value."""
    made = []
    text_column = duckdb_writer.arrow_text_column

    def recorded(values, duck_type, type_oid):
        made.append(duck_type)
        return text_column(values, duck_type, type_oid)

    monkeypatch.setattr(duckdb_writer, "arrow_text_column", recorded)
    path = str(tmp_path / "w.duckdb")
    writer = DuckDBWriter({"path": path})
    try:
        for target, prepare in [("ahead", True), ("plain", False)]:
            writer.apply_batch(target, part(relation, target, 0, 30, lsn=1000))
            later = part(relation, target, 20, 40, lsn=2000, unchanged_every=unchanged_every)
            if prepare:
                writer.prepare_batch(later)
                (changes,) = later.tables.values()
                assert changes.prepared is not None
                # the int[] column is left to the apply, which knows the target's type
                assert [array is None for array in changes.prepared.arrays] == [
                    column.name == "tags" for column in relation.columns
                ]
                made.clear()
            writer.apply_batch(target, later)
            if prepare:
                # the group without unchanged values: its int[] column only; with unchanged
                # values, a second group of the five other columns
                assert made == ["INTEGER[]"] + (
                    ["INTEGER", "DECIMAL(12,2)", "VARCHAR", "INTEGER[]", "TIMESTAMP WITH TIME ZONE"]
                    if unchanged_every
                    else []
                )
    finally:
        writer.close()
    ahead, plain = stored(path, writer.schema, "ahead"), stored(path, writer.schema, "plain")
    assert ahead == plain
    assert len(ahead) == 60
    assert [str(value) for value in ahead[59][1:4]] == ["59.25", "note 59, é\ttab", "[1, None, 3]"]
