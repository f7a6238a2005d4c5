from django.db.models import OuterRef, Subquery
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from rosetta.api import CanChangeObject, StrictModelSerializer

from . import services
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
            "tables",
            "table_progress",
            "last_error",
            "last_run_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["status", "last_error"]

    def create(self, validated_data):
        tables = validated_data.pop("tables", [])
        pipeline = super().create(validated_data)
        services.set_pipeline_tables(pipeline, tables)
        return pipeline

    def update(self, instance, validated_data):
        tables = validated_data.pop("tables", None)
        pipeline = super().update(instance, validated_data)
        if tables is not None:
            services.set_pipeline_tables(pipeline, tables)
        return pipeline


class PipelineFilter(filters.FilterSet):
    class Meta:
        model = Pipeline
        fields = ["status", "source", "destination", "name"]


class RefreshSerializer(serializers.Serializer):
    tables = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text='Re-copy only these tables ("schema.table"); all when left out.',
    )


TransitionResult = inline_serializer("TransitionRefused", {"detail": serializers.CharField()})


class PipelineViewSet(viewsets.ModelViewSet):
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

    def _transition(self, request, operation, **kwargs):
        pipeline = self.get_object()
        try:
            operation(pipeline, **kwargs)
        except IllegalTransition as refusal:
            return Response(
                {"detail": f"Cannot {operation.__name__.split('_')[0]} {pipeline.name}: {refusal}."},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(self.get_serializer(self.get_queryset().get(pk=pipeline.pk)).data)

    @extend_schema(request=None, responses={200: PipelineSerializer, 409: TransitionResult})
    @action(detail=True, methods=["post"], permission_classes=[CanChangeObject])
    def start(self, request, pk=None):
        return self._transition(request, services.start_pipeline)

    @extend_schema(request=None, responses={200: PipelineSerializer, 409: TransitionResult})
    @action(detail=True, methods=["post"], permission_classes=[CanChangeObject])
    def pause(self, request, pk=None):
        return self._transition(request, services.pause_pipeline)

    @extend_schema(request=RefreshSerializer, responses={200: PipelineSerializer, 409: TransitionResult})
    @action(detail=True, methods=["post"], permission_classes=[CanChangeObject])
    def refresh(self, request, pk=None):
        body = RefreshSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            return self._transition(
                request, services.refresh_pipeline, tables=body.validated_data.get("tables")
            )
        except ValueError as error:
            raise serializers.ValidationError({"tables": [str(error)]}) from None


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
        ]


class PipelineRunViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = PipelineRun.objects.select_related("pipeline")
    serializer_class = PipelineRunSerializer
    filterset_fields = ["pipeline", "outcome"]
    ordering_fields = ["started_at", "finished_at"]
