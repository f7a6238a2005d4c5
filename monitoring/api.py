"""Read-only API for WAL history and alerts; the per-source state lives on /api/sources/{id}/wal/."""

from django_filters import rest_framework as filters
from rest_framework import serializers, viewsets
from rest_framework.pagination import CursorPagination

from rosetta.filters import UtcIsoDateTimeFilter

from .models import AlertEvent, Condition, Level, Resolution, SlotMetric, WalMetric


class TimeCursorPagination(CursorPagination):
    """Stable pages over millions of rows without COUNT(*); oldest first unless ?ordering=-..."""

    page_size_query_param = "page_size"
    max_page_size = 1000


class ProbedAtPagination(TimeCursorPagination):
    ordering = "probed_at"


class CreatedAtPagination(TimeCursorPagination):
    ordering = "-created_at"


class WalMetricSerializer(serializers.ModelSerializer):
    source_name = serializers.CharField(source="source.name", read_only=True)
    current_lsn = serializers.CharField(read_only=True)

    class Meta:
        model = WalMetric
        fields = [
            "id",
            "source",
            "source_name",
            "probed_at",
            "resolution",
            "probes",
            "ok",
            "error",
            "warnings",
            "duration_ms",
            "in_recovery",
            "current_lsn",
            "wal_dir_bytes",
            "wal_segments",
            "wal_rate_bytes_per_s",
            "heartbeat_lsn",
        ]


class SlotMetricSerializer(serializers.ModelSerializer):
    source_name = serializers.CharField(source="source.name", read_only=True)

    class Meta:
        model = SlotMetric
        fields = [
            "id",
            "source",
            "source_name",
            "probed_at",
            "resolution",
            "slot_name",
            "plugin",
            "slot_type",
            "database",
            "active",
            "restart_lsn",
            "confirmed_flush_lsn",
            "retained_bytes",
            "unconfirmed_bytes",
            "wal_status",
            "safe_wal_size",
            "inactive_since",
        ]


class AlertEventSerializer(serializers.ModelSerializer):
    source_name = serializers.CharField(source="source.name", read_only=True)

    class Meta:
        model = AlertEvent
        fields = [
            "id",
            "source",
            "source_name",
            "created_at",
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
            "notify_attempts",
            "notify_error",
        ]


class MetricFilter(filters.FilterSet):
    source_name = filters.CharFilter(field_name="source__name")
    since = UtcIsoDateTimeFilter(field_name="probed_at", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="probed_at", lookup_expr="lt")
    resolution = filters.ChoiceFilter(choices=Resolution.choices)


class WalMetricFilter(MetricFilter):
    class Meta:
        model = WalMetric
        fields = ["source", "ok"]


class SlotMetricFilter(MetricFilter):
    class Meta:
        model = SlotMetric
        fields = ["source", "slot_name", "active", "wal_status"]


class AlertEventFilter(filters.FilterSet):
    source_name = filters.CharFilter(field_name="source__name")
    since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    condition = filters.ChoiceFilter(choices=Condition.choices)
    level = filters.ChoiceFilter(choices=Level.choices)

    class Meta:
        model = AlertEvent
        fields = ["source", "kind", "slot_name"]


class WalMetricViewSet(viewsets.ReadOnlyModelViewSet):
    """One row per probe per source (hourly maxima past the full-resolution window)."""

    queryset = WalMetric.objects.select_related("source")
    serializer_class = WalMetricSerializer
    filterset_class = WalMetricFilter
    pagination_class = ProbedAtPagination
    ordering_fields = ["probed_at"]
    search_fields = []


class SlotMetricViewSet(viewsets.ReadOnlyModelViewSet):
    """One row per replication slot per probe."""

    queryset = SlotMetric.objects.select_related("source")
    serializer_class = SlotMetricSerializer
    filterset_class = SlotMetricFilter
    pagination_class = ProbedAtPagination
    ordering_fields = ["probed_at"]
    search_fields = []


class AlertEventViewSet(viewsets.ReadOnlyModelViewSet):
    """Alert state changes (and reminders), newest first."""

    queryset = AlertEvent.objects.select_related("source")
    serializer_class = AlertEventSerializer
    filterset_class = AlertEventFilter
    pagination_class = CreatedAtPagination
    ordering_fields = ["created_at"]
    search_fields = []


class ForecastSerializer(serializers.Serializer):
    growth_bytes_per_s = serializers.FloatField(allow_null=True)
    seconds_to_critical = serializers.FloatField(allow_null=True)
    critical_at = serializers.DateTimeField(allow_null=True)
    seconds_to_lost = serializers.FloatField(allow_null=True, help_text="When safe_wal_size runs out.")
    lost_at = serializers.DateTimeField(allow_null=True)
    summary = serializers.CharField()


class SlotForecastSerializer(ForecastSerializer):
    slot_name = serializers.CharField()


class SlotStateSerializer(serializers.Serializer):
    slot_name = serializers.CharField()
    plugin = serializers.CharField()
    slot_type = serializers.CharField()
    database = serializers.CharField()
    active = serializers.BooleanField()
    restart_lsn = serializers.CharField()
    confirmed_flush_lsn = serializers.CharField()
    lost = serializers.BooleanField(
        help_text="wal_status lost: the slot's pipeline must copy its tables again."
    )
    reserves_wal = serializers.BooleanField(
        help_text="False for a physical slot created without reserving WAL."
    )
    retained_bytes = serializers.IntegerField(
        allow_null=True, help_text="null for a lost slot or one reserving none."
    )
    retained = serializers.CharField(help_text='As shown: e.g. "1.5 MB", "n/a (lost)", "-".')
    unconfirmed_bytes = serializers.IntegerField(allow_null=True)
    unconfirmed = serializers.CharField()
    wal_status = serializers.CharField()
    safe_wal_size = serializers.IntegerField(allow_null=True)
    safe_wal = serializers.CharField(help_text='As shown: "unlimited", "n/a (lost)", "-" or a size.')
    inactive_since = serializers.DateTimeField(allow_null=True)
    level = serializers.CharField(help_text="ok / warn / critical against the source's thresholds.")
    percent_of_critical = serializers.FloatField(allow_null=True)
    is_sources_slot = serializers.BooleanField()
    pipelines = serializers.ListField(
        child=serializers.DictField(), help_text="The pipelines reading this slot (this source's)."
    )
    forecast = ForecastSerializer()


class ProbeStateSerializer(serializers.Serializer):
    probed_at = serializers.DateTimeField()
    ok = serializers.BooleanField()
    error = serializers.CharField()
    warnings = serializers.ListField(child=serializers.CharField())
    duration_ms = serializers.IntegerField()
    current_lsn = serializers.CharField()
    wal_dir_bytes = serializers.IntegerField(allow_null=True)
    wal_segments = serializers.IntegerField(allow_null=True)
    wal_rate_bytes_per_s = serializers.FloatField(allow_null=True)
    heartbeat_lsn = serializers.CharField()


class AlertStateSerializer(serializers.Serializer):
    condition = serializers.CharField()
    level = serializers.CharField()
    message = serializers.CharField()
    since = serializers.DateTimeField()


class SourceWalStateSerializer(serializers.Serializer):
    """The response of GET /api/sources/{id}/wal/ (and POST .../probe/)."""

    source = serializers.IntegerField()
    name = serializers.CharField()
    health = serializers.ChoiceField(choices=["ok", "warn", "critical", "unknown"])
    thresholds = serializers.DictField(child=serializers.IntegerField())
    heartbeat_enabled = serializers.BooleanField()
    last_probe = ProbeStateSerializer(allow_null=True)
    last_successful_probe = ProbeStateSerializer(
        allow_null=True, help_text="Set when the last probe failed: the last one that did not."
    )
    largest_retained_bytes = serializers.IntegerField(allow_null=True)
    slots = SlotStateSerializer(many=True)
    forecast = SlotForecastSerializer(allow_null=True, help_text="The slot closest to trouble.")
    settings = serializers.DictField(child=serializers.IntegerField(allow_null=True), allow_null=True)
    settings_recorded_at = serializers.DateTimeField(allow_null=True)
    alerts = AlertStateSerializer(many=True)
