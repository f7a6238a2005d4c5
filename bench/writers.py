"""Destination writer throughput beside the raw COPY limit, measured in one run.

    .venv/bin/python bench/writers.py [--rows 1000000] [--changes 200000]

Starts a throwaway PostgreSQL cluster (rosetta/pgcluster.py), fills a source
table of --rows rows of ~330 bytes (bigint key, int, numeric(12,2), text,
~230 B jsonb, two timestamptz), then prints:

- the limit: `COPY TO STDOUT` (binary, then CSV) read and discarded;
- load_snapshot of that table into a PostgreSQL database (binary COPY passthrough)
  and into a DuckDB file (CSV through Arrow), with the peak RSS during the load;
- apply_batch of --changes changes (60% updates of existing keys, 30% inserts,
  10% deletes; typed Python values, as the source side hands them to Snowflake) into each;
- the same changes as PostgreSQL's text form (what CDC hands PostgreSQL and DuckDB,
  TableChanges.text_values), applied in parts of 50,000 as a CDC run does, beside the
  limit of each destination: the same statements run by hand on data prepared before
  the clock starts (PostgreSQL: COPY of ready-made text, the rows of keys first inserted
  in the part straight into the table, the others into the staging table, then the
  writer's DELETE and INSERT ... ON CONFLICT; DuckDB: ready-made Arrow tables and
  the writer's DELETE and MERGE), i.e. the database's share without the writer's Python.
The applies run with the garbage collector off, as the engine runs them (Engine.run_batch):
with it on, its scans of the batch's many dicts took half the DuckDB apply's time.
"""

import argparse
import gc
import json
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
        if n >= updates:
            table.fresh.add((key,))  # an insert of a key the table never had, as the fold marks it
    for n in range(deletes):
        lsn += 1
        table.deletes[(rows - n,)] = lsn
    table.updated, table.inserted, table.deleted = updates, inserts, deletes
    return Batch(tables={("public", "orders"): table}, start_lsn=10**9, end_lsn=lsn + 1, changes=changes)


def text_parts(batch: Batch, part: int) -> list[Batch]:
    """The batch's changes as text values, in parts of `part` changes, as a CDC run applies them."""
    (table,) = batch.tables.values()
    items = [("u", key, row, lsn) for key, (row, lsn) in table.upserts.items()]
    items += [("d", key, None, lsn) for key, lsn in table.deletes.items()]
    parts = []
    for start in range(0, len(items), part):
        changes = TableChanges(relation=table.relation, target_table="orders", text_values=True)
        for kind, key, row, lsn in items[start : start + part]:
            text_key = tuple(str(k) for k in key)
            if kind == "u":
                text = {name: None if v is None else _pg_text(v) for name, v in row.items()}
                changes.upserts[text_key] = (text, lsn)
                changes.updated += 1
                if key in table.fresh:
                    changes.fresh.add(text_key)
            else:
                changes.deletes[text_key] = lsn
                changes.deleted += 1
        lsns = [lsn for *_, lsn in items[start : start + part]]
        parts.append(
            Batch(
                tables={("public", "orders"): changes},
                start_lsn=min(lsns),
                end_lsn=max(lsns) + 1,
                changes=len(lsns),
            )
        )
    return parts


def _pg_text(value) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)


def _copy_text(value) -> str:
    return "\\N" if value is None else value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def postgres_copy_for_limit(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS limit_orders")
        conn.execute("CREATE TABLE limit_orders (LIKE orders INCLUDING ALL)")
        conn.execute("INSERT INTO limit_orders SELECT * FROM orders")


def duckdb_copy_for_limit(path: str) -> None:
    import duckdb

    with duckdb.connect(path) as conn:
        conn.execute("CREATE OR REPLACE TABLE limit_orders AS SELECT * FROM orders")


def postgres_limit(dsn: str, relation: Relation, parts: list[Batch]) -> float:
    """The PostgreSQL writer's statements, on COPY text made before the clock starts."""
    names = relation.column_names
    ready = []
    for part in parts:
        (changes,) = part.tables.values()
        synced_at = datetime.now(UTC).isoformat(sep=" ")
        fresh, merged = [], []
        for key, (row, lsn) in changes.upserts.items():
            values = [*(_copy_text(row[name]) for name in names), str(lsn)]
            if key in changes.fresh:
                fresh.append("\t".join([*values, synced_at]) + "\n")
            else:
                merged.append("\t".join(values) + "\n")
        deletes = "".join(f"{key[0]}\t{lsn}\n" for key, lsn in changes.deletes.items()).encode()
        ready.append(("".join(fresh).encode(), "".join(merged).encode(), deletes))
    columns = ", ".join([*names, "_rosetta_lsn"])
    updates = ", ".join(
        f"{name} = EXCLUDED.{name}" for name in [*names[1:], "_rosetta_lsn", "_rosetta_synced_at"]
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE limit_orders")
        started = time.perf_counter()
        for fresh, upserts, deletes in ready:
            with conn.transaction():
                conn.execute(
                    "CREATE TEMP TABLE s_del ON COMMIT DROP AS SELECT id, _rosetta_lsn FROM limit_orders WITH NO DATA"
                )
                with conn.cursor().copy("COPY s_del FROM STDIN") as copy:
                    copy.write(deletes)
                conn.execute("DELETE FROM limit_orders AS t USING s_del AS s WHERE t.id = s.id")
                with (
                    conn.transaction(),
                    conn.cursor().copy(
                        f"COPY limit_orders ({columns}, _rosetta_synced_at) FROM STDIN"
                    ) as copy,
                ):
                    copy.write(fresh)
                conn.execute(
                    f"CREATE TEMP TABLE s_up ON COMMIT DROP AS SELECT {columns} FROM limit_orders WITH NO DATA"
                )
                with conn.cursor().copy("COPY s_up FROM STDIN") as copy:
                    copy.write(upserts)
                conn.execute(
                    f"INSERT INTO limit_orders AS t ({columns}, _rosetta_synced_at) SELECT {columns}, now() FROM s_up "
                    f"ON CONFLICT (id) DO UPDATE SET {updates}, _rosetta_deleted_at = NULL"
                )
        return time.perf_counter() - started


def duckdb_limit(path: str, relation: Relation, parts: list[Batch]) -> float:
    """The DuckDB writer's statements, on Arrow tables made before the clock starts."""
    import duckdb
    import pyarrow as pa

    from engine.writers import types as writer_types
    from engine.writers.duckdb import from_text, quote

    names = relation.column_names
    duck_types = {c.name: writer_types.duckdb_type(c.type_oid, c.type_modifier) for c in relation.columns}
    ready = []
    for part in parts:
        (changes,) = part.tables.values()
        rows = list(changes.upserts.values())
        upserts = pa.Table.from_arrays(
            [pa.array([row[name] for row, _ in rows], pa.string()) for name in names]
            + [pa.array([lsn for _, lsn in rows], pa.int64())],
            names=[*names, "lsn"],
        )
        deletes = pa.Table.from_arrays(
            [
                pa.array([key[0] for key in changes.deletes], pa.string()),
                pa.array(list(changes.deletes.values()), pa.int64()),
            ],
            names=["id", "lsn"],
        )
        ready.append((upserts, deletes))
    select = ", ".join(
        f"{from_text(quote(name), duck_types[name], csv=True)} AS {quote(name)}" for name in names
    )
    updates = ", ".join(f"{quote(name)} = s.{quote(name)}" for name in names[1:])
    with duckdb.connect(path) as conn:
        started = time.perf_counter()
        for upserts, deletes in ready:
            conn.execute("BEGIN TRANSACTION")
            conn.register("s_del", deletes)
            conn.execute("DELETE FROM limit_orders AS t USING s_del AS s WHERE t.id = CAST(s.id AS BIGINT)")
            conn.register("s_up", upserts)
            conn.execute(
                f"MERGE INTO limit_orders AS t USING (SELECT {select}, lsn FROM s_up) AS s ON t.id = s.id "
                f"WHEN MATCHED THEN UPDATE SET {updates}, _rosetta_lsn = s.lsn, _rosetta_synced_at = now(), "
                "_rosetta_deleted_at = NULL "
                f"WHEN NOT MATCHED THEN INSERT ({', '.join(quote(n) for n in names)}, _rosetta_lsn, "
                f"_rosetta_synced_at) VALUES ({', '.join('s.' + quote(n) for n in names)}, s.lsn, now())"
            )
            conn.execute("COMMIT")
        return time.perf_counter() - started


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
        gc.disable()  # as the engine applies a run's batch (Engine.run_batch): no collector scans
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

        gc.enable()
        parts = text_parts(batch, 50_000)
        gc.collect()
        gc.disable()
        copy_for_limit = {
            "PostgreSQL": lambda: postgres_copy_for_limit(cluster.dsn("warehouse")),
            "DuckDB": lambda: duckdb_copy_for_limit(str(workdir / "warehouse.duckdb")),
        }
        limits = {
            "PostgreSQL": lambda: postgres_limit(cluster.dsn("warehouse"), relation, parts),
            "DuckDB": lambda: duckdb_limit(str(workdir / "warehouse.duckdb"), relation, parts),
        }
        print(f"\n{args.changes:,} changes as text values, in parts of 50,000 (what a CDC run hands over)")
        for name, writer in writers.items():
            # Back to the rows before the changes (the typed apply above made them), and a
            # copy of them for the limit: inserts are inserts again, not conflicts.
            writer.load_snapshot(
                relation, "orders", copy_stream(source_dsn, relation, writer, {"bytes": 0, "peak_rss": 0}), 1
            )
            copy_for_limit[name]()
            started = time.perf_counter()
            applied = 0
            for part in parts:
                result = writer.apply_batch("bench-text", part)
                applied += result.inserted + result.updated + result.deleted
            seconds = time.perf_counter() - started
            writer.close()
            limit = limits[name]()
            print(
                f"{'  limit: the same statements on ready data, ' + name:<58}{rate(args.changes, limit)}{'':>9}{limit:>9.2f}"
            )
            print(
                f"{'  apply_batch into ' + name:<58}{rate(applied, seconds)}{'':>9}{seconds:>9.2f}"
                f"   {limit / seconds:.0%} of the limit"
            )
        gc.enable()
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
