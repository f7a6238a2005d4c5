"""cProfile of a CDC catch-up's main thread (read + decode + fold), the client's share.

    .venv/bin/python bench/profile_cdc.py [--changes 1000000] [--writer duckdb|postgres] [--top 25]

Builds the same source table and backlog as throughput.py (70% inserts, 25% updates,
5% deletes, 1,000 per transaction), then catches it up with the engine as throughput.py
does (one run per batch) under cProfile, and prints the top entries by own time. The
writer's apply runs in a thread that cProfile does not see: what is printed is the
stream, decode and fold. cProfile slows Python calls, so read the shares, not the rates.
"""

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
from throughput import TABLE, fill, workload  # noqa: E402

from engine.runner import DEFAULT_MAX_CHANGES_PER_TRANSACTION, Engine  # noqa: E402
from engine.source import SourceDatabase  # noqa: E402
from engine.writers.duckdb import DuckDBWriter  # noqa: E402
from engine.writers.postgres import PostgresWriter  # noqa: E402
from rosetta.pgcluster import Cluster  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--writer", choices=["duckdb", "postgres"], default="duckdb")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rosetta-profile-"))
    cluster = Cluster().start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_src")
            admin.execute("CREATE DATABASE bench_dst")
        source_kwargs = {"host": "127.0.0.1", "port": cluster.port, "dbname": "bench_src", "user": "postgres"}
        if args.writer == "duckdb":
            writer = DuckDBWriter({"path": str(work / "bench.duckdb")})
        else:
            writer = PostgresWriter(
                {"host": "127.0.0.1", "port": cluster.port, "database": "bench_dst", "username": "postgres",
                 "password": "", "schema": "public"}
            )  # fmt: skip
        with psycopg.connect(**source_kwargs, autocommit=True) as conn:
            conn.execute(
                """
                CREATE TABLE orders (
                    id bigint PRIMARY KEY, customer int, amount numeric(12,2), note text,
                    details jsonb, created_at timestamptz, updated_at timestamptz)
                """
            )
            rows = args.changes
            for start in range(0, rows, 100_000):
                fill(conn, start + 1, min(start + 100_000, rows))
            conn.execute("CREATE PUBLICATION bench FOR TABLE orders")
            conn.execute("SELECT pg_create_logical_replication_slot('bench', 'pgoutput')")
        with SourceDatabase(source_kwargs) as source:
            engine = Engine(
                source,
                writer,
                pipeline_key="bench",
                slot="bench",
                publication="bench",
                tables=[TABLE],
                max_changes_per_transaction=DEFAULT_MAX_CHANGES_PER_TRANSACTION,
            )
            engine.prepare()
            engine.snapshot_table(engine.tables[TABLE.key])
        writer.close()
        with psycopg.connect(**source_kwargs, autocommit=True, options="-c synchronous_commit=on") as conn:
            changes = workload(conn, rows, args.changes)
        profile = cProfile.Profile()
        started = time.perf_counter()
        applied = 0
        while True:
            with SourceDatabase(source_kwargs) as source:
                engine = Engine(
                    source,
                    writer,
                    pipeline_key="bench",
                    slot="bench",
                    publication="bench",
                    tables=[TABLE],
                    max_changes_per_transaction=DEFAULT_MAX_CHANGES_PER_TRANSACTION,
                )
                engine.prepare()
                profile.enable()
                outcome = engine.run_batch()
                profile.disable()
            writer.close()
            applied += outcome.batch.changes
            if outcome.caught_up:
                break
        seconds = time.perf_counter() - started
        print(f"{applied:,} of {changes:,} changes into {args.writer} in {seconds:.1f} s under cProfile")
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
