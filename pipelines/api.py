from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from destinations.models import Destination
from engine.source import SourceProblem
from rosetta.api import CanChangeObject, StrictModelSerializer, StrictSerializer, action_body, query_bool
from rosetta.audit import AuditedViewSetMixin, deleted, record_audit_event
from rosetta.pagination import EstimatedCountPagination

from . import batch, schedules, services
from .models import IllegalTransition, Pipeline, PipelineRun, PipelineTable


class PipelineTableSerializer(serializers.ModelSerializer):
    class Meta:
        model = PipelineTable
        fields = [
            "schema_name",
            "table_name",
            "target_table",
            "snapshot_state",
            "snapshot_rows",
            "snapshot_finished_at",
            "rows_inserted",
            "rows_updated",
            "rows_deleted",
            "column_mapping",
            "column_types",
        ]
        read_only_fields = fields


class TableNamesField(serializers.ListField):
    """A pipeline's tables as ["schema.table", ...]."""

    child = serializers.CharField()

    def to_representation(self, tables):
        return [table.qualified_name for table in tables.all()]

    def to_internal_value(self, data):
        names = super().to_internal_value(data)
        errors = []
        for name in names:
            try:
                services.parse_table_name(name)
            except ValueError as error:
                errors.append(str(error))
        if errors:
            raise serializers.ValidationError(errors)
        if len({services.parse_table_name(n) for n in names}) != len(names):
            raise serializers.ValidationError("A table is listed twice.")
        return names


class PipelineSerializer(StrictModelSerializer):
    tables = TableNamesField(required=False, help_text='Tables to copy, as "schema.table".')
    table_progress = PipelineTableSerializer(source="tables", many=True, read_only=True)
    last_run_at = serializers.DateTimeField(read_only=True, allow_null=True)
    seconds_since_last_applied_commit = serializers.SerializerMethodField(
        help_text="Time since the source commit of the last change applied to the destination."
    )
    schedule_every_seconds = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="CSV and HTTP JSON sources: run every so many seconds (null: no interval).",
    )
    schedule_cron = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text='CSV and HTTP JSON sources: run at these times, a cron expression such as "0 * * * *" '
        "(minute hour day-of-month month day-of-week, UTC).",
    )

    class Meta:
        model = Pipeline
        fields = [
            "id",
            "name",
            "source",
            "destination",
            "status",
            "max_changes_per_transaction",
            "soft_delete",
            "on_slot_lost",
            "on_incompatible_schema_change",
            "max_reject_share",
            "schedule_every_seconds",
            "schedule_cron",
            "tables",
            "table_progress",
            "last_error",
            "last_alert",
            "last_alert_at",
            "consecutive_failures",
            "next_run_at",
            "last_run_at",
            "last_checked_at",
            "quiet_checks",
            "lag_bytes",
            "lag_measured_at",
            "last_applied_lsn",
            "last_applied_commit_at",
            "seconds_since_last_applied_commit",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "status",
            "last_error",
            "last_alert",
            "last_alert_at",
            "consecutive_failures",
            "next_run_at",
            "last_checked_at",
            "quiet_checks",
            "lag_bytes",
            "lag_measured_at",
            "last_applied_lsn",
            "last_applied_commit_at",
        ]

    def to_internal_value(self, data):
        if hasattr(data, "keys") and "batch_size" in data:
            # Renamed, not aliased: the old name meant changes per run, the new one per
            # destination transaction; a client still sending it must hear so.
            raise serializers.ValidationError(
                {
                    "batch_size": [
                        "Renamed max_changes_per_transaction: the most changes applied in one destination "
                        "transaction (a run now reads until caught up)."
                    ]
                }
            )
        return super().to_internal_value(data)

    def get_seconds_since_last_applied_commit(self, pipeline) -> float | None:
        if pipeline.last_applied_commit_at is None:
            return None
        return round((timezone.now() - pipeline.last_applied_commit_at).total_seconds(), 3)

    def to_representation(self, pipeline):
        data = super().to_representation(pipeline)
        data["schedule_every_seconds"] = schedules.interval_seconds(pipeline.schedule_interval)
        data["schedule_cron"] = schedules.cron_expression(pipeline.schedule_crontab)
        return data

    def validate(self, attrs):
        if "schedule_every_seconds" in attrs:
            attrs["schedule_interval"] = schedules.interval_for(attrs.pop("schedule_every_seconds"))
        if "schedule_cron" in attrs:
            try:
                attrs["schedule_crontab"] = schedules.crontab_for(attrs.pop("schedule_cron"))
            except ValueError as error:
                raise serializers.ValidationError({"schedule_cron": [str(error)]}) from None
        attrs = super().validate(attrs)
        source = attrs.get("source") or getattr(self.instance, "source", None)
        tables = attrs.get("tables")
        if source is not None and source.is_batch and tables and len(tables) > 1:
            raise serializers.ValidationError(
                {"tables": ["A CSV or HTTP JSON source loads into one table: give one name (or none)."]}
            )
        return attrs

    @transaction.atomic
    def create(self, validated_data):
        tables = validated_data.pop("tables", [])
        pipeline = super().create(validated_data)
        _set_tables(pipeline, tables)
        return pipeline

    @transaction.atomic
    def update(self, instance, validated_data):
        tables = validated_data.pop("tables", None)
        pipeline = super().update(instance, validated_data)
        if tables is not None:
            _set_tables(pipeline, tables)
        return pipeline


def _set_tables(pipeline, tables):
    try:
        services.set_pipeline_tables(pipeline, tables)
    except ValueError as error:  # two tables would share a destination table
        raise serializers.ValidationError({"tables": [str(error)]}) from None


class PipelineFilter(filters.FilterSet):
    class Meta:
        model = Pipeline
        fields = ["status", "source", "destination", "name"]


class RefreshSerializer(StrictSerializer):
    tables = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text='Re-copy only these tables ("schema.table"); all when left out.',
    )


class MoveSerializer(StrictSerializer):
    destination = serializers.PrimaryKeyRelatedField(
        queryset=Destination.objects.all(), help_text="The destination to copy every table into from now on."
    )


TransitionResult = inline_serializer("TransitionRefused", {"detail": serializers.CharField()})


def describe_arguments(kwargs) -> str:
    """{"tables": ["public.a"]} -> "tables: public.a", for the audit trail."""
    return "; ".join(
        f"{name}: {', '.join(value) if isinstance(value, list) else value}"
        for name, value in kwargs.items()
        if value is not None
    )


class PipelineViewSet(AuditedViewSetMixin, viewsets.ModelViewSet):
    serializer_class = PipelineSerializer
    filterset_class = PipelineFilter
    search_fields = ["name", "source__name", "destination__name"]
    ordering_fields = ["name", "status", "created_at", "updated_at"]

    def get_queryset(self):
        last_run = PipelineRun.objects.filter(pipeline=OuterRef("pk")).order_by("-started_at")
        return (
            Pipeline.objects.select_related("source", "destination", "schedule_interval", "schedule_crontab")
            .prefetch_related("tables")
            .annotate(last_run_at=Subquery(last_run.values("started_at")[:1]))
        )

    @extend_schema(
        request=None,
        responses={200: PipelineSerializer, 409: TransitionResult, 503: TransitionResult},
    )
    @action(detail=True, methods=["post"], url_path="measure-lag", permission_classes=[CanChangeObject])
    def measure_lag(self, request, pk=None):
        """Measure the slot's lag on the source now and store it (a GET only returns what was
        stored, by the last run or the last measurement): 503 with the reason when the source
        does not answer, 409 for a CSV or HTTP JSON source (no slot)."""
        pipeline = self.get_object()
        action_body(request)
        if pipeline.source.is_batch:
            return Response(
                {"detail": f"{pipeline.name} reads a CSV or HTTP JSON source: it has no replication slot."},
                status=status.HTTP_409_CONFLICT,
            )
        error = services.measure_lag(pipeline)
        if error:
            return Response(
                {"detail": f"The lag of {pipeline.name} was not measured: {error}"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response(self.get_serializer(self.get_queryset().get(pk=pipeline.pk)).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "drop_slot",
                bool,
                description="Also drop the pipeline's replication slot on the source. A kept slot "
                "keeps WAL on the source until it is dropped. Default false.",
            )
        ],
        responses={204: None, 409: TransitionResult},
    )
    def destroy(self, request, *args, **kwargs):
        pipeline = self.get_object()
        drop_slot = query_bool(request, "drop_slot")
        target = deleted(pipeline)
        try:
            services.delete_pipeline(pipeline, drop_slot=drop_slot)
        except IllegalTransition as refusal:
            return Response(
                {"detail": f"Cannot delete {pipeline.name}: {refusal}."}, status=status.HTTP_409_CONFLICT
            )
        except SourceProblem as problem:
            return Response(
                {"detail": f"{pipeline.name} was not deleted: {problem}"}, status=status.HTTP_409_CONFLICT
            )
        record_audit_event(request, "delete", target, detail=f"drop_slot={str(drop_slot).lower()}")
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _transition(self, request, operation, **kwargs):
        pipeline = self.get_object()
        try:
            operation(pipeline, **kwargs)
        except IllegalTransition as refusal:
            return Response(
                {"detail": f"Cannot {operation.__name__.split('_')[0]} {pipeline.name}: {refusal}."},
                status=status.HTTP_409_CONFLICT,
            )
        record_audit_event(request, self.action, pipeline, detail=describe_arguments(kwargs))
        return Response(self.get_serializer(self.get_queryset().get(pk=pipeline.pk)).data)

    @extend_schema(request=None, responses={200: PipelineSerializer, 409: TransitionResult})
    @action(detail=True, methods=["post"], permission_classes=[CanChangeObject])
    def start(self, request, pk=None):
        action_body(request)
        return self._transition(request, services.start_pipeline)

    @extend_schema(request=None, responses={200: PipelineSerializer, 409: TransitionResult})
    @action(detail=True, methods=["post"], permission_classes=[CanChangeObject])
    def pause(self, request, pk=None):
        action_body(request)
        return self._transition(request, services.pause_pipeline)

    @extend_schema(request=RefreshSerializer, responses={200: PipelineSerializer, 409: TransitionResult})
    @action(detail=True, methods=["post"], permission_classes=[CanChangeObject])
    def refresh(self, request, pk=None):
        body = action_body(request, RefreshSerializer)
        try:
            return self._transition(request, services.refresh_pipeline, tables=body.get("tables"))
        except ValueError as error:
            raise serializers.ValidationError({"tables": [str(error)]}) from None

    @extend_schema(request=MoveSerializer, responses={200: PipelineSerializer, 409: TransitionResult})
    @action(detail=True, methods=["post"], permission_classes=[CanChangeObject])
    def move(self, request, pk=None):
        """Write to another destination: every table is re-copied there, then changes go on."""
        pipeline = self.get_object()
        body = action_body(request, MoveSerializer)
        try:
            services.move_pipeline(pipeline, body["destination"])
        except IllegalTransition as refusal:
            return Response(
                {"detail": f"Cannot move {pipeline.name}: {refusal}."}, status=status.HTTP_409_CONFLICT
            )
        except ValueError as error:
            raise serializers.ValidationError({"destination": [str(error)]}) from None
        record_audit_event(request, "move", pipeline, detail=f"to destination {body['destination']}")
        return Response(self.get_serializer(self.get_queryset().get(pk=pipeline.pk)).data)

    @extend_schema(
        responses=inline_serializer(
            "PipelineStats",
            {
                "pipeline": serializers.CharField(),
                "source_kind": serializers.CharField(),
                "tables": serializers.ListField(child=serializers.DictField()),
                "tables_error": serializers.CharField(allow_null=True),
                "runs": serializers.DictField(child=serializers.IntegerField()),
                "rows_inserted": serializers.IntegerField(),
                "rows_updated": serializers.IntegerField(),
                "rows_deleted": serializers.IntegerField(),
                "rows_rejected": serializers.IntegerField(),
                "last_success_at": serializers.DateTimeField(allow_null=True),
                "last_run_rows_per_second": serializers.FloatField(allow_null=True),
            },
        )
    )
    @action(detail=True, methods=["get"])
    def stats(self, request, pk=None):
        """Rows per destination table (counted there now), runs by outcome, the last success,
        rows per second of the last successful run, and rejected records."""
        return Response(batch.pipeline_stats(self.get_object()))

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "table", str, description="A destination table of the pipeline (default: its first)."
            ),
            OpenApiParameter("page", int, description="1-based page number."),
            OpenApiParameter(
                "page_size", int, description=f"Rows per page, 1 to {batch.MAX_PAGE_SIZE} (default 50)."
            ),
            OpenApiParameter(
                "search", str, description="Keep the rows whose text contains this (any column)."
            ),
        ],
        responses=inline_serializer(
            "PipelineDataPage",
            {
                "table": serializers.CharField(),
                "tables": serializers.ListField(child=serializers.CharField()),
                "page": serializers.IntegerField(),
                "page_size": serializers.IntegerField(),
                "search": serializers.CharField(),
                "count": serializers.IntegerField(),
                "columns": serializers.ListField(child=serializers.CharField()),
                "rows": serializers.ListField(child=serializers.ListField()),
            },
        ),
    )
    @action(detail=True, methods=["get"])
    def data(self, request, pk=None):
        """A read-only, paginated, searchable preview of what landed in a destination table."""
        # Not get_object(): its filters would read ?search= as a search of pipelines.
        pipeline = get_object_or_404(self.get_queryset(), pk=pk if str(pk).isdigit() else 0)
        self.check_object_permissions(request, pipeline)
        params = request.query_params
        errors = {}
        numbers = {}
        for name, default in (("page", 1), ("page_size", 50)):
            try:
                numbers[name] = int(params.get(name, default))
            except ValueError:
                errors[name] = ["A whole number."]
        if errors:
            raise serializers.ValidationError(errors)
        try:
            page = batch.preview_rows(
                pipeline,
                params.get("table", ""),
                numbers["page"],
                numbers["page_size"],
                params.get("search", ""),
            )
        except batch.PreviewRefused as refusal:
            raise serializers.ValidationError({refusal.field: [str(refusal)]}) from None
        except Exception as error:  # noqa: BLE001 - an unreachable destination is the answer, not a 500
            return Response(
                {"detail": f"The destination cannot be read: {services.describe_error(error)}"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response(page)


class PipelineRunSerializer(serializers.ModelSerializer):
    pipeline_name = serializers.CharField(source="pipeline.name", read_only=True)

    class Meta:
        model = PipelineRun
        fields = [
            "id",
            "pipeline",
            "pipeline_name",
            "started_at",
            "finished_at",
            "duration_seconds",
            "outcome",
            "start_lsn",
            "end_lsn",
            "snapshot_rows",
            "changes_read",
            "rows_inserted",
            "rows_updated",
            "rows_deleted",
            "bytes_read",
            "rows_rejected",
            "notes",
            "error",
            "slot_lost",
        ]


class PipelineRunViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = PipelineRun.objects.select_related("pipeline")
    serializer_class = PipelineRunSerializer
    # Runs accumulate without bound: no COUNT(*) over millions of rows (see the paginator).
    pagination_class = EstimatedCountPagination
    filterset_fields = ["pipeline", "outcome"]
    ordering_fields = ["started_at", "finished_at"]
