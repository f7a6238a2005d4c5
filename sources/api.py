import json

from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from monitoring.api import SourceWalStateSerializer
from monitoring.selectors import source_wal_state
from monitoring.services import probe_sources
from rosetta.api import (
    CanChangeObject,
    ProtectedDeleteMixin,
    StrictModelSerializer,
    StrictSerializer,
    action_body,
)
from rosetta.audit import AuditedViewSetMixin, record_audit_event
from rosetta.validators import postgres_identifier

from .models import Source
from .services import test_source_connection


class SourceSerializer(StrictModelSerializer):
    pg_password = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        style={"input_type": "password"},
        help_text="Write-only. Leave out to keep the stored password.",
    )
    pg_password_set = serializers.SerializerMethodField()
    secret_headers = serializers.JSONField(
        write_only=True,
        required=False,
        help_text='HTTP JSON sources: headers holding credentials, e.g. {"Authorization": "Bearer ..."}. '
        "Write-only, stored encrypted; leave out to keep the stored ones, {} to remove them.",
    )
    secret_header_names = serializers.SerializerMethodField(
        help_text="The names of the stored secret headers (never their values)."
    )

    class Meta:
        model = Source
        fields = [
            "id",
            "name",
            "kind",
            "settings",
            "secret_headers",
            "secret_header_names",
            "pg_host",
            "pg_port",
            "pg_database",
            "pg_username",
            "pg_password",
            "pg_password_set",
            "sslmode",
            "publication_name",
            "slot_name",
            "wal_warn_bytes",
            "wal_critical_bytes",
            "slot_inactive_alert_minutes",
            "heartbeat_enabled",
            "created_at",
            "updated_at",
        ]

    def get_pg_password_set(self, source) -> bool:
        return bool(source.pg_password)

    def get_secret_header_names(self, source) -> list[str]:
        try:
            return sorted(source.header_secrets())
        except ValueError:
            return []

    def validate_secret_headers(self, value):
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise serializers.ValidationError("An object of header names to text values.")
        return json.dumps(value) if value else ""


class SourceFilter(filters.FilterSet):
    class Meta:
        model = Source
        fields = {
            "name": ["exact", "icontains"],
            "kind": ["exact"],
            "pg_host": ["exact"],
            "pg_database": ["exact"],
        }


class PreflightCheckSerializer(serializers.Serializer):
    name = serializers.CharField()
    ok = serializers.BooleanField()
    message = serializers.CharField()
    fix = serializers.CharField(help_text="The SQL that fixes a failed check (empty when it passed).")


class ChangeSlotSerializer(StrictSerializer):
    slot_name = serializers.CharField(max_length=63, validators=[postgres_identifier])
    drop_old_slot = serializers.BooleanField(
        help_text="Required: drop the old slot on the source (a kept slot keeps WAL there until dropped)."
    )


class SourceViewSet(AuditedViewSetMixin, ProtectedDeleteMixin, viewsets.ModelViewSet):
    queryset = Source.objects.all()
    serializer_class = SourceSerializer
    filterset_class = SourceFilter
    search_fields = ["name", "pg_host", "pg_database"]
    ordering_fields = ["name", "created_at", "updated_at"]

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "SourceConnectionTest",
            {"ok": serializers.BooleanField(), "checks": PreflightCheckSerializer(many=True)},
        ),
    )
    @action(detail=True, methods=["post"], url_path="test-connection", permission_classes=[CanChangeObject])
    def test_connection(self, request, pk=None):
        action_body(request)
        source = self.get_object()
        checks = test_source_connection(source)
        ok = all(check["ok"] for check in checks)
        record_audit_event(request, "test_connection", source, detail="ok" if ok else "failed")
        return Response({"ok": ok, "checks": checks})

    @extend_schema(responses=SourceWalStateSerializer)
    @action(detail=True, methods=["get"])
    def wal(self, request, pk=None):
        """WAL directory size, every replication slot, thresholds, alerts and forecast, as last probed."""
        return Response(source_wal_state(self.get_object()))

    @extend_schema(request=None, responses=SourceWalStateSerializer)
    @action(detail=True, methods=["post"], permission_classes=[CanChangeObject])
    def probe(self, request, pk=None):
        """Probe this source's WAL now (as the scheduled probe does), then answer like .../wal/."""
        action_body(request)
        source = self.get_object()
        probe_sources([source])
        record_audit_event(request, "probe", source)
        return Response(source_wal_state(source))

    @extend_schema(
        request=ChangeSlotSerializer,
        responses=inline_serializer("SourceSlotChanged", {"detail": serializers.CharField()}),
    )
    @action(detail=True, methods=["post"], url_path="change-slot", permission_classes=[CanChangeObject])
    def change_slot(self, request, pk=None):
        """Read through another replication slot: its pipeline re-copies every table."""
        from pipelines.models import IllegalTransition
        from pipelines.services import change_source_slot

        source = self.get_object()
        body = action_body(request, ChangeSlotSerializer)
        try:
            done = change_source_slot(source, **body)
        except IllegalTransition as refusal:
            return Response({"detail": f"Cannot change the slot of {source.name}: {refusal}."}, status=409)
        except ValueError as error:
            raise serializers.ValidationError({"slot_name": [str(error)]}) from None
        record_audit_event(
            request,
            "change_slot",
            source,
            detail=f"slot {body['slot_name']}, drop_old_slot={body['drop_old_slot']}",
        )
        return Response({"detail": done})
