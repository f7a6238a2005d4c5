import datetime as dt

from django.contrib import admin, messages
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from engine.forecast import human_bytes, human_duration
from rosetta.admin_utils import RecordAdmin, badge

from .charts import line_chart
from .models import AlertEvent, AlertState, SlotMetric, WalMetric, WalSettings
from .selectors import annotate_wal_health, chart_series, health_of, source_wal_state
from .services import probe_sources


class ReadOnlyMetricsAdmin(RecordAdmin):
    """Measurements are written by probes only."""

    list_select_related = ["source"]
    list_per_page = 100


@admin.register(WalMetric)
class WalMetricAdmin(ReadOnlyMetricsAdmin):
    list_display = [
        "probed_at",
        "source",
        "probe",
        "wal_dir",
        "current_lsn",
        "wal_rate",
        "resolution",
        "warning",
    ]
    list_filter = ["ok", "resolution", "source"]
    ordering = ["-probed_at"]
    readonly_fields = ["current_lsn"]

    @admin.display(description="probe")
    def probe(self, obj):
        return badge("ok", "ok") if obj.ok else format_html("{} {}", badge("failed", "failed"), obj.error)

    @admin.display(description="WAL directory", ordering="wal_dir_bytes")
    def wal_dir(self, obj):
        return human_bytes(obj.wal_dir_bytes) if obj.wal_dir_bytes is not None else "-"

    @admin.display(description="WAL written /s")
    def wal_rate(self, obj):
        return f"{human_bytes(obj.wal_rate_bytes_per_s)}/s" if obj.wal_rate_bytes_per_s is not None else "-"

    @admin.display(description="warnings")
    def warning(self, obj):
        return " ".join(obj.warnings or [])


class WalStatusFilter(admin.SimpleListFilter):
    """Fixed choices: the default filter would scan every row for its distinct values."""

    title = "wal_status"
    parameter_name = "wal_status"

    def lookups(self, request, model_admin):
        return [(status, status) for status in ("reserved", "extended", "unreserved", "lost")]

    def queryset(self, request, queryset):
        return queryset.filter(wal_status=self.value()) if self.value() else queryset


@admin.register(SlotMetric)
class SlotMetricAdmin(ReadOnlyMetricsAdmin):
    list_display = [
        "probed_at",
        "source",
        "slot_name",
        "active",
        "retained",
        "unconfirmed",
        "wal_status",
        "safe_wal",
        "resolution",
    ]
    list_filter = [WalStatusFilter, "active", "resolution", "source"]
    search_fields = ["=slot_name"]
    ordering = ["-probed_at"]

    @admin.display(description="retained WAL", ordering="retained_bytes")
    def retained(self, obj):
        return obj.display_bytes(obj.retained_bytes)

    @admin.display(description="unconfirmed", ordering="unconfirmed_bytes")
    def unconfirmed(self, obj):
        return obj.display_bytes(obj.unconfirmed_bytes)

    @admin.display(description="safe_wal_size")
    def safe_wal(self, obj):
        return obj.display_safe_wal_size


@admin.register(WalSettings)
class WalSettingsAdmin(ReadOnlyMetricsAdmin):
    list_display = ["recorded_at", "source", "max_slot_wal_keep", "max_wal", "wal_keep"]
    list_filter = ["source"]
    ordering = ["-recorded_at"]

    @admin.display(description="max_slot_wal_keep_size")
    def max_slot_wal_keep(self, obj):
        return obj.describe().get("max_slot_wal_keep_size", "-")

    @admin.display(description="max_wal_size")
    def max_wal(self, obj):
        return obj.describe().get("max_wal_size", "-")

    @admin.display(description="wal_keep_size")
    def wal_keep(self, obj):
        return obj.describe().get("wal_keep_size", "-")


@admin.register(AlertState)
class AlertStateAdmin(ReadOnlyMetricsAdmin):
    list_display = ["source", "slot_name", "condition", "level_badge", "since", "message"]
    list_filter = ["level", "condition", "source"]
    list_select_related = ["source"]
    search_fields = ["=slot_name", "=server_id"]
    ordering = ["source__name", "slot_name", "condition"]

    @admin.display(description="level", ordering="level")
    def level_badge(self, obj):
        return badge(obj.level)


@admin.register(AlertEvent)
class AlertEventAdmin(ReadOnlyMetricsAdmin):
    list_display = ["created_at", "source", "condition", "change", "message", "forecast", "notified"]
    list_filter = ["level", "condition", "kind", "source", ("notified_at", admin.EmptyFieldListFilter)]
    search_fields = ["message", "=slot_name"]
    ordering = ["-created_at"]
    readonly_fields = [
        "created_at",
        "source",
        "condition",
        "kind",
        "previous_level",
        "level",
        "message",
        "slot_name",
        "value_bytes",
        "forecast",
        "forecast_seconds",
        "notified_at",
        "email_sent_at",
        "webhook_sent_at",
        "notify_attempts",
        "next_attempt_at",
        "notify_error",
    ]

    @admin.display(description="change")
    def change(self, obj):
        if obj.kind == AlertEvent.Kind.REMINDER:
            return format_html("{} (reminder)", badge(obj.level))
        return format_html("{} &rarr; {}", badge(obj.previous_level), badge(obj.level))

    @admin.display(description="notified", ordering="notified_at")
    def notified(self, obj):
        if obj.notified_at:
            return obj.notified_at.strftime("%Y-%m-%d %H:%M:%S")
        if obj.notify_error:
            return format_html("{} ({} attempts): {}", badge("failed"), obj.notify_attempts, obj.notify_error)
        return "pending"


class SourceWalMonitoringMixin:
    """What the Source admin shows about WAL: health and largest retained WAL on the list,
    the WAL panel with chart and forecast on the change page, a "Probe WAL now" action."""

    def get_queryset(self, request):
        return annotate_wal_health(super().get_queryset(request))

    @admin.display(description="WAL health")
    def wal_health(self, obj):
        return badge(health_of(obj))

    @admin.display(description="largest retained WAL", ordering="wal_largest_retained")
    def largest_retained_wal(self, obj):
        if obj.wal_largest_retained is None:
            return "-"
        return f"{human_bytes(obj.wal_largest_retained)} ({obj.wal_largest_retained_slot})"

    @admin.action(description="Probe WAL now", permissions=["change"])
    def probe_wal_now(self, request, queryset):
        for metric in probe_sources(queryset):
            if metric.ok:
                slots = ", ".join(
                    f"{slot.slot_name} {human_bytes(slot.retained_bytes)}" for slot in metric.slot_rows
                )
                warnings = (" " + " ".join(metric.warnings)) if metric.warnings else ""
                self.message_user(
                    request,
                    f"{metric.source}: WAL directory {human_bytes(metric.wal_dir_bytes)}; "
                    f"slots: {slots or 'none'}.{warnings}",
                    messages.WARNING if metric.warnings else messages.SUCCESS,
                )
            else:
                self.message_user(request, f"{metric.source}: probe failed: {metric.error}", messages.ERROR)

    @admin.display(description="WAL and replication slots")
    def wal_monitoring_panel(self, obj):
        if obj is None or obj.pk is None:
            return "Measured once the source is saved."
        return wal_panel_html(obj)


def wal_panel_html(source) -> str:
    now = timezone.now()
    state = source_wal_state(source, now)
    thresholds = [
        ("warn", source.wal_warn_bytes, "#ef6c00"),
        ("critical", source.wal_critical_bytes, "#c62828"),
    ]
    charts = []
    for title, span, bucket in (
        ("Last 24 hours", dt.timedelta(hours=24), 300),
        ("Last 7 days", dt.timedelta(days=7), 3600),
    ):
        data = chart_series(source, span, bucket, now)
        series = [("WAL directory", data["wal_dir"])] + [
            (f"slot {name}", points) for name, points in data["slots"].items()
        ]
        charts.append(
            mark_safe(  # noqa: S308 - line_chart escapes every label it draws
                line_chart(
                    series,
                    start=data["since"],
                    end=data["until"],
                    thresholds=thresholds,
                    title=f"{title}: WAL directory size and retained WAL per slot (max per {bucket // 60} min)",
                    gap_seconds=bucket * 3,
                )
            )
        )
    for slot in state["slots"]:
        since = slot["inactive_since"]
        slot["inactive_for"] = human_duration((now - since).total_seconds()) if since else ""
        slot["bar_width"] = min(100, slot["percent_of_critical"] or 0)
    last = state["last_probe"]
    context = {
        "state": state,
        "health_badge": badge(state["health"]),
        "last": last,
        "wal_dir": human_bytes(last["wal_dir_bytes"]) if last and last["wal_dir_bytes"] is not None else None,
        "wal_rate": (
            f"{human_bytes(last['wal_rate_bytes_per_s'])}/s"
            if last and last["wal_rate_bytes_per_s"] is not None
            else None
        ),
        "warn": human_bytes(source.wal_warn_bytes),
        "critical": human_bytes(source.wal_critical_bytes),
        "settings": {
            name: ("unlimited" if value == -1 else human_bytes(value))
            for name, value in (state["settings"] or {}).items()
            if value is not None
        },
        "alerts": [{**alert, "badge": badge(alert["level"])} for alert in state["alerts"]],
        "charts": charts,
    }
    return render_to_string("monitoring/source_wal_panel.html", context)
