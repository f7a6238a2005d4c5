from django.contrib import admin

from .admin_utils import RecordAdmin
from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(RecordAdmin):
    """The audit trail, read-only: who did what, when, and whether through the API, the admin or a command."""

    list_display = ["at", "username", "via", "action", "object_type", "object_repr", "changes", "detail"]
    list_filter = ["via", "action", "object_type", "user"]
    search_fields = ["username", "object_repr", "object_id", "detail"]
    list_select_related = ["user"]

    def has_delete_permission(self, request, obj=None):
        return False

    def lookup_allowed(self, lookup, value, request=None):
        # ?object_type=...&object_id=... lists one object's history (also after it was deleted).
        return lookup in ("object_id", "object_type") or super().lookup_allowed(lookup, value, request)

    @admin.display(description="changed fields")
    def changes(self, event):
        return ", ".join(event.changed_fields)
