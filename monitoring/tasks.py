"""Celery entry points for WAL monitoring; each one calls a service and nothing else."""

from celery import shared_task

from . import notifications, services


@shared_task(ignore_result=True, soft_time_limit=240, time_limit=300)
def probe_all_sources() -> int:
    """Scheduled every minute by Beat (the "Probe WAL on every source" periodic task)."""
    return len(services.probe_sources())


@shared_task(ignore_result=True, soft_time_limit=1800, time_limit=2000)
def downsample_wal_metrics() -> dict:
    """Scheduled hourly: per-probe rows past the full-resolution window become hourly maxima."""
    return services.downsample_metrics()


@shared_task(ignore_result=True, soft_time_limit=900, time_limit=960)
def notify_pending_alerts() -> int:
    """Queued by the probe tick after it commits events (or while some are due for a retry)."""
    return notifications.send_pending_notifications()
