"""The PostgreSQL writer: types as on the source, binary COPY snapshots, views kept."""

import psycopg
import pytest

from engine.batch import Column, Relation
from engine.writers.base import IncompatibleSchemaChange
from engine.writers.postgres import PostgresWriter

from .batches import cdc_row, copy_chunks, make_batch, make_everything_table, relation_of, table_changes


def column_types(pg_reader, table: str) -> dict:
    return dict(
        pg_reader.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            [table],
        ).fetchall()
    )


def test_target_tables_get_the_source_types_and_primary_key(pg_writer, pg_reader, source_conn):
    relation = make_everything_table(source_conn)
    batch = make_batch(
        table_changes(relation, upserts={(1,): (cdc_row(source_conn, relation, 1), 10)}), end_lsn=10
    )
    pg_writer.apply_batch("p", batch)

    source_types = column_types(source_conn, "public.everything")
    target_types = column_types(pg_reader, "analytics.everything")
    assert target_types == {
        **source_types,
        "mood": "text",  # a user-defined enum: stored as its label
        "_rosetta_lsn": "bigint",
        "_rosetta_synced_at": "timestamp with time zone",
        "_rosetta_deleted_at": "timestamp with time zone",
    }
    assert target_types["price"] == "numeric(12,2)" and target_types["label"] == "character varying(20)"
    primary_key = pg_reader.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'analytics.everything'::regclass "
        "AND contype = 'p'"
    ).fetchone()[0]
    assert primary_key == "PRIMARY KEY (id)"


def test_snapshot_and_changes_store_every_value_exactly_as_the_source_has_it(
    pg_writer, pg_reader, source_conn
):
    relation = make_everything_table(source_conn)
    assert (
        pg_writer.load_snapshot(relation, "everything", copy_chunks(source_conn, relation, pg_writer), 7) == 1
    )
    changed = cdc_row(source_conn, relation, 1) | {"id": 2}
    pg_writer.apply_batch("p", make_batch(table_changes(relation, upserts={(2,): (changed, 9)}), end_lsn=9))

    names = ", ".join(f'"{name}"' for name in relation.column_names[1:])
    source = source_conn.execute(f"SELECT {names} FROM public.everything").fetchone()
    snapshot_row, cdc_applied_row = pg_reader.execute(
        f"SELECT {names} FROM analytics.everything ORDER BY id"
    ).fetchall()
    assert snapshot_row == source
    assert cdc_applied_row == source
    assert source[relation.column_names.index("tags") - 1] == ["a,b", None, 'c"d', ""]


def test_a_refresh_keeps_views_built_on_the_table(pg_writer, pg_reader, source_conn):
    source_conn.execute("CREATE TABLE public.towns (id int PRIMARY KEY, name text)")
    source_conn.execute("INSERT INTO public.towns VALUES (1, 'old')")
    relation = relation_of(source_conn, "public", "towns")
    pg_writer.load_snapshot(relation, "towns", copy_chunks(source_conn, relation, pg_writer), 1)
    pg_reader.execute("CREATE VIEW analytics.town_names AS SELECT name FROM analytics.towns")

    source_conn.execute("UPDATE public.towns SET name = 'new'")
    source_conn.execute("INSERT INTO public.towns VALUES (2, 'second')")
    assert pg_writer.load_snapshot(relation, "towns", copy_chunks(source_conn, relation, pg_writer), 2) == 2
    assert pg_reader.execute("SELECT name FROM analytics.town_names ORDER BY name").fetchall() == [
        ("new",),
        ("second",),
    ]
    leftovers = pg_reader.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'analytics' AND tablename LIKE '_rosetta_new_%'"
    ).fetchone()[0]
    assert leftovers == 0


def test_a_source_key_change_is_refused_with_what_to_do(pg_writer):
    relation = Relation(1, "public", "t", [Column("id", 23, -1, True), Column("code", 25)])
    pg_writer.apply_batch(
        "p", make_batch(table_changes(relation, upserts={(1,): ({"id": 1, "code": "a"}, 5)}), end_lsn=5)
    )
    rekeyed = Relation(1, "public", "t", [Column("id", 23), Column("code", 25, -1, True)])
    with pytest.raises(IncompatibleSchemaChange, match=r"primary key of public\.t is now \(code\).*refresh"):
        pg_writer.apply_batch(
            "p", make_batch(table_changes(rekeyed, upserts={("b",): ({"id": 2, "code": "b"}, 6)}), end_lsn=6)
        )


def test_a_snapshot_checks_its_key_for_nulls_as_it_loads_not_in_a_second_pass(pg_writer, pg_reader):
    """The new table's key columns are NOT NULL from its creation: the COPY refuses a NULL
    key at its row, and ADD PRIMARY KEY has no whole-table scan left to do for it (what
    it did before, ~0.1 s of a 2.3 s snapshot of 1 M rows)."""
    relation = Relation(9, "public", "towns", [Column("id", 20, -1, True), Column("name", 25)])

    def row(key: int | None, name: bytes) -> bytes:
        field = b"\xff\xff\xff\xff" if key is None else (8).to_bytes(4, "big") + key.to_bytes(8, "big")
        return b"\x00\x02" + field + len(name).to_bytes(4, "big") + name

    header = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
    chunks = [header + row(1, b"first"), row(None, b"keyless") + b"\xff\xff"]
    with pytest.raises(psycopg.errors.NotNullViolation) as refused:
        pg_writer.load_snapshot(relation, "towns", iter(chunks), 1)
    assert refused.value.diag.context.startswith("COPY _rosetta_new_"), refused.value.diag.context
    assert "line 2" in refused.value.diag.context  # the row, while it is loaded

    chunks = [header + row(1, b"first") + b"\xff\xff"]
    assert pg_writer.load_snapshot(relation, "towns", iter(chunks), 1) == 1
    assert pg_reader.execute(
        "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = 'analytics.towns'::regclass "
        "AND attnum > 0 ORDER BY attnum"
    ).fetchall() == [
        ("id", True),
        ("name", False),
        ("_rosetta_lsn", False),
        ("_rosetta_synced_at", False),
        ("_rosetta_deleted_at", False),
    ]


def test_a_snapshots_rows_share_its_position_and_time_without_storing_them(pg_writer, pg_reader):
    """The snapshot's LSN and time are the same for every row it loads: they are added after
    the COPY as constant defaults, which PostgreSQL keeps once in the catalog instead of in
    each row (a smaller load, less WAL). Rows written later still carry their own, and the
    columns keep no default for them."""
    relation = Relation(9, "public", "towns", [Column("id", 20, -1, True), Column("name", 25)])
    header = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
    body = b"".join(
        b"\x00\x02" + (8).to_bytes(4, "big") + n.to_bytes(8, "big") + (4).to_bytes(4, "big") + b"town"
        for n in (1, 2, 3)
    )
    assert pg_writer.load_snapshot(relation, "towns", iter([header + body + b"\xff\xff"]), 4242) == 3

    rows = pg_reader.execute(
        "SELECT id, _rosetta_lsn, _rosetta_synced_at, _rosetta_deleted_at FROM analytics.towns ORDER BY id"
    ).fetchall()
    assert [(id, lsn, deleted) for id, lsn, _, deleted in rows] == [
        (1, 4242, None),
        (2, 4242, None),
        (3, 4242, None),
    ]
    assert len({synced for _, _, synced, _ in rows}) == 1 and rows[0][2] is not None
    assert pg_reader.execute(
        "SELECT attname, atthasmissing, atthasdef FROM pg_attribute "
        "WHERE attrelid = 'analytics.towns'::regclass AND attname LIKE '\\_rosetta\\_%' ORDER BY attnum"
    ).fetchall() == [
        ("_rosetta_lsn", True, False),
        ("_rosetta_synced_at", True, False),
        ("_rosetta_deleted_at", False, False),
    ]

    pg_writer.apply_batch(
        "p",
        make_batch(
            table_changes(
                relation, upserts={(n,): ({"id": n, "name": "new"}, 5000) for n in (2, 4)}, fresh=[(4,)]
            ),
            end_lsn=5000,
        ),
    )
    assert pg_reader.execute("SELECT id, _rosetta_lsn FROM analytics.towns ORDER BY id").fetchall() == [
        (1, 4242),
        (2, 5000),
        (3, 4242),
        (4, 5000),
    ]
    pg_reader.execute("INSERT INTO analytics.towns (id, name) VALUES (5, 'by hand')")
    assert pg_reader.execute(
        "SELECT _rosetta_lsn, _rosetta_synced_at FROM analytics.towns WHERE id = 5"
    ).fetchone() == (None, None)


def items_batch(relation, ids, end_lsn):
    upserts = {(n,): ({"id": n, "name": f"item {n}"}, end_lsn) for n in ids}
    changes = table_changes(relation, upserts=upserts, fresh=list(upserts))
    return make_batch(changes, end_lsn=end_lsn)


ITEMS = Relation(5002, "public", "items", [Column("id", 20, -1, True), Column("name", 25)])


def test_rows_inserted_without_a_conflict_check_get_the_transactions_time_in_any_session_style(
    pg_writer, pg_reader, pg_destination
):
    """The COPY of fresh rows writes _rosetta_synced_at as text: it must read back as the
    transaction's time whatever DateStyle and TimeZone the destination gives the session
    (IST reads back as Israel's time from PostgreSQL's own SQL-style text)."""
    database = pg_destination["database"]
    pg_reader.execute(f"ALTER DATABASE \"{database}\" SET DateStyle = 'SQL, DMY'")
    pg_reader.execute(f"ALTER DATABASE \"{database}\" SET TimeZone = 'Asia/Kolkata'")
    pg_writer.apply_batch("p", items_batch(ITEMS, [1, 2], end_lsn=10))
    (off_by,) = pg_reader.execute(
        "SELECT max(abs(extract(epoch FROM now() - _rosetta_synced_at))) FROM analytics.items"
    ).fetchone()
    assert off_by < 60


def test_a_table_made_by_hand_without_a_primary_key_gets_no_duplicates(pg_writer, pg_reader):
    """Without a key, nothing would refuse a fresh key that is already there: such a table
    takes the merge, which refuses to run without a key, as it always did."""
    pg_reader.execute("CREATE SCHEMA analytics")
    pg_reader.execute(
        "CREATE TABLE analytics.items (id bigint, name text, _rosetta_lsn bigint, "
        "_rosetta_synced_at timestamptz, _rosetta_deleted_at timestamptz)"
    )
    pg_reader.execute("INSERT INTO analytics.items (id, name) VALUES (1, 'loaded by hand')")
    with pytest.raises(psycopg.errors.InvalidColumnReference):
        pg_writer.apply_batch("p", items_batch(ITEMS, [1], end_lsn=10))
    assert pg_reader.execute("SELECT id, name FROM analytics.items").fetchall() == [(1, "loaded by hand")]


def test_text_reaches_a_latin1_destination_converted(pg_writer, pg_reader, source_conn, pg_destination):
    """The writer's COPY text is UTF-8: the session says so, and the server converts it."""
    database = f"{pg_destination['database']}_latin1"
    pg_reader.execute(
        f'CREATE DATABASE "{database}" ENCODING LATIN1 LC_COLLATE "C" LC_CTYPE "C" TEMPLATE template0'
    )
    writer = PostgresWriter({**pg_destination, "database": database})
    try:
        writer.apply_batch(
            "p",
            make_batch(
                table_changes(
                    ITEMS,
                    upserts={
                        (1,): ({"id": "1", "name": "café"}, 10),
                        (2,): ({"id": "2", "name": "naïve"}, 10),
                    },
                    fresh=[(1,)],
                    text_values=True,
                ),
                end_lsn=10,
            ),
        )
        with psycopg.connect(
            host=pg_destination["host"], port=pg_destination["port"], dbname=database, user="postgres"
        ) as conn:
            assert conn.execute("SELECT id, name FROM analytics.items ORDER BY id").fetchall() == [
                (1, "café"),
                (2, "naïve"),
            ]
    finally:
        writer.close()
