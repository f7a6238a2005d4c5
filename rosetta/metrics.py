"""GET /metrics: Prometheus text read from the metadata database at each scrape, so any
number of web processes answer the same figures (no per-process counters).

Protected: a request passes with `Authorization: Bearer <ROSETTA_METRICS_TOKEN>` or from
an address in ROSETTA_METRICS_ALLOWED_IPS; anything else gets 403.
"""

import hmac
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, Max, OuterRef, Subquery, Sum
from django.http import HttpResponse, HttpResponseForbidden
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily


class DatabaseCollector:
    """Every figure is one bounded query; slots are those seen in the stale window."""

    def collect(self):
        from monitoring.models import SlotMetric, WalMetric
        from pipelines.models import Pipeline, PipelineRun, PipelineTable

        now = timezone.now()
        window = now - timedelta(seconds=settings.ROSETTA_PROBE_STALE_SECONDS)
        retained = GaugeMetricFamily(
            "rosetta_slot_retained_bytes",
            "WAL a replication slot keeps on the source.",
            labels=["source", "slot"],
        )
        unconfirmed = GaugeMetricFamily(
            "rosetta_slot_unconfirmed_bytes",
            "WAL the slot's consumer has not confirmed.",
            labels=["source", "slot"],
        )
        active = GaugeMetricFamily(
            "rosetta_slot_active", "1 when a consumer reads the slot.", labels=["source", "slot"]
        )
        wal_status = GaugeMetricFamily(
            "rosetta_slot_wal_status",
            "1 for the slot's current wal_status.",
            labels=["source", "slot", "wal_status"],
        )
        slots = (
            SlotMetric.objects.filter(probed_at__gte=window)
            .order_by("source_id", "slot_name", "-probed_at")
            .distinct("source_id", "slot_name")
            .values_list(
                "source__name", "slot_name", "retained_bytes", "unconfirmed_bytes", "active", "wal_status"
            )
        )
        for source, slot, kept, pending, is_active, status in slots:
            if kept is not None:
                retained.add_metric([source, slot], kept)
            if pending is not None:
                unconfirmed.add_metric([source, slot], pending)
            active.add_metric([source, slot], 1 if is_active else 0)
            if status:
                wal_status.add_metric([source, slot, status], 1)
        yield from (retained, unconfirmed, active, wal_status)

        last_probe = WalMetric.objects.filter(source=OuterRef("pk")).order_by("-probed_at")
        from sources.models import Source

        probe_time = GaugeMetricFamily(
            "rosetta_source_last_probe_timestamp_seconds",
            "When the source was last probed.",
            labels=["source"],
        )
        probe_ok = GaugeMetricFamily(
            "rosetta_source_probe_ok", "1 when the last probe succeeded.", labels=["source"]
        )
        for name, at, ok in Source.objects.annotate(
            at=Subquery(last_probe.values("probed_at")[:1]), ok=Subquery(last_probe.values("ok")[:1])
        ).values_list("name", "at", "ok"):
            if at is not None:
                probe_time.add_metric([name], at.timestamp())
                probe_ok.add_metric([name], 1 if ok else 0)
        probe_failures = GaugeMetricFamily(
            "rosetta_source_probe_failures_last_hour", "Failed probes in the last hour.", labels=["source"]
        )
        for name, failures in (
            WalMetric.objects.filter(probed_at__gte=now - timedelta(hours=1), ok=False)
            .values_list("source__name")
            .annotate(n=Count("pk"))
            .order_by()
        ):
            probe_failures.add_metric([name], failures)
        yield from (probe_time, probe_ok, probe_failures)

        lag_bytes = GaugeMetricFamily(
            "rosetta_pipeline_lag_bytes",
            "WAL between the slot's confirmed position and the source's.",
            labels=["pipeline"],
        )
        lag_seconds = GaugeMetricFamily(
            "rosetta_pipeline_lag_seconds",
            "Time between the last applied commit and the lag measurement (0 when caught up).",
            labels=["pipeline"],
        )
        status = GaugeMetricFamily(
            "rosetta_pipeline_status", "1 for the pipeline's status.", labels=["pipeline", "status"]
        )
        failures = GaugeMetricFamily(
            "rosetta_pipeline_consecutive_failures",
            "Failed runs in a row (0 after a success).",
            labels=["pipeline"],
        )
        for name, state, lag, measured, applied, failed in Pipeline.objects.values_list(
            "name", "status", "lag_bytes", "lag_measured_at", "last_applied_commit_at", "consecutive_failures"
        ):
            status.add_metric([name, state], 1)
            failures.add_metric([name], failed)
            if lag is not None:
                lag_bytes.add_metric([name], lag)
                behind = (measured - applied).total_seconds() if lag > 0 and measured and applied else 0
                lag_seconds.add_metric([name], max(behind, 0))
        yield from (lag_bytes, lag_seconds, status, failures)

        applied = CounterMetricFamily(
            "rosetta_pipeline_changes_applied",
            "Rows inserted, updated and deleted by CDC, all time.",
            labels=["pipeline"],
        )
        for name, total in (
            PipelineTable.objects.values_list("pipeline__name")
            .annotate(n=Sum(F("rows_inserted") + F("rows_updated") + F("rows_deleted")))
            .order_by()
        ):
            applied.add_metric([name], total or 0)
        yield applied

        runs = GaugeMetricFamily(
            "rosetta_pipeline_runs_last_hour",
            "Runs started in the last hour, by outcome.",
            labels=["pipeline", "outcome"],
        )
        longest = GaugeMetricFamily(
            "rosetta_pipeline_run_duration_seconds_max_last_hour",
            "The longest finished run of the last hour.",
            labels=["pipeline"],
        )
        for name, outcome, count, duration in (
            PipelineRun.objects.filter(started_at__gte=now - timedelta(hours=1))
            .values_list("pipeline__name", "outcome")
            .annotate(n=Count("pk"), longest=Max(F("finished_at") - F("started_at")))
            .order_by()
        ):
            runs.add_metric([name, outcome], count)
            if duration is not None and outcome != "skipped":
                longest.add_metric([name], duration.total_seconds())
        yield from (runs, longest)


def allowed(request) -> bool:
    token = settings.ROSETTA_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    return request.META.get("REMOTE_ADDR") in settings.ROSETTA_METRICS_ALLOWED_IPS


def metrics_view(request):
    if not allowed(request):
        return HttpResponseForbidden(
            "Metrics need Authorization: Bearer <ROSETTA_METRICS_TOKEN> or an address in ROSETTA_METRICS_ALLOWED_IPS.\n",
            content_type="text/plain",
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
