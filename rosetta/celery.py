import os

from celery import Celery
from celery.signals import beat_init, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rosetta.settings")

app = Celery("rosetta")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
@beat_init.connect
def refuse_to_start_if_misconfigured(**kwargs):
    """Workers and Beat run no system checks: stop on the same errors `manage.py check` reports.
    (SystemExit, because Celery logs and ignores other exceptions raised by signal handlers.)"""
    from django.core.exceptions import ImproperlyConfigured

    from rosetta.apps import refuse_to_start_if_misconfigured

    try:
        refuse_to_start_if_misconfigured()
    except ImproperlyConfigured as problem:
        raise SystemExit(f"Rosetta refuses to start: {problem}") from None
