"""The Snowflake writer against fakesnow (gaps filled in fakesnow_support.py), with
snapshots streamed by a real PostgreSQL COPY and every change mirrored on that
real source, so "Snowflake equals the source" is checked against PostgreSQL itself."""

import datetime
import re
import uuid
from decimal import Decimal

import pytest
import sqlglot
from sqlglot import exp

from engine.batch import UNCHANGED, Column, Relation
from engine.writers.base import IncompatibleSchemaChange, UnstorableValue
from engine.writers.snowflake import SnowflakeWriter, snowflake_type

from .batches import cdc_row, copy_chunks, make_batch, make_everything_table, relation_of, table_changes
from .fakesnow_support import fake_snowflake, read_table, snowflake_settings

UTC = datetime.UTC
BIG = "x" * 300_000  # TOASTed on the source, sent as 'u' when an update leaves it alone
VARIANTS = ("tags", "payload")

ORDERS_DDL = """
CREATE TABLE "Orders" (
    id bigint PRIMARY KEY,
    "order" text,
    "Amount" numeric(12, 2),
    tags text[],
    payload jsonb,
    placed_at timestamptz,
    local_ts timestamp,
    day date,
    paid boolean,
    blob bytea,
    ref uuid,
    n integer,
    ratio double precision,
    note text
)
"""
ORDERS_INSERT = """
INSERT INTO "Orders" VALUES (%(id)s, %(order)s, %(Amount)s, %(tags)s, %(payload)s, %(placed_at)s,
    %(local_ts)s, %(day)s, %(paid)s, %(blob)s, %(ref)s, %(n)s, %(ratio)s, %(note)s)
"""


def order(id, **values):
    row = {
        "id": id,
        "order": f"order {id}",
        "Amount": Decimal("12.50") + id,
        "tags": ["a", None, 'b "quoted", with comma'],
        "payload": {"items": [1, 2.5, "x"], "nested": {"ok": True}},
        "placed_at": datetime.datetime(2024, 5, 1, 10, 30, 15, 123456, tzinfo=UTC),
        "local_ts": datetime.datetime(2024, 5, 1, 12, 0, 0, 500000),
        "day": datetime.date(2024, 5, id),
        "paid": id % 2 == 0,
        "blob": bytes([0, 1, 2, 255]),
        "ref": uuid.UUID(int=id),
        "n": id * 10,
        "ratio": 0.1 * id,
        "note": f'note {id}\nwith a newline, a \\backslash and "quotes"',
    }
    row.update(values)
    return row


def as_source_params(row):
    from psycopg.types.json import Jsonb

    return {**row, "payload": Jsonb(row["payload"]) if row["payload"] is not None else None}


def normalized(row: dict, drop=("_rosetta_lsn", "_rosetta_synced_at", "_rosetta_deleted_at")) -> dict:
    """Values compared across PostgreSQL and Snowflake: uuid as text, bytes as bytes."""
    out = {}
    for name, value in row.items():
        if name in drop:
            continue
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        out[name] = value
    return out


def source_rows(source_conn, table, order_by):
    cursor = source_conn.execute(f"SELECT * FROM {table} ORDER BY {order_by}")
    names = [d.name for d in cursor.description]
    return [normalized(dict(zip(names, values, strict=True))) for values in cursor.fetchall()]


def snowflake_rows(analyst, table, order_by):
    return [normalized(row) for row in read_table(analyst, table, order_by, VARIANTS)]


@pytest.fixture
def settings():
    return snowflake_settings()


@pytest.fixture
def analyst(settings):
    with fake_snowflake(settings) as conn:
        yield conn


@pytest.fixture
def writer(settings, analyst):
    writer = SnowflakeWriter(settings)
    yield writer
    writer.close()


@pytest.fixture
def orders(source_conn, writer):
    """A real source table "Orders" (mixed case, a reserved word as a column, a
    TOASTed column) with three rows, snapshotted into Snowflake at LSN 500."""
    source_conn.execute(ORDERS_DDL)
    source_conn.execute('ALTER TABLE "Orders" ALTER COLUMN note SET STORAGE EXTERNAL')
    for id in (1, 2, 3):
        source_conn.execute(ORDERS_INSERT, as_source_params(order(id, note=BIG if id == 1 else None)))
    relation = relation_of(source_conn, "public", "Orders")
    assert writer.load_snapshot(relation, "Orders", copy_chunks(source_conn, relation, writer), 500) == 3
    return relation


@pytest.fixture
def line_items(source_conn, writer):
    source_conn.execute(
        "CREATE TABLE line_items (order_id int, line smallint, qty int, PRIMARY KEY (order_id, line))"
    )
    source_conn.execute("INSERT INTO line_items VALUES (1, 1, 5), (1, 2, 7), (2, 1, 1)")
    relation = relation_of(source_conn, "public", "line_items")
    assert writer.load_snapshot(relation, "line_items", copy_chunks(source_conn, relation, writer), 500) == 3
    return relation


def assert_equal_to_source(source_conn, analyst):
    assert snowflake_rows(analyst, "Orders", '"id"') == source_rows(source_conn, '"Orders"', "id")
    assert snowflake_rows(analyst, "line_items", '"order_id", "line"') == source_rows(
        source_conn, "line_items", "order_id, line"
    )


def test_snapshot_then_changes_leave_snowflake_equal_to_the_source(
    source_conn, writer, analyst, orders, line_items
):
    assert_equal_to_source(source_conn, analyst)
    assert {r["_rosetta_lsn"] for r in read_table(analyst, "Orders", '"id"')} == {500}

    # Inserts, updates (one leaving the TOASTed note unchanged), a delete, a key change.
    new = order(4, tags=[], payload={"deep": [[1], {"a": None}]}, note="short")
    source_conn.execute(ORDERS_INSERT, as_source_params(new))
    source_conn.execute('UPDATE "Orders" SET "Amount" = 99.99, paid = true WHERE id = 1')
    changed_2 = order(2, order="renamed", tags=None, payload=None, blob=None, ratio=-1.5, note="now set")
    source_conn.execute(
        'UPDATE "Orders" SET "order" = %s, tags = NULL, payload = NULL, blob = NULL, ratio = %s, note = %s '
        "WHERE id = 2",
        ["renamed", -1.5, "now set"],
    )
    source_conn.execute('DELETE FROM "Orders" WHERE id = 3')
    source_conn.execute("UPDATE line_items SET line = 5 WHERE order_id = 1 AND line = 1")
    row_1 = order(1, Amount=Decimal("99.99"), paid=True, note=UNCHANGED)
    batch = make_batch(
        table_changes(
            orders,
            upserts={(4,): (new, 1010), (1,): (row_1, 1020), (2,): (changed_2, 1030)},
            deletes={(3,): 1040},
        ),
        table_changes(
            line_items, upserts={(1, 5): ({"order_id": 1, "line": 5, "qty": 5}, 1050)}, deletes={(1, 1): 1050}
        ),
        end_lsn=1060,
    )
    result = writer.apply_batch("pipeline-1", batch)
    assert (result.inserted, result.updated, result.deleted) == (2, 2, 2)
    assert_equal_to_source(source_conn, analyst)
    assert read_table(analyst, "Orders", '"id"')[0]["note"] == BIG
    assert writer.read_checkpoint("pipeline-1") == 1060
    assert {r["id"]: r["_rosetta_lsn"] for r in read_table(analyst, "Orders", '"id"')} == {
        1: 1020,
        2: 1030,
        4: 1010,
    }

    # A truncate followed by new rows in the same batch; the TOASTed value survives again.
    source_conn.execute("TRUNCATE line_items")
    source_conn.execute("INSERT INTO line_items VALUES (9, 1, 3)")
    source_conn.execute('UPDATE "Orders" SET n = 7 WHERE id = 1')
    batch = make_batch(
        table_changes(
            line_items, truncated=True, upserts={(9, 1): ({"order_id": 9, "line": 1, "qty": 3}, 1100)}
        ),
        table_changes(orders, upserts={(1,): ({**row_1, "n": 7}, 1100)}),
        end_lsn=1110,
    )
    result = writer.apply_batch("pipeline-1", batch)
    assert any("line_items was truncated" in note for note in result.notes)
    assert_equal_to_source(source_conn, analyst)

    # A column added on the source: added on the target, NULL for rows changed before it existed.
    source_conn.execute('ALTER TABLE "Orders" ADD COLUMN "Status" varchar(20)')
    source_conn.execute("""INSERT INTO "Orders" (id, "Status") VALUES (5, 'new')""")
    source_conn.execute('UPDATE "Orders" SET n = 8 WHERE id = 4')
    widened = relation_of(source_conn, "public", "Orders")
    row_5 = dict.fromkeys(widened.column_names) | {"id": 5, "Status": "new"}
    batch = make_batch(
        table_changes(widened, upserts={(5,): (row_5, 1200), (4,): ({**new, "n": 8}, 1190)}),
        end_lsn=1210,
    )
    result = writer.apply_batch("pipeline-1", batch)
    assert "Column Status (VARCHAR) added to RAW.Orders." in result.notes
    assert_equal_to_source(source_conn, analyst)


def test_a_replayed_batch_changes_nothing(source_conn, writer, analyst, orders):
    batch = make_batch(
        table_changes(orders, upserts={(7,): (order(7), 2000)}, deletes={(2,): 2000}),
        end_lsn=2010,
    )
    writer.apply_batch("p", batch)
    before = read_table(analyst, "Orders", '"id"', VARIANTS)

    replay = writer.apply_batch("p", batch)

    assert (replay.inserted, replay.updated, replay.deleted) == (0, 0, 0)
    assert replay.notes == ["Changes up to 0/7DA were already applied (checkpoint 0/7DA): nothing to do."]
    assert read_table(analyst, "Orders", '"id"', VARIANTS) == before  # _rosetta_synced_at included


class FailingBetweenMergeAndCheckpoint(SnowflakeWriter):
    def _write_checkpoint(self, pipeline_key, end_lsn, state=None):
        raise RuntimeError("worker killed after the MERGE")


@pytest.mark.parametrize("failure", ["between MERGE and checkpoint", "after checkpoint, before COMMIT"])
def test_a_failure_before_commit_leaves_the_batch_unapplied(
    source_conn, settings, writer, analyst, orders, failure
):
    writer.apply_batch("p", make_batch(table_changes(orders, deletes={(3,): 900}), end_lsn=910))
    before = read_table(analyst, "Orders", '"id"', VARIANTS)
    batch = make_batch(
        table_changes(
            orders,
            truncated=False,
            upserts={(8,): (order(8), 1000), (1,): (order(1, n=-1, note=UNCHANGED), 1000)},
            deletes={(2,): 1000},
        ),
        end_lsn=1010,
    )
    if failure == "between MERGE and checkpoint":
        failing = FailingBetweenMergeAndCheckpoint(settings)
    else:
        failing = SnowflakeWriter(settings)

        def killed():
            raise RuntimeError("killed before COMMIT")

        failing.before_commit_hook = killed
    with pytest.raises(RuntimeError, match="killed"):
        failing.apply_batch("p", batch)
    failing.close()

    assert read_table(analyst, "Orders", '"id"', VARIANTS) == before
    assert writer.read_checkpoint("p") == 910

    result = writer.apply_batch("p", batch)  # the rerun applies it whole
    assert (result.inserted, result.updated, result.deleted) == (1, 1, 1)
    assert [r["id"] for r in read_table(analyst, "Orders", '"id"')] == [1, 8]
    assert read_table(analyst, "Orders", '"id"')[0]["note"] == BIG


def test_soft_delete_keeps_deleted_rows_marked(source_conn, writer, analyst, orders):
    result = writer.apply_batch(
        "p",
        make_batch(table_changes(orders, deletes={(2,): 1000, (99,): 1000}), end_lsn=1010),
        soft_delete=True,
    )
    assert result.deleted == 1
    rows = {r["id"]: r for r in read_table(analyst, "Orders", '"id"')}
    assert rows[2]["_rosetta_deleted_at"] is not None and rows[2]["order"] == "order 2"
    assert rows[2]["_rosetta_lsn"] == 1000
    assert rows[1]["_rosetta_deleted_at"] is None

    # Coming back un-deletes it; a truncate marks every live row.
    writer.apply_batch(
        "p",
        make_batch(table_changes(orders, upserts={(2,): (order(2), 1100)}), end_lsn=1110),
        soft_delete=True,
    )
    assert read_table(analyst, "Orders", '"id"')[1]["_rosetta_deleted_at"] is None
    writer.apply_batch("p", make_batch(table_changes(orders, truncated=True), end_lsn=1210), soft_delete=True)
    rows = read_table(analyst, "Orders", '"id"')
    assert len(rows) == 3 and all(r["_rosetta_deleted_at"] is not None for r in rows)


def test_a_refresh_serves_the_old_copy_until_the_new_one_is_in(source_conn, writer, analyst, orders):
    source_conn.execute('DELETE FROM "Orders" WHERE id < 3')
    source_conn.execute(ORDERS_INSERT, as_source_params(order(10)))
    seen_during_load = []

    def chunks():
        for chunk in copy_chunks(source_conn, orders, writer):
            seen_during_load.append([r["id"] for r in read_table(analyst, "Orders", '"id"')])
            yield chunk

    assert writer.load_snapshot(orders, "Orders", chunks(), 3000) == 2

    assert seen_during_load and all(ids == [1, 2, 3] for ids in seen_during_load)
    assert snowflake_rows(analyst, "Orders", '"id"') == source_rows(source_conn, '"Orders"', "id")
    tables = analyst.cursor().execute("SELECT table_name FROM information_schema.tables").fetchall()
    assert not [name for (name,) in tables if name.startswith("_rosetta_new")]


def with_column(relation, column):
    changed = [column if c.name == column.name else c for c in relation.columns]
    return Relation(relation.oid, relation.schema, relation.name, changed)


def test_a_type_change_that_cannot_be_applied_names_the_column(source_conn, writer, analyst, orders):
    relation = with_column(orders, Column("n", 1700, ((12 << 16) | 2) + 4))  # integer -> numeric(12,2)
    batch = make_batch(table_changes(relation, upserts={(1,): (order(1, n="7.25"), 1000)}), end_lsn=1010)
    with pytest.raises(
        IncompatibleSchemaChange,
        match=r"Column n of public\.Orders .*from NUMBER\(10,0\) to NUMBER\(12,2\).*refresh the table public\.Orders",
    ):
        writer.apply_batch("p", batch)
    assert writer.read_checkpoint("p") == 0


def test_an_integer_column_that_becomes_text_is_rewritten_as_varchar_even_after_a_run_died_halfway(
    source_conn, writer, analyst, orders
):
    """Snowflake cannot ALTER a NUMBER into a VARCHAR: a new column takes the values' text and
    the old one's place, in DDL steps; a run that dies between two of them is finished by the next."""
    relation = with_column(orders, Column("n", 25))  # integer -> text
    batch = make_batch(table_changes(relation, upserts={(1,): (order(1, n="seven"), 1000)}), end_lsn=1010)
    run = writer._run

    def die_before_the_rename(statement, *args, **kwargs):
        if "RENAME COLUMN" in statement:
            raise RuntimeError("the worker died")
        return run(statement, *args, **kwargs)

    writer._run = die_before_the_rename
    with pytest.raises(RuntimeError):
        writer.apply_batch("p", batch)
    writer._run = run
    assert writer.read_checkpoint("p") == 0

    result = writer.apply_batch("p", batch)

    assert (
        "Column n of RAW.Orders: its rewrite as VARCHAR, interrupted in an earlier run, is finished."
        in result.notes
    )
    assert [(r["id"], r["n"]) for r in read_table(analyst, "Orders", '"id"')] == [
        (1, "seven"),
        (2, str(order(2)["n"])),
        (3, str(order(3)["n"])),
    ]
    columns = analyst.cursor().execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'Orders'"
    )
    types_now = dict(columns.fetchall())
    assert types_now["n"] == "TEXT" and not [c for c in types_now if c.startswith("_rosetta_widen")]
    assert writer.read_checkpoint("p") == 1010


def test_a_widened_integer_is_widened_and_a_dropped_column_is_kept(source_conn, writer, analyst, orders):
    source_conn.execute('ALTER TABLE "Orders" ALTER COLUMN n TYPE bigint, DROP COLUMN ratio')
    relation = relation_of(source_conn, "public", "Orders")
    big = 2**40
    batch = make_batch(
        table_changes(relation, upserts={(1,): ({**order(1, n=big, note=UNCHANGED)}, 1000)}), end_lsn=1010
    )
    result = writer.apply_batch("p", batch)
    assert "Column n of RAW.Orders widened from NUMBER(10,0) to NUMBER(19,0)." in result.notes
    assert any(note.startswith("Column ratio is no longer in public.Orders") for note in result.notes)
    rows = read_table(analyst, "Orders", '"id"')
    assert rows[0]["n"] == big and rows[0]["ratio"] == pytest.approx(0.1)

    again = writer.apply_batch("p", make_batch(table_changes(relation, deletes={(2,): 1100}), end_lsn=1110))
    assert not [note for note in again.notes if "ratio" in note]  # said once


def test_the_type_mapping():
    assert [snowflake_type(oid, mod) for oid, mod in [
        (20, -1), (21, -1), (23, -1), (1700, (12 << 16 | 2) + 4), (1700, -1), (1700, (50 << 16) + 4),
        (25, -1), (1043, 24), (16, -1), (1082, -1), (1114, -1), (1184, -1), (114, -1), (3802, -1),
        (1009, -1), (1007, -1), (17, -1), (2950, -1), (701, -1), (1083, -1), (1186, -1), (99999, -1),
    ]] == [
        "NUMBER(19,0)", "NUMBER(5,0)", "NUMBER(10,0)", "NUMBER(12,2)", "VARCHAR", "VARCHAR",
        "VARCHAR", "VARCHAR", "BOOLEAN", "DATE", "TIMESTAMP_NTZ(6)", "TIMESTAMP_TZ(6)", "VARIANT", "VARIANT",
        "VARIANT", "VARIANT", "BINARY", "VARCHAR", "FLOAT", "TIME(6)", "VARCHAR", "VARCHAR",
    ]  # fmt: skip


def test_snapshot_chunks_are_regrouped_on_record_boundaries_only(monkeypatch):
    import engine.writers.snowflake as module

    monkeypatch.setattr(module, "SNAPSHOT_FILE_BYTES", 10)
    rows = [b'1,"two\nlines, and a ""quote"""\n', b"2,plain\n", b'3,"x\n\ny"\n']
    stream = b"".join(rows)
    chunks = [stream[i : i + 3] for i in range(0, len(stream), 3)]  # cut anywhere, even inside quotes
    pieces = list(SnowflakeWriter._csv_pieces(chunks))
    assert b"".join(pieces) == stream
    assert pieces == rows


# -- the SQL sent, checked with sqlglot's Snowflake dialect ---------------------------


def rendered(statement: str, params) -> str:
    """The statement as the connector sends it (it interpolates pyformat parameters)."""
    for name, value in (params or {}).items():
        literal = str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"
        statement = statement.replace(f"%({name})s", literal)
    return statement


def test_the_sql_sent_is_snowflake_sql(source_conn, writer, analyst, orders, monkeypatch):
    sent = []
    run = writer._run
    monkeypatch.setattr(
        writer,
        "_run",
        lambda statement, params=None: sent.append((statement, params)) or run(statement, params),
    )

    writer.load_snapshot(orders, "Orders", copy_chunks(source_conn, orders, writer), 600)
    writer.apply_batch(
        "p",
        make_batch(
            table_changes(
                orders, truncated=True, upserts={(1,): (order(1, note=UNCHANGED), 700)}, deletes={(2,): 700}
            ),
            end_lsn=710,
        ),
        soft_delete=True,
    )
    writer.apply_batch(
        "p",
        make_batch(table_changes(orders, upserts={(4,): (order(4), 800)}, deletes={(1,): 800}), end_lsn=810),
    )

    parsed = []
    for statement, params in sent:
        if "information_schema" in statement:
            continue  # catalog lookups: Snowflake's own (unquoted) column names
        tree = sqlglot.parse_one(
            rendered(statement, params), read="snowflake", error_level=sqlglot.ErrorLevel.RAISE
        )
        assert not isinstance(tree, exp.Command), f"sqlglot did not understand: {statement}"
        parsed.append(tree)
        for column in tree.find_all(exp.Column):  # every name quoted: "Orders", "order", "Amount" survive
            if isinstance(column.this, exp.Identifier):
                assert column.this.quoted, f"unquoted column {column.sql('snowflake')} in {statement}"
        for table in tree.find_all(exp.Table):
            if isinstance(table.this, exp.Identifier) and table.name not in ("information_schema", "columns"):
                assert table.this.quoted or table.name.startswith("@"), f"unquoted table in {statement}"

    kinds = [type(tree).__name__ for tree in parsed]
    # Snowflake commits an open transaction on DDL (fakesnow in autocommit mode does not):
    # only DML may run between BEGIN and COMMIT.
    for begin in [i for i, kind in enumerate(kinds) if kind == "Transaction"]:
        commit = kinds.index("Commit", begin)
        assert set(kinds[begin + 1 : commit]) <= {"Merge", "Delete", "Update", "Select"}, kinds[begin:commit]
    merges = [tree for tree in parsed if isinstance(tree, exp.Merge) and tree.this.name == "Orders"]
    assert len(merges) == 2  # one per batch for the table
    assert any(isinstance(tree, exp.Copy) for tree in parsed) and any(
        isinstance(tree, exp.Put) for tree in parsed
    )
    # Bulk only: no INSERT ... VALUES anywhere.
    assert not [tree for tree in parsed if isinstance(tree, exp.Insert) and tree.find(exp.Values)]
    assert any(re.search(r"SWAP WITH", statement) for statement, _ in sent)


def test_snapshot_and_changes_store_every_value_the_same_way(source_conn, writer, analyst):
    relation = make_everything_table(source_conn)
    assert writer.load_snapshot(relation, "everything", copy_chunks(source_conn, relation, writer), 7) == 1
    changed = cdc_row(source_conn, relation, 1) | {"id": 2}
    writer.apply_batch("p", make_batch(table_changes(relation, upserts={(2,): (changed, 9)}), end_lsn=9))

    variants = ("doc", "raw_doc", "tags", "scores")
    snapshot_row, cdc_applied_row = read_table(analyst, "everything", '"id"', variants)
    assert (snapshot_row.pop("_rosetta_lsn"), cdc_applied_row.pop("_rosetta_lsn")) == (7, 9)
    for row in (snapshot_row, cdc_applied_row):
        del row["id"], row["_rosetta_synced_at"]
    assert snapshot_row == cdc_applied_row
    assert snapshot_row == {
        "small": -5,
        "big": 9007199254740993,
        "price": Decimal("12345.67"),
        "exact": "3.14159265358979323846264338327950288419",  # unconstrained numeric: exact text
        "ratio": 0.1,
        "flag": True,
        "label": "héllo",
        "code": "ab ",
        "body": 'line1\nline2, "quoted", \\ back',
        "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "day": datetime.date(2024, 2, 29),
        "at": datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
        "at_tz": datetime.datetime(2024, 2, 29, 11, 14, 15, 123456, tzinfo=UTC),
        "doc": {"a": [1, 2, {"b": None}], "c": "d"},
        "raw_doc": {"z": 1},
        "blob": b"\x00\xff\x10",
        "tags": ["a,b", None, 'c"d', ""],
        "scores": [1, None, 3],
        "mood": "sad",
        "span": "-1 days +02:00:00",
        "tm": datetime.time(10, 11, 12),
        "empty_text": "",
        "nothing": None,
        "_rosetta_deleted_at": None,
    }


def test_a_value_snowflake_cannot_hold_fails_the_batch_whole_in_plain_words(writer, analyst, orders):
    before = read_table(analyst, "Orders", '"id"', VARIANTS)
    batch = make_batch(
        table_changes(
            orders, upserts={(9,): (order(9), 1000), (1,): (order(1, Amount=Decimal("NaN")), 1000)}
        ),
        end_lsn=1010,
    )
    with pytest.raises(
        UnstorableValue,
        match=r"^public\.Orders: column Amount \(NUMBER\(12,2\)\) has the value 'NaN', which Snowflake "
        r"cannot store in RAW\.Orders; nothing of this batch was written",
    ):
        writer.apply_batch("p", batch)
    assert read_table(analyst, "Orders", '"id"', VARIANTS) == before
    assert writer.read_checkpoint("p") == 0


def test_each_column_records_the_source_column_it_holds_in_snowflake_sql(writer, analyst, monkeypatch):
    from engine.writers.schema_changes import source_number

    sent = []
    run = writer._run
    monkeypatch.setattr(writer, "_run", lambda s, p=None: sent.append(s) or run(s, p))
    numbered = Relation(7, "public", "t", [Column("id", 20, -1, True, 1), Column("qty", 23, number=2)])
    writer.load_snapshot(numbered, "t", iter([]), 10)
    comments = [s for s in sent if s.startswith("COMMENT")]
    assert comments == [
        'COMMENT ON COLUMN "_rosetta_new_t"."id" IS \'Rosetta: source column 1.\'',
        'COMMENT ON COLUMN "_rosetta_new_t"."qty" IS \'Rosetta: source column 2.\'',
    ]
    for statement in comments:
        tree = sqlglot.parse_one(statement, read="snowflake", error_level=sqlglot.ErrorLevel.RAISE)
        assert isinstance(tree, exp.Comment)
    recorded = analyst.cursor().execute(
        "SELECT column_name, comment FROM information_schema.columns WHERE table_name = 't'"
    )
    numbers = {name: source_number(comment) for name, comment in recorded.fetchall()}
    assert {name: number for name, number in numbers.items() if number} == {"id": 1, "qty": 2}

    replaced = Relation(7, "public", "t", [numbered.columns[0], Column("qty", 23, number=3)])
    alignment = writer.align_table(replaced, "t")
    assert alignment.replaced == ["qty"] and "dropped and added again" in alignment.recopy
