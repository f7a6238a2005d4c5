from django import forms
from django.contrib import admin, messages

from rosetta.admin_utils import SecretFieldsAdminMixin, SecretFieldsForm
from rosetta.audit import AuditedAdminMixin, record_audit_event

from .models import Destination
from .services import test_destination_connection


class DestinationForm(SecretFieldsForm):
    secret_fields = ("pg_password", "snowflake_private_key", "snowflake_private_key_passphrase")

    class Meta:
        model = Destination
        fields = "__all__"
        widgets = {"snowflake_private_key": forms.Textarea}


@admin.register(Destination)
class DestinationAdmin(AuditedAdminMixin, SecretFieldsAdminMixin, admin.ModelAdmin):
    form = DestinationForm
    list_display = ["name", "kind", "target", "updated_at"]
    list_filter = ["kind"]
    search_fields = ["name", "pg_host", "snowflake_account", "duckdb_path"]
    readonly_fields = ["created_at", "updated_at"]
    actions = ["test_connection"]
    fieldsets = [
        (None, {"fields": ["name", "kind"]}),
        (
            "Snowflake",
            {
                "description": "Only for kind Snowflake. Key-pair authentication: paste the PEM "
                "private key or give the path of a key file on the workers.",
                "fields": [
                    "snowflake_account",
                    "snowflake_user",
                    "snowflake_role",
                    "snowflake_warehouse",
                    "snowflake_database",
                    "snowflake_schema",
                    "snowflake_private_key",
                    "snowflake_private_key_path",
                    "snowflake_private_key_passphrase",
                ],
            },
        ),
        (
            "PostgreSQL",
            {
                "description": "Only for kind PostgreSQL.",
                "fields": ["pg_host", "pg_port", "pg_database", "pg_username", "pg_password", "pg_schema"],
            },
        ),
        ("DuckDB", {"description": "Only for kind DuckDB.", "fields": ["duckdb_path"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="target")
    def target(self, destination):
        if destination.kind == Destination.Kind.SNOWFLAKE:
            return f"{destination.snowflake_account}/{destination.snowflake_database}.{destination.snowflake_schema}"
        if destination.kind == Destination.Kind.POSTGRES:
            return f"{destination.pg_host}:{destination.pg_port}/{destination.pg_database}.{destination.pg_schema}"
        return destination.duckdb_path

    @admin.action(description="Test connection", permissions=["change"])
    def test_connection(self, request, queryset):
        for destination in queryset:
            ok, message = test_destination_connection(destination)
            record_audit_event(request, "test_connection", destination, detail="ok" if ok else "failed")
            self.message_user(
                request, f"{destination.name}: {message}", messages.SUCCESS if ok else messages.ERROR
            )
