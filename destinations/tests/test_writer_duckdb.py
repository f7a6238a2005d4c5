"""The DuckDB writer: PostgreSQL types mapped to DuckDB's, CSV snapshots, file locks."""

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from decimal import Decimal

import duckdb
import pytest

from engine.writers import types

from .batches import cdc_row, copy_chunks, make_batch, make_everything_table, table_changes

EXPECTED = {
    "small": -5,
    "big": 9007199254740993,
    "price": Decimal("12345.67"),
    # no exact DuckDB type for an unconstrained numeric: its digits, as text
    "exact": "3.14159265358979323846264338327950288419",
    "ratio": 0.1,
    "flag": True,
    "label": "héllo",
    "code": "ab ",
    "body": 'line1\nline2, "quoted", \\ back',
    "uid": uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    "day": date(2024, 2, 29),
    "at": datetime(2024, 2, 29, 13, 14, 15, 123456),
    "at_tz": datetime(2024, 2, 29, 11, 14, 15, 123456, tzinfo=UTC),
    "blob": b"\x00\xff\x10",
    "tags": ["a,b", None, 'c"d', ""],
    "scores": [1, None, 3],
    "mood": "sad",
    "span": timedelta(days=-1, hours=2),
    "tm": clock(10, 11, 12),
    "empty_text": "",
    "nothing": None,
}


def read_table(path, table):
    with duckdb.connect(path) as conn:
        cursor = conn.execute(f'SELECT * FROM "{table}" ORDER BY 1')
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_target_tables_get_duckdb_types_for_the_source_types(duckdb_writer, source_conn):
    relation = make_everything_table(source_conn)
    batch = make_batch(
        table_changes(relation, upserts={(1,): (cdc_row(source_conn, relation, 1), 10)}), end_lsn=10
    )
    duckdb_writer.apply_batch("p", batch)
    with duckdb.connect(duckdb_writer.settings["path"]) as conn:
        found = dict(
            conn.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'everything'"
            ).fetchall()
        )
    assert found == {
        "id": "INTEGER",
        "small": "SMALLINT",
        "big": "BIGINT",
        "price": "DECIMAL(12,2)",
        "exact": "VARCHAR",
        "ratio": "DOUBLE",
        "flag": "BOOLEAN",
        "label": "VARCHAR",
        "code": "VARCHAR",
        "body": "VARCHAR",
        "uid": "UUID",
        "day": "DATE",
        "at": "TIMESTAMP",
        "at_tz": "TIMESTAMP WITH TIME ZONE",
        "doc": "JSON",
        "raw_doc": "JSON",
        "blob": "BLOB",
        "tags": "VARCHAR[]",
        "scores": "INTEGER[]",
        "mood": "VARCHAR",
        "span": "INTERVAL",
        "tm": "TIME",
        "empty_text": "VARCHAR",
        "nothing": "VARCHAR",
        "_rosetta_lsn": "BIGINT",
        "_rosetta_synced_at": "TIMESTAMP WITH TIME ZONE",
        "_rosetta_deleted_at": "TIMESTAMP WITH TIME ZONE",
    }


def test_snapshot_and_changes_store_every_value_the_same_way(duckdb_writer, source_conn):
    relation = make_everything_table(source_conn)
    chunks = copy_chunks(source_conn, relation, duckdb_writer)
    assert duckdb_writer.load_snapshot(relation, "everything", chunks, 7) == 1
    changed = cdc_row(source_conn, relation, 1) | {"id": 2}
    duckdb_writer.apply_batch(
        "p", make_batch(table_changes(relation, upserts={(2,): (changed, 9)}), end_lsn=9)
    )
    duckdb_writer.close()

    snapshot_row, cdc_applied_row = read_table(duckdb_writer.settings["path"], "everything")
    for row in (snapshot_row, cdc_applied_row):
        assert {name: row[name] for name in EXPECTED} == EXPECTED
        assert json.loads(row["doc"]) == {"a": [1, 2, {"b": None}], "c": "d"}
        assert json.loads(row["raw_doc"]) == {"z": 1}
    assert (snapshot_row["_rosetta_lsn"], cdc_applied_row["_rosetta_lsn"]) == (7, 9)


def test_a_wide_numeric_and_json_arrays_keep_their_values(duckdb_writer):
    from engine.batch import Column, Relation

    relation = Relation(
        1,
        "public",
        "ledger",
        [
            Column("id", types.INT8, -1, True),
            Column("amount", types.NUMERIC, ((60 << 16) | 20) + 4),  # wider than DuckDB's 38 digits
            Column("events", 3807),  # jsonb[]
            Column("ids", 2951),  # uuid[]
            Column("at", types.TIMESTAMP),
        ],
    )
    key = uuid.uuid4()
    row = {
        "id": 1,
        "amount": Decimal("12345678901234567890123456789012345678901.12345678901234567890"),
        "events": [{"kind": "paid"}, None, [1, 2]],
        "ids": [key],
        "at": "infinity",  # the source keeps values Python cannot hold as text
    }
    duckdb_writer.apply_batch("p", make_batch(table_changes(relation, upserts={(1,): (row, 5)}), end_lsn=5))
    duckdb_writer.close()
    [stored] = read_table(duckdb_writer.settings["path"], "ledger")
    assert Decimal(stored["amount"]) == row["amount"]
    assert [None if e is None else json.loads(e) for e in stored["events"]] == row["events"]
    assert stored["ids"] == [key]
    assert stored["at"] == datetime.max


def test_a_value_no_duckdb_column_can_hold_fails_naming_table_column_and_value(duckdb_writer):
    """Every PostgreSQL value has a DuckDB place (the exact form at worst); a value no
    column type reads (here a malformed uuid, as a corrupt source would send it) fails
    the batch, naming the real column, and writes nothing."""
    from engine.batch import Column, Relation
    from engine.writers.base import UnstorableValue

    relation = Relation(
        1, "public", "odd", [Column("id", types.INT4, -1, True), Column("ref", types.UUID), Column("n", 1700)]
    )
    changes = table_changes(relation, upserts={("1",): ({"id": "1", "ref": "not-a-uuid", "n": "NaN"}, 5)})
    changes.text_values = True
    with pytest.raises(UnstorableValue) as failure:
        duckdb_writer.apply_batch("p", make_batch(changes, end_lsn=5))
    message = str(failure.value)
    assert "public.odd: column ref (UUID) has the value 'not-a-uuid'" in message
    assert " c1" not in message and "c0" not in message
    duckdb_writer.close()
    with duckdb.connect(duckdb_writer.settings["path"]) as conn:
        assert conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'odd'").fetchone() == (
            0,
        )


def test_the_writer_waits_for_another_process_to_let_go_of_the_file(duckdb_writer):
    duckdb_writer.read_checkpoint("p")  # creates the file
    duckdb_writer.close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(1.5)",
            duckdb_writer.settings["path"],
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    assert duckdb_writer.read_checkpoint("p") == 0
    assert time.monotonic() - started > 0.3
    holder.wait(timeout=10)


@pytest.mark.parametrize(
    ("oid", "typmod", "expected"),
    [
        (types.NUMERIC, ((12 << 16) | 2) + 4, "DECIMAL(12,2)"),
        (types.NUMERIC, ((38 << 16) | 0) + 4, "DECIMAL(38,0)"),
        (types.NUMERIC, ((39 << 16) | 0) + 4, "VARCHAR"),
        (types.NUMERIC, -1, "VARCHAR"),
        (1231, ((10 << 16) | 3) + 4, "DECIMAL(10,3)[]"),
        (1007, -1, "INTEGER[]"),
        (1187, -1, "VARCHAR"),  # interval[] arrives as text
        (types.JSONB, -1, "JSON"),
        (16400, -1, "VARCHAR"),  # user-defined
    ],
)
def test_duckdb_types_for_postgresql_types(oid, typmod, expected):
    assert types.duckdb_type(oid, typmod) == expected


def test_key_columns_are_recorded_as_not_null_except_under_replica_identity_full(duckdb_writer):
    from engine.batch import Column, Relation

    keyed = Relation(1, "public", "keyed", [Column("id", 20, -1, True), Column("v", 25)])
    full = Relation(2, "public", "full", [Column("a", 20, -1, True), Column("b", 25, -1, True)], "f")
    duckdb_writer.apply_batch(
        "p",
        make_batch(
            table_changes(keyed, upserts={(1,): ({"id": 1, "v": None}, 5)}),
            table_changes(full, upserts={(1, None): ({"a": 1, "b": None}, 5)}),
            end_lsn=5,
        ),
    )
    conn = duckdb_writer._connection()
    nullable = dict(
        conn.execute(
            "SELECT table_name || '.' || column_name, is_nullable FROM duckdb_columns() "
            "WHERE table_name IN ('keyed', 'full') AND column_name NOT LIKE '_rosetta%'"
        ).fetchall()
    )
    assert nullable == {"keyed.id": False, "keyed.v": True, "full.a": True, "full.b": True}
    assert conn.execute('SELECT a, b FROM main."full"').fetchall() == [(1, None)]


def test_a_column_in_its_exact_form_keeps_its_source_column_record_and_needs_no_copy(duckdb_writer):
    """Both of Rosetta's marks live in a DuckDB column's comment: the source column it holds
    (issue 11) and that it holds the values' exact form (issue 17). Setting one must keep the
    other, or the next run would take the column for a new one and copy the table again, or
    turn the column back into a DECIMAL that cannot hold NaN."""
    from engine.batch import Column, Relation
    from engine.writers.schema_changes import source_number

    numeric_10_2 = ((10 << 16) | 2) + 4
    relation = Relation(
        1, "public", "m", [Column("id", types.INT4, -1, True, 1), Column("n", 1700, numeric_10_2, False, 2)]
    )
    duckdb_writer.load_snapshot(relation, "m", iter([]), 10)
    changes = table_changes(relation, upserts={("1",): ({"id": "1", "n": "NaN"}, 15)})
    changes.text_values = True
    result = duckdb_writer.apply_batch("p", make_batch(changes, end_lsn=15))
    assert any("Column n of" in note for note in result.notes)

    alignment = duckdb_writer.align_table(relation, "m")
    assert alignment.recopy is None
    duckdb_writer.close()
    with duckdb.connect(duckdb_writer.settings["path"]) as conn:
        (data_type, comment), *_ = conn.execute(
            "SELECT data_type, comment FROM duckdb_columns() WHERE table_name = 'm' AND column_name = 'n'"
        ).fetchall()
        assert conn.execute("SELECT n FROM main.m").fetchall() == [("NaN",)]
    assert data_type == "VARCHAR" and source_number(comment) == 2 and "exact form" in comment
