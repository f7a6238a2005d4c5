from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.core import checks


class RosettaAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with Rosetta's site (rosetta/admin_site.py) as admin.site."""

    default = False  # RosettaConfig stays the default config of the rosetta app
    default_site = "rosetta.admin_site.RosettaAdminSite"


class RosettaConfig(AppConfig):
    name = "rosetta"
    verbose_name = "Rosetta"

    def ready(self):
        from . import login_throttle  # noqa: F401 - connects the failed-login counter

        checks.register(check_encryption_keys, checks.Tags.security)
        checks.register(check_production_settings, checks.Tags.security)


def check_encryption_keys(app_configs, **kwargs):
    """Without a valid key no secret can be stored or read: say so at start, not at the first save."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from .secrets import fernet

    try:
        fernet()
    except ImproperlyConfigured as problem:
        level = checks.Error if settings.PRODUCTION else checks.Warning
        return [level(str(problem), id="rosetta.E001")]
    return []


def check_production_settings(app_configs, **kwargs):
    """Production never falls back to a development default (localhost database, broker...)."""
    from django.conf import settings

    return [
        checks.Error(
            f"{name} is not set: production settings need it (see .env.example).",
            id=f"rosetta.E{2 + index:03d}",
        )
        for index, name in enumerate(settings.REQUIRED_IN_PRODUCTION)
        if name in settings.MISSING_PRODUCTION_SETTINGS
    ]


def refuse_to_start_if_misconfigured() -> None:
    """For processes that run no system checks (gunicorn, Celery): stop with the check errors."""
    from django.core.exceptions import ImproperlyConfigured

    errors = [
        error for error in check_production_settings(None) + check_encryption_keys(None) if error.is_serious()
    ]
    if errors:
        raise ImproperlyConfigured(" ".join(f"{error.id}: {error.msg}" for error in errors))
