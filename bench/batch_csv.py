"""CSV batch source throughput beside the databases' own CSV loaders, measured in one run.

    .venv/bin/python bench/batch_csv.py [--rows 1000000] [--part-rows 50000]

Writes a CSV file of --rows rows (~75 bytes: bigint id, int, decimal, text, ISO
timestamp with zone, boolean), starts a throwaway PostgreSQL cluster
(rosetta/pgcluster.py), then prints, for the same file:

- the limits: DuckDB's own `read_csv` into a table, and PostgreSQL's `COPY FROM STDIN`
  of the file (FORMAT csv, HEADER; psql's backslash-copy) into a table with a primary key;
- Rosetta's CSV source (engine.batch_sources: read, infer types, normalize names,
  merge on `id`, parts of --part-rows each committed with its checkpoint) into a
  DuckDB file and into a PostgreSQL database, with the share of each limit;
- dlt's filesystem source (read_csv) into DuckDB, when dlt is installed
  (`pip install -r bench/requirements.txt`).

Beside each wall-clock rate: this process's CPU time (all its threads, so DuckDB's too; not
PostgreSQL's server processes), which moves less than the wall clock on a shared machine.
"""

import argparse
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
import psycopg  # noqa: E402

from engine.batch_sources.csv import CsvReader, CsvSettings  # noqa: E402
from engine.batch_sources.loader import BatchLoader  # noqa: E402
from engine.writers.duckdb import DuckDBWriter  # noqa: E402
from engine.writers.postgres import PostgresWriter  # noqa: E402


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(7)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with path.open("w") as out:
        out.write("Order ID,Customer,Amount,Note,Created At,Paid\n")
        for i in range(1, rows + 1):
            created = (start + timedelta(seconds=i * 13)).isoformat()
            out.write(
                f"{i},{i % 10000},{rng.randint(100, 99999) / 100},order note {i},{created},"
                f"{'true' if i % 3 else 'false'}\n"
            )


def line(label: str, rows: int, seconds: float, limit: float | None = None, cpu: float | None = None) -> None:
    rate = rows / seconds
    share = f"   {rate / limit:6.1%} of the limit" if limit else ""
    cpu_text = f"   (this process's CPU: {cpu:.2f} s, {rows / cpu:,.0f} rows per CPU-second)" if cpu else ""
    print(f"  {label:<48}{rate:>12,.0f} rows/s {seconds:>8.2f} s{share}{cpu_text}", flush=True)


def rosetta_load(writer, path: Path, part_rows: int) -> tuple[int, float, float]:
    reader = CsvReader(CsvSettings.from_settings({"path": str(path), "primary_key": ["Order ID"]}))
    cpu_started = time.process_time()
    started = time.perf_counter()
    outcome = BatchLoader(
        reader,
        writer,
        pipeline_key="bench",
        source_name="orders_csv",
        target_table="orders",
        primary_key=["Order ID"],
        part_rows=part_rows,
    ).run()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    writer.close()
    assert outcome.rejects == 0 and outcome.records == outcome.result.inserted, outcome
    return outcome.records, seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--part-rows", type=int, default=50_000)
    parser.add_argument("--dlt-only", action="store_true", help="Only the DuckDB limit and dlt's source.")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rosetta-bench-csv-"))
    path = work / "orders.csv"
    write_csv(path, options.rows)
    size_mb = path.stat().st_size / 1e6
    print(f"CSV file of {options.rows:,} rows, {size_mb:.1f} MB")

    with duckdb.connect(str(work / "limit.duckdb")) as conn:
        cpu_started = time.process_time()
        started = time.perf_counter()
        conn.execute("CREATE TABLE orders AS SELECT * FROM read_csv(?)", [str(path)])
        duck_limit_seconds = time.perf_counter() - started
        duck_cpu = time.process_time() - cpu_started
    duck_limit = options.rows / duck_limit_seconds
    line("limit: DuckDB read_csv into a table", options.rows, duck_limit_seconds, cpu=duck_cpu)

    try:
        if not options.dlt_only:
            rosetta_runs(path, work, options, duck_limit)
        dlt_run(path, work, options, duck_limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rosetta_runs(path: Path, work: Path, options, duck_limit: float) -> None:
    # Here, not at the top: the rosetta package loads Celery, which dlt's virtualenv (--dlt-only) lacks.
    from rosetta.pgcluster import Cluster

    cluster = Cluster().start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE limit_db")
            conn.execute("CREATE DATABASE warehouse")
        with psycopg.connect(cluster.dsn("limit_db"), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE orders (order_id bigint PRIMARY KEY, customer bigint, amount float8, note text, "
                "created_at timestamptz, paid boolean)"
            )
            started = time.perf_counter()
            # psql's \copy: the server runs as another user and cannot open our file.
            with (
                conn.cursor() as cur,
                cur.copy("COPY orders FROM STDIN (FORMAT csv, HEADER)") as copy,
                path.open("rb") as data,
            ):
                while chunk := data.read(1 << 20):
                    copy.write(chunk)
            pg_limit_seconds = time.perf_counter() - started
        pg_limit = options.rows / pg_limit_seconds
        line("limit: PostgreSQL COPY FROM STDIN of the file", options.rows, pg_limit_seconds)

        rows, seconds, cpu = rosetta_load(
            DuckDBWriter({"path": str(work / "rosetta.duckdb")}), path, options.part_rows
        )
        line("Rosetta CSV source into DuckDB", rows, seconds, duck_limit, cpu)
        settings = {
            "host": cluster.host,
            "port": cluster.port,
            "database": "warehouse",
            "username": "postgres",
            "password": "",
            "schema": "public",
        }
        rows, seconds, cpu = rosetta_load(PostgresWriter(settings), path, options.part_rows)
        line("Rosetta CSV source into PostgreSQL", rows, seconds, pg_limit, cpu)
    finally:
        cluster.stop()
        for name in ("rosetta.duckdb", "limit.duckdb"):
            (work / name).unlink(missing_ok=True)


def dlt_run(path: Path, work: Path, options, duck_limit: float) -> None:
    try:
        import dlt
        from dlt.sources.filesystem import filesystem, read_csv, read_csv_duckdb
    except ImportError:
        print("  dlt filesystem source: dlt is not installed (pip install -r bench/requirements.txt)")
        return
    try:
        import pandas  # noqa: F401 - dlt's read_csv needs it
    except ImportError:
        reader, label = read_csv_duckdb(), "dlt filesystem read_csv_duckdb into DuckDB"
    else:
        reader, label = read_csv(), "dlt filesystem read_csv (pandas) into DuckDB"
    pipeline = dlt.pipeline(
        pipeline_name="bench_csv",
        destination=dlt.destinations.duckdb(str(work / "dlt.duckdb")),
        pipelines_dir=str(work / "dlt"),
        dataset_name="bench",
    )
    cpu_started = time.process_time()
    started = time.perf_counter()
    pipeline.run(filesystem(bucket_url=str(work), file_glob="orders.csv") | reader, table_name="orders")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    line(label, options.rows, seconds, duck_limit, cpu)


if __name__ == "__main__":
    main()
