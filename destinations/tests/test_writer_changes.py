"""What every writer does with a Batch, checked on a real PostgreSQL database and a
real DuckDB file (the `target` fixture runs each test against both)."""

import json

import pytest

from engine.batch import UNCHANGED, Column, Relation
from engine.writers.base import IncompatibleSchemaChange

from .batches import make_batch, table_changes

INT8, INT4, TEXT = 20, 23, 25


def items_relation(*extra: Column) -> Relation:
    return Relation(
        oid=5001,
        schema="public",
        name="items",
        columns=[Column("id", INT8, -1, True), Column("name", TEXT), Column("body", TEXT), *extra],
    )


def upsert(rows: list[dict], lsn: int) -> dict:
    return {(row["id"],): (row, lsn) for row in rows}


def apply(
    target, relation, end_lsn, upserts=None, deletes=None, truncated=False, soft_delete=False, fresh=()
):
    batch = make_batch(
        table_changes(relation, upserts=upserts, deletes=deletes, truncated=truncated, fresh=fresh),
        end_lsn=end_lsn,
    )
    return target.writer.apply_batch("pipeline-1", batch, soft_delete=soft_delete)


def items(target, columns="id, name, body"):
    return target.rows(f"SELECT {columns} FROM {target.table('items')} ORDER BY id")


def test_inserts_updates_and_deletes_land_with_the_commit_lsn(target):
    relation = items_relation()
    result = apply(
        target,
        relation,
        end_lsn=120,
        upserts=upsert(
            [
                {"id": 1, "name": "one", "body": "a"},
                {"id": 2, "name": "two", "body": "b"},
                {"id": 3, "name": "x"},
            ],
            lsn=100,
        ),
    )
    assert (result.inserted, result.updated, result.deleted) == (3, 0, 0)

    result = apply(
        target,
        relation,
        end_lsn=220,
        upserts=upsert(
            [{"id": 2, "name": "TWO", "body": "B"}, {"id": 4, "name": "four", "body": "d"}], lsn=200
        ),
        deletes={(1,): 210},
    )
    assert (result.inserted, result.updated, result.deleted) == (1, 1, 1)
    assert items(target, "id, name, body, _rosetta_lsn") == [
        (2, "TWO", "B", 200),
        (3, "x", None, 100),  # a column missing from the row dict is NULL
        (4, "four", "d", 200),
    ]
    assert target.rows(f"SELECT count(*) FROM {target.table('items')} WHERE _rosetta_synced_at IS NULL") == [
        (0,)
    ]
    assert target.writer.read_checkpoint("pipeline-1") == 220
    assert target.writer.read_checkpoint("another-pipeline") == 0


def test_the_latest_batch_wins_for_a_key_deleted_and_inserted_again(target):
    relation = items_relation()
    apply(target, relation, end_lsn=10, upserts=upsert([{"id": 1, "name": "first", "body": "a"}], lsn=10))
    apply(target, relation, end_lsn=20, deletes={(1,): 20})
    apply(target, relation, end_lsn=30, upserts=upsert([{"id": 1, "name": "again", "body": "c"}], lsn=30))
    assert items(target, "id, name, body, _rosetta_lsn") == [(1, "again", "c", 30)]


def test_an_unchanged_toasted_value_keeps_what_the_destination_has(target):
    relation = items_relation()
    big = "x" * 100_000
    apply(
        target,
        relation,
        end_lsn=10,
        upserts=upsert(
            [{"id": 1, "name": "one", "body": big}, {"id": 2, "name": "two", "body": big + "2"}], lsn=10
        ),
    )
    result = apply(
        target,
        relation,
        end_lsn=20,
        upserts=upsert(
            [
                {"id": 1, "name": "renamed", "body": UNCHANGED},
                {"id": 2, "name": "also", "body": "small now"},
                {"id": 3, "name": "never seen", "body": UNCHANGED},
            ],
            lsn=20,
        ),
    )
    assert items(target) == [(1, "renamed", big), (2, "also", "small now"), (3, "never seen", None)]
    assert (result.inserted, result.updated) == (1, 2)
    [note] = result.notes
    assert "1 row(s) of public.items" in note and "body" in note and "NULL" in note


def test_truncate_empties_the_table_before_the_batch_upserts(target):
    relation = items_relation()
    apply(
        target, relation, end_lsn=10, upserts=upsert([{"id": n, "name": str(n)} for n in range(1, 6)], lsn=10)
    )
    result = apply(
        target, relation, end_lsn=20, truncated=True, upserts=upsert([{"id": 9, "name": "after"}], lsn=20)
    )
    assert items(target, "id, name") == [(9, "after")]
    assert any("truncated" in note for note in result.notes)


def test_soft_delete_keeps_the_row_marked_and_an_upsert_revives_it(target):
    relation = items_relation()
    apply(
        target,
        relation,
        end_lsn=10,
        upserts=upsert([{"id": 1, "name": "one"}, {"id": 2, "name": "two"}], lsn=10),
    )
    result = apply(target, relation, end_lsn=20, deletes={(1,): 20}, soft_delete=True)
    assert result.deleted == 1
    assert items(target, "id, name, _rosetta_deleted_at IS NOT NULL, _rosetta_lsn") == [
        (1, "one", True, 20),
        (2, "two", False, 10),
    ]

    apply(target, relation, end_lsn=30, upserts=upsert([{"id": 1, "name": "back"}], lsn=30), soft_delete=True)
    assert items(target, "id, name, _rosetta_deleted_at IS NOT NULL") == [
        (1, "back", False),
        (2, "two", False),
    ]

    apply(target, relation, end_lsn=40, truncated=True, soft_delete=True)
    assert items(target, "id, _rosetta_deleted_at IS NOT NULL") == [(1, True), (2, True)]


def test_rows_first_inserted_in_a_batch_land_beside_its_updates_and_deletes(target, caplog):
    """Keys the fold saw inserted first (TableChanges.fresh) skip the merge's conflict check
    where the writer can: the rows, counts, LSNs and checkpoint are as for any other."""
    caplog.set_level("INFO", logger="engine.writers.postgres")
    relation = items_relation()
    apply(
        target, relation, end_lsn=10, upserts=upsert([{"id": 1, "name": "one"}, {"id": 2, "name": "two"}], 10)
    )
    result = apply(
        target,
        relation,
        end_lsn=30,
        upserts={
            **upsert([{"id": 2, "name": "TWO"}], lsn=20),
            **upsert([{"id": n, "name": f"new {n}", "body": "x"} for n in (3, 4, 5)], lsn=30),
            **upsert([{"id": 6, "name": "with a big value", "body": UNCHANGED}], lsn=30),
        },
        deletes={(1,): 20, (7,): 30},  # 7: inserted and deleted again in the batch
        fresh=[(3,), (4,), (5,), (7,)],  # not 6: a row with an UNCHANGED value is never fresh
    )
    assert (result.inserted, result.updated, result.deleted) == (4, 1, 1)
    assert items(target, "id, name, body, _rosetta_lsn, _rosetta_synced_at IS NOT NULL") == [
        (2, "TWO", None, 20, True),
        (3, "new 3", "x", 30, True),
        (4, "new 4", "x", 30, True),
        (5, "new 5", "x", 30, True),
        (6, "with a big value", None, 30, True),
    ]
    assert target.writer.read_checkpoint("pipeline-1") == 30
    assert "merging instead" not in caplog.text


def test_a_row_first_inserted_in_a_batch_whose_key_the_destination_holds_is_merged(target, caplog):
    caplog.set_level("INFO", logger="engine.writers.postgres")
    """The destination may hold more than the checkpoint says: a soft-deleted row, a row
    written by hand. A fresh key found there is merged like any other (PostgreSQL: the
    batch's transaction rolled back and the batch applied again, merged), and nothing of
    the batch is lost."""
    relation = items_relation()
    apply(
        target, relation, end_lsn=10, upserts=upsert([{"id": 1, "name": "one"}, {"id": 2, "name": "two"}], 10)
    )
    apply(target, relation, end_lsn=20, deletes={(1,): 20}, soft_delete=True)
    result = apply(
        target,
        relation,
        end_lsn=30,
        upserts=upsert([{"id": 1, "name": "back"}, {"id": 3, "name": "three"}], lsn=30),
        deletes={(2,): 30},
        fresh=[(1,), (3,)],
        soft_delete=True,
    )
    assert (result.inserted, result.updated, result.deleted) == (1, 1, 1)
    if target.kind == "postgres":  # it tried the COPY straight into the table first
        assert "is already in analytics.items: merging instead" in caplog.text
    assert items(target, "id, name, _rosetta_deleted_at IS NOT NULL, _rosetta_lsn") == [
        (1, "back", False, 30),
        (2, "two", True, 30),
        (3, "three", False, 30),
    ]
    assert target.writer.read_checkpoint("pipeline-1") == 30


def test_a_column_added_on_the_source_is_added_with_its_values(target):
    apply(target, items_relation(), end_lsn=10, upserts=upsert([{"id": 1, "name": "one"}], lsn=10))
    widened = items_relation(Column("price", 1700, (12 << 16 | 2) + 4))
    from decimal import Decimal

    result = apply(
        target,
        widened,
        end_lsn=20,
        upserts=upsert([{"id": 2, "name": "two", "price": Decimal("9.50")}], lsn=20),
    )
    assert items(target, "id, name, price") == [(1, "one", None), (2, "two", Decimal("9.50"))]
    assert any("price" in note and "added" in note for note in result.notes)


def test_a_column_dropped_on_the_source_stays_and_is_noted_once(target):
    apply(
        target,
        items_relation(),
        end_lsn=10,
        upserts=upsert([{"id": 1, "name": "one", "body": "kept"}], lsn=10),
    )
    narrower = Relation(5001, "public", "items", [Column("id", INT8, -1, True), Column("name", TEXT)])
    result = apply(target, narrower, end_lsn=20, upserts=upsert([{"id": 2, "name": "two"}], lsn=20))
    assert items(target) == [(1, "one", "kept"), (2, "two", None)]
    [note] = result.notes
    assert "body" in note and "no longer" in note

    target.writer.close()  # a new run, a new writer: the note is not repeated
    result = apply(target, narrower, end_lsn=30, upserts=upsert([{"id": 3, "name": "three"}], lsn=30))
    assert result.notes == []


def test_a_widening_type_change_is_applied(target):
    relation = Relation(1, "public", "counts", [Column("id", INT4, -1, True), Column("hits", INT4)])
    apply(target, relation, end_lsn=10, upserts=upsert([{"id": 1, "hits": 5}], lsn=10))
    wider = Relation(1, "public", "counts", [Column("id", INT8, -1, True), Column("hits", INT8)])
    apply(target, wider, end_lsn=20, upserts=upsert([{"id": 2, "hits": 2**40}], lsn=20))
    assert target.rows(f"SELECT id, hits FROM {target.table('counts')} ORDER BY id") == [(1, 5), (2, 2**40)]


def test_an_incompatible_type_change_fails_naming_the_column_and_what_to_do(target):
    relation = Relation(1, "public", "events", [Column("id", INT8, -1, True), Column("payload", TEXT)])
    apply(target, relation, end_lsn=10, upserts=upsert([{"id": 1, "payload": "hello"}], lsn=10))
    changed = Relation(1, "public", "events", [Column("id", INT8, -1, True), Column("payload", 3802)])
    with pytest.raises(IncompatibleSchemaChange) as error:
        apply(target, changed, end_lsn=20, upserts=upsert([{"id": 2, "payload": {"a": 1}}], lsn=20))
    message = str(error.value)
    assert "payload" in message and "public.events" in message and "refresh the table" in message
    old, new = ("text", "jsonb") if target.kind == "postgres" else ("VARCHAR", "JSON")
    assert f"from {old} to {new}" in message or (old in message and new in message)
    assert target.writer.read_checkpoint("pipeline-1") == 10
    assert target.rows(f"SELECT id, payload FROM {target.table('events')}") == [(1, "hello")]


def test_a_replayed_batch_changes_nothing(target):
    relation = items_relation()
    apply(target, relation, end_lsn=100, upserts=upsert([{"id": 1, "name": "current"}], lsn=100))
    result = apply(target, relation, end_lsn=100, upserts=upsert([{"id": 1, "name": "stale"}], lsn=90))
    result_older = apply(target, relation, end_lsn=50, deletes={(1,): 50})
    assert items(target, "id, name, _rosetta_lsn") == [(1, "current", 100)]
    assert (result.inserted, result.updated, result.deleted) == (0, 0, 0)
    assert "already applied" in result.notes[0] and "already applied" in result_older.notes[0]
    assert target.writer.read_checkpoint("pipeline-1") == 100


def test_a_batch_without_our_tables_still_moves_the_checkpoint(target):
    target.writer.apply_batch("pipeline-1", make_batch(end_lsn=500))
    assert target.writer.read_checkpoint("pipeline-1") == 500


def test_a_failure_before_commit_leaves_rows_and_checkpoint_as_they_were(target):
    relation = items_relation()
    other = Relation(2, "public", "other", [Column("id", INT8, -1, True)])
    apply(target, relation, end_lsn=10, upserts=upsert([{"id": 1, "name": "one"}], lsn=10))

    def crash():
        raise RuntimeError("worker killed")

    target.writer.before_commit_hook = crash
    batch = make_batch(
        table_changes(relation, upserts=upsert([{"id": 1, "name": "changed"}, {"id": 2, "name": "new"}], 20)),
        table_changes(other, upserts=upsert([{"id": 7}], 20)),
        end_lsn=20,
    )
    with pytest.raises(RuntimeError):
        target.writer.apply_batch("pipeline-1", batch)
    assert items(target, "id, name") == [(1, "one")]
    assert target.rows("SELECT count(*) FROM information_schema.tables WHERE table_name = 'other'") == [(0,)]
    assert target.writer.read_checkpoint("pipeline-1") == 10

    target.writer.before_commit_hook = None  # the rerun applies it whole
    target.writer.apply_batch("pipeline-1", batch)
    assert items(target, "id, name") == [(1, "changed"), (2, "new")]
    assert target.writer.read_checkpoint("pipeline-1") == 20


def test_a_table_without_a_key_is_refused_with_a_readable_message(target):
    keyless = Relation(3, "public", "logs", [Column("line", TEXT)])
    with pytest.raises(IncompatibleSchemaChange, match="no primary key"):
        apply(target, keyless, end_lsn=10, upserts={("a",): ({"line": "a"}, 10)})


def test_align_table_renders_the_planned_changes_with_the_values_existing_rows_got(target):
    from engine.batch import ColumnFill

    apply(
        target, items_relation(), end_lsn=10, upserts=upsert([{"id": 1, "name": "one", "body": "b"}], lsn=10)
    )
    assert target.writer.align_table(items_relation(), "missing_table").notes == []  # left to its snapshot
    added = items_relation(Column("score", INT4), Column("tags", 1009), Column("plain", TEXT))
    alignment = target.writer.align_table(
        added, "items", {"score": ColumnFill("7"), "tags": ColumnFill('{a,"b c"}')}
    )
    assert alignment.recopy is None
    assert items(target, "id, score, tags, plain") == [(1, 7, ["a", "b c"], None)]
    assert any("score" in note and "set to 7" in note for note in alignment.notes)

    narrower = Relation(5001, "public", "items", [Column("id", INT8, -1, True), Column("name", TEXT)])
    alignment = target.writer.align_table(narrower, "items")
    assert sorted(n.split()[1] for n in alignment.notes) == ["body", "plain", "score", "tags"]
    assert target.writer.align_table(narrower, "items").notes == []  # noted once

    back = Relation(5001, "public", "items", [*narrower.columns, Column("score", INT4), Column("tags", 3802)])
    alignment = target.writer.align_table(
        back, "items", {"score": ColumnFill("0"), "tags": ColumnFill('{"k": 1}')}
    )
    [(id_, score, tags, body)] = items(target, "id, score, tags, body")
    assert (id_, score, json.loads(tags) if isinstance(tags, str) else tags, body) == (1, 0, {"k": 1}, "b")
    assert sum("is back in public.items" in note for note in alignment.notes) == 2


def test_a_column_whose_rows_each_got_their_own_value_asks_for_a_copy(target):
    from engine.batch import ColumnFill

    apply(target, items_relation(), end_lsn=10, upserts=upsert([{"id": 1, "name": "one"}], lsn=10))
    alignment = target.writer.align_table(
        items_relation(Column("made", 1184)), "items", {"made": ColumnFill(per_row=True)}
    )
    assert "made" in alignment.recopy and "copied again" in alignment.recopy


def test_a_key_change_is_refused_by_the_writer_naming_the_table_and_the_fix(target):
    relation = Relation(1, "public", "t", [Column("id", INT4, -1, True), Column("code", TEXT)])
    apply(target, relation, end_lsn=5, upserts={(1,): ({"id": 1, "code": "a"}, 5)})
    rekeyed = Relation(1, "public", "t", [Column("id", INT4), Column("code", TEXT, -1, True)])
    with pytest.raises(
        IncompatibleSchemaChange, match=r"primary key of public\.t is now \(code\).*refresh the table"
    ):
        apply(target, rekeyed, end_lsn=6, upserts={("b",): ({"id": 2, "code": "b"}, 6)})
    with pytest.raises(IncompatibleSchemaChange, match=r"primary key of public\.t"):
        target.writer.align_table(rekeyed, "t")
    assert target.writer.read_checkpoint("pipeline-1") == 5


def source_numbers(target, table: str) -> dict:
    """{column: source column number} as the destination's column comments record it."""
    from engine.writers.schema_changes import source_number

    if target.kind == "postgres":
        query = (
            "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
        )
        rows = target.rows(query, [target.table(table)])
    else:
        rows = target.rows("SELECT column_name, comment FROM duckdb_columns() WHERE table_name = ?", [table])
    return {name: source_number(comment) for name, comment in rows if source_number(comment) is not None}


def test_each_column_records_the_source_column_it_holds_and_a_new_one_of_the_same_name_asks_for_a_copy(
    target,
):
    numbered = Relation(
        5001, "public", "items", [Column("id", INT8, -1, True, 1), Column("name", TEXT, number=2)]
    )
    target.writer.load_snapshot(numbered, "items", iter([]), 10)
    assert source_numbers(target, "items") == {"id": 1, "name": 2}

    added = Relation(5001, "public", "items", [*numbered.columns, Column("score", INT4, number=3)])
    alignment = target.writer.align_table(added, "items")
    assert alignment.recopy is None and source_numbers(target, "items") == {"id": 1, "name": 2, "score": 3}

    # name dropped and added again on the source: same name and type, a new number
    replaced = Relation(
        5001, "public", "items", [added.columns[0], added.columns[2], Column("name", TEXT, number=4)]
    )
    alignment = target.writer.align_table(replaced, "items")
    assert alignment.replaced == ["name"] and "dropped and added again" in alignment.recopy
    assert source_numbers(target, "items")["name"] == 2  # recorded by the copy, not before
    target.writer.load_snapshot(replaced, "items", iter([]), 20)
    assert source_numbers(target, "items") == {"id": 1, "score": 3, "name": 4}
    assert target.writer.align_table(replaced, "items").recopy is None
