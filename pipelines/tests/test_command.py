"""manage.py run_pipeline: the same run by hand, with a summary per batch."""

import io

import pytest
from django.core.management import CommandError, call_command

from pipelines.models import Pipeline

from .test_end_to_end import assert_equal, create_tables, insert_customers, insert_orders

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("destination", ["duckdb"], indirect=True),
]


def test_run_pipeline_until_caught_up_snapshots_then_prints_one_line_for_the_run(
    source_db, target, make_pipeline
):
    create_tables(source_db)
    insert_orders(source_db, range(1, 31))
    insert_customers(source_db, range(1, 4))
    pipeline = make_pipeline(
        ["public.orders", "public.customers"], max_changes_per_transaction=25, start=False
    )

    out, err = io.StringIO(), io.StringIO()
    call_command("run_pipeline", pipeline.name, "--snapshot-only", stdout=out, stderr=err)
    assert "public.orders: snapshot of 30 rows done" in err.getvalue()
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.RUNNING  # a created pipeline is started

    for start in range(31, 91, 10):
        insert_orders(source_db, range(start, start + 10))  # six transactions of 10
    out = io.StringIO()
    call_command("run_pipeline", pipeline.name, "--until-caught-up", stdout=out, stderr=io.StringIO())
    lines = out.getvalue().splitlines()
    # One run, one stream: 60 changes applied in parts of 25, summed on one line.
    assert len(lines) == 1 and "60 changes" in lines[0] and "changes/s" in lines[0]
    assert_equal(source_db, target)


def test_run_pipeline_fails_with_one_readable_line(make_pipeline):
    pipeline = make_pipeline(["public.does_not_exist"])
    with pytest.raises(CommandError, match=r"failed: Table public.does_not_exist does not exist"):
        call_command("run_pipeline", pipeline.name, stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError, match="No pipeline named nope"):
        call_command("run_pipeline", "nope")
