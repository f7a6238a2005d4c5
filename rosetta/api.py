"""Pieces every app's API shares: permissions, strict serializers, the health check."""

from django.core.exceptions import RequestDataTooBig
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import permissions, serializers, viewsets
from rest_framework.decorators import api_view, permission_classes
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .models import AuditEvent
from .pagination import EstimatedCountPagination
from .permissions import CanChangeObject, ModelPermissions  # noqa: F401 - re-exported for the apps


def refuse_unknown_keys(serializer, data) -> None:
    """A key that is not a writable field is a 400 naming it, so a typo never silently drops a setting."""
    if hasattr(data, "keys"):
        writable = {name for name, field in serializer.fields.items() if not field.read_only}
        unknown = sorted(set(data.keys()) - writable)
        if unknown:
            raise serializers.ValidationError(dict.fromkeys(unknown, ["Unknown field."]))


class StrictSerializer(serializers.Serializer):
    """The body of an action: unknown keys are refused. With no fields, any key is refused."""

    def to_internal_value(self, data):
        refuse_unknown_keys(self, data)
        return super().to_internal_value(data)


def action_body(request, serializer_class=StrictSerializer) -> dict:
    """Validate an action's body (400 with field errors) and return its values."""
    body = serializer_class(data=request.data if request.data is not None else {})
    body.is_valid(raise_exception=True)
    return body.validated_data


def query_bool(request, name: str, default: bool = False) -> bool:
    """A boolean query parameter: only "true" or "false"; anything else is a 400 naming it."""
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise serializers.ValidationError({name: [f"Use true or false, not {value!r}."]})
    return value.lower() == "true"


class StrictModelSerializer(serializers.ModelSerializer):
    """Rejects keys that are not fields, so a typo never silently drops a setting."""

    def to_internal_value(self, data):
        refuse_unknown_keys(self, data)
        return super().to_internal_value(data)

    def validate(self, attrs):
        """Run the model's clean() so the API and the admin apply the same rules."""
        from django.core.exceptions import ValidationError as DjangoValidationError

        instance = self.instance or self.Meta.model()
        model_fields = {field.name for field in instance._meta.concrete_fields}
        for name, value in attrs.items():
            if name in model_fields:
                setattr(instance, name, value)
        try:
            instance.clean()
        except DjangoValidationError as error:
            raise serializers.ValidationError(serializers.as_serializer_error(error)) from None
        return attrs


def broker_status() -> str:
    from rosetta.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as error:  # noqa: BLE001 - any failure means "down", reported by type only
        return f"unavailable ({type(error).__name__})"


def database_status() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as error:  # noqa: BLE001
        return f"unavailable ({type(error).__name__})"


HEALTH_COMPONENTS = ("database", "broker", "worker", "beat", "probes")


HEALTH_SERIALIZER = inline_serializer(
    "Health", {"status": serializers.CharField(), **{c: serializers.CharField() for c in HEALTH_COMPONENTS}}
)


# 503 when any component is down, with the same body saying which.
@extend_schema(responses={200: HEALTH_SERIALIZER, 503: HEALTH_SERIALIZER})
@api_view(["GET"])
@permission_classes([permissions.AllowAny])
def health(request):
    """Each component's status ("ok" or why not), for load balancers and uptime checks:
    503 when any is down. Worker and Beat count by their heartbeats (rosetta/heartbeat.py)."""
    from . import heartbeat

    checks = {"database": database_status(), "broker": broker_status()}
    if checks["database"] == "ok":
        checks["worker"] = heartbeat.component_status("worker")
        checks["beat"] = heartbeat.component_status("beat")
        checks["probes"] = heartbeat.probes_status()
    else:
        checks.update(dict.fromkeys(("worker", "beat", "probes"), "unknown (the database is down)"))
    healthy = all(value == "ok" for value in checks.values())
    return Response({"status": "ok" if healthy else "degraded", **checks}, status=200 if healthy else 503)


class ProtectedDeleteMixin:
    """Deleting a source or destination that pipelines use is refused with their names."""

    def perform_destroy(self, instance):
        from django.db.models import ProtectedError
        from rest_framework.exceptions import APIException

        try:
            instance.delete()
        except ProtectedError as error:
            users = sorted(str(obj) for obj in error.protected_objects)
            conflict = APIException(
                f"{instance} is used by pipeline(s) {', '.join(users)}: delete or change those first."
            )
            conflict.status_code = 409
            raise conflict from None


def exception_handler(exc, context):
    """Every API error is a JSON object: {"detail": ...} or {field: [errors]}.

    DRF answers most errors; a body over DATA_UPLOAD_MAX_MEMORY_SIZE is a 413 here
    (Django would answer 400 with an HTML page), and a bare list of errors becomes
    {"non_field_errors": [...]}.
    """
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": f"The request body is too large. {exc}"}, status=413)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, list):
        response.data = {"non_field_errors": response.data}
    return response


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "at",
            "user",
            "username",
            "via",
            "remote_addr",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "changed_fields",
            "detail",
        ]


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail: every operator action through the API, the admin or a command."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    pagination_class = EstimatedCountPagination
    filterset_fields = ["user", "username", "via", "action", "object_type", "object_id"]
    search_fields = ["username", "object_repr", "detail"]
    ordering_fields = ["at"]
