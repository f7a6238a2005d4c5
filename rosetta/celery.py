import os
import time

from celery import Celery
from celery.signals import beat_init, before_task_publish, worker_init, worker_ready

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


BEAT_HEARTBEAT_EVERY_SECONDS = 10
_last_beat_heartbeat = 0.0


@worker_ready.connect
def _worker_started(**kwargs):
    from rosetta import heartbeat

    heartbeat.record("worker")


@beat_init.connect
def _beat_started(**kwargs):
    """Only the Beat process connects the publish hook: each task it sends is its heartbeat."""
    from rosetta import heartbeat

    heartbeat.record("beat")
    before_task_publish.connect(_beat_sent_a_task, weak=False)


def _beat_sent_a_task(**kwargs):
    global _last_beat_heartbeat
    now = time.monotonic()
    if now - _last_beat_heartbeat < BEAT_HEARTBEAT_EVERY_SECONDS:
        return
    _last_beat_heartbeat = now
    from rosetta import heartbeat

    try:
        heartbeat.record("beat")
    except Exception:  # noqa: BLE001 - a heartbeat never stops Beat from sending tasks
        import logging

        logging.getLogger(__name__).warning("Could not record Beat's heartbeat", exc_info=True)
