"""Small helpers the apps' admin classes share."""

from django import forms
from django.contrib import admin
from django.utils.html import format_html

from .pagination import EstimatedCountPaginator

BADGE_COLOURS = {
    "ok": "#2e7d32",
    "running": "#2e7d32",
    "succeeded": "#2e7d32",
    "warn": "#ef6c00",
    "paused": "#ef6c00",
    "skipped": "#757575",
    "refreshing": "#1565c0",
    "created": "#757575",
    "unknown": "#757575",
    "critical": "#c62828",
    "failed": "#c62828",
    "probe_failed": "#c62828",
}


def badge(text: str, key: str | None = None):
    colour = BADGE_COLOURS.get(key or text, "#757575")
    return format_html(
        '<span style="background:{};color:#fff;padding:2px 8px;border-radius:10px;'
        'font-size:11px;font-weight:bold;white-space:nowrap">{}</span>',
        colour,
        text,
    )


class SecretTextarea(forms.Textarea):
    """A textarea that never renders a value, not even the one just typed into a form with errors."""

    def format_value(self, value):
        return None


class SecretFieldsForm(forms.ModelForm):
    """A ModelForm whose secret fields are "set / change" fields.

    The stored value is never rendered; leaving the field blank keeps it.
    Subclasses list the fields in `secret_fields`.
    """

    secret_fields: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stored_secrets = {}
        for name in self.secret_fields:
            if name not in self.fields:
                continue
            stored = getattr(self.instance, name, "") if self.instance.pk else ""
            self._stored_secrets[name] = stored
            self.initial[name] = ""
            field = self.fields[name]
            field.required = False
            is_multiline = isinstance(field.widget, forms.Textarea)
            field.widget = (
                SecretTextarea(attrs={"rows": 4, "autocomplete": "off"})
                if is_multiline
                else forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
            )
            field.help_text = (
                f"A value is stored ({secret_state(self.instance, name)}). "
                "Type a new one to change it; leave blank to keep it."
                if stored
                else "Not set."
            )

    def clean(self):
        cleaned = super().clean()
        for name, stored in self._stored_secrets.items():
            if not cleaned.get(name) and stored:
                cleaned[name] = stored
        return cleaned

    def _post_clean(self):
        # construct_instance() skips blank values of fields with defaults only
        # sometimes; put kept secrets back explicitly before model validation.
        super()._post_clean()
        for name, stored in self._stored_secrets.items():
            if not self.cleaned_data.get(name) and stored:
                setattr(self.instance, name, stored)


def secret_state(obj, field_name: str) -> str:
    """ "set" / "not set", or the model's own wording (e.g. a key's fingerprint); never the value."""
    if hasattr(obj, "secret_state"):
        return obj.secret_state(field_name)
    return "set" if getattr(obj, field_name) else "not set"


class SecretFieldsAdminMixin:
    """Admin pages never render a secret.

    A user without the change permission gets every field read-only, and Django's read-only
    display shows a field's value: for each of the form's `secret_fields` this shows its
    state ("set" / "not set") instead.
    """

    def __init__(self, model, admin_site):
        super().__init__(model, admin_site)
        for name in self.form.secret_fields:
            setattr(self, self._state_name(name), self._state_display(model, name))

    @staticmethod
    def _state_name(field_name: str) -> str:
        return f"{field_name}_state"

    @staticmethod
    def _state_display(model, field_name: str):
        def display(obj):
            return secret_state(obj, field_name) if obj is not None else "not set"

        display.short_description = model._meta.get_field(field_name).verbose_name
        return display

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if self.has_change_permission(request, obj):
            return fieldsets
        secrets = set(self.form.secret_fields)
        return [
            (
                title,
                {
                    **options,
                    "fields": [self._state_name(f) if f in secrets else f for f in options["fields"]],
                },
            )
            for title, options in fieldsets
        ]


def report_per_object(outcomes: dict[str, list[str]]) -> str:
    """{"started": ["a", "b"], "refused: already running": ["c"]} -> "2 started (a, b); 1 refused: ..."."""
    parts = [f"{len(names)} {label} ({', '.join(names)})" for label, names in outcomes.items() if names]
    return "; ".join(parts) or "Nothing selected."


class RecordAdmin(admin.ModelAdmin):
    """A list of what Rosetta recorded (runs, WAL metrics, audit events): read-only, never
    counted row by row (rosetta/pagination.py), and without the bulk delete, which would
    only lose history; old records are pruned on a schedule."""

    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions
