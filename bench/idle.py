"""What an idle pipeline costs: metadata rows written and connections opened per hour.

    .venv/bin/python bench/idle.py [--pipelines 3] [--seconds 180]

Starts a throwaway PostgreSQL cluster (rosetta/pgcluster.py) holding the metadata
database, a source database and a PostgreSQL destination database; creates
--pipelines running pipelines (one source, slot and table each) whose tables
get no writes; starts `celery beat` and `celery worker` as the deployment does
(default settings: a dispatch every 5 s) and, once every first run is done,
counts for --seconds:

- PipelineRun rows written (inserted; the pruning task deletes none in so short a window);
- connections opened to each database, and replication (walsender) connections,
  counted in the server log (log_connections = on for the window),

each scaled to one pipeline and one hour.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
from lag import BROKER_URL, environment, start_celery, tear_down, wait_for  # noqa: E402

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


def connections_logged(log_text: str) -> dict[str, int]:
    """Connections per database, and replication (walsender) connections, from the server
    log written with log_connections = on."""
    counts = {"replication": 0}
    for line in log_text.splitlines():
        if "replication connection authorized" in line:
            counts["replication"] += 1
        elif "connection authorized" in line and "database=" in line:
            name = line.split("database=", 1)[1].split()[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


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
        server_log = cluster.base_dir / "server.log"
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET log_connections = on")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(1)
        runs_before = PipelineRun.objects.count()
        offset = server_log.stat().st_size
        print(f"{args.pipelines} idle pipelines, measuring for {args.seconds:.0f} s ...", flush=True)
        time.sleep(args.seconds)
        with server_log.open("rb") as log:
            log.seek(offset)
            opened = connections_logged(log.read().decode("utf-8", "replace"))
        runs = PipelineRun.objects.count() - runs_before
        scale = 3600 / args.seconds / args.pipelines
        print(
            f"\nPer idle pipeline per hour ({args.pipelines} pipelines, {args.seconds:.0f} s, dispatch every 5 s)"
        )
        print(f"  PipelineRun rows written                {runs * scale:8,.0f}")
        for name, label in (
            (METADATA_DB, "metadata database"),
            (SOURCE_DB, "source database"),
            ("replication", "source, replication"),
            (TARGET_DB, "destination database"),
        ):
            print(f"  connections to the {label:<20} {opened.get(name, 0) * scale:8,.0f}")
        print("  (metadata connections include the worker's and beat's own, shared by all pipelines)")
    finally:
        tear_down(processes, cluster, log_dir, keep_logs=args.keep_logs)


if __name__ == "__main__":
    main()
