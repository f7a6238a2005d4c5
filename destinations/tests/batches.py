"""Building the writers' inputs by hand: Relations from a real table's catalog
entry, Batches as plain dataclasses, and snapshot chunks from a real COPY."""

import psycopg
from psycopg import sql

from pipelines.engine.batch import Batch, Column, Relation, TableChanges


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
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET DateStyle = 'ISO'")
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
) -> TableChanges:
    """upserts: {key tuple: (row dict, lsn)}, deletes: {key tuple: lsn}."""
    return TableChanges(
        relation=relation,
        target_table=target_table or relation.name,
        truncated=truncated,
        upserts=dict(upserts or {}),
        deletes=dict(deletes or {}),
    )


def make_batch(*changes: TableChanges, end_lsn: int, start_lsn: int = 0) -> Batch:
    return Batch(
        tables={(c.relation.schema, c.relation.name): c for c in changes},
        start_lsn=start_lsn or end_lsn,
        end_lsn=end_lsn,
        transactions=1,
        changes=sum(len(c.upserts) + len(c.deletes) for c in changes),
    )
