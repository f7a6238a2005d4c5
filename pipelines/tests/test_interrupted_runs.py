"""A run whose process dies leaves no lie behind for long: the next run closes it as
interrupted (with the time it noticed) and puts a half-copied table back to pending."""

import pytest
from django.utils import timezone

from pipelines import services
from pipelines.models import PipelineRun, PipelineTable

from .test_end_to_end import assert_equal, create_tables, insert_customers, insert_orders

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("destination", ["postgres"], indirect=True),
]


class ProcessDied(BaseException):
    """Like a SIGKILL: nothing of the run's own error handling runs."""


class DieWhileCopyingOrders(services.RunObserver):
    def snapshot_progress(self, table, rows, estimate):
        if table == "public.orders":
            raise ProcessDied()


def test_the_next_run_closes_a_run_left_running_and_puts_a_half_copied_table_back_to_pending(
    source_db, target, make_pipeline
):
    create_tables(source_db)
    insert_orders(source_db, range(1, 21))
    insert_customers(source_db, range(1, 6))
    pipeline = make_pipeline(["public.orders", "public.customers"])
    with pytest.raises(ProcessDied):
        services.run_pipeline(pipeline, observer=DieWhileCopyingOrders())
    (dead,) = PipelineRun.objects.filter(pipeline=pipeline)
    assert dead.outcome == PipelineRun.Outcome.RUNNING
    orders = pipeline.tables.get(table_name="orders")
    assert orders.snapshot_state == PipelineTable.SnapshotState.IN_PROGRESS

    # The next run fails early (a table that does not exist), and still sets the record straight.
    services.set_pipeline_tables(pipeline, ["public.orders", "public.customers", "public.nope"])
    noticed_from = timezone.now()
    failed = services.run_pipeline(pipeline)
    assert failed.outcome == PipelineRun.Outcome.FAILED and "public.nope" in failed.error
    dead.refresh_from_db()
    assert dead.outcome == PipelineRun.Outcome.INTERRUPTED
    assert noticed_from <= dead.finished_at <= failed.finished_at
    assert "noticed by the next run at" in dead.error
    assert "Closed 1 earlier run(s) left running as interrupted." in failed.notes
    orders.refresh_from_db()
    assert orders.snapshot_state == PipelineTable.SnapshotState.PENDING

    services.set_pipeline_tables(pipeline, ["public.orders", "public.customers"])
    services.start_pipeline(pipeline)
    services.run_until_caught_up(pipeline)
    assert_equal(source_db, target)
    outcomes = list(PipelineRun.objects.filter(pipeline=pipeline).values_list("outcome", flat=True))
    assert "running" not in outcomes
