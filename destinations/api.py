from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from rosetta.api import CanChangeObject, ProtectedDeleteMixin, StrictModelSerializer, action_body
from rosetta.audit import AuditedViewSetMixin, record_audit_event

from .models import Destination
from .services import test_destination_connection


def secret_field(help_text: str):
    return serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        style={"input_type": "password"},
        trim_whitespace=False,
        help_text=f"Write-only. {help_text} Leave out to keep the stored value.",
    )


class DestinationSerializer(StrictModelSerializer):
    pg_password = secret_field("PostgreSQL password.")
    snowflake_private_key = secret_field("PEM private key for key-pair authentication.")
    snowflake_private_key_passphrase = secret_field("Passphrase of the private key, if it is encrypted.")
    secrets_set = serializers.SerializerMethodField(help_text="Which secrets have a stored value.")

    class Meta:
        model = Destination
        fields = [
            "id",
            "name",
            "kind",
            "snowflake_account",
            "snowflake_user",
            "snowflake_role",
            "snowflake_warehouse",
            "snowflake_database",
            "snowflake_schema",
            "snowflake_private_key",
            "snowflake_private_key_path",
            "snowflake_private_key_passphrase",
            "pg_host",
            "pg_port",
            "pg_database",
            "pg_username",
            "pg_password",
            "pg_schema",
            "duckdb_path",
            "secrets_set",
            "created_at",
            "updated_at",
        ]

    def get_secrets_set(self, destination) -> list[str]:
        return [name for name in Destination.SECRET_FIELDS if getattr(destination, name)]


class DestinationViewSet(AuditedViewSetMixin, ProtectedDeleteMixin, viewsets.ModelViewSet):
    queryset = Destination.objects.all()
    serializer_class = DestinationSerializer
    filterset_fields = ["kind", "name"]
    search_fields = ["name"]
    ordering_fields = ["name", "kind", "created_at"]

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "DestinationConnectionTest",
            {"ok": serializers.BooleanField(), "message": serializers.CharField()},
        ),
    )
    @action(detail=True, methods=["post"], url_path="test-connection", permission_classes=[CanChangeObject])
    def test_connection(self, request, pk=None):
        action_body(request)
        destination = self.get_object()
        ok, message = test_destination_connection(destination)
        record_audit_event(request, "test_connection", destination, detail="ok" if ok else "failed")
        return Response({"ok": ok, "message": message})
