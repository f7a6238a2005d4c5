"""What an idle pipeline costs: metadata rows written and connections opened per hour.

    .venv/bin/python bench/idle.py [--pipelines 3] [--seconds 180]

Starts a throwaway PostgreSQL cluster (rosetta/pgcluster.py) holding the metadata
database, a source database and a PostgreSQL destination database; creates
--pipelines running pipelines (one source, slot and table each) whose tables
get no writes; starts `celery beat` and `celery worker` as the deployment does
(default settings: a dispatch every 5 s) and, once every first run is done,
counts for --seconds:

- PipelineRun rows written (inserted; the pruning task deletes none in so short a window);
- sessions opened on each database (pg_stat_database.sessions, PostgreSQL 14+),
  walsender connections included (they count against the source database);
- replication connections (walsenders) seen by polling pg_stat_replication,

each scaled to one pipeline and one hour.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
from lag import BROKER_URL, environment, start_celery, stop, wait_for  # noqa: E402

from rosetta.pgcluster import Cluster  # noqa: E402

METADATA_DB, SOURCE_DB, TARGET_DB = "rosetta_idle", "idle_source", "idle_target"


def setup_pipelines(cluster: Cluster, count: int) -> list:
    from django.core.management import call_command

    from destinations.models import Destination
    from pipelines import services
    from pipelines.models import Pipeline
    from sources.models import Source

    call_command("migrate", verbosity=0)
    destination = Destination.objects.create(
        name="idle-target",
        kind=Destination.Kind.POSTGRES,
        pg_host="127.0.0.1",
        pg_port=cluster.port,
        pg_database=TARGET_DB,
        pg_username="postgres",
        pg_schema="public",
    )
    pipelines = []
    for n in range(count):
        source = Source.objects.create(
            name=f"idle-source-{n}",
            pg_host="127.0.0.1",
            pg_port=cluster.port,
            pg_database=SOURCE_DB,
            pg_username="postgres",
            slot_name=f"rosetta_idle_{n}",
            publication_name=f"rosetta_idle_{n}",
        )
        pipeline = Pipeline.objects.create(name=f"idle-{n}", source=source, destination=destination)
        services.set_pipeline_tables(pipeline, [f"public.quiet_{n}"])
        services.start_pipeline(pipeline)
        pipelines.append(pipeline)
    return pipelines


def sessions(conn) -> dict[str, int]:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return dict(
        conn.execute(
            "SELECT datname, sessions FROM pg_stat_database WHERE datname = ANY(%s)",
            [[METADATA_DB, SOURCE_DB, TARGET_DB]],
        ).fetchall()
    )


class WalsenderCounter(threading.Thread):
    """Counts distinct walsender processes (by pid and start time) seen in pg_stat_activity."""

    def __init__(self, conninfo: str):
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.seen: set[tuple] = set()
        self.stopping = threading.Event()

    def run(self):
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self.stopping.is_set():
                conn.execute("SELECT pg_stat_clear_snapshot()")
                rows = conn.execute(
                    "SELECT pid, backend_start FROM pg_stat_activity WHERE backend_type = 'walsender'"
                ).fetchall()
                self.seen.update(rows)
                self.stopping.wait(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipelines", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()

    log_dir = Path(tempfile.mkdtemp(prefix="rosetta-bench-idle-"))
    cluster = Cluster().start()
    processes = []
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            for name in (METADATA_DB, SOURCE_DB, TARGET_DB):
                conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(cluster.dsn(SOURCE_DB), autocommit=True) as conn:
            for n in range(args.pipelines):
                conn.execute(f"CREATE TABLE quiet_{n} (id bigint PRIMARY KEY, note text)")
                conn.execute(f"INSERT INTO quiet_{n} VALUES (1, 'one row, never changed')")
        env = environment(cluster)
        env["DATABASE_URL"] = cluster.url(METADATA_DB)
        os.environ.update(env)
        warnings.filterwarnings("ignore", message="No directory at")
        import django

        django.setup()
        from pipelines.models import PipelineRun, PipelineTable

        pipelines = setup_pipelines(cluster, args.pipelines)
        import redis

        redis.Redis.from_url(BROKER_URL).flushdb()
        processes = [start_celery("worker", env, log_dir), start_celery("beat", env, log_dir)]
        wait_for(
            lambda: (
                not PipelineTable.objects.filter(pipeline__in=pipelines)
                .exclude(snapshot_state=PipelineTable.SnapshotState.DONE)
                .exists()
            ),
            120,
            "every pipeline's first run (slot, publication, snapshot)",
        )
        time.sleep(6)  # let the first runs end
        counter = WalsenderCounter(cluster.dsn())
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            runs_before = PipelineRun.objects.count()
            before = sessions(conn)
            counter.start()
            print(f"{args.pipelines} idle pipelines, measuring for {args.seconds:.0f} s ...", flush=True)
            time.sleep(args.seconds)
            counter.stopping.set()
            counter.join()
            time.sleep(1.5)  # backends flush their statistics at least once a second
            after = sessions(conn)
            runs = PipelineRun.objects.count() - runs_before
        scale = 3600 / args.seconds / args.pipelines
        print(
            f"\nPer idle pipeline per hour ({args.pipelines} pipelines, {args.seconds:.0f} s, dispatch every 5 s)"
        )
        print(f"  PipelineRun rows written                {runs * scale:8,.0f}")
        for name, label in ((METADATA_DB, "metadata"), (SOURCE_DB, "source"), (TARGET_DB, "destination")):
            opened = after.get(name, 0) - before.get(name, 0)
            print(f"  sessions opened on the {label:<12}     {opened * scale:8,.0f}")
        print(f"  of which replication (walsender)        {len(counter.seen) * scale:8,.0f}")
        print("  (metadata sessions include the worker's and beat's own, shared by all pipelines)")
    finally:
        for process in processes:
            stop(process)
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        cluster.stop()
        if not args.keep_logs:
            import shutil

            shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
