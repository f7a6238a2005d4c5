"""Helpers for the test suites of every app."""


def admin_form_data(instance, secret_fields=(), **changes) -> dict:
    """The POST data of an admin change form for `instance`, secrets left blank."""
    data = {}
    for field in instance._meta.concrete_fields:
        if not field.editable or field.primary_key:
            continue
        value = getattr(instance, field.attname)
        if isinstance(value, bool):
            if value:
                data[field.name] = "on"
            continue
        data[field.name] = "" if value is None else value
    for name in secret_fields:
        data[name] = ""
    data.update(changes)
    return data
