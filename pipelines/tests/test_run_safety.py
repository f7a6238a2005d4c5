"""A run interrupted at any point, two runs at once, writes during a snapshot and
a column added mid-stream: the destination still ends equal to the source."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from engine.lsn import parse_lsn
from pipelines import services
from pipelines.models import Pipeline, PipelineRun, PipelineTable

from .test_end_to_end import ORDERS, assert_equal, create_tables, insert_customers, insert_orders

pytestmark = pytest.mark.django_db(transaction=True)


class Crash(Exception):
    pass


def crash(*args):
    raise Crash("injected crash")


def slot_confirmed(source_db, pipeline):
    (lsn,) = source_db.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        [pipeline.source.slot_name],
    ).fetchone()
    return parse_lsn(lsn)


def prepared(source_db, make_pipeline):
    create_tables(source_db)
    insert_orders(source_db, range(1, 21))
    insert_customers(source_db, range(1, 6))
    pipeline = make_pipeline(["public.orders", "public.customers"])
    assert services.run_pipeline(pipeline).outcome == PipelineRun.Outcome.SUCCEEDED
    insert_orders(source_db, range(21, 41))
    source_db.execute("UPDATE orders SET amount = 0 WHERE id < 5")
    source_db.execute("DELETE FROM customers WHERE id = 3")
    return pipeline


def test_a_crash_after_the_destination_commit_and_before_the_slot_advance_duplicates_nothing(
    source_db, target, make_pipeline
):
    pipeline = prepared(source_db, make_pipeline)
    before = slot_confirmed(source_db, pipeline)

    run = services.run_pipeline(pipeline, hooks=services.RunHooks(after_apply=crash))

    assert run.outcome == PipelineRun.Outcome.FAILED and "injected crash" in run.error
    assert target.count("orders") == 40  # committed in the destination ...
    assert slot_confirmed(source_db, pipeline) == before  # ... but the slot still holds the changes
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.FAILED and "injected crash" in pipeline.last_error
    assert pipeline.next_run_at is not None and pipeline.consecutive_failures == 1

    (rerun,) = services.run_until_caught_up(pipeline)
    assert rerun.outcome == PipelineRun.Outcome.SUCCEEDED
    assert "already had" in rerun.notes  # the replay was recognised and skipped
    assert target.count("orders") == 40  # no duplicate (DuckDB tables have no unique key)
    assert_equal(source_db, target)
    assert slot_confirmed(source_db, pipeline) >= target.checkpoint(pipeline.checkpoint_key)
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.RUNNING and pipeline.consecutive_failures == 0


def test_a_crash_before_the_destination_commit_leaves_nothing_behind(source_db, target, make_pipeline):
    pipeline = prepared(source_db, make_pipeline)
    checkpoint = target.checkpoint(pipeline.checkpoint_key)

    run = services.run_pipeline(pipeline, hooks=services.RunHooks(before_commit=crash))

    assert run.outcome == PipelineRun.Outcome.FAILED
    assert target.count("orders") == 20 and target.checkpoint(pipeline.checkpoint_key) == checkpoint
    services.run_until_caught_up(pipeline)
    assert target.count("orders") == 40
    assert_equal(source_db, target)


@pytest.mark.parametrize("destination", ["postgres"], indirect=True)
def test_two_runs_at_once_only_one_applies_even_from_another_process(source_db, target, make_pipeline):
    pipeline = prepared(source_db, make_pipeline)
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "ROSETTA_ENCRYPTION_KEYS": ",".join(settings.ROSETTA_ENCRYPTION_KEYS),
    }
    second = {}

    def run_another_while_locked():
        second["process"] = subprocess.run(
            [sys.executable, "manage.py", "run_pipeline", pipeline.name],
            cwd=Path(settings.BASE_DIR),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    run = services.run_pipeline(pipeline, hooks=services.RunHooks(after_lock=run_another_while_locked))

    assert run.outcome == PipelineRun.Outcome.SUCCEEDED
    other = second["process"]
    assert other.returncode == 1
    assert "another run holds the pipeline's lock" in other.stderr
    outcomes = sorted(PipelineRun.objects.filter(pipeline=pipeline).values_list("outcome", flat=True))
    assert outcomes == ["skipped", "succeeded", "succeeded"]  # the first is the snapshot run
    assert target.count("orders") == 40
    assert_equal(source_db, target)


def test_writes_during_the_snapshot_converge(source_db, target, make_pipeline, source_database):
    create_tables(source_db)
    insert_orders(source_db, range(1, 31))
    insert_customers(source_db, range(1, 6))
    pipeline = make_pipeline(["public.orders", "public.customers"])
    written = []

    class WriteWhileCopying(services.RunObserver):
        def snapshot_progress(self, table, rows, estimate):
            if table == "public.orders" and not written:
                # The snapshot's transaction is open and has its snapshot: these
                # commits are not in it, and come through the slot instead.
                insert_orders(source_db, range(31, 41))
                source_db.execute("UPDATE orders SET note = 'changed during the snapshot' WHERE id <= 10")
                source_db.execute("DELETE FROM orders WHERE id BETWEEN 11 AND 15")
                source_db.execute("UPDATE orders SET id = id + 100 WHERE id = 16")
                written.append(True)

    run = services.run_pipeline(pipeline, observer=WriteWhileCopying())
    assert written and run.outcome == PipelineRun.Outcome.SUCCEEDED
    services.run_until_caught_up(pipeline)
    assert target.count("orders") == 35
    assert_equal(source_db, target)


def test_a_column_added_on_the_source_appears_on_the_target_with_its_values(source_db, target, make_pipeline):
    create_tables(source_db)
    insert_orders(source_db, range(1, 11))
    insert_customers(source_db, range(1, 3))
    pipeline = make_pipeline(["public.orders", "public.customers"])
    services.run_until_caught_up(pipeline)

    insert_orders(source_db, range(11, 16))  # in the same batch as the change of shape
    source_db.execute("ALTER TABLE orders ADD COLUMN channel text")
    source_db.execute("UPDATE orders SET channel = 'web' WHERE id <= 3")
    source_db.execute("INSERT INTO orders (region, id, amount, channel) VALUES ('eu', 99, 1, 'shop')")
    services.run_until_caught_up(pipeline)

    columns = [*ORDERS, "channel"]
    assert target.rows("orders", columns, ["region", "id"], json_columns=["doc"]) == source_db.rows(
        "orders", columns, ["region", "id"]
    )
    channels = dict(target.rows("orders", ["id", "channel"], ["id"]))
    assert channels[1] == "web" and channels[99] == "shop" and channels[5] is None


def test_refresh_of_one_table_re_copies_it_and_the_pipeline_runs_again(source_db, target, make_pipeline):
    create_tables(source_db)
    insert_orders(source_db, range(1, 11))
    insert_customers(source_db, range(1, 4))
    pipeline = make_pipeline(["public.orders", "public.customers"])
    services.run_until_caught_up(pipeline)

    services.refresh_pipeline(pipeline, ["public.orders"])
    insert_orders(source_db, range(11, 14))
    (run,) = services.run_until_caught_up(pipeline)

    assert run.snapshot_rows == 13  # only orders, as it is now
    assert_equal(source_db, target)
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.RUNNING
    assert set(pipeline.tables.values_list("snapshot_state", flat=True)) == {PipelineTable.SnapshotState.DONE}
