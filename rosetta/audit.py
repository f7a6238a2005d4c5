"""The audit trail: record_audit_event() is the one way to record an operator action.

The API's viewsets, the admin and the management commands call it (the mixins below do
it for create / change / delete); services stay unaware of who asked.
"""

import getpass

from .models import AuditEvent

API_PREFIX = "/api/"


def record_audit_event(
    request, action: str, obj=None, *, changed_fields=(), detail: str = "", via: str | None = None
) -> AuditEvent:
    """Record that `request.user` (or, with request None, the command's OS user) did `action` to `obj`.

    `changed_fields` are field names, never values; `detail` is a sentence that must not hold
    a secret (e.g. "drop_slot=true", "tables: public.orders").
    """
    user = getattr(request, "user", None)
    if user is not None and not user.is_authenticated:
        user = None
    if via is None:
        if request is None:
            via = AuditEvent.Via.COMMAND
        else:
            via = AuditEvent.Via.API if request.path.startswith(API_PREFIX) else AuditEvent.Via.ADMIN
    return AuditEvent.objects.create(
        user=user,
        username=user.get_username() if user is not None else _os_user() if request is None else "",
        via=via,
        remote_addr=request.META.get("REMOTE_ADDR") if request is not None else None,
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None and obj.pk is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        changed_fields=sorted(changed_fields),
        detail=detail,
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


class AuditedViewSetMixin:
    """A ModelViewSet whose create / update / destroy are recorded (changed fields by name)."""

    def perform_create(self, serializer):
        super().perform_create(serializer)
        record_audit_event(
            self.request, "create", serializer.instance, changed_fields=serializer.validated_data
        )

    def perform_update(self, serializer):
        # As stored: validation may already have set the new values on serializer.instance.
        stored = type(serializer.instance)._default_manager.get(pk=serializer.instance.pk)
        before = {name: _comparable(stored, name) for name in serializer.validated_data}
        super().perform_update(serializer)
        changed = [name for name, value in before.items() if value != _comparable(serializer.instance, name)]
        record_audit_event(self.request, "change", serializer.instance, changed_fields=changed)

    def perform_destroy(self, instance):
        event_target = deleted(instance)
        super().perform_destroy(instance)
        record_audit_event(self.request, "delete", event_target)


def _comparable(instance, name):
    value = getattr(instance, name, None)
    if hasattr(value, "all"):  # a related manager (a pipeline's tables): compare its rows
        return sorted(str(item) for item in value.all())
    return value


class _Deleted:
    """What record_audit_event() needs of an object that is gone (Django clears pk on delete)."""

    def __init__(self, obj):
        self._meta = obj._meta
        self.pk = obj.pk
        self._repr = str(obj)

    def __str__(self):
        return self._repr


def deleted(obj):
    """Capture obj for record_audit_event() before it is deleted."""
    return _Deleted(obj)


class AuditedAdminMixin:
    """A ModelAdmin whose form saves and deletions land in the audit trail (beside Django's LogEntry)."""

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        changed = list(form.changed_data) + [fs.prefix for fs in formsets if fs.has_changed()]
        record_audit_event(request, "change" if change else "create", form.instance, changed_fields=changed)

    def delete_model(self, request, obj):
        target = deleted(obj)
        super().delete_model(request, obj)
        record_audit_event(request, "delete", target)

    def delete_queryset(self, request, queryset):
        targets = [deleted(obj) for obj in queryset]
        super().delete_queryset(request, queryset)
        for target in targets:
            record_audit_event(request, "delete", target)
