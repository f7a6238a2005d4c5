"""What the per-run schema check costs: Engine.align_schemas over N copied tables.

    .venv/bin/python bench/schema_check.py [--tables 50] [--columns 20]

Starts a throwaway PostgreSQL cluster (rosetta/pgcluster.py) holding a source
database and a PostgreSQL destination (and a DuckDB file), creates --tables
tables of --columns columns and their destination tables, then prints the time
of one align_schemas pass when nothing changed (every run pays it), and of one
pass after ADD COLUMN ... DEFAULT on every table (the columns added and filled).
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from engine.fold import TableSpec  # noqa: E402
from engine.runner import Engine  # noqa: E402
from engine.source import SourceDatabase  # noqa: E402
from engine.writers.duckdb import DuckDBWriter  # noqa: E402
from engine.writers.postgres import PostgresWriter  # noqa: E402
from rosetta.pgcluster import Cluster  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", type=int, default=50)
    parser.add_argument("--columns", type=int, default=20)
    args, _ = parser.parse_known_args()
    workdir = Path(tempfile.mkdtemp(prefix="rosetta-bench-"))
    cluster = Cluster().start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE src")
            conn.execute("CREATE DATABASE dst")
        source_kwargs = {"host": "127.0.0.1", "port": cluster.port, "dbname": "src", "user": "postgres"}
        columns = ", ".join(f"c{i} int" for i in range(args.columns))
        with psycopg.connect(**source_kwargs, autocommit=True) as conn:
            for t in range(args.tables):
                conn.execute(f"CREATE TABLE t{t} (id int PRIMARY KEY, {columns})")
                conn.execute(f"INSERT INTO t{t} (id) SELECT generate_series(1, 100)")
        specs = [TableSpec("public", f"t{t}", f"t{t}") for t in range(args.tables)]
        writers = {
            "postgres": PostgresWriter(
                {
                    "host": "127.0.0.1",
                    "port": cluster.port,
                    "database": "dst",
                    "username": "postgres",
                    "schema": "public",
                }
            ),
            "duckdb": DuckDBWriter({"path": str(workdir / "bench.duckdb")}),
        }
        for kind, writer in writers.items():
            with SourceDatabase(source_kwargs) as source:
                engine = Engine(
                    source,
                    writer,
                    pipeline_key="bench",
                    slot="s",
                    publication="p",
                    tables=specs,
                    max_changes_per_transaction=1,
                )
                for spec in specs:
                    relation = source.describe_table(spec.schema, spec.table)
                    with source.snapshot(relation, writer.snapshot_format) as chunks:
                        writer.load_snapshot(relation, spec.target_table, chunks, 0)
                keys = [spec.key for spec in specs]
                started = time.perf_counter()
                if kind == "duckdb" and "--profile" in sys.argv:
                    import cProfile

                    cProfile.runctx("engine.align_schemas(keys)", globals(), locals(), sort="cumtime")
                engine.align_schemas(keys)
                unchanged = time.perf_counter() - started
                with psycopg.connect(**source_kwargs, autocommit=True) as conn:
                    for spec in specs:
                        conn.execute(f"ALTER TABLE {spec.table} ADD COLUMN added_{kind} int DEFAULT 7")
                started = time.perf_counter()
                check = engine.align_schemas(keys)
                added = time.perf_counter() - started
                with psycopg.connect(**source_kwargs, autocommit=True) as conn:
                    for spec in specs:
                        conn.execute(f"ALTER TABLE {spec.table} DROP COLUMN added_{kind}")
                writer.close()
            print(
                f"{kind:9} {args.tables} tables x {args.columns} columns: nothing changed "
                f"{unchanged * 1000:7.1f} ms ({unchanged * 1000 / args.tables:.2f} ms/table); "
                f"a column added to each {added * 1000:7.1f} ms ({len(check.notes)} notes)"
            )
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
