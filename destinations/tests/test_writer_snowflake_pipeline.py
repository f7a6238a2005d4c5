"""The Snowflake writer behind the real data path: a real PostgreSQL source with a
logical slot, the engine's snapshot, pgoutput decoding and folding, into fakesnow."""

import pytest

from engine.fold import TableSpec
from engine.runner import Engine
from engine.source import SourceDatabase

from .fakesnow_support import fake_snowflake, snowflake_settings
from .test_writer_snowflake import snowflake_rows, source_rows

SOURCE_DDL = """
CREATE TABLE "Orders" (
    id bigint PRIMARY KEY, "order" text, "Amount" numeric(12,2), tags text[], payload jsonb,
    placed_at timestamptz, blob bytea, note text
);
ALTER TABLE "Orders" ALTER COLUMN note SET STORAGE EXTERNAL;
CREATE TABLE line_items (order_id int, line smallint, qty int, PRIMARY KEY (order_id, line));
INSERT INTO "Orders"
SELECT i, 'order ' || i, i * 1.25, ARRAY['t' || i, NULL], jsonb_build_object('i', i, 'n', NULL),
       '2024-01-01 12:00:00+02'::timestamptz + i * interval '1 minute', decode('00ff', 'hex'),
       CASE WHEN i % 2 = 0 THEN repeat('big', 100000) END
FROM generate_series(1, 30) AS i;
INSERT INTO line_items SELECT i, j, i * j FROM generate_series(1, 10) AS i, generate_series(1, 3) AS j;
"""


@pytest.fixture
def engine(source_database, source_conn):
    # The test cluster runs with synchronous_commit=off; logical decoding reads only
    # flushed WAL, so the changes below must be flushed at commit to be seen at once.
    source_conn.execute("SET synchronous_commit = on")
    source_conn.execute(SOURCE_DDL)
    settings = snowflake_settings()
    with fake_snowflake(settings) as analyst:
        from engine.writers.snowflake import SnowflakeWriter

        writer = SnowflakeWriter(settings)
        source = SourceDatabase(source_database)
        engine = Engine(
            source,
            writer,
            pipeline_key="pipeline-7",
            slot="rosetta_sf_test",
            publication="rosetta_sf_test",
            tables=[TableSpec("public", "Orders", "Orders"), TableSpec("public", "line_items", "line_items")],
            max_changes_per_transaction=100_000,
        )
        engine.prepare()
        for spec in engine.tables.values():
            engine.snapshot_table(spec)
        engine.analyst = analyst
        yield engine
        writer.close()
        source.close()


def until_caught_up(engine):
    for _ in range(10):
        if engine.run_batch().caught_up:
            return
    raise AssertionError("not caught up after 10 batches")


def assert_equal_to_source(source_conn, analyst):
    assert snowflake_rows(analyst, "Orders", '"id"') == source_rows(source_conn, '"Orders"', "id")
    assert snowflake_rows(analyst, "line_items", '"order_id", "line"') == source_rows(
        source_conn, "line_items", "order_id, line"
    )


def test_a_real_source_replicates_into_snowflake(engine, source_conn):
    assert_equal_to_source(source_conn, engine.analyst)

    source_conn.execute("""INSERT INTO "Orders" (id, "order", note) VALUES (31, 'new', repeat('n', 50000))""")
    source_conn.execute('UPDATE "Orders" SET "Amount" = 0.5 WHERE id <= 10')  # note left unchanged (TOAST)
    source_conn.execute('UPDATE "Orders" SET id = 100 WHERE id = 2')  # key change with a TOASTed value
    source_conn.execute('DELETE FROM "Orders" WHERE id BETWEEN 20 AND 25')
    source_conn.execute("UPDATE line_items SET qty = -1 WHERE order_id = 3")
    with source_conn.transaction():
        source_conn.execute("TRUNCATE line_items")
        source_conn.execute("INSERT INTO line_items VALUES (77, 1, 1)")
    source_conn.execute('ALTER TABLE "Orders" ADD COLUMN "Status" text')
    source_conn.execute("""UPDATE "Orders" SET "Status" = 'shipped' WHERE id IN (4, 31)""")
    until_caught_up(engine)

    assert_equal_to_source(source_conn, engine.analyst)
    notes = {r["id"]: r["note"] for r in snowflake_rows(engine.analyst, "Orders", '"id"')}
    assert notes[4] == "big" * 100000 and notes[100] == "big" * 100000


def test_a_crash_after_the_snowflake_commit_and_before_the_slot_advance_duplicates_nothing(
    engine, source_conn
):
    source_conn.execute("""INSERT INTO "Orders" (id, "order") VALUES (40, 'once')""")
    source_conn.execute('DELETE FROM "Orders" WHERE id = 1')

    def crash(batch):
        raise RuntimeError("worker killed before the slot advance")

    engine.after_apply = crash
    with pytest.raises(RuntimeError):
        engine.run_batch()
    engine.after_apply = None
    outcome = engine.run_batch()  # the slot hands the same changes again: below the checkpoint

    assert outcome.skipped_transactions == 2 and not outcome.applied
    assert_equal_to_source(source_conn, engine.analyst)


def line_items(source_conn, analyst, columns):
    """line_items' `columns` on the source and in Snowflake, by key."""
    names = ", ".join(f'"{c}"' for c in columns)
    order = '"order_id", "line"'
    source = [tuple(row) for row in source_conn.execute(f"SELECT {names} FROM line_items ORDER BY {order}")]
    rows = analyst.cursor().execute(f'SELECT {names} FROM "line_items" ORDER BY {order}').fetchall()
    return source, [tuple(row) for row in rows]


def test_schema_changes_on_a_real_source_reach_snowflake_through_the_shared_planner(engine, source_conn):
    from engine.writers.base import IncompatibleSchemaChange

    analyst = engine.analyst
    source_conn.execute("UPDATE line_items SET qty = -qty WHERE order_id = 1")  # before the ALTERs
    source_conn.execute("ALTER TABLE line_items ALTER COLUMN qty TYPE bigint")  # int -> bigint
    # (after the rewrite above: a rewrite makes a constant default's rows look per row)
    source_conn.execute("ALTER TABLE line_items ADD COLUMN status text NOT NULL DEFAULT 'open'")
    source_conn.execute('ALTER TABLE "Orders" ADD COLUMN "Rank" int DEFAULT 3')  # a table that stays quiet
    check = engine.align_schemas(sorted(engine.tables))
    assert not check.recopy
    assert any(
        "Column status (VARCHAR) added to RAW.line_items, existing rows set to open" in n for n in check.notes
    )
    until_caught_up(engine)
    source, copied = line_items(source_conn, analyst, ["order_id", "line", "qty", "status"])
    assert copied == source and copied[0] == (1, 1, -1, "open")
    ranks = analyst.cursor().execute('SELECT DISTINCT "Rank" FROM "Orders"').fetchall()
    assert ranks == [(3,)]

    # A column dropped, then added again under the same name: the new column's values.
    source_conn.execute("ALTER TABLE line_items DROP COLUMN status")
    source_conn.execute("UPDATE line_items SET qty = 0 WHERE order_id = 2")
    until_caught_up(engine)
    source_conn.execute("ALTER TABLE line_items ADD COLUMN status int DEFAULT 7")
    check = engine.align_schemas(sorted(engine.tables))
    assert any("Column status is back in public.line_items" in n for n in check.notes)
    until_caught_up(engine)
    source, copied = line_items(source_conn, analyst, ["order_id", "line", "qty", "status"])
    assert copied == source and copied[0][3] == 7

    # A volatile default: every row has its own value, so the table is copied again.
    source_conn.execute("ALTER TABLE line_items ADD COLUMN made timestamptz DEFAULT clock_timestamp()")
    check = engine.align_schemas(sorted(engine.tables))
    assert list(check.recopy) == [("public", "line_items")]
    engine.snapshot_table(engine.tables[("public", "line_items")])
    until_caught_up(engine)
    source, copied = line_items(source_conn, analyst, ["order_id", "line", "made"])
    assert [row[:2] for row in copied] == [row[:2] for row in source]
    assert [row[2] for row in copied] == [row[2] for row in source]

    # A key change is refused, naming the table and the fix.
    source_conn.execute(
        "ALTER TABLE line_items DROP CONSTRAINT line_items_pkey, ADD PRIMARY KEY (order_id, line, qty)"
    )
    with pytest.raises(
        IncompatibleSchemaChange, match=r"primary key of public\.line_items .*refresh the table"
    ):
        engine.align_schemas(sorted(engine.tables))


def test_table_shapes_replicate_into_snowflake(source_database, source_conn):
    """Generated columns, a partitioned table (a row moving between partitions) and a
    value larger than the CSV reader's block, through the engine into fakesnow."""
    source_conn.execute("SET synchronous_commit = on")
    source_conn.execute(
        """
        CREATE TABLE priced (id int PRIMARY KEY, price int, qty int,
                             total int GENERATED ALWAYS AS (price * qty) STORED, body text);
        INSERT INTO priced (id, price, qty, body) VALUES (1, 2, 3, repeat('x"y,' || chr(10), 500000));
        CREATE TABLE events (id int, region text, amount int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
        CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
        CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
        INSERT INTO events VALUES (1, 'eu', 10);
        """
    )
    settings = snowflake_settings()
    with fake_snowflake(settings) as analyst:
        from engine.writers.snowflake import SnowflakeWriter

        writer = SnowflakeWriter(settings)
        source = SourceDatabase(source_database)
        engine = Engine(
            source,
            writer,
            pipeline_key="shapes",
            slot="rosetta_sf_shapes",
            publication="rosetta_sf_shapes",
            tables=[TableSpec("public", "priced", "priced"), TableSpec("public", "events", "events")],
            max_changes_per_transaction=100_000,
        )
        try:
            engine.prepare()
            for spec in engine.tables.values():
                engine.snapshot_table(spec)
            source_conn.execute("INSERT INTO priced (id, price, qty) VALUES (2, 7, 2)")
            source_conn.execute("UPDATE priced SET qty = 10 WHERE id = 1")
            source_conn.execute("INSERT INTO events VALUES (2, 'us', 20)")
            source_conn.execute("UPDATE events SET region = 'us' WHERE id = 1")
            until_caught_up(engine)
            assert snowflake_rows(analyst, "priced", '"id"') == source_rows(source_conn, "priced", "id")
            assert [r["total"] for r in snowflake_rows(analyst, "priced", '"id"')] == [20, 14]
            assert snowflake_rows(analyst, "events", '"id"') == source_rows(source_conn, "events", "id")
        finally:
            writer.close()
            source.close()


def run(engine):
    """What a pipeline run does: prepare, align the schemas, copy what needs it, read the changes."""
    engine.prepare()
    check = engine.align_schemas(sorted(engine.tables))
    for key in check.recopy:
        engine.snapshot_table(engine.tables[key])
    until_caught_up(engine)
    return check


def test_each_schema_change_reaches_snowflake_on_a_table_that_changes_afterwards_and_one_that_does_not(
    engine, source_conn
):
    for table in ("line_items", '"Orders"'):
        source_conn.execute(f"ALTER TABLE {table} ADD COLUMN code varchar(10) DEFAULT 'c'")
    run(engine)
    source_conn.execute("UPDATE line_items SET qty = 100 + qty WHERE order_id = 1")  # before the ALTERs
    for table, key in (("line_items", "order_id"), ('"Orders"', "id")):
        source_conn.execute(f"ALTER TABLE {table} ALTER COLUMN code TYPE text")
        source_conn.execute(
            f"ALTER TABLE {table} ADD COLUMN twice bigint GENERATED ALWAYS AS ({key} * 2) STORED"
        )
        source_conn.execute(f"ALTER TABLE {table} ADD COLUMN serial_no int GENERATED BY DEFAULT AS IDENTITY")
    source_conn.execute(
        "UPDATE line_items SET code = 'a longer code' WHERE order_id = 2"
    )  # "Orders" stays quiet
    check = run(engine)
    assert sorted(check.recopy) == [("public", "Orders"), ("public", "line_items")]
    assert_equal_to_source(source_conn, engine.analyst)

    # A column dropped and added again under its name, with no run between.
    source_conn.execute("UPDATE line_items SET qty = 200 + qty WHERE order_id = 3")  # the old column's values
    source_conn.execute("ALTER TABLE line_items DROP COLUMN qty")
    source_conn.execute("ALTER TABLE line_items ADD COLUMN qty int DEFAULT 0")
    source_conn.execute("UPDATE line_items SET qty = 5 WHERE order_id = 4")
    check = run(engine)
    assert list(check.recopy) == [("public", "line_items")]
    assert (
        "Column qty of public.line_items was dropped and added again"
        in check.recopy[("public", "line_items")]
    )
    assert_equal_to_source(source_conn, engine.analyst)
    assert not run(engine).recopy  # copied once


def test_a_key_change_copies_the_table_again_into_snowflake_when_the_pipeline_says_so(engine, source_conn):
    source_conn.execute(
        "ALTER TABLE line_items DROP CONSTRAINT line_items_pkey, ADD PRIMARY KEY (order_id, qty)"
    )
    source_conn.execute(
        "UPDATE line_items SET qty = qty + 1000 WHERE order_id = 5"
    )  # a change of the new key
    engine.recopy_incompatible = True
    check = run(engine)
    assert "primary key of public.line_items is now (order_id, qty)" in check.recopy[("public", "line_items")]
    assert_equal_to_source(source_conn, engine.analyst)
    source_conn.execute("UPDATE line_items SET qty = -qty WHERE order_id = 6")
    assert not run(engine).recopy
    assert_equal_to_source(source_conn, engine.analyst)
