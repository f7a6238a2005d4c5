"""The control plane at scale: API lists, admin pages and a WAL probe tick against a big metadata DB.

    .venv/bin/python bench/control_plane.py [--sources 1000] [--pipelines 10000]
        [--runs-per-pipeline 100] [--metrics 10000000] [--requests 30]
        [--probe-sources 200] [--silent-sources 10]

Starts a throwaway PostgreSQL cluster (rosetta/pgcluster.py), migrates a fresh
metadata database, bulk-loads sources, destinations, pipelines (with two tables
each), pipeline runs, WAL/slot metric rows (one WAL row and two slot rows per
probe), alert states and events, then measures with Django's test client (the
whole middleware stack, no network):

- page 1 of every API list endpoint, p50/p95 over --requests requests, and the
  number of queries at the default page size and at page_size=500;
- the admin changelists of Rosetta's models, the admin index and the overview;
- one WAL probe tick (monitoring.services.probe_sources, what the Beat task runs)
  over --probe-sources sources on the cluster, of which --silent-sources point at
  listening sockets that accept the connection and never answer.

Goals (issue 6): API p95 < 100 ms, admin pages < 1 s, the probe tick < 10 s.
"""

import argparse
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import warnings  # noqa: E402

from cryptography.fernet import Fernet  # noqa: E402

from rosetta.pgcluster import Cluster  # noqa: E402

API_GOAL_MS = 100
ADMIN_GOAL_MS = 1000
PROBE_GOAL_S = 10
METADATA_DB = "rosetta_bench"


def setup_django(cluster: Cluster) -> None:
    """Point the settings at the throwaway cluster, then load Django."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="rosetta.settings",
        DATABASE_URL=cluster.url(METADATA_DB),
        CONN_MAX_AGE="600",
        DEBUG="false",
        LOG_LEVEL="ERROR",
        ROSETTA_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        CELERY_BROKER_URL="redis://127.0.0.1:6379/13",
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    )
    import django

    warnings.filterwarnings("ignore", message="No directory at")  # no collectstatic for a bench
    django.setup()


# --- loading -------------------------------------------------------------------------


def raw_connection():
    from django.db import connection

    connection.ensure_connection()
    return connection.connection


def insert_select(model, overrides: dict[str, str], from_clause: str, params: list | None = None) -> int:
    """INSERT INTO <model's table> SELECT ... FROM <from_clause>, server-side.

    Each field gets its SQL expression from `overrides` (by field name) or, failing
    that, its Python default as a bound parameter, so fields that others add later
    with a default keep this working.
    """
    from django.db import connection
    from psycopg import sql

    columns, expressions = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(sql.Identifier(field.column))
        if field.name in overrides:
            expressions.append(sql.SQL(overrides[field.name]))
            continue
        if not field.has_default() and not field.null:
            raise RuntimeError(f"{model.__name__}.{field.name} needs an expression in the bench loader")
        default = field.get_default() if field.has_default() else None
        expressions.append(sql.Literal(field.get_db_prep_save(default, connection)))
    query = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
        sql.Identifier(model._meta.db_table),
        sql.SQL(", ").join(columns),
        sql.SQL(", ").join(expressions),
        sql.SQL(from_clause),
    )
    cursor = raw_connection().execute(query, params or [])
    return cursor.rowcount


@contextmanager
def indexes_dropped(*tables: str):
    """Drop a table's secondary indexes for a bulk load and build them after: several
    times faster than maintaining them row by row."""
    conn = raw_connection()
    saved = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint)",
        [list(tables)],
    ).fetchall()
    from psycopg import sql

    for name, _ in saved:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    conn.execute("SET session_replication_role = replica")  # no FK triggers per row
    try:
        yield
    finally:
        conn.execute("SET session_replication_role = DEFAULT")
        conn.execute("SET maintenance_work_mem = '512MB'")
        for _, definition in saved:
            conn.execute(definition)


def timed(label: str):
    class Timer:
        def __enter__(self):
            self.started = time.perf_counter()
            return self

        def __exit__(self, *exc):
            if exc[0] is None:
                print(f"  {label:<52} {time.perf_counter() - self.started:7.1f} s", flush=True)

    return Timer()


def load(args, cluster: Cluster, work_dir: Path) -> dict:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from destinations.models import Destination
    from monitoring.models import AlertEvent, AlertState, SlotMetric, WalMetric, WalSettings
    from pipelines.models import Pipeline, PipelineRun, PipelineTable
    from sources.models import Source

    print(
        f"Loading {args.sources:,} sources, {args.pipelines:,} pipelines, "
        f"{args.pipelines * args.runs_per_pipeline:,} runs, {args.metrics:,} WAL/slot metric rows",
        flush=True,
    )
    conn = raw_connection()
    # Two real logical slots on the cluster, so that every probe records slot rows.
    for slot in ("rosetta_slot_a", "rosetta_slot_b"):
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [slot])

    with timed(f"{args.sources:,} sources, destinations (bulk_create)"):
        Source.objects.bulk_create(
            Source(
                name=f"source-{i:05d}",
                pg_host="127.0.0.1",
                pg_port=cluster.port,
                pg_database="postgres",
                pg_username="postgres",
                slot_name=f"rosetta_slot_{i:05d}",
                publication_name=f"rosetta_pub_{i:05d}",
            )
            for i in range(args.sources)
        )
        Destination.objects.bulk_create(
            Destination(
                name=f"warehouse-{i:04d}",
                kind=Destination.Kind.DUCKDB,
                duckdb_path=str(work_dir / f"w{i}.duckdb"),
            )
            for i in range(args.destinations)
        )
    source_ids = list(Source.objects.order_by("pk").values_list("pk", flat=True))
    destination_ids = list(Destination.objects.order_by("pk").values_list("pk", flat=True))

    now = timezone.now()
    statuses = [Pipeline.Status.PAUSED] * 6 + [Pipeline.Status.CREATED] * 2 + [Pipeline.Status.FAILED]
    with timed(f"{args.pipelines:,} pipelines + {2 * args.pipelines:,} tables (bulk_create)"):
        Pipeline.objects.bulk_create(
            (
                Pipeline(
                    name=f"pipeline-{i:05d}",
                    source_id=source_ids[i % len(source_ids)],
                    destination_id=destination_ids[i % len(destination_ids)],
                    # One running pipeline per source (a slot feeds one pipeline); the others
                    # stand for batch pipelines, which read no slot (pipeline_one_started_per_source).
                    status=Pipeline.Status.RUNNING if i < len(source_ids) else statuses[i % len(statuses)],
                    reads_replication_slot=i < len(source_ids),
                    last_error="Database error (OperationalError): connection refused" if i % 9 == 8 else "",
                    lag_bytes=(i * 7919) % 50_000_000,
                    lag_measured_at=now,
                )
                for i in range(args.pipelines)
            ),
            batch_size=5000,
        )
        pipeline_ids = list(Pipeline.objects.order_by("pk").values_list("pk", flat=True))
        PipelineTable.objects.bulk_create(
            (
                PipelineTable(pipeline_id=pk, table_name=name, target_table=name)
                for pk in pipeline_ids
                for name in ("orders", "customers")
            ),
            batch_size=5000,
        )

    runs = args.pipelines * args.runs_per_pipeline
    with timed(f"{runs:,} pipeline runs (INSERT ... SELECT)"), indexes_dropped(PipelineRun._meta.db_table):
        # Each pipeline ran every ~10 minutes; 2% of runs failed.
        insert_select(
            PipelineRun,
            {
                "pipeline": "(%s::bigint[])[mod(g, %s) + 1]",
                "started_at": "now() - (g / %s) * interval '10 minutes' - mod(g, 600) * interval '1 second'",
                "finished_at": "now() - (g / %s) * interval '10 minutes' - mod(g, 600) * interval '1 second' "
                "+ interval '3 seconds'",
                "outcome": "CASE WHEN mod(g, 50) = 7 THEN 'failed' ELSE 'succeeded' END",
                "start_lsn": "'0/1000000'",
                "end_lsn": "'0/2000000'",
                "changes_read": "mod(g, 5000)",
                "rows_inserted": "mod(g, 3000)",
                "rows_updated": "mod(g, 1500)",
                "rows_deleted": "mod(g, 500)",
                "bytes_read": "mod(g, 5000) * 330",
                "error": "CASE WHEN mod(g, 50) = 7 THEN 'Database error (OperationalError): timeout' ELSE '' END",
            },
            "generate_series(0::bigint, %s - 1) AS g",
            [pipeline_ids, len(pipeline_ids), len(pipeline_ids), len(pipeline_ids), runs],
        )

    probes = args.metrics // 3  # one WAL row and two slot rows per probe
    n_sources = len(source_ids)
    probe_every = "interval '3 minutes'"
    with timed(f"{probes:,} WAL metric rows"), indexes_dropped(WalMetric._meta.db_table):
        insert_select(
            WalMetric,
            {
                "source": "(%s::bigint[])[mod(g, %s) + 1]",
                "probed_at": f"date_trunc('minute', now()) - (g / %s) * {probe_every}",
                "ok": "mod(g, 997) <> 3",
                "error": "CASE WHEN mod(g, 997) = 3 THEN 'Could not connect: timeout expired' ELSE '' END",
                "duration_ms": "mod(g, 40) + 5",
                "lsn_position": "1000000000000 - g * 1000",
                "wal_dir_bytes": "1073741824 + mod(g, 100) * 16777216",
                "wal_segments": "64 + mod(g, 100)",
                "wal_rate_bytes_per_s": "mod(g, 100000)::float",
            },
            "generate_series(0::bigint, %s - 1) AS g",
            [source_ids, n_sources, n_sources, probes],
        )
    slot_rows = args.metrics - probes
    with timed(f"{slot_rows:,} slot metric rows"), indexes_dropped(SlotMetric._meta.db_table):
        # Most slots hold little WAL; sources whose number ends in 00-04 hold gigabytes.
        insert_select(
            SlotMetric,
            {
                "source": "(%s::bigint[])[mod(g, %s) + 1]",
                "probed_at": f"date_trunc('minute', now()) - (g / %s) * {probe_every}",
                "slot_name": "s.name",
                "plugin": "'pgoutput'",
                "slot_type": "'logical'",
                "database": "'postgres'",
                "active": "mod(g, 5) = 0",
                "restart_lsn": "'0/1000000'",
                "confirmed_flush_lsn": "'0/2000000'",
                "retained_bytes": "CASE WHEN mod(mod(g, %s), 100) < 5 THEN 2000000000 + mod(g, 97) * 50000000 "
                "ELSE mod(g * 7919, 400000000) END",
                "unconfirmed_bytes": "mod(g * 7919, 300000000)",
                "wal_status": "CASE WHEN mod(mod(g, %s), 100) = 1 THEN 'extended' ELSE 'reserved' END",
            },
            "generate_series(0::bigint, %s - 1) AS g CROSS JOIN (VALUES ('rosetta_slot'), ('reporting_slot')) AS s(name)",
            [source_ids, n_sources, n_sources, n_sources, n_sources, slot_rows // 2],
        )
    with timed("alert states, alert events, WAL settings"):
        insert_select(
            AlertState,
            {
                "key": "'source:' || src.id || ':' || c.name",
                "source": "src.id",
                "condition": "c.name",
                "level": "CASE WHEN c.name = 'retained_wal' AND mod(src.id, 100) < 5 THEN 'critical' "
                "WHEN c.name = 'wal_status' AND mod(src.id, 100) = 1 THEN 'warn' ELSE 'ok' END",
                "since": "now() - interval '3 days'",
                "updated_at": "now()",
            },
            "sources_source AS src CROSS JOIN (VALUES ('retained_wal'), ('slot_inactive'), ('wal_status'), "
            "('probe_failed')) AS c(name)",
        )
        insert_select(
            AlertEvent,
            {
                "source": "(%s::bigint[])[mod(g, %s) + 1]",
                "created_at": "now() - g * interval '30 seconds'",
                "condition": "'retained_wal'",
                "previous_level": "CASE WHEN mod(g, 2) = 0 THEN 'ok' ELSE 'warn' END",
                "level": "CASE WHEN mod(g, 2) = 0 THEN 'warn' ELSE 'ok' END",
                "message": "'Slot rosetta_slot retains 1.2 GB of WAL (warning at 1.0 GB).'",
                "slot_name": "'rosetta_slot'",
                "value_bytes": "1288490188",
                "notified_at": "now() - g * interval '30 seconds'",
                "next_attempt_at": "now() - g * interval '30 seconds'",
            },
            "generate_series(0::bigint, %s - 1) AS g",
            [source_ids, n_sources, args.alert_events],
        )
        insert_select(
            WalSettings,
            {
                "source": "src.id",
                "recorded_at": "now() - interval '7 days'",
                "max_slot_wal_keep_size": "-1",
                "max_wal_size": "1073741824",
                "wal_keep_size": "0",
                "wal_segment_size": "16777216",
            },
            "sources_source AS src",
        )
    with timed("VACUUM ANALYZE"):
        conn.execute("VACUUM ANALYZE")
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password")
    return {"user": user, "source_ids": source_ids, "pipeline_ids": pipeline_ids}


# --- measuring -----------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def measure(client, url: str, requests: int) -> tuple[float, float, int]:
    """(p50 ms, p95 ms, queries) of GET url, after two warm-up requests."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: HTTP {response.status_code}\n{response.content[:500]!r}")
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    return statistics.median(times), percentile(times, 0.95), len(captured)


def verdict(value: float, goal: float) -> str:
    return "ok" if value < goal else f"MISSED ({value / goal:.1f}x the goal)"


def measure_api(client, requests: int, ids: dict) -> list[tuple]:
    some_source, some_pipeline = ids["source_ids"][17], ids["pipeline_ids"][17]
    urls = [
        "/api/sources/",
        "/api/destinations/",
        "/api/pipelines/",
        "/api/pipeline-runs/",
        "/api/wal-metrics/",
        "/api/slot-metrics/",
        "/api/alerts/",
        # What a dashboard or script asks next: one object's history, newest first.
        "/api/pipelines/?status=running",
        f"/api/pipeline-runs/?pipeline={some_pipeline}",
        "/api/pipeline-runs/?outcome=failed",
        f"/api/wal-metrics/?source={some_source}&ordering=-probed_at",
        "/api/slot-metrics/?ordering=-probed_at",
        f"/api/slot-metrics/?source={some_source}&slot_name=rosetta_slot&ordering=-probed_at",
        "/api/alerts/?level=warn",
    ]
    print(f"\nAPI list endpoints, page 1 ({requests} requests each; goal p95 < {API_GOAL_MS} ms)")
    print(f"  {'endpoint':<72} {'p50 ms':>7} {'p95 ms':>7} {'queries':>7} {'@500':>5}  verdict")
    results = []
    for url in urls:
        p50, p95, queries = measure(client, url, requests)
        joiner = "&" if "?" in url else "?"
        _, _, queries_500 = measure(client, f"{url}{joiner}page_size=500", 1)
        print(
            f"  {url:<72} {p50:7.1f} {p95:7.1f} {queries:7d} {queries_500:5d}  {verdict(p95, API_GOAL_MS)}",
            flush=True,
        )
        results.append((url, p50, p95, queries, queries_500))
    return results


def measure_admin(client, requests: int, ids: dict) -> list[tuple]:
    from django.contrib import admin
    from django.urls import reverse

    # The front page (the admin index, first and 100th page of pipelines), the overview, /metrics.
    urls = ["/admin/", "/admin/?p=100", reverse("admin:rosetta_overview"), "/metrics"]
    for model in admin.site._registry:
        if model._meta.app_label in ("sources", "destinations", "pipelines", "monitoring"):
            urls.append(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"))
    urls += [
        "/admin/pipelines/pipelinerun/?outcome__exact=failed",
        "/admin/pipelines/pipeline/?status__exact=running",
        "/admin/sources/source/?o=8.1",  # by largest retained WAL
        f"/admin/pipelines/pipeline/{ids['pipeline_ids'][17]}/change/",
        f"/admin/sources/source/{ids['source_ids'][17]}/change/",
    ]
    print(f"\nAdmin pages ({requests} requests each; goal < {ADMIN_GOAL_MS} ms)")
    print(f"  {'page':<72} {'p50 ms':>7} {'p95 ms':>7} {'queries':>7}  verdict")
    results = []
    for url in urls:
        p50, p95, queries = measure(client, url, requests)
        print(f"  {url:<72} {p50:7.1f} {p95:7.1f} {queries:7d}  {verdict(p95, ADMIN_GOAL_MS)}", flush=True)
        results.append((url, p50, p95, queries))
    return results


def silent_listener() -> socket.socket:
    """A port that accepts TCP connections (the kernel's backlog) and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def measure_probe(args, ids: dict) -> float:
    from django.conf import settings

    from monitoring.services import probe_sources
    from sources.models import Source

    probed = ids["source_ids"][: args.probe_sources]
    listeners = [silent_listener() for _ in range(args.silent_sources)]
    silent_ids = probed[:: max(1, len(probed) // max(1, args.silent_sources))][: args.silent_sources]
    for source_id, listener in zip(silent_ids, listeners, strict=True):
        Source.objects.filter(pk=source_id).update(pg_port=listener.getsockname()[1])
    print(
        f"\nWAL probe tick: {len(probed)} sources, {len(silent_ids)} of them silent (connect timeout "
        f"{settings.ROSETTA_CONNECT_TIMEOUT} s, statement timeout {settings.ROSETTA_STATEMENT_TIMEOUT_MS} ms, "
        f"{settings.ROSETTA_PROBE_MAX_PARALLEL} in parallel; goal < {PROBE_GOAL_S} s)"
    )
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import monitoring.services

    probing = {}
    probe_many = monitoring.services.probe_many

    def timed_probe_many(*a, **kw):
        started = time.perf_counter()
        try:
            return probe_many(*a, **kw)
        finally:
            probing["seconds"] = time.perf_counter() - started

    monitoring.services.probe_many = timed_probe_many
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as captured:
        metrics = probe_sources(Source.objects.filter(pk__in=probed))
    seconds = time.perf_counter() - started
    monitoring.services.probe_many = probe_many
    failed = [m for m in metrics if not m.ok]
    slowest = max((m.duration_ms for m in metrics if m.ok), default=0)
    print(
        f"  {seconds:.2f} s for {len(metrics)} probes: {len(metrics) - len(failed)} ok "
        f"(slowest {slowest} ms), {len(failed)} failed  {verdict(seconds, PROBE_GOAL_S)}"
    )
    print(
        f"  of which probing the servers {probing['seconds']:.2f} s; recording the outcomes, alerts and "
        f"notifications {seconds - probing['seconds']:.2f} s ({len(captured)} queries on the metadata DB)"
    )
    if failed:
        print(f"  a failed probe says: {failed[0].error}")
    for listener in listeners:
        listener.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--destinations", type=int, default=100)
    parser.add_argument("--pipelines", type=int, default=10_000)
    parser.add_argument("--runs-per-pipeline", type=int, default=100)
    parser.add_argument("--metrics", type=int, default=10_000_000, help="WAL + slot metric rows")
    parser.add_argument("--alert-events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--probe-sources", type=int, default=200)
    parser.add_argument("--silent-sources", type=int, default=10)
    args = parser.parse_args()

    work_dir = Path(tempfile.mkdtemp(prefix="rosetta-bench-cp-"))
    cluster = Cluster(settings={"max_wal_size": "4GB", "checkpoint_timeout": "30min"}).start()
    try:
        import psycopg

        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{METADATA_DB}"')
        setup_django(cluster)
        from django.core.management import call_command
        from django.test import Client

        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        ids = load(args, cluster, work_dir)
        print(f"  loaded in {time.perf_counter() - started:.0f} s")

        client = Client()
        client.force_login(ids["user"])
        api = measure_api(client, args.requests, ids)
        admin_pages = measure_admin(client, max(5, args.requests // 3), ids)
        probe_seconds = measure_probe(args, ids)

        worst_api = max(api, key=lambda row: row[2])
        worst_admin = max(admin_pages, key=lambda row: row[2])
        print("\nSummary against the goals")
        print(
            f"  API list p95, worst: {worst_api[2]:.1f} ms ({worst_api[0]}), goal < {API_GOAL_MS} ms: "
            f"{verdict(worst_api[2], API_GOAL_MS)}"
        )
        constant = all(row[3] == row[4] for row in api)
        print(f"  API queries the same at the default page size and at 500: {'yes' if constant else 'NO'}")
        print(
            f"  admin p95, worst: {worst_admin[2]:.0f} ms ({worst_admin[0]}), goal < {ADMIN_GOAL_MS} ms: "
            f"{verdict(worst_admin[2], ADMIN_GOAL_MS)}"
        )
        print(
            f"  probe tick: {probe_seconds:.2f} s, goal < {PROBE_GOAL_S} s: {verdict(probe_seconds, PROBE_GOAL_S)}"
        )
    finally:
        from django.db import connections

        with contextlib.suppress(Exception):  # Django may never have been loaded
            connections.close_all()
        cluster.stop()


if __name__ == "__main__":
    main()
