"""Small helpers the apps' admin classes share."""

from django import forms
from django.utils.html import format_html

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
                forms.Textarea(attrs={"rows": 4, "autocomplete": "off"})
                if is_multiline
                else forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
            )
            field.help_text = (
                "A value is stored. Type a new one to change it; leave blank to keep it."
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


def report_per_object(outcomes: dict[str, list[str]]) -> str:
    """{"started": ["a", "b"], "refused: already running": ["c"]} -> "2 started (a, b); 1 refused: ..."."""
    parts = [f"{len(names)} {label} ({', '.join(names)})" for label, names in outcomes.items() if names]
    return "; ".join(parts) or "Nothing selected."
