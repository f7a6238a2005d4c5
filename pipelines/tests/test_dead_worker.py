"""Real Celery workers on Redis: a worker killed (SIGKILL) mid-run costs its pipeline
seconds, not an hour; a snapshot longer than Celery's task limit still finishes,
under its own documented limit."""

import signal
import threading
import time

import psycopg
import pytest
from django.utils import timezone

from pipelines import services, tasks
from pipelines.models import Pipeline, PipelineRun, PipelineTable

from .test_end_to_end import assert_equal, create_tables, insert_customers, insert_orders
from .test_scheduling import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
postgres_destination = pytest.mark.parametrize("destination", ["postgres"], indirect=True)


def copied_then_refreshing_orders(source_db, make_pipeline):
    """Both tables copied; orders marked for re-copy, so the next run snapshots it."""
    create_tables(source_db)
    insert_orders(source_db, range(1, 21))
    insert_customers(source_db, range(1, 6))
    pipeline = make_pipeline(["public.orders", "public.customers"])
    services.run_until_caught_up(pipeline)
    services.refresh_pipeline(pipeline, ["public.orders"])
    insert_orders(source_db, range(21, 31))
    return pipeline


def lock_orders(source_database):
    """Hold orders exclusively: a run's copy of it waits, so the run is caught mid-way."""
    blocker = psycopg.connect(**source_database)
    blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    return blocker


def dispatch():
    """What Beat does every few seconds."""
    return services.dispatch_pipeline_runs(enqueue=tasks.run_pipeline.delay)


def copying_orders(pipeline):
    return PipelineTable.objects.filter(
        pipeline=pipeline, table_name="orders", snapshot_state=PipelineTable.SnapshotState.IN_PROGRESS
    ).exists()


@postgres_destination
def test_a_worker_killed_mid_run_is_replaced_within_seconds_and_its_run_is_closed_as_interrupted(
    start_celery_worker, source_db, source_database, target, make_pipeline, settings
):
    settings.ROSETTA_RUN_LEASE_SECONDS = 3  # the dispatcher runs here; 60 s in production
    pipeline = copied_then_refreshing_orders(source_db, make_pipeline)
    blocker = lock_orders(source_database)
    worker = start_celery_worker()
    assert dispatch() == [pipeline.pk]
    wait_for(lambda: copying_orders(pipeline), what="the worker to start copying orders")

    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed_at = time.monotonic()
    blocker.rollback()
    blocker.close()
    (dead,) = PipelineRun.objects.filter(pipeline=pipeline, outcome=PipelineRun.Outcome.RUNNING)
    insert_orders(source_db, range(31, 41))
    start_celery_worker()  # a worker that is alive, as the deployment would restart or already have

    def caught_up():
        dispatch()
        return (
            PipelineRun.objects.filter(
                pipeline=pipeline, outcome=PipelineRun.Outcome.SUCCEEDED, started_at__gt=dead.started_at
            ).exists()
            and target.count("orders") == 40
        )

    wait_for(caught_up, timeout=40, what="another worker to take over the pipeline")
    assert time.monotonic() - killed_at < 40
    assert_equal(source_db, target)
    dead.refresh_from_db()
    assert dead.outcome == PipelineRun.Outcome.INTERRUPTED and dead.finished_at is not None
    assert "noticed by the next run" in dead.error
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.RUNNING
    assert set(pipeline.tables.values_list("snapshot_state", flat=True)) == {PipelineTable.SnapshotState.DONE}


@postgres_destination
def test_a_live_run_older_than_the_lease_is_not_queued_twice(source_db, make_pipeline, settings):
    settings.ROSETTA_RUN_LEASE_SECONDS = 0
    create_tables(source_db)
    pipeline = make_pipeline(["public.orders"])
    queued = []

    def dispatch_while_running():
        queued.extend(services.dispatch_pipeline_runs(enqueue=lambda pk: None))

    assert services.dispatch_pipeline_runs(enqueue=lambda pk: None) == [pipeline.pk]
    services.run_pipeline(pipeline, hooks=services.RunHooks(after_lock=dispatch_while_running))
    assert queued == []  # it holds the lock: alive, whatever its age
    assert services.dispatch_pipeline_runs(enqueue=lambda pk: None) == [pipeline.pk]  # lock free: lost


def test_the_broker_redelivers_only_after_the_longest_task_may_have_ended(settings):
    from rosetta.celery import app

    visibility = app.conf.broker_transport_options["visibility_timeout"]
    longest = max(
        [settings.CELERY_TASK_TIME_LIMIT]
        + [
            task.time_limit
            for name, task in app.tasks.items()
            if name.startswith(("pipelines.", "monitoring.")) and task.time_limit
        ]
    )
    assert visibility > longest
    run_task = tasks.run_pipeline
    assert run_task.time_limit > run_task.soft_time_limit == settings.ROSETTA_SNAPSHOT_TIME_LIMIT_SECONDS


@postgres_destination
def test_a_snapshot_longer_than_celerys_task_time_limit_finishes(
    start_celery_worker, source_db, source_database, target, make_pipeline
):
    pipeline = copied_then_refreshing_orders(source_db, make_pipeline)
    start_celery_worker(pool="prefork", CELERY_TASK_SOFT_TIME_LIMIT="1", CELERY_TASK_TIME_LIMIT="2")
    blocker = lock_orders(source_database)

    # Beat's dispatch task runs on the worker, which sends the run task with its own
    # configuration's limits.
    sent = timezone.now()
    tasks.dispatch_pipeline_runs.delay()
    wait_for(lambda: copying_orders(pipeline), what="the worker to start copying orders")
    release = threading.Timer(3, blocker.rollback)  # the copy takes 3 s or more
    release.start()
    wait_for(lambda: not Pipeline.objects.get(pk=pipeline.pk).run_enqueued_at, what="the run task to end")
    release.join()
    blocker.close()

    run = PipelineRun.objects.filter(pipeline=pipeline, started_at__gt=sent).order_by("started_at").first()
    assert run.outcome == PipelineRun.Outcome.SUCCEEDED, run.error
    assert run.snapshot_rows == 30
    assert run.duration_seconds > 2.5
    assert_equal(source_db, target)


@postgres_destination
def test_a_snapshot_past_its_own_limit_says_which_setting_and_the_next_run_resumes(
    start_celery_worker, source_db, source_database, target, make_pipeline
):
    pipeline = copied_then_refreshing_orders(source_db, make_pipeline)
    start_celery_worker(pool="prefork", ROSETTA_SNAPSHOT_TIME_LIMIT_SECONDS="1")
    blocker = lock_orders(source_database)

    tasks.dispatch_pipeline_runs.delay()  # as Beat does: the worker sends the run task
    wait_for(lambda: copying_orders(pipeline), what="the worker to start copying orders")
    release = threading.Timer(3, blocker.rollback)
    release.start()
    wait_for(lambda: not Pipeline.objects.get(pk=pipeline.pk).run_enqueued_at, what="the run task to end")
    release.join()  # the run ended before: the copy is still waiting for the lock
    blocker.close()
    failed = PipelineRun.objects.get(pipeline=pipeline, outcome=PipelineRun.Outcome.FAILED)
    assert "ROSETTA_SNAPSHOT_TIME_LIMIT_SECONDS = 1 s" in failed.error

    pipeline.refresh_from_db()
    services.run_until_caught_up(pipeline)
    assert_equal(source_db, target)
