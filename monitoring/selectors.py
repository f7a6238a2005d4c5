"""Reads that the admin, the API and the command share: health, current state, chart data."""

import datetime as dt

from django.conf import settings
from django.db.models import (
    Case,
    DateTimeField,
    DurationField,
    F,
    Func,
    IntegerField,
    Max,
    OuterRef,
    Subquery,
    Value,
    When,
)
from django.urls import reverse
from django.utils import timezone

from sources.models import Source

from .models import LEVEL_RANK, AlertState, Level, SlotMetric, WalMetric, WalSettings, retained_wal_level

UNKNOWN = "unknown"
RANK_LEVEL = {rank: level for level, rank in LEVEL_RANK.items()}


def annotate_wal_health(queryset):
    """Add what the source list shows, in one query: last probe, worst alert, largest retained WAL."""
    latest = WalMetric.objects.filter(source=OuterRef("pk")).order_by("-probed_at")
    latest_ok = latest.filter(ok=True)
    worst_alert = (
        AlertState.objects.filter(source=OuterRef("pk"))
        .annotate(
            rank=Case(
                *[When(level=level, then=Value(rank)) for level, rank in LEVEL_RANK.items()],
                output_field=IntegerField(),
            )
        )
        .order_by("-rank")
        .values("rank")[:1]
    )
    largest = SlotMetric.objects.filter(
        source=OuterRef("pk"), probed_at=OuterRef("wal_last_ok_probe_at"), retained_bytes__isnull=False
    ).order_by("-retained_bytes")
    return queryset.annotate(
        wal_last_probe_at=Subquery(latest.values("probed_at")[:1]),
        wal_last_probe_ok=Subquery(latest.values("ok")[:1]),
        wal_last_ok_probe_at=Subquery(latest_ok.values("probed_at")[:1]),
        wal_worst_alert_rank=Subquery(worst_alert),
    ).annotate(
        wal_largest_retained=Subquery(largest.values("retained_bytes")[:1]),
        wal_largest_retained_slot=Subquery(largest.values("slot_name")[:1]),
    )


def health_of(source, now: dt.datetime | None = None) -> str:
    """ok / warn / critical / unknown, from the annotations of annotate_wal_health()."""
    now = now or timezone.now()
    last_at = source.wal_last_probe_at
    if last_at is None or (now - last_at).total_seconds() > settings.ROSETTA_PROBE_STALE_SECONDS:
        return UNKNOWN
    worst = RANK_LEVEL.get(source.wal_worst_alert_rank or 0, Level.OK)
    if worst != Level.OK:
        return str(worst)
    return str(Level.OK) if source.wal_last_probe_ok else UNKNOWN


def source_health(source: Source) -> str:
    return health_of(annotate_wal_health(Source.objects.filter(pk=source.pk)).get())


def source_wal_state(source: Source, now: dt.datetime | None = None) -> dict:
    """Everything the source page and GET /api/sources/{id}/wal/ show about the source's WAL now."""
    from .services import slot_forecast

    now = now or timezone.now()
    annotated = annotate_wal_health(Source.objects.filter(pk=source.pk)).get()
    last = WalMetric.objects.filter(source=source).order_by("-probed_at").first()
    last_ok = (
        last
        if last is not None and last.ok
        else (WalMetric.objects.filter(source=source, ok=True).order_by("-probed_at").first())
    )
    slots = []
    worst_forecast = None
    if last_ok is not None:
        pipelines = [
            {"id": pk, "name": name, "url": reverse("admin:pipelines_pipeline_change", args=[pk])}
            for pk, name in source.pipelines.order_by("name").values_list("pk", "name")
        ]
        for slot in SlotMetric.objects.filter(source=source, probed_at=last_ok.probed_at).order_by(
            "slot_name"
        ):
            # Times count from the probe that measured the slot, not from this request.
            forecast = slot_forecast(source, slot, last_ok.probed_at)
            retained = None if slot.is_lost else slot.retained_bytes
            if slot.is_lost:
                level = Level.CRITICAL
            else:
                level = UNKNOWN if retained is None else retained_wal_level(source, retained)
            is_sources_slot = slot.slot_name == source.slot_name
            slots.append(
                {
                    "slot_name": slot.slot_name,
                    "plugin": slot.plugin,
                    "slot_type": slot.slot_type,
                    "database": slot.database,
                    "active": slot.active,
                    "restart_lsn": slot.restart_lsn,
                    "confirmed_flush_lsn": slot.confirmed_flush_lsn,
                    "lost": slot.is_lost,
                    "reserves_wal": slot.reserves_wal,
                    "retained_bytes": retained,
                    "retained": slot.display_bytes(retained),
                    "unconfirmed_bytes": None if slot.is_lost else slot.unconfirmed_bytes,
                    "unconfirmed": slot.display_bytes(slot.unconfirmed_bytes),
                    "wal_status": slot.wal_status,
                    "safe_wal_size": None if slot.is_lost else slot.safe_wal_size,
                    "safe_wal": slot.display_safe_wal_size,
                    "inactive_since": slot.inactive_since,
                    "level": str(level),
                    "percent_of_critical": (
                        round(100 * retained / source.wal_critical_bytes, 1) if retained is not None else None
                    ),
                    "is_sources_slot": is_sources_slot,
                    "pipelines": pipelines if is_sources_slot else [],
                    "forecast": forecast.as_dict(),
                }
            )
            trouble = forecast.seconds_to_trouble
            if trouble is not None and (
                worst_forecast is None or trouble < worst_forecast[1].seconds_to_trouble
            ):
                worst_forecast = (slot.slot_name, forecast)
    wal_settings = WalSettings.objects.filter(source=source).order_by("-recorded_at").first()
    return {
        "source": source.pk,
        "name": source.name,
        "health": health_of(annotated, now),
        "thresholds": {
            "wal_warn_bytes": source.wal_warn_bytes,
            "wal_critical_bytes": source.wal_critical_bytes,
            "slot_inactive_alert_minutes": source.slot_inactive_alert_minutes,
        },
        "heartbeat_enabled": source.heartbeat_enabled,
        "last_probe": _probe_dict(last),
        "last_successful_probe": _probe_dict(last_ok),
        "largest_retained_bytes": annotated.wal_largest_retained,
        "slots": slots,
        "forecast": (
            {"slot_name": worst_forecast[0], **worst_forecast[1].as_dict()} if worst_forecast else None
        ),
        "settings": wal_settings.as_dict() if wal_settings else None,
        "settings_recorded_at": wal_settings.recorded_at if wal_settings else None,
        "alerts": [
            {
                "condition": state.condition,
                "level": state.level,
                "message": state.message,
                "since": state.since,
            }
            for state in AlertState.objects.filter(source=source).order_by("condition")
        ],
    }


def _probe_dict(metric: WalMetric | None) -> dict | None:
    if metric is None:
        return None
    return {
        "probed_at": metric.probed_at,
        "ok": metric.ok,
        "error": metric.error,
        "warnings": metric.warnings,
        "duration_ms": metric.duration_ms,
        "current_lsn": metric.current_lsn,
        "wal_dir_bytes": metric.wal_dir_bytes,
        "wal_segments": metric.wal_segments,
        "wal_rate_bytes_per_s": metric.wal_rate_bytes_per_s,
        "heartbeat_lsn": metric.heartbeat_lsn,
    }


ORIGIN = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def _bucket(seconds: int):
    """date_bin(): the start of the `seconds`-wide bucket a probe falls in."""
    return Func(
        Value(dt.timedelta(seconds=seconds), output_field=DurationField()),
        F("probed_at"),
        Value(ORIGIN, output_field=DateTimeField()),
        function="date_bin",
        output_field=DateTimeField(),
    )


def chart_series(
    source: Source,
    span: dt.timedelta,
    bucket_seconds: int,
    now: dt.datetime | None = None,
    max_slots: int = 8,
) -> dict:
    """Per-bucket maxima for the chart: WAL directory bytes and retained bytes per slot."""
    now = now or timezone.now()
    since = now - span
    wal = list(
        WalMetric.objects.filter(source=source, probed_at__gte=since, ok=True, wal_dir_bytes__isnull=False)
        .annotate(bucket=_bucket(bucket_seconds))
        .values("bucket")
        .annotate(value=Max("wal_dir_bytes"))
        .order_by("bucket")
        .values_list("bucket", "value")
    )
    slot_rows = (
        SlotMetric.objects.filter(source=source, probed_at__gte=since, retained_bytes__isnull=False)
        .annotate(bucket=_bucket(bucket_seconds))
        .values("slot_name", "bucket")
        .annotate(value=Max("retained_bytes"))
        .order_by("slot_name", "bucket")
        .values_list("slot_name", "bucket", "value")
    )
    slots: dict[str, list] = {}
    for name, bucket, value in slot_rows:
        slots.setdefault(name, []).append((bucket, value))
    biggest = sorted(slots, key=lambda name: -max(value for _, value in slots[name]))[:max_slots]
    return {
        "since": since,
        "until": now,
        "wal_dir": wal,
        "slots": {name: slots[name] for name in sorted(biggest)},
    }
