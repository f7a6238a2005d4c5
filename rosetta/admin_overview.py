"""The admin's overview page: pipeline statuses, sources by WAL health, the largest
retained WAL, failing pipelines and the latest alerts, in a handful of queries that
stay fast with thousands of pipelines and millions of metric rows."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.template.response import TemplateResponse
from django.utils import timezone

from engine.forecast import human_bytes
from monitoring.models import AlertEvent
from monitoring.selectors import UNKNOWN, annotate_wal_health, health_of
from pipelines.models import Pipeline
from rosetta.admin_utils import badge
from sources.models import Source

HEALTH_ORDER = ["critical", "warn", UNKNOWN, "ok"]
TOP = 10


def overview_context(now=None) -> dict:
    """What the overview shows; every list is bounded, every count is one GROUP BY."""
    now = now or timezone.now()
    counts = dict(Pipeline.objects.order_by().values_list("status").annotate(n=Count("pk")))
    statuses = [
        {"status": status, "label": label, "count": counts.get(status, 0), "badge": badge(label, status)}
        for status, label in Pipeline.Status.choices
    ]
    # One query for every source: the subqueries each read one index entry per source.
    sources = list(annotate_wal_health(Source.objects.order_by().only("id", "name", "wal_critical_bytes")))
    by_health = {health: [] for health in HEALTH_ORDER}
    for source in sources:
        by_health.setdefault(health_of(source, now), []).append(source)
    largest = sorted(
        (s for s in sources if s.wal_largest_retained is not None), key=lambda s: -s.wal_largest_retained
    )[:TOP]
    return {
        "pipeline_statuses": statuses,
        "pipelines_total": sum(counts.values()),
        "health": [
            {
                "health": health,
                "badge": badge(health),
                "count": len(members),
                "names": sorted(s.name for s in members)[:TOP] if health != "ok" else [],
            }
            for health, members in by_health.items()
        ],
        "sources_total": len(sources),
        "largest": [
            {
                "source": s,
                "slot": s.wal_largest_retained_slot,
                "retained": human_bytes(s.wal_largest_retained),
                "percent_of_critical": round(100 * s.wal_largest_retained / s.wal_critical_bytes, 1),
                "badge": badge(health_of(s, now)),
            }
            for s in largest
        ],
        "failed_pipelines": list(
            Pipeline.objects.filter(status=Pipeline.Status.FAILED)
            .select_related("source")
            .only("id", "name", "last_error", "updated_at", "source__name")
            .order_by("-updated_at")[:TOP]
        ),
        "recent_alerts": [
            {"event": event, "badge": badge(event.level)}
            for event in AlertEvent.objects.select_related("source")
            .only("id", "created_at", "condition", "level", "message", "source__name")
            .order_by("-created_at")[:TOP]
        ],
    }


def overview_view(request):
    user = request.user
    if not (user.has_perm("pipelines.view_pipeline") and user.has_perm("sources.view_source")):
        raise PermissionDenied
    context = {**admin.site.each_context(request), "title": "Overview", **overview_context()}
    return TemplateResponse(request, "admin/rosetta_overview.html", context)
