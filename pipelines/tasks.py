"""Celery entry points for pipelines; each one calls a service and nothing else."""

from celery import shared_task

from . import services


@shared_task(ignore_result=True)
def run_pipeline(pipeline_id: int) -> None:
    """One pipeline's runs until caught up (or its time budget ends); any worker may take it."""
    services.run_scheduled(pipeline_id)


@shared_task(ignore_result=True, soft_time_limit=25, time_limit=30)
def dispatch_pipeline_runs() -> int:
    """Scheduled every few seconds by Beat (the "Dispatch pipeline runs" periodic task)."""
    return len(services.dispatch_pipeline_runs(enqueue=run_pipeline.delay))
