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
        checks.register(check_encryption_keys, checks.Tags.security)


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
