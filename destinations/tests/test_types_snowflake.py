"""The type table into Snowflake (through fakesnow): each PostgreSQL type of the
README's table, from a real source, once by the snapshot and once by CDC, lands as
the same value. Types Snowflake has no type for land as PostgreSQL's text form
(VARCHAR), arrays of any dimension as VARIANT.

fakesnow runs Snowflake's SQL on DuckDB, so a value that DuckDB holds but Snowflake's
type does not (a timestamp 'infinity', a BC date, time 24:00:00, a year past 9999)
cannot show what Snowflake would do: those cases are skipped, each saying so."""

import math

import pytest

from engine.writers.base import UnstorableValue
from engine.writers.snowflake import SnowflakeWriter

from .batches import cdc_row, copy_chunks, make_batch, relation_of, table_changes
from .fakesnow_support import fake_snowflake, read_table, snowflake_settings

FAKESNOW_IS_DUCKDB = (
    "fakesnow runs on DuckDB, whose {duckdb} is not Snowflake's {snowflake}: the writer sends {sent}; "
    "fakesnow {seen}, which says nothing of what Snowflake does with it (not known to work there)."
)


def skipped(name, column_type, literal, duckdb, snowflake, seen):
    reason = FAKESNOW_IS_DUCKDB.format(duckdb=duckdb, snowflake=snowflake, sent=literal, seen=seen)
    return pytest.param("", column_type, literal, None, id=name, marks=pytest.mark.skip(reason=reason))


# (setup SQL, column type, value literal, the value an analyst reads back)
CASES = [
    pytest.param("CREATE TYPE mood AS ENUM ('ok', 'sad')", "mood", "'sad'", "sad", id="enum"),
    pytest.param(
        "",
        "interval",
        "'1 year 2 mons -3 days 04:05:06.5'",
        "1 year 2 mons -3 days +04:05:06.5",
        id="interval",
    ),
    pytest.param("", "timetz", "'10:11:12.5+05:30'", "10:11:12.5+05:30", id="timetz"),
    pytest.param("", "money", "'1234.56'", "$1,234.56", id="money"),
    pytest.param("", "inet", "'192.168.0.1/24'", "192.168.0.1/24", id="inet"),
    pytest.param("", "cidr", "'10.0.0.0/8'", "10.0.0.0/8", id="cidr"),
    pytest.param("", "macaddr", "'08:00:2b:01:02:03'", "08:00:2b:01:02:03", id="macaddr"),
    pytest.param("", "point", "'(1.5,-2)'", "(1.5,-2)", id="point"),
    pytest.param("", "int4range", "'[1,5)'", "[1,5)", id="int4range"),
    pytest.param(
        "",
        "tstzrange",
        "'[2024-01-01 00:00+00,infinity)'",
        '["2024-01-01 00:00:00+00",infinity)',
        id="tstzrange",
    ),
    pytest.param("", "bit(3)", "B'101'", "101", id="bit"),
    pytest.param("", "varbit", "B'10'", "10", id="varbit"),
    pytest.param("", "xml", "'<a x=\"1\">é</a>'", '<a x="1">é</a>', id="xml"),
    pytest.param("", "tsvector", "'a fat cat'", "'a' 'cat' 'fat'", id="tsvector"),
    pytest.param("CREATE DOMAIN positive AS int CHECK (VALUE > 0)", "positive", "5", "5", id="domain"),
    pytest.param("CREATE TYPE pair AS (a int, b text)", "pair", "ROW(1, 'x y')", '(1,"x y")', id="composite"),
    pytest.param("CREATE EXTENSION IF NOT EXISTS citext", "citext", "'MiXeD'", "MiXeD", id="citext"),
    pytest.param("", "char(5)", "'ab'", "ab   ", id="char(n)"),
    pytest.param("", "float8", "'NaN'", "nan", id="float-NaN"),
    pytest.param("", "float8", "'-Infinity'", "-inf", id="float-infinity"),
    pytest.param("", "int[]", "'{{1,2},{3,4}}'", [[1, 2], [3, 4]], id="2-D int array"),
    pytest.param("", "text[]", "'{{a,NULL},{\"b c\",d}}'", [["a", None], ["b c", "d"]], id="2-D text array"),
    pytest.param("", "numeric", "'NaN'", "NaN", id="unconstrained numeric NaN"),
    skipped("time 24:00", "time", "'24:00:00'", "TIME", "TIME", "stores it and reads it back as 00:00:00"),
    skipped(
        "timestamp infinity",
        "timestamp",
        "'infinity'",
        "TIMESTAMP",
        "TIMESTAMP_NTZ",
        "stores DuckDB's infinity, which the connector cannot read back (OverflowError)",
    ),
    skipped(
        "timestamptz infinity",
        "timestamptz",
        "'-infinity'",
        "TIMESTAMPTZ",
        "TIMESTAMP_TZ",
        "stores DuckDB's -infinity, which the connector cannot read back (OverflowError)",
    ),
    skipped(
        "BC date",
        "date",
        "'0044-03-15 BC'",
        "DATE",
        "DATE",
        "refuses that text, so the snapshot fails naming the column and the value",
    ),
    skipped(
        "BC timestamptz",
        "timestamptz",
        "'0044-03-15 12:00:00+00 BC'",
        "TIMESTAMPTZ",
        "TIMESTAMP_TZ",
        "refuses that text, so the snapshot fails naming the column and the value",
    ),
    skipped(
        "timestamp past 9999",
        "timestamp",
        "'10000-01-01 00:00:00'",
        "TIMESTAMP",
        "TIMESTAMP_NTZ",
        "stores it, and the connector cannot read it back (OverflowError)",
    ),
]


def comparable(value):
    """Floats by their repr, so NaN equals NaN."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


@pytest.mark.parametrize("setup, column_type, literal, expected", CASES)
def test_each_type_lands_in_snowflake_the_same_by_snapshot_and_by_cdc(
    source_conn, setup, column_type, literal, expected
):
    if setup:
        source_conn.execute(setup)
    source_conn.execute(f"CREATE TABLE typed (id int PRIMARY KEY, v {column_type})")
    source_conn.execute(f"INSERT INTO typed VALUES (1, {literal})")
    relation = relation_of(source_conn, "public", "typed")
    settings = snowflake_settings()
    with fake_snowflake(settings) as analyst:
        writer = SnowflakeWriter(settings)
        try:
            assert writer.load_snapshot(relation, "typed", copy_chunks(source_conn, relation, writer), 5) == 1
            source_conn.execute(f"INSERT INTO typed VALUES (2, {literal})")
            row = cdc_row(source_conn, relation, 2)
            writer.apply_batch("p", make_batch(table_changes(relation, upserts={(2,): (row, 9)}), end_lsn=9))
            variant = ("v",) if column_type.endswith("[]") else ()
            stored = [comparable(r["v"]) for r in read_table(analyst, "typed", '"id"', variant)]
        finally:
            writer.close()
    assert stored == [expected, expected]


def test_a_snapshot_value_snowflake_cannot_hold_fails_naming_table_column_and_value(source_conn):
    source_conn.execute("CREATE TABLE priced (id int PRIMARY KEY, amount numeric(10,2))")
    source_conn.execute("INSERT INTO priced VALUES (1, 2.5), (2, 'NaN')")
    relation = relation_of(source_conn, "public", "priced")
    settings = snowflake_settings()
    with fake_snowflake(settings) as analyst:
        writer = SnowflakeWriter(settings)
        try:
            with pytest.raises(UnstorableValue) as failure:
                writer.load_snapshot(relation, "priced", copy_chunks(source_conn, relation, writer), 5)
        finally:
            writer.close()
        tables = analyst.cursor().execute("SELECT table_name FROM information_schema.tables").fetchall()
    assert str(failure.value).startswith(
        "public.priced: column amount (NUMBER(10,2)) has the value 'NaN', which Snowflake cannot store"
    )
    assert ("priced",) not in tables  # the target was never swapped in
