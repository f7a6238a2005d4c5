"""A run that finds nothing to do leaves no PipelineRun: the pipeline's last_checked_at
and quiet_checks record that it looked. A run that does work is recorded."""

import pytest

from pipelines import services
from pipelines.models import Pipeline, PipelineRun

from .test_end_to_end import create_tables, insert_orders

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("destination", ["duckdb"], indirect=True),
]


def test_dispatching_a_quiet_pipeline_leaves_no_run_rows_and_moves_its_last_checked_time(
    source_db, target, make_pipeline
):
    create_tables(source_db)
    insert_orders(source_db, range(1, 6))
    pipeline = make_pipeline(["public.orders"])
    services.run_scheduled(pipeline.pk)  # slot and snapshot: work, recorded
    services.run_scheduled(pipeline.pk)  # reads the previous run's heartbeat: nothing to do
    runs = PipelineRun.objects.filter(pipeline=pipeline).count()
    checked = Pipeline.objects.get(pk=pipeline.pk)

    for _ in range(5):
        services.run_scheduled(pipeline.pk)

    pipeline.refresh_from_db()
    assert PipelineRun.objects.filter(pipeline=pipeline).count() == runs
    assert pipeline.last_checked_at > checked.last_checked_at
    assert pipeline.quiet_checks == checked.quiet_checks + 5
    assert pipeline.status == Pipeline.Status.RUNNING

    insert_orders(source_db, range(6, 9))
    services.run_scheduled(pipeline.pk)
    run = PipelineRun.objects.filter(pipeline=pipeline).first()  # newest first
    assert PipelineRun.objects.filter(pipeline=pipeline).count() == runs + 1
    assert run.outcome == PipelineRun.Outcome.SUCCEEDED and run.rows_inserted == 3
    assert run.start_lsn and run.end_lsn
    assert target.count("orders") == 8


def test_a_quiet_run_is_returned_unsaved(source_db, make_pipeline):
    create_tables(source_db)
    pipeline = make_pipeline(["public.orders"])
    services.run_pipeline(pipeline)
    services.run_pipeline(pipeline)

    run = services.run_pipeline(pipeline)

    assert run.pk is None and run.outcome == PipelineRun.Outcome.SUCCEEDED and run.changes_read == 0


def test_a_failed_run_is_always_recorded(make_pipeline):
    pipeline = make_pipeline(["public.missing"])

    run = services.run_pipeline(pipeline)

    assert run.pk is not None and run.outcome == PipelineRun.Outcome.FAILED
