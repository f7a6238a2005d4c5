from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from monitoring.admin import SourceWalMonitoringMixin
from rosetta.admin_utils import SecretFieldsAdminMixin, SecretFieldsForm
from rosetta.audit import AuditedAdminMixin, record_audit_event
from rosetta.validators import postgres_identifier

from .models import Source
from .services import test_source_connection


class SourceForm(SecretFieldsForm):
    secret_fields = ("pg_password", "secret_headers")

    class Meta:
        model = Source
        fields = "__all__"


class ChangeSlotForm(forms.Form):
    slot_name = forms.CharField(label="new slot name", max_length=63, validators=[postgres_identifier])
    drop_old_slot = forms.TypedChoiceField(
        label="the old slot",
        choices=[("yes", "Drop it"), ("no", "Keep it (it keeps WAL on the source until someone drops it)")],
        widget=forms.RadioSelect,
        coerce=lambda value: value == "yes",
    )


@admin.register(Source)
class SourceAdmin(AuditedAdminMixin, SecretFieldsAdminMixin, SourceWalMonitoringMixin, admin.ModelAdmin):
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
            record_audit_event(request, "test_connection", source, detail="failed" if failed else "ok")
            summary = " ".join(check["message"] for check in (failed or checks))
            if failed:
                # Each failed check on its own line, with the SQL that fixes it.
                self.message_user(
                    request,
                    format_html(
                        "{}: {} check(s) failed:<br>{}",
                        source,
                        len(failed),
                        format_html_join(
                            mark_safe("<br>"),
                            "{}{}",
                            (
                                (
                                    c["message"],
                                    format_html(' Fix: <code class="rosetta-fix">{}</code>', c["fix"])
                                    if c.get("fix")
                                    else "",
                                )
                                for c in failed
                            ),
                        ),
                    ),
                    messages.ERROR,
                )
            else:
                self.message_user(request, f"{source}: all checks passed. {summary}", messages.SUCCESS)

    def get_urls(self):
        view = self.admin_site.admin_view(self.change_slot_view)
        return [
            path("<int:object_id>/change-slot/", view, name="sources_source_change_slot"),
            *super().get_urls(),
        ]

    def change_slot_view(self, request, object_id):
        """Read through another slot: asks whether to drop the old one, then re-copies."""
        from pipelines.models import IllegalTransition
        from pipelines.services import change_source_slot

        source = self.get_object(request, str(object_id))
        if source is None or not self.has_change_permission(request, source):
            raise PermissionDenied
        form = ChangeSlotForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                done = change_source_slot(source, **form.cleaned_data)
            except IllegalTransition as refusal:
                form.add_error(None, f"Not changed: {refusal}.")
            except ValueError as error:
                form.add_error("slot_name", str(error))
            else:
                keep = not form.cleaned_data["drop_old_slot"]
                self.message_user(request, done, messages.WARNING if keep else messages.SUCCESS)
                return redirect(reverse("admin:sources_source_change", args=[source.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Change the replication slot of {source}",
            "form": form,
            "source": source,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/sources/source/change_slot.html", context)
