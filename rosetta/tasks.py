"""Celery entry points of the project itself."""

from celery import shared_task

from . import heartbeat


@shared_task(ignore_result=True, expires=60)
def record_worker_heartbeat() -> None:
    """Scheduled every 30 s by Beat: a worker that runs it is alive and takes tasks."""
    heartbeat.record("worker")
