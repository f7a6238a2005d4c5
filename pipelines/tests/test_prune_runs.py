"""Run history is bounded: the hourly Beat task deletes old runs, failed ones later, and
keeps each pipeline's newest run."""

import importlib
import io
from datetime import timedelta

import pytest
from django.apps import apps
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from pipelines import services, tasks
from pipelines.models import PipelineRun
from pipelines.tests.factories import PipelineFactory, PipelineRunFactory
from rosetta.celery import app

pytestmark = pytest.mark.django_db


def run_aged(pipeline, days, outcome=PipelineRun.Outcome.SUCCEEDED):
    return PipelineRunFactory(
        pipeline=pipeline, outcome=outcome, started_at=timezone.now() - timedelta(days=days)
    )


@override_settings(ROSETTA_RUN_HISTORY_DAYS=14, ROSETTA_FAILED_RUN_HISTORY_DAYS=90)
def test_old_runs_are_deleted_failed_ones_later_and_each_pipelines_newest_run_stays():
    busy, quiet = PipelineFactory(), PipelineFactory()
    recent = run_aged(busy, 1)
    old = run_aged(busy, 20)
    old_failure = run_aged(busy, 20, PipelineRun.Outcome.FAILED)
    old_interruption = run_aged(busy, 30, PipelineRun.Outcome.INTERRUPTED)
    ancient_failure = run_aged(busy, 100, PipelineRun.Outcome.FAILED)
    quiet_older = run_aged(quiet, 40)
    quiet_newest = run_aged(quiet, 30)  # the quiet pipeline's last run, however old

    assert services.prune_runs() == 3

    kept = set(PipelineRun.objects.values_list("pk", flat=True))
    assert kept == {recent.pk, old_failure.pk, old_interruption.pk, quiet_newest.pk}
    assert not {old.pk, ancient_failure.pk, quiet_older.pk} & kept
    assert services.prune_runs() == 0


@override_settings(ROSETTA_RUN_HISTORY_DAYS=1)
def test_the_command_prunes_and_says_how_many():
    pipeline = PipelineFactory()
    run_aged(pipeline, 0)
    run_aged(pipeline, 2)
    out = io.StringIO()
    call_command("prune_runs", stdout=out)
    assert "Deleted 1 runs" in out.getvalue()
    assert PipelineRun.objects.count() == 1


def test_the_prune_schedule_exists_and_names_a_real_task():
    migration = importlib.import_module("pipelines.migrations.0013_prune_runs_schedule")
    migration.create_schedule(apps, None)  # idempotent; a flush by an earlier test may have removed it
    migration.create_schedule(apps, None)
    (task,) = PeriodicTask.objects.filter(name=migration.PRUNE_TASK)
    assert task.task in app.tasks and task.task == tasks.prune_runs.name and task.enabled
    assert (task.interval.every, task.interval.period) == (1, "hours")
