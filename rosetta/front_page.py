"""The admin's front page: "is anything wrong?" first, then every pipeline and source.

Bounded at any size: the pipelines are one page of PIPELINES_PER_PAGE (at-risk first),
their hourly figures one GROUP BY over that page's runs; sources are one annotated
query (monitoring.selectors.annotate_wal_health) and the slots' owners one more.
"""

import datetime as dt

from django.contrib.postgres.aggregates import RegrSlope
from django.core.paginator import Paginator
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    FloatField,
    IntegerField,
    Max,
    OuterRef,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Extract, TruncHour
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from engine.forecast import human_bytes, human_duration
from monitoring.models import AlertState, Condition, Level, Resolution, SlotMetric, WalMetric
from monitoring.selectors import UNKNOWN, annotate_wal_health, health_of
from pipelines.models import Pipeline, PipelineRun
from rosetta.admin_utils import badge
from sources.models import Source

PIPELINES_PER_PAGE = 50
SOURCES_SHOWN = 50
TREND_HOURS = 24
FORECAST_HORIZON = dt.timedelta(hours=24)
NO_WAL = "no WAL"
# A running pipeline falls behind when its slot's unconfirmed WAL (its lag in bytes) grew
# steadily over the last LAG_WINDOW of probes by at least a WAL segment: a pipeline keeping
# up goes up and down between runs, one falling behind only goes up.
LAG_WINDOW = dt.timedelta(minutes=15)
LAG_GROWTH_MIN_BYTES = 16 * 1024**2
LAG_MIN_PROBES = 3


def sparkline(values: list[int], width: int = 120, height: int = 24):
    """A small inline SVG of hourly rows applied, scaled to its own maximum."""
    top = max(values) or 1
    step = width / max(len(values) - 1, 1)
    points = " ".join(
        f"{i * step:.1f},{height - 1 - (height - 2) * v / top:.1f}" for i, v in enumerate(values)
    )
    return format_html(
        '<svg class="rosetta-trend" width="{}" height="{}" viewBox="0 0 {} {}" role="img" '
        'aria-label="rows applied per hour, last {} h, max {}"><polyline fill="none" stroke="#417690" '
        'stroke-width="1.5" points="{}"/></svg>',
        width,
        height,
        width,
        height,
        len(values),
        f"{top:,}",
        points,
    )


def pipeline_rows(page_of_pipelines, now) -> list[dict]:
    """Status, lag, rows applied in the last hour and a 24 h trend for one page of pipelines."""
    ids = [p.pk for p in page_of_pipelines]
    since = now - dt.timedelta(hours=TREND_HOURS)
    hourly = (
        PipelineRun.objects.filter(pipeline_id__in=ids, started_at__gte=since)
        .annotate(hour=TruncHour("started_at"))
        .values("pipeline_id", "hour")
        .annotate(
            rows=Sum("rows_inserted") + Sum("rows_updated") + Sum("rows_deleted") + Sum("snapshot_rows")
        )
        .order_by()
    )
    first_hour = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=TREND_HOURS - 1)
    series = {pk: [0] * TREND_HOURS for pk in ids}
    last_hour = dict.fromkeys(ids, 0)
    for row in hourly:
        index = int((row["hour"] - first_hour).total_seconds() // 3600)
        if 0 <= index < TREND_HOURS:
            series[row["pipeline_id"]][index] += row["rows"] or 0
    last_hour_runs = (
        PipelineRun.objects.filter(pipeline_id__in=ids, started_at__gte=now - dt.timedelta(hours=1))
        .values("pipeline_id")
        .annotate(
            rows=Sum("rows_inserted") + Sum("rows_updated") + Sum("rows_deleted") + Sum("snapshot_rows")
        )
        .order_by()
    )
    for row in last_hour_runs:
        last_hour[row["pipeline_id"]] = row["rows"] or 0
    rows = []
    for pipeline in page_of_pipelines:
        lag_seconds = None
        if pipeline.lag_bytes is not None:
            lag_seconds = 0
            if pipeline.lag_bytes > 0 and pipeline.last_applied_commit_at and pipeline.lag_measured_at:
                lag_seconds = (pipeline.lag_measured_at - pipeline.last_applied_commit_at).total_seconds()
        rows.append(
            {
                "pipeline": pipeline,
                "badge": badge(pipeline.get_status_display(), pipeline.status),
                "lag_bytes": "batch"
                if not pipeline.reads_replication_slot
                else "not measured"
                if pipeline.lag_bytes is None
                else human_bytes(pipeline.lag_bytes),
                "lag_time": "" if lag_seconds is None else human_duration(lag_seconds),
                "rows_last_hour": f"{last_hour[pipeline.pk]:,}",
                "trend": sparkline(series[pipeline.pk]),
            }
        )
    return rows


def source_rows(now) -> tuple[list[dict], list[dict], int]:
    """Every source's WAL health and its largest slot, each slot named once per server
    and said to be owned by a pipeline or by none. Returns (rows, forecasts, total)."""
    latest_rate = WalMetric.objects.filter(source=OuterRef("pk"), ok=True).order_by("-probed_at")
    sources = list(
        annotate_wal_health(
            Source.objects.order_by().only(
                "id",
                "name",
                "kind",
                "pg_host",
                "pg_port",
                "slot_name",
                "wal_warn_bytes",
                "wal_critical_bytes",
            )
        ).annotate(wal_rate=Subquery(latest_rate.values("wal_rate_bytes_per_s")[:1]))
    )
    owners = {
        (host, port, slot): name
        for host, port, slot, name in Pipeline.objects.exclude(status=Pipeline.Status.CREATED).values_list(
            "source__pg_host", "source__pg_port", "source__slot_name", "name"
        )
    }
    rows, forecasts, seen_slots = [], [], set()
    rank = {"critical": 0, "warn": 1, UNKNOWN: 2, "ok": 3, NO_WAL: 4}
    for source in sources:
        # CSV files and HTTP APIs have no WAL to watch: not "unknown", which asks for a look.
        source.health = NO_WAL if source.is_batch else health_of(source, now)
    sources.sort(key=lambda s: (rank.get(s.health, 2), -(s.wal_largest_retained or 0), s.name))
    for source in sources:
        slot = source.wal_largest_retained_slot
        key = (source.pg_host, source.pg_port, slot)
        owner = owners.get(key)
        repeated = slot is not None and key in seen_slots
        seen_slots.add(key)
        retained = source.wal_largest_retained
        if retained is not None and source.wal_rate and retained < source.wal_critical_bytes:
            seconds = (source.wal_critical_bytes - retained) / source.wal_rate
            if seconds <= FORECAST_HORIZON.total_seconds() and not repeated:
                forecasts.append({"source": source, "slot": slot, "in": human_duration(seconds)})
        if len(rows) < SOURCES_SHOWN:
            rows.append(
                {
                    "source": source,
                    "badge": badge(source.health),
                    "slot": slot,
                    "retained": human_bytes(retained) if retained is not None else "",
                    "owner": owner,
                    "repeated": repeated,
                }
            )
    return rows, forecasts, len(sources)


def pipelines_falling_behind(now) -> list[dict]:
    """Running PostgreSQL pipelines whose lag grows: one GROUP BY over the last LAG_WINDOW of
    their slots' probes (least-squares slope of unconfirmed bytes over time), worst first."""
    running_on_source = Pipeline.objects.filter(
        source=OuterRef("source"), status=Pipeline.Status.RUNNING, reads_replication_slot=True
    )
    seconds = Extract("probed_at", "epoch", output_field=FloatField())
    growth = (
        SlotMetric.objects.filter(
            probed_at__gte=now - LAG_WINDOW,
            resolution=Resolution.RAW,
            unconfirmed_bytes__isnull=False,
            slot_name=F("source__slot_name"),
        )
        .filter(Exists(running_on_source))
        .values("source_id")
        .annotate(slope=RegrSlope("unconfirmed_bytes", seconds), probes=Count("pk"), latest=Max("probed_at"))
        .filter(probes__gte=LAG_MIN_PROBES, slope__gte=LAG_GROWTH_MIN_BYTES / LAG_WINDOW.total_seconds())
        .order_by("-slope")[:10]
    )
    by_source = {row["source_id"]: row for row in growth}
    if not by_source:
        return []
    pipelines = Pipeline.objects.filter(
        source_id__in=by_source, status=Pipeline.Status.RUNNING, reads_replication_slot=True
    ).only("id", "name", "source_id", "lag_bytes")
    behind = [
        {
            "pipeline": pipeline,
            "grew": by_source[pipeline.source_id]["slope"] * LAG_WINDOW.total_seconds(),
            "rate": by_source[pipeline.source_id]["slope"],
        }
        for pipeline in pipelines
    ]
    return sorted(behind, key=lambda row: -row["rate"])


def at_risk_items(now, sources: list[dict], forecasts: list[dict]) -> list:
    """Links to what needs a look now, the worst first."""
    items = []
    failed = (
        Pipeline.objects.filter(status=Pipeline.Status.FAILED)
        .only("id", "name", "last_error")
        .order_by("-updated_at")[:10]
    )
    for pipeline in failed:
        items.append(
            format_html(
                '{} pipeline <a href="{}">{}</a>: {}',
                badge("failed"),
                reverse("admin:pipelines_pipeline_change", args=[pipeline.pk]),
                pipeline.name,
                pipeline.last_error[:160],
            )
        )
    lost = (
        AlertState.objects.filter(condition=Condition.SLOT_LOST)
        .exclude(level=Level.OK)
        .select_related("source")
        .only("slot_name", "since", "source__id", "source__name")
        .order_by("-since")[:10]
    )
    for alert in lost:
        items.append(
            format_html(
                '{} slot {} on <a href="{}">{}</a> is lost (since {}): the changes it held are gone, '
                "a pipeline reading it must copy its tables again",
                badge("critical"),
                alert.slot_name,
                reverse("admin:sources_source_change", args=[alert.source.pk]),
                alert.source.name,
                f"{timezone.localtime(alert.since):%Y-%m-%d %H:%M}",
            )
        )
    for row in sources:
        source = row["source"]
        if source.health in ("critical", "warn") and not row["repeated"]:
            retained = f", slot {row['slot']} retains {row['retained']}" if row["slot"] else ""
            items.append(
                format_html(
                    '{} source <a href="{}">{}</a>{}',
                    badge(source.health),
                    reverse("admin:sources_source_change", args=[source.pk]),
                    source.name,
                    retained,
                )
            )
    for row in pipelines_falling_behind(now):
        items.append(
            format_html(
                '{} pipeline <a href="{}">{}</a> falls behind: its lag grew by about {} in the last {} min '
                "({}/s)",
                badge("warn"),
                reverse("admin:pipelines_pipeline_change", args=[row["pipeline"].pk]),
                row["pipeline"].name,
                human_bytes(row["grew"]),
                int(LAG_WINDOW.total_seconds() // 60),
                human_bytes(row["rate"]),
            )
        )
    for forecast in forecasts:
        items.append(
            format_html(
                '{} slot {} on <a href="{}">{}</a> reaches the critical threshold in {} at the current WAL rate',
                badge("warn"),
                forecast["slot"],
                reverse("admin:sources_source_change", args=[forecast["source"].pk]),
                forecast["source"].name,
                forecast["in"],
            )
        )
    return items


def front_page_context(request, now=None) -> dict:
    now = now or timezone.now()
    at_risk_first = Case(
        When(status=Pipeline.Status.FAILED, then=Value(0)),
        When(status=Pipeline.Status.REFRESHING, then=Value(1)),
        When(status=Pipeline.Status.RUNNING, then=Value(2)),
        default=Value(3),
        output_field=IntegerField(),
    )
    pipelines = (
        Pipeline.objects.select_related("source")
        .only(
            "id",
            "name",
            "status",
            "reads_replication_slot",
            "lag_bytes",
            "lag_measured_at",
            "last_applied_commit_at",
            "source__id",
            "source__name",
        )
        .annotate(risk=at_risk_first)
        .order_by("risk", "-lag_bytes", "name")
    )
    paginator = Paginator(pipelines, PIPELINES_PER_PAGE)
    page = paginator.get_page(request.GET.get("p"))
    sources, forecasts, sources_total = source_rows(now)
    counts = dict(Pipeline.objects.order_by().values_list("status").annotate(n=Count("pk")))
    return {
        "at_risk": at_risk_items(now, sources, forecasts),
        "pipeline_rows": pipeline_rows(list(page.object_list), now),
        "pipeline_page": page,
        "pipeline_counts": format_html_join(
            " ",
            "{} {}",
            ((badge(label, status), counts.get(status, 0)) for status, label in Pipeline.Status.choices),
        ),
        "source_rows": sources,
        "sources_total": sources_total,
        "trend_hours": TREND_HOURS,
    }
