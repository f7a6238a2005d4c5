"""WAL monitoring services: probe sources, record the outcome, move alerts, keep history small.

The probe itself (engine.probe) is plain Python; this module loads the sources,
calls it, and records what came back. Tasks, the API, the admin and probe_wal call these.
"""

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.postgres.aggregates import BoolOr
from django.db import connection, transaction
from django.db.models import Case, Count, IntegerField, Max, Min, Q, TextField, Value, When
from django.db.models.functions import Cast, Trunc
from django.utils import timezone
from psycopg import sql as psycopg_sql

from engine.forecast import Forecast, forecast_slot, human_bytes, human_duration, lost_forecast
from engine.lsn import parse_lsn
from engine.probe import ProbeResult, probe_many, wal_rate
from rosetta.secrets import SecretDecryptionError, decrypt
from sources.models import Source

from .models import (
    AlertEvent,
    AlertState,
    Condition,
    Level,
    Resolution,
    SlotMetric,
    WalMetric,
    WalSettings,
    alert_key,
    retained_wal_level,
)
from .notifications import due_notifications

log = logging.getLogger(__name__)

# How far back the growth rate of a slot's retained WAL is measured.
FORECAST_WINDOW = dt.timedelta(hours=1)

WAL_STATUS_LEVEL = {"extended": Level.WARN, "unreserved": Level.CRITICAL}
WAL_STATUS_MEANING = {
    "extended": "retains more WAL than max_wal_size",
    "unreserved": "no longer has its WAL reserved: it will be lost at the next checkpoint",
    "lost": "is lost: the WAL it needed has been removed, its pipeline must re-snapshot",
}


# --- probing -----------------------------------------------------------------------

# Results are recorded in batches at most this far apart, so a tick costs a number of
# queries that depends on its duration, not on how many sources or slots it sees.
RECORD_EVERY_SECONDS = 0.5


def probe_sources(sources=None) -> list[WalMetric]:
    """Probe the given sources (default: all) concurrently and record each outcome as it
    comes, with the alerts it moves; slot alerts are judged once per server at the end.

    One source's failure never stops the others, and the tick ends within connect
    timeout + statement timeout + a grace whatever the servers do (probe_many). If the
    tick is interrupted, what has come in is recorded. Notifications go out from their
    own task (notify_pending_alerts)."""
    if sources is None:
        sources = Source.objects.all()
    # The passwords come in the same query, still encrypted (the Cast skips the field's
    # decryption), and are decrypted per source below: one bad token fails one probe only.
    if hasattr(sources, "defer"):
        sources = sources.defer("pg_password").annotate(password_token=Cast("pg_password", TextField()))
    sources = list(sources)
    # CSV and HTTP JSON sources have no WAL to watch.
    sources = [source for source in sources if source.kind == Source.Kind.POSTGRES]
    tick = ProbeTick({source.pk: source for source in sources})
    targets = {}
    try:
        for source in sources:
            try:
                if hasattr(source, "password_token"):
                    source.pg_password = decrypt(source.password_token) if source.password_token else ""
                kwargs = source.connection_kwargs(connect_timeout=settings.ROSETTA_CONNECT_TIMEOUT)
            except SecretDecryptionError as error:
                tick.add(source.pk, ProbeResult(ok=False, probed_at=timezone.now(), error=str(error)))
                continue
            targets[source.pk] = (kwargs, source.heartbeat_enabled)
        probe_many(
            targets,
            statement_timeout_ms=settings.ROSETTA_STATEMENT_TIMEOUT_MS,
            max_parallel=settings.ROSETTA_PROBE_MAX_PARALLEL,
            on_result=tick.add,
        )
    finally:
        tick.finish()
    return [tick.metrics[source.pk] for source in sources if source.pk in tick.metrics]


class ProbeTick:
    """Collects one tick's results and records them in batches as they come."""

    def __init__(self, sources: dict):
        self.sources = sources
        self.pending: list = []
        self.metrics: dict = {}
        self.last_flush = time.monotonic()

    def add(self, source_pk, result: ProbeResult) -> None:
        self.pending.append((self.sources[source_pk], result))
        if time.monotonic() - self.last_flush >= RECORD_EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        if not batch:
            return
        for metric in record_probes(batch):
            self.metrics[metric.source_id] = metric
        try:
            evaluate_probe_failures([source for source, _ in batch], batch[-1][1].probed_at)
        except Exception:
            log.exception("Evaluating the probe-failure alerts failed")

    def finish(self) -> None:
        self.flush()
        try:
            evaluate_slot_alerts(list(self.metrics.values()))
        except Exception:
            log.exception("Evaluating the slot alerts failed")
        schedule_notifications()


def record_probe(source: Source, result: ProbeResult) -> WalMetric:
    """Store one probe (see record_probes)."""
    return record_probes([(source, result)])[0]


def record_probes(batch: list[tuple[Source, ProbeResult]]) -> list[WalMetric]:
    """Store probes of several sources in a fixed number of queries: a WalMetric row per
    probe, a SlotMetric row per slot, the settings that changed."""
    ids = [source.pk for source, _ in batch]
    previous = {
        metric.source_id: metric
        for metric in WalMetric.objects.raw(
            """
            SELECT w.id, w.source_id, w.probed_at, w.lsn_position
            FROM unnest(%s::bigint[]) AS s(id)
            CROSS JOIN LATERAL (
                SELECT id, source_id, probed_at, lsn_position FROM monitoring_walmetric m
                WHERE m.source_id = s.id AND m.resolution = 'raw' AND m.ok
                ORDER BY m.probed_at DESC LIMIT 1
            ) w
            """,
            [ids],
        )
    }
    earlier: dict = {}
    if previous:
        pairs = [(metric.source_id, metric.probed_at) for metric in previous.values()]
        with connection.cursor() as cursor:
            cursor.execute(
                """
                SELECT m.source_id, m.slot_name, m.probed_at, m.restart_lsn, m.confirmed_flush_lsn,
                       m.inactive_since
                FROM monitoring_slotmetric m
                JOIN unnest(%s::bigint[], %s::timestamptz[]) AS p(source_id, probed_at)
                  ON m.source_id = p.source_id AND m.probed_at = p.probed_at
                """,
                [[source_id for source_id, _ in pairs], [at for _, at in pairs]],
            )
            for row in cursor.fetchall():
                earlier[(row[0], row[1])] = EarlierSlot(*row[2:])
    latest_settings = {
        row.source_id: row
        for row in WalSettings.objects.raw(
            """
            SELECT w.* FROM unnest(%s::bigint[]) AS s(id)
            CROSS JOIN LATERAL (
                SELECT * FROM monitoring_walsettings m WHERE m.source_id = s.id
                ORDER BY m.recorded_at DESC LIMIT 1
            ) w
            """,
            [ids],
        )
    }

    metrics, slot_rows, settings_rows = [], [], []
    for source, result in batch:
        before = previous.get(source.pk)
        rate = None
        if result.ok and before is not None:
            rate = wal_rate(before.current_lsn, before.probed_at, result.current_lsn, result.probed_at)
        metric = WalMetric(
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
            system_identifier=result.system_identifier or "",
        )
        metric.slot_rows = []
        metrics.append(metric)
        if not result.ok:
            log.warning("WAL probe of source %s failed: %s", source, result.error)
            continue
        for warning in result.warnings:
            log.warning("WAL probe of source %s: %s", source, warning)
        for slot in result.slots:
            row = SlotMetric(
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
                inactive_since=_inactive_since(
                    slot, earlier.get((source.pk, slot.slot_name)), result.probed_at
                ),
            )
            metric.slot_rows.append(row)
            slot_rows.append(row)
        values = {name: result.settings.get(name) for name in WalSettings.WATCHED}
        latest = latest_settings.get(source.pk)
        if latest is None or latest.as_dict() != values:
            settings_rows.append(WalSettings(source=source, recorded_at=result.probed_at, **values))
    with transaction.atomic():
        WalMetric.objects.bulk_create(metrics)
        if slot_rows:
            _insert_rows(SlotMetric, slot_rows)
        if settings_rows:
            WalSettings.objects.bulk_create(settings_rows)
    return metrics


def _insert_rows(model, objects: list) -> None:
    """INSERT ... SELECT FROM unnest(one array per column): one statement, and a fraction of
    bulk_create's Python work per row, which would otherwise hold the GIL from the probe
    threads while a tick over many sources and slots is being recorded. Plain-valued
    fields only (no JSON)."""
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    query = psycopg_sql.SQL("INSERT INTO {} ({}) SELECT * FROM unnest({})").format(
        psycopg_sql.Identifier(model._meta.db_table),
        psycopg_sql.SQL(", ").join(psycopg_sql.Identifier(field.column) for field in fields),
        psycopg_sql.SQL(", ").join(
            psycopg_sql.SQL("%s::{}[]").format(psycopg_sql.SQL(field.db_type(connection))) for field in fields
        ),
    )
    columns = [[getattr(obj, field.attname) for obj in objects] for field in fields]
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute(query.as_string(connection.connection), columns)


@dataclass
class EarlierSlot:
    """What _inactive_since needs of a slot's previous reading (a tuple, not a model: a
    tick reads one per source and slot)."""

    probed_at: dt.datetime
    restart_lsn: str
    confirmed_flush_lsn: str
    inactive_since: dt.datetime | None


def _inactive_since(slot, earlier: "EarlierSlot | SlotMetric | None", now: dt.datetime) -> dt.datetime | None:
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


# --- alerts --------------------------------------------------------------------------

# Serialises alert evaluation, so two ticks that finish together agree on one event.
ALERT_LOCK_ID = 0x524F53_414C52  # "ROS" "ALR"


@dataclass
class Judgement:
    """What one alert (AlertState.key) should be now; apply_judgements() stores it."""

    key: str
    source_id: int
    condition: str
    level: str
    message: str
    server_id: str = ""
    slot_name: str = ""
    value: int | None = None
    # Computed only when an event is raised: a forecast reads the slot's history.
    forecast: Callable[[], Forecast | None] | None = None
    # False: the level changes without a notification (another alert reports it).
    notify: bool = True


def slot_forecast(source: Source, slot: SlotMetric, now: dt.datetime | None = None) -> Forecast:
    """The forecast of one slot, with times counted from `now` (the probe's time)."""
    now = now or slot.probed_at
    if slot.is_lost:
        lost_at = (
            AlertState.objects.filter(
                condition=Condition.SLOT_LOST, slot_name=slot.slot_name, level=Level.CRITICAL
            )
            .filter(Q(source=source) | Q(server_id=_server_of(source)))
            .values_list("since", flat=True)
            .first()
        )
        return lost_forecast(lost_at or slot.probed_at)
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


def _server_of(source: Source) -> str:
    latest = (
        WalMetric.objects.filter(source=source, ok=True)
        .order_by("-probed_at")
        .values_list("system_identifier", flat=True)
        .first()
    )
    return latest or _fallback_server_id(source)


def _fallback_server_id(source: Source) -> str:
    """When the role may not read pg_control_system(): the address is the best we have."""
    return f"{source.pg_host}:{source.pg_port}"


def server_id_of(metric: WalMetric) -> str:
    return metric.system_identifier or _fallback_server_id(metric.source)


def set_alert_state(
    source: Source,
    condition: str,
    level: str,
    message: str,
    now: dt.datetime,
    *,
    key: str | None = None,
    slot: SlotMetric | None = None,
    value: int | None = None,
    forecast: Forecast | None = None,
) -> AlertEvent | None:
    """Move one alert to `level`: the entry point for raising (or clearing) any alert.

    `key` (alert_key(), or a prefix of its own for a new kind of alert) says what the
    alert is about; by default the source's own `condition`. A change of level, or a
    due reminder, creates the AlertEvent; it is notified by the notification task
    once the caller's transaction commits.
    """
    judgement = Judgement(
        key=key or alert_key(condition, source_id=source.pk),
        source_id=source.pk,
        condition=condition,
        level=level,
        message=message,
        slot_name=slot.slot_name if slot else "",
        value=value,
        forecast=(lambda: forecast) if forecast is not None else None,
    )
    events = apply_judgements([judgement], now)
    schedule_notifications()
    return events[0] if events else None


def apply_judgements(judgements: list[Judgement], now: dt.datetime) -> list[AlertEvent]:
    """Store many alerts' levels in a fixed number of queries; a change (or a due
    reminder) creates the AlertEvent that the notification task sends."""
    if not judgements:
        return []
    repeat = dt.timedelta(minutes=settings.ROSETTA_ALERT_REPEAT_MINUTES)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ALERT_LOCK_ID])
        states = {
            state.key: state for state in AlertState.objects.filter(key__in=[j.key for j in judgements])
        }
        rows, events = {}, []
        for judgement in judgements:
            state = states.get(judgement.key) or AlertState(key=judgement.key, level=Level.OK, since=now)
            kind = None
            if state.level != judgement.level:
                if judgement.notify:
                    kind, previous = AlertEvent.Kind.CHANGE, state.level
                state.level, state.since = judgement.level, now
            elif (
                judgement.notify
                and judgement.level != Level.OK
                and repeat.total_seconds() > 0
                and (state.last_event_at is None or now - state.last_event_at >= repeat)
            ):
                kind, previous = AlertEvent.Kind.REMINDER, judgement.level
            if kind is not None:
                forecast = (
                    judgement.forecast() if judgement.forecast and judgement.level != Level.OK else None
                )
                events.append(
                    AlertEvent(
                        source_id=judgement.source_id,
                        created_at=now,
                        condition=judgement.condition,
                        kind=kind,
                        previous_level=previous,
                        level=judgement.level,
                        message=judgement.message,
                        slot_name=judgement.slot_name,
                        value_bytes=judgement.value,
                        forecast=forecast.summary if forecast else "",
                        forecast_seconds=forecast.seconds_to_trouble if forecast else None,
                        next_attempt_at=now,
                    )
                )
                state.last_event_at = now
            state.pk = None  # upserted on key below
            state.source_id = judgement.source_id
            state.condition = judgement.condition
            state.server_id = judgement.server_id
            state.slot_name = judgement.slot_name
            state.message = judgement.message
            rows[judgement.key] = state
        AlertState.objects.bulk_create(
            rows.values(),
            update_conflicts=True,
            unique_fields=["key"],
            update_fields=[
                "source",
                "condition",
                "server_id",
                "slot_name",
                "level",
                "message",
                "since",
                "last_event_at",
                "updated_at",
            ],
        )
        AlertEvent.objects.bulk_create(events)
    return events


def schedule_notifications() -> None:
    """Once the caller commits, let the notification task send what is due (retries too)."""
    if not due_notifications().exists():
        return

    def enqueue():
        from .tasks import notify_pending_alerts

        try:
            notify_pending_alerts.delay()
        except Exception:
            log.exception("Could not queue the alert notifications; the next probe tick tries again")

    transaction.on_commit(enqueue)


def evaluate_alerts(source: Source, metric: WalMetric) -> list[AlertEvent]:
    """Move every alert that one probe of one source decides."""
    events = evaluate_probe_failures([source], metric.probed_at)
    if metric.ok:
        events += evaluate_slot_alerts([metric])
    schedule_notifications()
    return events


def evaluate_probe_failures(sources: list[Source], now: dt.datetime) -> list[AlertEvent]:
    """A source whose last N probes all failed is critical (N = ROSETTA_PROBE_FAILURES_ALERT)."""
    needed = max(1, settings.ROSETTA_PROBE_FAILURES_ALERT)
    recent: dict = {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT w.source_id, w.ok, w.error FROM unnest(%s::bigint[]) AS s(id)
            CROSS JOIN LATERAL (
                SELECT source_id, ok, error, probed_at FROM monitoring_walmetric m
                WHERE m.source_id = s.id AND m.resolution = 'raw'
                ORDER BY m.probed_at DESC LIMIT %s
            ) w
            ORDER BY w.source_id, w.probed_at DESC
            """,
            [[source.pk for source in sources], needed],
        )
        for source_id, ok, error in cursor.fetchall():
            recent.setdefault(source_id, []).append((ok, error))
    judgements = []
    for source in sources:
        rows = recent.get(source.pk, [])
        failing = len(rows) == needed and not any(ok for ok, _ in rows)
        if failing:
            level, message = (
                Level.CRITICAL,
                f"The last {needed} WAL probes of {source} failed. Latest: {rows[0][1]}",
            )
        else:
            level, message = Level.OK, f"{source} answers the WAL probe."
        judgements.append(
            Judgement(
                key=alert_key(Condition.PROBE_FAILED, source_id=source.pk),
                source_id=source.pk,
                condition=Condition.PROBE_FAILED,
                level=level,
                message=message,
            )
        )
    return apply_judgements(judgements, now)


def evaluate_slot_alerts(metrics: list[WalMetric]) -> list[AlertEvent]:
    """Judge every slot once per server (its system identifier) and slot, whatever the
    number of sources pointing at that server, and attribute it to the source that owns
    the slot (its slot_name), or else to the server's first source."""
    servers: dict[str, list[WalMetric]] = {}
    for metric in metrics:
        if metric.ok:
            servers.setdefault(server_id_of(metric), []).append(metric)
    if not servers:
        return []
    now = max(metric.probed_at for on_server in servers.values() for metric in on_server)
    judgements = []
    for server_id, on_server in servers.items():
        on_server.sort(key=lambda metric: metric.source_id)
        owners: dict = {}
        for metric in on_server:
            owners.setdefault(metric.source.slot_name, metric)
        names = sorted({slot.slot_name for metric in on_server for slot in metric.slot_rows})
        for name in names:
            metric = owners.get(name)
            if metric is None or not any(slot.slot_name == name for slot in metric.slot_rows):
                metric = next(m for m in on_server if any(slot.slot_name == name for slot in m.slot_rows))
            slot = next(slot for slot in metric.slot_rows if slot.slot_name == name)
            judgements += _judge_slot(metric.source, server_id, slot, metric.probed_at)
    judged = {judgement.key for judgement in judgements}
    for state in AlertState.objects.filter(server_id__in=list(servers)).exclude(level=Level.OK):
        if state.key not in judged:
            judgements.append(
                Judgement(
                    key=state.key,
                    source_id=state.source_id,
                    condition=state.condition,
                    level=Level.OK,
                    message=f"Slot {state.slot_name} no longer exists on this server.",
                    server_id=state.server_id,
                    slot_name=state.slot_name,
                )
            )
    return apply_judgements(judgements, now)


def _judge_slot(source: Source, server_id: str, slot: SlotMetric, now: dt.datetime) -> list[Judgement]:
    def judgement(condition, level, message, *, value=None, notify=True):
        return Judgement(
            key=alert_key(condition, server_id=server_id, slot_name=slot.slot_name),
            source_id=source.pk,
            condition=condition,
            level=level,
            message=message,
            server_id=server_id,
            slot_name=slot.slot_name,
            value=value,
            forecast=(lambda: slot_forecast(source, slot, now)) if level != Level.OK else None,
            notify=notify,
        )

    name = slot.slot_name
    if slot.is_lost:
        return [
            judgement(Condition.RETAINED_WAL, Level.OK, f"Slot {name} is lost: it retains no WAL."),
            judgement(Condition.SLOT_INACTIVE, Level.OK, f"Slot {name} is lost."),
            # The loss is reported once, by the slot lost alert, not also as a wal_status change.
            judgement(
                Condition.WAL_STATUS,
                Level.OK,
                f"Slot {name} is lost (see the slot lost alert).",
                notify=False,
            ),
            judgement(
                Condition.SLOT_LOST,
                Level.CRITICAL,
                f"Slot {name} on {source} {WAL_STATUS_MEANING['lost']} (wal_status lost): re-copy needed.",
                value=None,
            ),
        ]
    judgements = [judgement(Condition.SLOT_LOST, Level.OK, f"Slot {name} is not lost.")]

    retained = slot.retained_bytes
    limits = f"warning at {human_bytes(source.wal_warn_bytes)}, critical at {human_bytes(source.wal_critical_bytes)}"
    if retained is None:
        judgements.append(judgement(Condition.RETAINED_WAL, Level.OK, f"Slot {name} reserves no WAL."))
    else:
        level = retained_wal_level(source, retained)
        if level == Level.OK:
            message = f"Slot {name} retains {human_bytes(retained)}, under the thresholds ({limits})."
        else:
            message = f"Slot {name} retains {human_bytes(retained)} of WAL on {source} ({limits})."
        judgements.append(judgement(Condition.RETAINED_WAL, level, message, value=retained))

    limit = dt.timedelta(minutes=source.slot_inactive_alert_minutes)
    since = slot.inactive_since
    if since is not None and now - since >= limit:
        message = (
            f"Replication slot(s) on {source} neither active nor advancing: slot {name} for "
            f"{human_duration((now - since).total_seconds())} (alert after {source.slot_inactive_alert_minutes} "
            "min). An unread slot keeps WAL forever."
        )
        judgements.append(judgement(Condition.SLOT_INACTIVE, Level.WARN, message, value=retained))
    else:
        judgements.append(
            judgement(Condition.SLOT_INACTIVE, Level.OK, f"Slot {name} is active or advancing.")
        )

    if slot.wal_status in WAL_STATUS_LEVEL:
        message = (
            f"Slot {name} on {source} {WAL_STATUS_MEANING[slot.wal_status]} (wal_status {slot.wal_status})."
        )
        judgements.append(
            judgement(Condition.WAL_STATUS, WAL_STATUS_LEVEL[slot.wal_status], message, value=retained)
        )
    else:
        judgements.append(
            judgement(Condition.WAL_STATUS, Level.OK, f"Slot {name}'s WAL is reserved (wal_status).")
        )
    return judgements


def raise_pipeline_alert(source: Source, message: str, *, slot_name: str = "") -> AlertEvent:
    """A critical alert raised by a pipeline run rather than by a probe (a lost or
    dropped replication slot). Only an event: it is notified like any other and
    leaves the probe's alert states alone."""
    now = timezone.now()
    event = AlertEvent.objects.create(
        source=source,
        created_at=now,
        condition=Condition.SLOT_LOST,
        kind=AlertEvent.Kind.CHANGE,
        previous_level=Level.OK,
        level=Level.CRITICAL,
        message=message,
        slot_name=slot_name,
        next_attempt_at=now,
    )
    schedule_notifications()
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
            # PostgreSQL reports no safe_wal_size for a lost slot: an hour that saw the loss
            # must not keep an earlier minimum, which would read as WAL still to spare.
            safe_wal_size=None
            if status_by_rank.get(group["worst_status"]) == "lost"
            else group["safe_wal_size"],
            wal_status=status_by_rank.get(group["worst_status"], ""),
            inactive_since=group["inactive_since"],
        )
        for group in groups
    ]
    SlotMetric.objects.bulk_create(rows, batch_size=1000)
    deleted, _ = raw.delete()
    return deleted
