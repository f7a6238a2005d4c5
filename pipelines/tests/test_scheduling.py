"""The Beat dispatcher, the run task on a real Celery worker, back-off, and the
operator's views of a pipeline: lag in the API, the delete question in the admin."""

import importlib
import time
from datetime import timedelta

import pytest
from django.apps import apps
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from pipelines import services, tasks
from pipelines.models import Pipeline, PipelineRun
from pipelines.tests.factories import PipelineFactory
from rosetta.celery import app

from .test_end_to_end import assert_equal, create_tables, insert_customers, insert_orders


def wait_for(condition, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.django_db
def test_the_dispatch_schedule_exists_runs_every_few_seconds_and_names_a_real_task():
    migration = importlib.import_module("pipelines.migrations.0003_dispatch_schedule")
    migration.create_schedule(apps, None)  # idempotent; a flush by an earlier test may have removed it
    migration.create_schedule(apps, None)
    (task,) = PeriodicTask.objects.filter(name=migration.DISPATCH_TASK)
    assert task.interval.every <= 10 and task.interval.period == "seconds"
    assert task.task in app.tasks


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_beat_dispatcher_enqueues_runs_that_a_real_celery_worker_executes(
    celery_worker, source_db, target, make_pipeline
):
    create_tables(source_db)
    insert_orders(source_db, range(1, 11))
    insert_customers(source_db, range(1, 4))
    pipeline = make_pipeline(["public.orders", "public.customers"])
    never_started = make_pipeline([], start=False)  # never dispatched

    tasks.dispatch_pipeline_runs.delay()  # what Beat sends
    wait_for(
        lambda: PipelineRun.objects.filter(pipeline=pipeline, outcome="succeeded").exists(), what="first run"
    )
    wait_for(lambda: not Pipeline.objects.get(pk=pipeline.pk).run_enqueued_at, what="the run to end")
    assert_equal(source_db, target)

    insert_orders(source_db, range(11, 21))
    source_db.execute("DELETE FROM customers")
    tasks.dispatch_pipeline_runs.delay()
    wait_for(lambda: target.count("orders") == 20, what="the new rows")
    wait_for(lambda: not Pipeline.objects.get(pk=pipeline.pk).run_enqueued_at, what="the run to end")
    assert_equal(source_db, target)
    assert not never_started.runs.exists()
    assert "pipelines.tasks.run_pipeline" in celery_worker.log_path.read_text()


@pytest.mark.django_db(transaction=True)
def test_dispatcher_never_queues_a_pipeline_twice_and_respects_back_off():
    running = PipelineFactory(status="running")
    refreshing = PipelineFactory(status="refreshing")
    PipelineFactory(status="paused")
    PipelineFactory(status="created")
    PipelineFactory(status="failed", next_run_at=timezone.now() + timedelta(minutes=5))  # backing off
    retry_due = PipelineFactory(status="failed", next_run_at=timezone.now())
    due = sorted([running.pk, refreshing.pk, retry_due.pk])
    queued = []

    assert sorted(services.dispatch_pipeline_runs(enqueue=queued.append)) == due
    assert sorted(queued) == due
    assert services.dispatch_pipeline_runs(enqueue=queued.append) == []  # all still queued

    Pipeline.objects.filter(pk=running.pk).update(run_enqueued_at=None)  # what the end of a run does
    assert services.dispatch_pipeline_runs(enqueue=queued.append) == [running.pk]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("destination", ["postgres"], indirect=True)
def test_a_second_pipeline_cannot_start_on_a_source_slot_already_in_use(make_pipeline):
    make_pipeline([])
    second = make_pipeline([], start=False)
    with pytest.raises(services.IllegalTransition, match="one replication slot serves one pipeline"):
        services.start_pipeline(second)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("destination", ["postgres"], indirect=True)
def test_a_failing_run_marks_the_pipeline_failed_and_backs_off_longer_each_time(make_pipeline, source_db):
    pipeline = make_pipeline(["public.missing"])
    first = services.run_pipeline(pipeline)
    second = services.run_pipeline(pipeline)

    assert first.outcome == second.outcome == PipelineRun.Outcome.FAILED
    assert "public.missing" in first.error or "missing" in first.error
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.FAILED and pipeline.consecutive_failures == 2
    delay = (pipeline.next_run_at - timezone.now()).total_seconds()
    assert 10 < delay <= 20

    services.start_pipeline(pipeline)  # start on a failed pipeline retries at once
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.RUNNING and pipeline.next_run_at is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("destination", ["postgres"], indirect=True)
def test_api_shows_the_lag_measured_on_the_source(admin_api, source_db, make_pipeline):
    create_tables(source_db)
    pipeline = make_pipeline(["public.orders"])
    services.run_until_caught_up(pipeline)
    insert_orders(source_db, range(1, 200))
    insert_orders(source_db, range(1, 50), region="us")

    body = admin_api.post(f"/api/pipelines/{pipeline.pk}/measure-lag/").json()
    assert body["lag_bytes"] > 10_000  # the inserts not applied yet
    assert admin_api.get(f"/api/pipelines/{pipeline.pk}/").json()["lag_bytes"] == body["lag_bytes"]

    services.run_until_caught_up(pipeline)
    body = admin_api.get(f"/api/pipelines/{pipeline.pk}/").json()
    assert body["last_applied_lsn"] and body["seconds_since_last_applied_commit"] < 60
    assert "password" not in str(body).lower()

    # No more changes for the pipeline, but WAL keeps coming (another table, and the
    # destination's own writes on this test server): the slot still keeps up.
    source_db.execute(
        "CREATE TABLE unrelated AS SELECT i, repeat('x', 500) AS pad FROM generate_series(1, 2000) i"
    )

    def lag():
        services.run_pipeline(pipeline)
        return admin_api.get(f"/api/pipelines/{pipeline.pk}/").json()["lag_bytes"]

    wait_for(lambda: lag() < 2_000, timeout=10, what="an idle slot to advance")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("destination", ["postgres"], indirect=True)
def test_deleting_through_the_api_drops_the_slot_only_when_asked(admin_api, source_db, make_pipeline):
    create_tables(source_db)
    pipeline = make_pipeline(["public.orders"])
    services.run_pipeline(pipeline)
    slot = pipeline.source.slot_name

    assert admin_api.delete(f"/api/pipelines/{pipeline.pk}/?drop_slot=true").status_code == 204
    assert not Pipeline.objects.filter(pk=pipeline.pk).exists()
    assert not source_db.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("destination", ["postgres"], indirect=True)
def test_the_admin_asks_whether_to_drop_the_slot_and_says_a_kept_slot_keeps_wal(
    admin_browser, source_db, make_pipeline
):
    create_tables(source_db)
    pipeline = make_pipeline(["public.orders"])
    services.run_pipeline(pipeline)
    slot = pipeline.source.slot_name
    url = f"/admin/pipelines/pipeline/{pipeline.pk}/delete/"

    page = admin_browser.get(url).content.decode()
    assert "A slot that is kept keeps WAL on the source" in page and slot in page

    admin_browser.post(url, {"post": "yes"})  # no answer: nothing deleted
    assert Pipeline.objects.filter(pk=pipeline.pk).exists()

    response = admin_browser.post(url, {"post": "yes", "drop_slot": "no"}, follow=True)
    assert "stays on" in response.content.decode() and "keeps WAL" in response.content.decode()
    assert not Pipeline.objects.filter(pk=pipeline.pk).exists()
    assert source_db.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone()
