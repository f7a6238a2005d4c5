"""WAL monitoring services: probe sources, record the outcome, move alerts, keep history small.

The probe itself (monitoring.probe) is plain Python; this module loads the sources,
calls it, and records what came back. Tasks, the API, the admin and probe_wal call these.
"""

import datetime as dt
import logging

from django.conf import settings
from django.contrib.postgres.aggregates import BoolOr
from django.db import transaction
from django.db.models import Case, Count, IntegerField, Max, Min, Q, Value, When
from django.db.models.functions import Trunc
from django.utils import timezone

from rosetta.secrets import SecretDecryptionError
from sources.models import Source

from .forecast import Forecast, forecast_slot, human_bytes, human_duration
from .models import (
    LEVEL_RANK,
    AlertEvent,
    AlertState,
    Condition,
    Level,
    Resolution,
    SlotMetric,
    WalMetric,
    WalSettings,
    retained_wal_level,
)
from .notifications import send_pending_notifications
from .probe import ProbeResult, parse_lsn, probe_many, wal_rate

log = logging.getLogger(__name__)

# How far back the growth rate of a slot's retained WAL is measured.
FORECAST_WINDOW = dt.timedelta(hours=1)

WAL_STATUS_LEVEL = {"extended": Level.WARN, "unreserved": Level.CRITICAL, "lost": Level.CRITICAL}
WAL_STATUS_MEANING = {
    "extended": "retains more WAL than max_wal_size",
    "unreserved": "no longer has its WAL reserved: it will be lost at the next checkpoint",
    "lost": "is lost: the WAL it needed has been removed, its pipeline must re-snapshot",
}


# --- probing -----------------------------------------------------------------------


def probe_sources(sources=None) -> list[WalMetric]:
    """Probe the given sources (default: all) concurrently, record each outcome, move
    the alerts, then send notifications. One source's failure never stops the others."""
    if sources is None:
        sources = Source.objects.all()
    # The password is decrypted per source below, so one bad token fails one probe only.
    sources = list(sources.defer("pg_password") if hasattr(sources, "defer") else sources)
    # CSV and HTTP JSON sources have no WAL to watch.
    sources = [source for source in sources if source.kind == Source.Kind.POSTGRES]
    targets, refused = {}, {}
    for source in sources:
        try:
            kwargs = source.connection_kwargs(connect_timeout=settings.ROSETTA_CONNECT_TIMEOUT)
        except SecretDecryptionError as error:
            refused[source.pk] = ProbeResult(ok=False, probed_at=timezone.now(), error=str(error))
            continue
        targets[source.pk] = (kwargs, source.heartbeat_enabled)
    results = probe_many(
        targets,
        statement_timeout_ms=settings.ROSETTA_STATEMENT_TIMEOUT_MS,
        max_parallel=settings.ROSETTA_PROBE_MAX_PARALLEL,
    )
    results.update(refused)

    metrics = []
    for source in sources:
        metric = record_probe(source, results[source.pk])
        try:
            evaluate_alerts(source, metric)
        except Exception:
            log.exception("Evaluating the WAL alerts of source %s failed", source)
        metrics.append(metric)
    try:
        send_pending_notifications()
    except Exception:
        log.exception("Sending alert notifications failed; they are retried after the next probe")
    return metrics


def record_probe(source: Source, result: ProbeResult) -> WalMetric:
    """Store one probe: a WalMetric row, a SlotMetric row per slot, settings that changed."""
    previous = (
        WalMetric.objects.filter(source=source, resolution=Resolution.RAW, ok=True)
        .order_by("-probed_at")
        .only("probed_at", "lsn_position")
        .first()
    )
    rate = None
    if result.ok and previous is not None:
        rate = wal_rate(previous.current_lsn, previous.probed_at, result.current_lsn, result.probed_at)

    with transaction.atomic():
        metric = WalMetric.objects.create(
            source=source,
            probed_at=result.probed_at,
            ok=result.ok,
            error=result.error,
            warnings=result.warnings,
            duration_ms=result.duration_ms,
            in_recovery=result.in_recovery,
            lsn_position=parse_lsn(result.current_lsn),
            wal_dir_bytes=result.wal_dir_bytes,
            wal_segments=result.wal_segments,
            wal_rate_bytes_per_s=rate,
            heartbeat_lsn=result.heartbeat_lsn or "",
        )
        if not result.ok:
            log.warning("WAL probe of source %s failed: %s", source, result.error)
            metric.slot_rows = []
            return metric
        for warning in result.warnings:
            log.warning("WAL probe of source %s: %s", source, warning)

        earlier = {}
        if previous is not None:
            earlier = {
                row.slot_name: row
                for row in SlotMetric.objects.filter(source=source, probed_at=previous.probed_at)
            }
        slot_rows = [
            SlotMetric(
                source=source,
                probed_at=result.probed_at,
                slot_name=slot.slot_name,
                plugin=slot.plugin or "",
                slot_type=slot.slot_type or "",
                database=slot.database or "",
                active=slot.active,
                restart_lsn=slot.restart_lsn or "",
                confirmed_flush_lsn=slot.confirmed_flush_lsn or "",
                retained_bytes=slot.retained_bytes,
                unconfirmed_bytes=slot.unconfirmed_bytes,
                wal_status=slot.wal_status or "",
                safe_wal_size=slot.safe_wal_size,
                inactive_since=_inactive_since(slot, earlier.get(slot.slot_name), result.probed_at),
            )
            for slot in result.slots
        ]
        metric.slot_rows = SlotMetric.objects.bulk_create(slot_rows)
        _record_settings(source, result.settings, result.probed_at)
    return metric


def _inactive_since(slot, earlier: SlotMetric | None, now: dt.datetime) -> dt.datetime | None:
    """A slot is idle when it is not active and neither of its LSNs moved since the last probe.

    Batch pipelines hold a slot only while they read, so "not active" alone is normal;
    a slot whose confirmed_flush_lsn keeps moving is being consumed.
    """
    if slot.active:
        return None
    if earlier is None:
        return now
    moved = (slot.confirmed_flush_lsn or "") != earlier.confirmed_flush_lsn or (
        slot.restart_lsn or ""
    ) != earlier.restart_lsn
    if moved:
        return None
    return earlier.inactive_since or earlier.probed_at


def _record_settings(source: Source, values: dict, now: dt.datetime) -> None:
    values = {name: values.get(name) for name in WalSettings.WATCHED}
    latest = WalSettings.objects.filter(source=source).order_by("-recorded_at").first()
    if latest is None or latest.as_dict() != values:
        WalSettings.objects.create(source=source, recorded_at=now, **values)


# --- alerts --------------------------------------------------------------------------


def slot_forecast(source: Source, slot: SlotMetric, now: dt.datetime | None = None) -> Forecast:
    now = now or timezone.now()
    points = list(
        SlotMetric.objects.filter(
            source=source,
            slot_name=slot.slot_name,
            resolution=Resolution.RAW,
            probed_at__gte=now - FORECAST_WINDOW,
            probed_at__lte=now,
            retained_bytes__isnull=False,
        )
        .order_by("probed_at")
        .values_list("probed_at", "retained_bytes")
    )
    return forecast_slot(points, slot.retained_bytes, source.wal_critical_bytes, slot.safe_wal_size, now)


def evaluate_alerts(source: Source, metric: WalMetric) -> list[AlertEvent]:
    """Move every condition of the source to the level this probe shows."""
    now = metric.probed_at
    events = [_evaluate_probe_failures(source, now)]
    if metric.ok:
        slots = getattr(metric, "slot_rows", None)
        if slots is None:
            slots = list(SlotMetric.objects.filter(source=source, probed_at=metric.probed_at))
        events += [
            _evaluate_retained(source, slots, now),
            _evaluate_inactive(source, slots, now),
            _evaluate_wal_status(source, slots, now),
        ]
    return [event for event in events if event is not None]


def _evaluate_probe_failures(source, now):
    needed = max(1, settings.ROSETTA_PROBE_FAILURES_ALERT)
    recent = list(
        WalMetric.objects.filter(source=source, resolution=Resolution.RAW)
        .order_by("-probed_at")
        .values_list("ok", "error")[:needed]
    )
    failing = len(recent) == needed and not any(ok for ok, _ in recent)
    if failing:
        message = f"The last {needed} WAL probes of {source} failed. Latest: {recent[0][1]}"
        return set_alert_state(source, Condition.PROBE_FAILED, Level.CRITICAL, message, now)
    return set_alert_state(source, Condition.PROBE_FAILED, Level.OK, f"{source} answers the WAL probe.", now)


def _evaluate_retained(source, slots, now):
    measured = [slot for slot in slots if slot.retained_bytes is not None]
    if not measured:
        return set_alert_state(
            source, Condition.RETAINED_WAL, Level.OK, "No replication slot retains WAL on this server.", now
        )
    worst = max(measured, key=lambda slot: slot.retained_bytes)
    retained = worst.retained_bytes
    level = retained_wal_level(source, retained)
    limits = f"warning at {human_bytes(source.wal_warn_bytes)}, critical at {human_bytes(source.wal_critical_bytes)}"
    if level == Level.OK:
        message = f"Retained WAL is under the thresholds: the largest is slot {worst.slot_name}, {human_bytes(retained)} ({limits})."
    else:
        message = f"Slot {worst.slot_name} retains {human_bytes(retained)} of WAL on {source} ({limits})."
    forecast = slot_forecast(source, worst, now)
    return set_alert_state(
        source, Condition.RETAINED_WAL, level, message, now, slot=worst, value=retained, forecast=forecast
    )


def _evaluate_inactive(source, slots, now):
    limit = dt.timedelta(minutes=source.slot_inactive_alert_minutes)
    idle = [slot for slot in slots if slot.inactive_since is not None and now - slot.inactive_since >= limit]
    if not idle:
        return set_alert_state(
            source, Condition.SLOT_INACTIVE, Level.OK, "Every replication slot is active or advancing.", now
        )
    idle.sort(key=lambda slot: slot.inactive_since)
    described = "; ".join(
        f"slot {slot.slot_name} for {human_duration((now - slot.inactive_since).total_seconds())}"
        for slot in idle
    )
    message = (
        f"Replication slot(s) on {source} neither active nor advancing: {described} "
        f"(alert after {source.slot_inactive_alert_minutes} min). An unread slot keeps WAL forever."
    )
    worst = idle[0]
    return set_alert_state(
        source,
        Condition.SLOT_INACTIVE,
        Level.WARN,
        message,
        now,
        slot=worst,
        value=worst.retained_bytes,
        forecast=slot_forecast(source, worst, now),
    )


def _evaluate_wal_status(source, slots, now):
    bad = [slot for slot in slots if slot.wal_status in WAL_STATUS_LEVEL]
    if not bad:
        return set_alert_state(
            source, Condition.WAL_STATUS, Level.OK, "Every slot's WAL is reserved (wal_status).", now
        )
    bad.sort(key=lambda slot: -LEVEL_RANK[WAL_STATUS_LEVEL[slot.wal_status]])
    worst = bad[0]
    level = WAL_STATUS_LEVEL[worst.wal_status]
    message = " ".join(
        f"Slot {slot.slot_name} on {source} {WAL_STATUS_MEANING[slot.wal_status]} (wal_status {slot.wal_status})."
        for slot in bad
    )
    return set_alert_state(
        source,
        Condition.WAL_STATUS,
        level,
        message,
        now,
        slot=worst,
        value=worst.retained_bytes,
        forecast=slot_forecast(source, worst, now),
    )


def set_alert_state(
    source: Source,
    condition: str,
    level: str,
    message: str,
    now: dt.datetime,
    *,
    slot: SlotMetric | None = None,
    value: int | None = None,
    forecast: Forecast | None = None,
) -> AlertEvent | None:
    """Store the condition's level; a change (or a due reminder) creates the AlertEvent to notify.

    The row lock makes two probes of one source that finish together agree on one event.
    """
    repeat = dt.timedelta(minutes=settings.ROSETTA_ALERT_REPEAT_MINUTES)
    with transaction.atomic():
        state, _ = AlertState.objects.select_for_update().get_or_create(
            source=source, condition=condition, defaults={"level": Level.OK, "since": now}
        )
        event = None
        if state.level != level:
            kind, previous = AlertEvent.Kind.CHANGE, state.level
            state.level, state.since = level, now
        elif (
            level != Level.OK
            and repeat.total_seconds() > 0
            and (state.last_event_at is None or now - state.last_event_at >= repeat)
        ):
            kind, previous = AlertEvent.Kind.REMINDER, level
        else:
            kind = None
        if kind is not None:
            event = AlertEvent.objects.create(
                source=source,
                created_at=now,
                condition=condition,
                kind=kind,
                previous_level=previous,
                level=level,
                message=message,
                slot_name=slot.slot_name if slot else "",
                value_bytes=value,
                forecast=forecast.summary if forecast and level != Level.OK else "",
                forecast_seconds=forecast.seconds_to_trouble if forecast and level != Level.OK else None,
                next_attempt_at=now,
            )
            state.last_event_at = now
        state.message = message
        state.save()
    return event


# --- history -------------------------------------------------------------------------

WAL_STATUS_RANK = {"": 0, "reserved": 1, "extended": 2, "unreserved": 3, "lost": 4}


def _status_rank():
    return Case(
        *[When(wal_status=status, then=Value(rank)) for status, rank in WAL_STATUS_RANK.items()],
        default=Value(0),
        output_field=IntegerField(),
    )


def downsample_metrics(now: dt.datetime | None = None) -> dict:
    """Replace per-probe rows older than the full-resolution window by one row per hour
    holding the hour's maxima (minimum for safe_wal_size, the worst wal_status), then
    delete hourly rows past their retention. Works a day at a time; safe to rerun."""
    now = now or timezone.now()
    cutoff = (now - dt.timedelta(days=settings.ROSETTA_METRICS_FULL_RESOLUTION_DAYS)).replace(
        minute=0, second=0, microsecond=0
    )
    counts = {"wal_rows_merged": 0, "slot_rows_merged": 0, "hourly_rows_deleted": 0}
    oldest = [
        model.objects.filter(resolution=Resolution.RAW, probed_at__lt=cutoff).aggregate(
            first=Min("probed_at")
        )["first"]
        for model in (WalMetric, SlotMetric)
    ]
    oldest = [value for value in oldest if value is not None]
    if oldest:
        start = min(oldest).astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        while start < cutoff:
            end = min(start + dt.timedelta(days=1), cutoff)
            with transaction.atomic():
                counts["wal_rows_merged"] += _downsample_wal(start, end)
                counts["slot_rows_merged"] += _downsample_slots(start, end)
            start = end
    keep_days = settings.ROSETTA_METRICS_HOURLY_RETENTION_DAYS
    if keep_days > 0:
        horizon = now - dt.timedelta(days=keep_days)
        for model in (WalMetric, SlotMetric):
            deleted, _ = model.objects.filter(resolution=Resolution.HOURLY, probed_at__lt=horizon).delete()
            counts["hourly_rows_deleted"] += deleted
    return counts


def _hour():
    return Trunc("probed_at", "hour", tzinfo=dt.UTC)


def _downsample_wal(start, end) -> int:
    raw = WalMetric.objects.filter(resolution=Resolution.RAW, probed_at__gte=start, probed_at__lt=end)
    groups = (
        raw.annotate(hour=_hour())
        .values("source_id", "hour")
        .annotate(
            probes=Count("id"),
            ok_probes=Count("id", filter=Q(ok=True)),
            duration_ms=Max("duration_ms"),
            lsn_position=Max("lsn_position"),
            wal_dir_bytes=Max("wal_dir_bytes"),
            wal_segments=Max("wal_segments"),
            wal_rate_bytes_per_s=Max("wal_rate_bytes_per_s"),
            in_recovery=BoolOr("in_recovery"),
        )
        .order_by()
    )
    rows = []
    for group in groups:
        failed = group["probes"] - group["ok_probes"]
        rows.append(
            WalMetric(
                source_id=group["source_id"],
                probed_at=group["hour"],
                resolution=Resolution.HOURLY,
                probes=group["probes"],
                ok=group["ok_probes"] > 0,
                error=f"{failed} of {group['probes']} probes failed in this hour." if failed else "",
                duration_ms=group["duration_ms"] or 0,
                in_recovery=bool(group["in_recovery"]),
                lsn_position=group["lsn_position"],
                wal_dir_bytes=group["wal_dir_bytes"],
                wal_segments=group["wal_segments"],
                wal_rate_bytes_per_s=group["wal_rate_bytes_per_s"],
            )
        )
    WalMetric.objects.bulk_create(rows, batch_size=1000)
    deleted, _ = raw.delete()
    return deleted


def _downsample_slots(start, end) -> int:
    raw = SlotMetric.objects.filter(resolution=Resolution.RAW, probed_at__gte=start, probed_at__lt=end)
    groups = (
        raw.annotate(hour=_hour(), status_rank=_status_rank())
        .values("source_id", "slot_name", "hour")
        .annotate(
            plugin=Max("plugin"),
            slot_type=Max("slot_type"),
            database=Max("database"),
            active=BoolOr("active"),
            retained_bytes=Max("retained_bytes"),
            unconfirmed_bytes=Max("unconfirmed_bytes"),
            safe_wal_size=Min("safe_wal_size"),
            worst_status=Max("status_rank"),
            inactive_since=Min("inactive_since"),
        )
        .order_by()
    )
    status_by_rank = {rank: status for status, rank in WAL_STATUS_RANK.items()}
    rows = [
        SlotMetric(
            source_id=group["source_id"],
            probed_at=group["hour"],
            resolution=Resolution.HOURLY,
            slot_name=group["slot_name"],
            plugin=group["plugin"],
            slot_type=group["slot_type"],
            database=group["database"],
            active=bool(group["active"]),
            retained_bytes=group["retained_bytes"],
            unconfirmed_bytes=group["unconfirmed_bytes"],
            safe_wal_size=group["safe_wal_size"],
            wal_status=status_by_rank.get(group["worst_status"], ""),
            inactive_since=group["inactive_since"],
        )
        for group in groups
    ]
    SlotMetric.objects.bulk_create(rows, batch_size=1000)
    deleted, _ = raw.delete()
    return deleted
