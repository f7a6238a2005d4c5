from django.contrib import admin, messages

from monitoring.admin import SourceWalMonitoringMixin
from rosetta.admin_utils import SecretFieldsAdminMixin, SecretFieldsForm

from .models import Source
from .services import test_source_connection


class SourceForm(SecretFieldsForm):
    secret_fields = ("pg_password", "secret_headers")

    class Meta:
        model = Source
        fields = "__all__"


@admin.register(Source)
class SourceAdmin(SecretFieldsAdminMixin, SourceWalMonitoringMixin, admin.ModelAdmin):
    form = SourceForm
    list_display = [
        "name",
        "kind",
        "pg_host",
        "pg_port",
        "pg_database",
        "slot_name",
        "publication_name",
        "wal_health",
        "largest_retained_wal",
        "updated_at",
    ]
    list_filter = ["kind", "sslmode", "pg_host"]
    search_fields = ["name", "pg_host", "pg_database", "slot_name"]
    readonly_fields = ["created_at", "updated_at", "wal_monitoring_panel"]
    actions = ["test_connection", "probe_wal_now"]
    fieldsets = [
        (None, {"fields": ["name", "kind"]}),
        (
            "CSV files or HTTP JSON API",
            {
                "fields": ["settings", "secret_headers"],
                "description": "For CSV and HTTP JSON sources only; the README shows each kind's settings.",
            },
        ),
        (
            "PostgreSQL connection",
            {"fields": ["pg_host", "pg_port", "pg_database", "pg_username", "pg_password", "sslmode"]},
        ),
        ("Replication", {"fields": ["publication_name", "slot_name"]}),
        (
            "WAL thresholds",
            {
                "fields": [
                    "wal_warn_bytes",
                    "wal_critical_bytes",
                    "slot_inactive_alert_minutes",
                    "heartbeat_enabled",
                ]
            },
        ),
        ("WAL now", {"fields": ["wal_monitoring_panel"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.action(description="Test connection and preflight checks", permissions=["change"])
    def test_connection(self, request, queryset):
        for source in queryset:
            checks = test_source_connection(source)
            failed = [check for check in checks if not check["ok"]]
            summary = " ".join(check["message"] for check in (failed or checks))
            if failed:
                self.message_user(request, f"{source}: {summary}", messages.ERROR)
            else:
                self.message_user(request, f"{source}: all checks passed. {summary}", messages.SUCCESS)
