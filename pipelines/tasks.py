"""Celery entry points for pipelines; each one calls a service and nothing else."""

from celery import shared_task
from django.conf import settings

from . import services


@shared_task(
    ignore_result=True,
    # A run may snapshot a big table: its own documented limit, not Celery's default one.
    # (Reading changes ends after ROSETTA_RUN_BUDGET_SECONDS anyway.)
    soft_time_limit=settings.ROSETTA_SNAPSHOT_TIME_LIMIT_SECONDS,
    time_limit=settings.ROSETTA_SNAPSHOT_TIME_LIMIT_SECONDS + 60,
)
def run_pipeline(pipeline_id: int) -> None:
    """One run of a pipeline: until caught up and quiet, or its time budget ends; any worker may take it."""
    services.run_scheduled(pipeline_id, requeue=run_pipeline.delay)


@shared_task(ignore_result=True, soft_time_limit=25, time_limit=30)
def dispatch_pipeline_runs() -> int:
    """Scheduled every few seconds by Beat (the "Dispatch pipeline runs" periodic task)."""
    return len(services.dispatch_pipeline_runs(enqueue=run_pipeline.delay))


@shared_task(ignore_result=True, soft_time_limit=25 * 60, time_limit=30 * 60)
def prune_runs() -> int:
    """Scheduled hourly by Beat (the "Prune pipeline runs" periodic task)."""
    return services.prune_runs()
