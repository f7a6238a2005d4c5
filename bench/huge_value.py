"""A snapshot of one huge value into each destination: time, peak memory, and that it arrived intact.

    .venv/bin/python bench/huge_value.py [--mb 200] [--snowflake]

Starts a throwaway PostgreSQL cluster (rosetta/pgcluster.py) and fills a source
table with two rows: one whose text is --mb MB of 'ab"c,\\n' (quotes, commas and
newlines, so the CSV doubles every quote: --mb * 7/6 MB on the wire) and one small
row. Then load_snapshot of that table into a PostgreSQL database (binary COPY),
a DuckDB file (CSV through Arrow) and, with --snowflake, fakesnow (the Snowflake
writer against DuckDB, so its time says little about Snowflake). After each, the
stored value's length and md5 are compared with the source's.

The peak RSS is the process's (getrusage), which only grows: read each line as
"the peak so far", destinations in the order printed. This is a bench and not a
test because it takes longer than a test should (over 20 s on a busy machine).
"""

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from engine import pgtypes  # noqa: E402
from engine.batch import Column, Relation  # noqa: E402
from engine.writers.duckdb import DuckDBWriter  # noqa: E402
from engine.writers.postgres import PostgresWriter  # noqa: E402
from rosetta.pgcluster import Cluster  # noqa: E402

CHUNK_BYTES = 4 * 1024 * 1024  # what the source side's snapshot hands over per chunk
PIECE = 'ab"c,\n'


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def chunks(dsn: str, relation: Relation, writer):
    """The snapshot COPY in chunks of about CHUNK_BYTES, as the source side makes them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in pgtypes.SESSION_SETTINGS.items():
            conn.execute("SELECT set_config(%s, %s, false)", [name, value])
        query = sql.SQL("COPY (SELECT {} FROM huge) TO STDOUT (FORMAT {})").format(
            sql.SQL(", ").join(writer.snapshot_columns(relation)), sql.SQL(writer.snapshot_format)
        )
        buffer = bytearray()
        with conn.cursor() as cur, cur.copy(query) as copy:
            for block in copy:
                buffer += block
                if len(buffer) >= CHUNK_BYTES:
                    yield bytes(buffer)
                    buffer.clear()
        if buffer:
            yield bytes(buffer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the huge value, in MB (10^6 characters)")
    parser.add_argument("--snowflake", action="store_true", help="also into fakesnow")
    args = parser.parse_args()
    pieces = args.mb * 1_000_000 // len(PIECE)

    workdir = Path(tempfile.mkdtemp(prefix="rosetta-bench-huge-"))
    cluster = Cluster().start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE source")
            conn.execute("CREATE DATABASE warehouse")
        source_dsn = cluster.dsn("source")
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE huge (id int PRIMARY KEY, body text)")
            conn.execute(
                "INSERT INTO huge SELECT 1, repeat(%s, %s) UNION ALL SELECT 2, 'small'", [PIECE, pieces]
            )
            expected = conn.execute("SELECT id, length(body), md5(body) FROM huge ORDER BY id").fetchall()
        relation = Relation(1, "public", "huge", [Column("id", 23, -1, True), Column("body", 25, -1, False)])
        print(f"value: {expected[0][1]:,} characters; RSS peak before loading {peak_rss_mb():.0f} MB")

        def stored_postgres():
            with psycopg.connect(cluster.dsn("warehouse")) as conn:
                return conn.execute(
                    "SELECT id, length(body), md5(body) FROM public.huge ORDER BY id"
                ).fetchall()

        def stored_duckdb():
            with duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True) as conn:
                return conn.execute("SELECT id, length(body), md5(body) FROM huge ORDER BY id").fetchall()

        routes = [
            (
                "PostgreSQL",
                PostgresWriter(
                    {
                        "host": "127.0.0.1",
                        "port": cluster.port,
                        "database": "warehouse",
                        "username": "postgres",
                    }
                ),
                stored_postgres,
            ),
            ("DuckDB", DuckDBWriter({"path": str(workdir / "warehouse.duckdb")}), stored_duckdb),
        ]
        for name, writer, stored in routes:
            writer.read_checkpoint("bench")  # connect first: the connection is not what we measure
            started = time.perf_counter()
            loaded = writer.load_snapshot(relation, "huge", chunks(source_dsn, relation, writer), 1)
            seconds = time.perf_counter() - started
            peak = peak_rss_mb()  # before reading the value back
            writer.close()
            intact = [tuple(row) for row in stored()] == [tuple(row) for row in expected]
            print(
                f"snapshot into {name:<11} {seconds:6.1f} s  {loaded} rows  intact: {intact}  "
                f"RSS peak so far {peak:.0f} MB"
            )
        if args.snowflake:
            snowflake(source_dsn, relation, expected)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def snowflake(source_dsn, relation, expected) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "destinations" / "tests"))
    from fakesnow_support import fake_snowflake, snowflake_settings

    from engine.writers.snowflake import SnowflakeWriter

    settings = snowflake_settings()
    with fake_snowflake(settings) as analyst:
        writer = SnowflakeWriter(settings)
        started = time.perf_counter()
        loaded = writer.load_snapshot(relation, "huge", chunks(source_dsn, relation, writer), 1)
        seconds = time.perf_counter() - started
        peak = peak_rss_mb()
        writer.close()
        stored = (
            analyst.cursor()
            .execute('SELECT "id", length("body"), md5("body") FROM "huge" ORDER BY 1')
            .fetchall()
        )
        intact = [tuple(row) for row in stored] == [tuple(row) for row in expected]
        print(
            f"snapshot into {'fakesnow':<11} {seconds:6.1f} s  {loaded} rows  intact: {intact}  "
            f"RSS peak so far {peak:.0f} MB"
        )


if __name__ == "__main__":
    main()
