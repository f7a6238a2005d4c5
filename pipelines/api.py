from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from destinations.models import Destination
from rosetta.api import CanChangeObject, StrictModelSerializer, StrictSerializer, action_body, query_bool
from rosetta.audit import AuditedViewSetMixin, deleted, record_audit_event
from rosetta.pagination import EstimatedCountPagination

from . import services
from .engine.source import SourceProblem
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

    class Meta:
        model = Pipeline
        fields = [
            "id",
            "name",
            "source",
            "destination",
            "status",
            "batch_size",
            "soft_delete",
            "on_slot_lost",
            "on_incompatible_schema_change",
            "tables",
            "table_progress",
            "last_error",
            "last_alert",
            "last_alert_at",
            "consecutive_failures",
            "next_run_at",
            "last_run_at",
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
            "lag_bytes",
            "lag_measured_at",
            "last_applied_lsn",
            "last_applied_commit_at",
        ]

    def get_seconds_since_last_applied_commit(self, pipeline) -> float | None:
        if pipeline.last_applied_commit_at is None:
            return None
        return round((timezone.now() - pipeline.last_applied_commit_at).total_seconds(), 3)

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
            Pipeline.objects.select_related("source", "destination")
            .prefetch_related("tables")
            .annotate(last_run_at=Subquery(last_run.values("started_at")[:1]))
        )

    @extend_schema(
        description="The pipeline, with its lag measured on the source now (lag_error says why "
        "not, and the figures are then those of the last run)."
    )
    def retrieve(self, request, *args, **kwargs):
        pipeline = self.get_object()
        error = services.measure_lag(pipeline)
        data = self.get_serializer(self.get_queryset().get(pk=pipeline.pk)).data
        data["lag_error"] = error
        return Response(data)

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
