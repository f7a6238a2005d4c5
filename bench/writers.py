"""Destination writer throughput beside the raw COPY limit, measured in one run.

    .venv/bin/python bench/writers.py [--rows 1000000] [--changes 200000]

Starts a throwaway PostgreSQL cluster (rosetta/pgcluster.py), fills a source
table of --rows rows of ~330 bytes (bigint key, int, numeric(12,2), text,
~230 B jsonb, two timestamptz), then prints:

- the limit: `COPY TO STDOUT` (binary, then CSV) read and discarded;
- load_snapshot of that table into a PostgreSQL database (binary COPY passthrough)
  and into a DuckDB file (CSV through Arrow), with the peak RSS during the load;
- apply_batch of --changes changes (60% updates of existing keys, 30% inserts,
  10% deletes; typed Python values as the source side hands them over) into each.
"""

import argparse
import gc
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from engine import pgtypes  # noqa: E402
from engine.batch import Batch, Column, Relation, TableChanges  # noqa: E402
from engine.writers.duckdb import DuckDBWriter  # noqa: E402
from engine.writers.postgres import PostgresWriter  # noqa: E402
from rosetta.pgcluster import Cluster  # noqa: E402

CHUNK_BYTES = 4 * 1024 * 1024  # what the source side's snapshot hands over per chunk


def vmrss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill_source(conn, rows: int) -> None:
    conn.execute(
        """
        CREATE TABLE orders (
            id bigint PRIMARY KEY, customer int, amount numeric(12,2), note text,
            details jsonb, created_at timestamptz, updated_at timestamptz)
        """
    )
    conn.execute(
        """
        INSERT INTO orders
        SELECT g, g %% 10000, (g %% 100000) / 100.0, 'order note number ' || g,
               jsonb_build_object('sku', 'SKU-' || g, 'qty', g %% 7, 'tags', jsonb_build_array('a', 'b', 'c'),
                                  'address', repeat('x', 120), 'flag', g %% 2 = 0),
               now() - (g || ' seconds')::interval, now()
        FROM generate_series(1, %s) g
        """,
        [rows],
    )
    conn.execute("VACUUM ANALYZE orders")


def relation_of(conn) -> Relation:
    rows = conn.execute(
        """
        SELECT a.attname, a.atttypid::int, a.atttypmod, coalesce(a.attnum = ANY (i.indkey), false)
        FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
        WHERE a.attrelid = 'orders'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
        """
    ).fetchall()
    return Relation(1, "public", "orders", [Column(*row) for row in rows])


def copy_stream(dsn: str, relation: Relation, writer, stats: dict):
    """Chunks of the snapshot COPY, about CHUNK_BYTES each, as the source side makes them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in pgtypes.SESSION_SETTINGS.items():
            conn.execute("SELECT set_config(%s, %s, false)", [name, value])
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        query = sql.SQL("COPY (SELECT {} FROM orders) TO STDOUT (FORMAT {})").format(
            sql.SQL(", ").join(writer.snapshot_columns(relation)), sql.SQL(writer.snapshot_format)
        )
        buffer = bytearray()
        with conn.cursor() as cur, cur.copy(query) as copy:
            for block in copy:
                buffer += block
                if len(buffer) >= CHUNK_BYTES:
                    stats["bytes"] += len(buffer)
                    stats["peak_rss"] = max(stats["peak_rss"], vmrss_mb())
                    yield bytes(buffer)
                    buffer.clear()
        if buffer:
            stats["bytes"] += len(buffer)
            yield bytes(buffer)


def raw_copy(dsn: str, fmt: str) -> tuple[float, int]:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        size = 0
        with cur.copy(sql.SQL("COPY orders TO STDOUT (FORMAT {})").format(sql.SQL(fmt))) as copy:
            for block in copy:
                size += len(block)
        return time.perf_counter() - started, size


def make_changes(relation: Relation, rows: int, changes: int) -> Batch:
    """Typed values, as engine/batch.py describes them."""
    now = datetime.now(UTC)
    table = TableChanges(relation=relation, target_table="orders")
    updates, inserts = int(changes * 0.6), int(changes * 0.3)
    deletes = changes - updates - inserts
    lsn = 10**9
    for n in range(updates + inserts):
        key = (n * 3 % rows) + 1 if n < updates else rows + n
        lsn += 1
        table.upserts[(key,)] = (
            {
                "id": key,
                "customer": key % 10000,
                "amount": Decimal(key % 100000) / 100,
                "note": f"changed note {key}",
                "details": {"sku": f"SKU-{key}", "qty": key % 7, "tags": ["a", "b"], "address": "y" * 120},
                "created_at": now - timedelta(seconds=key),
                "updated_at": now,
            },
            lsn,
        )
    for n in range(deletes):
        lsn += 1
        table.deletes[(rows - n,)] = lsn
    table.updated, table.inserted, table.deleted = updates, inserts, deletes
    return Batch(tables={("public", "orders"): table}, start_lsn=10**9, end_lsn=lsn + 1, changes=changes)


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=200_000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="rosetta-bench-writers-"))
    cluster = Cluster().start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE source")
            conn.execute("CREATE DATABASE warehouse")
        source_dsn = cluster.dsn("source")
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            started = time.perf_counter()
            fill_source(conn, args.rows)
            print(f"source: {args.rows:,} rows written in {time.perf_counter() - started:.1f}s")
            relation = relation_of(conn)

        print(f"\n{'route':<58}{'rows/s':>12}{'MB/s':>9}{'seconds':>9}")
        for fmt in ("binary", "csv"):
            seconds, size = raw_copy(source_dsn, fmt)
            print(
                f"{'limit: COPY TO STDOUT ' + fmt + ', read and discarded':<58}{rate(args.rows, seconds)}"
                f"{size / seconds / 2**20:>9.0f}{seconds:>9.2f}"
            )

        writers = {
            "PostgreSQL": PostgresWriter(
                {"host": "127.0.0.1", "port": cluster.port, "database": "warehouse", "username": "postgres"}
            ),
            "DuckDB": DuckDBWriter({"path": str(workdir / "warehouse.duckdb")}),
        }
        for name, writer in writers.items():
            writer.read_checkpoint("bench")  # connect first: the connection is not what we measure
            stats = {"bytes": 0, "peak_rss": vmrss_mb()}
            baseline = stats["peak_rss"]
            started = time.perf_counter()
            loaded = writer.load_snapshot(
                relation, "orders", copy_stream(source_dsn, relation, writer, stats), 1
            )
            seconds = time.perf_counter() - started
            assert loaded == args.rows, (loaded, args.rows)
            print(
                f"{'snapshot into ' + name + ' (' + writer.snapshot_format + ')':<58}{rate(loaded, seconds)}"
                f"{stats['bytes'] / seconds / 2**20:>9.0f}{seconds:>9.2f}"
                f"   RSS {baseline:.0f} -> peak {stats['peak_rss']:.0f} MB"
            )

        batch = make_changes(relation, args.rows, args.changes)
        gc.collect()
        for name, writer in writers.items():
            started = time.perf_counter()
            result = writer.apply_batch("bench", batch)
            seconds = time.perf_counter() - started
            applied = result.inserted + result.updated + result.deleted
            assert applied == args.changes, result
            print(
                f"{'apply_batch of ' + f'{args.changes:,} changes into ' + name:<58}{rate(applied, seconds)}{'':>9}{seconds:>9.2f}"
            )
            writer.close()
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
