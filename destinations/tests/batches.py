"""Building the writers' inputs by hand: Relations from a real table's catalog
entry, Batches as plain dataclasses, and snapshot chunks from a real COPY; and waiting
for a writer's backend to block on a lock."""

import time

import psycopg
from psycopg import sql

from engine.batch import Batch, Column, Relation, TableChanges


def relation_of(conn: psycopg.Connection, schema: str, table: str) -> Relation:
    """The Relation a pgoutput Relation message would carry for this table."""
    rows = conn.execute(
        """
        SELECT c.oid::int, a.attname, a.atttypid::int, a.atttypmod,
               coalesce(a.attnum = ANY (i.indkey), false)
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
        WHERE n.nspname = %s AND c.relname = %s
        ORDER BY a.attnum
        """,
        [schema, table],
    ).fetchall()
    columns = [Column(name, oid, mod, is_key) for _, name, oid, mod, is_key in rows]
    return Relation(rows[0][0], schema, table, columns)


def copy_chunks(conn: psycopg.Connection, relation: Relation, writer):
    """Stream the table out the way the source side does: COPY (SELECT the writer's
    snapshot columns) TO STDOUT in the writer's snapshot format, chunk by chunk."""
    from engine import pgtypes

    for name, value in pgtypes.SESSION_SETTINGS.items():  # as the source side sets them
        conn.execute(
            sql.SQL("SELECT set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(value))
        )
    query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT {})").format(
        sql.SQL(", ").join(writer.snapshot_columns(relation)),
        sql.Identifier(relation.schema, relation.name),
        sql.SQL(writer.snapshot_format),
    )
    with conn.cursor() as cur, cur.copy(query) as copy:
        yield from copy


def table_changes(
    relation: Relation,
    upserts=None,
    deletes=None,
    truncated=False,
    target_table=None,
    fresh=(),
    text_values=False,
) -> TableChanges:
    """upserts: {key tuple: (row dict, lsn)}, deletes: {key tuple: lsn}, fresh: keys first
    inserted in the batch (TableChanges.fresh)."""
    return TableChanges(
        relation=relation,
        target_table=target_table or relation.name,
        truncated=truncated,
        upserts=dict(upserts or {}),
        deletes=dict(deletes or {}),
        fresh=set(fresh),
        text_values=text_values,
    )


def make_batch(*changes: TableChanges, end_lsn: int, start_lsn: int = 0) -> Batch:
    return Batch(
        tables={(c.relation.schema, c.relation.name): c for c in changes},
        start_lsn=start_lsn or end_lsn,
        end_lsn=end_lsn,
        transactions=1,
        changes=sum(len(c.upserts) + len(c.deletes) for c in changes),
    )


EVERYTHING = """
CREATE TYPE mood AS ENUM ('ok', 'sad');
CREATE TABLE public.everything (
    id int PRIMARY KEY,
    small smallint, big bigint, price numeric(12,2), exact numeric, ratio float8, flag bool,
    label varchar(20), code char(3), body text, uid uuid, day date, at timestamp, at_tz timestamptz,
    doc jsonb, raw_doc json, blob bytea, tags text[], scores int[], mood mood, span interval,
    tm time, empty_text text, nothing text
);
INSERT INTO public.everything VALUES (
    1, -5, 9007199254740993, 12345.67, 3.14159265358979323846264338327950288419, 0.1, true,
    'héllo', 'ab', E'line1\\nline2, "quoted", \\\\ back', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '2024-02-29', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.123456+02',
    '{"a": [1, 2, {"b": null}], "c": "d"}', '{"z": 1}', '\\x00ff10',
    ARRAY['a,b', NULL, 'c"d', ''], ARRAY[1, NULL, 3], 'sad', '-1 day +02:00:00',
    '10:11:12', '', NULL
);
"""


def make_everything_table(conn: psycopg.Connection) -> Relation:
    """A source table with one row holding every kind of value the writers handle."""
    conn.execute(EVERYTHING)
    return relation_of(conn, "public", "everything")


def cdc_row(conn: psycopg.Connection, relation: Relation, key: int) -> dict:
    """The row as the source side hands it over from pgoutput: each column's text
    form converted by its type OID (engine/pgtypes.py)."""
    from engine import pgtypes

    for name, value in pgtypes.SESSION_SETTINGS.items():
        conn.execute(
            sql.SQL("SELECT set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(value))
        )
    from psycopg.types.string import TextLoader

    cursor = conn.cursor()
    for column in relation.columns:  # every value as its output function writes it, like pgoutput
        cursor.adapters.register_loader(column.type_oid, TextLoader)
    texts = cursor.execute(
        sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in relation.columns),
            sql.Identifier(relation.schema, relation.name),
        ),
        [key],
    ).fetchone()
    return {
        column.name: None if text is None else pgtypes.converter(column.type_oid)(text.encode())
        for column, text in zip(relation.columns, texts, strict=True)
    }


def wait_until_waiting_for_a_lock(conn: psycopg.Connection, pid: int, what: str, seconds: float = 30) -> None:
    """Until backend `pid` waits for a lock (pg_stat_activity, read on `conn`, an
    autocommit connection); AssertionError after `seconds`, naming `what` did not wait."""
    deadline = time.monotonic() + seconds
    while conn.execute(
        "SELECT wait_event_type IS DISTINCT FROM 'Lock' FROM pg_stat_activity WHERE pid = %s", [pid]
    ).fetchone()[0]:
        assert time.monotonic() < deadline, f"{what} never waited for a lock"
        time.sleep(0.01)
