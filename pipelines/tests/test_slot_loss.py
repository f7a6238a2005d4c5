"""A replication slot lost by the server or dropped by someone: never silent (a
critical alert, the run and the pipeline's page say so), re-copied or stopped as
the pipeline asks, and a run killed at any step of re-creating the slot is
followed by one that re-copies what must be."""

import time

import psycopg
import pytest
from django.urls import reverse

from monitoring.models import AlertEvent
from pipelines import services
from pipelines.models import Pipeline, PipelineRun, PipelineTable

from .test_end_to_end import assert_equal, create_tables, insert_customers, insert_orders

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("destination", ["postgres"], indirect=True),
]


class Crash(Exception):
    pass


@pytest.fixture
def lose_slot(pg_cluster):
    """Make the server invalidate a slot (wal_status 'lost') as it does when the slot
    falls behind max_slot_wal_keep_size; the setting is reset afterwards."""

    def admin(query):
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(query)

    def lose(source_db, slot):
        admin("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        admin("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 20
        while True:
            for _ in range(3):
                source_db.execute("CREATE TEMP TABLE IF NOT EXISTS wal_filler (x int)")
                source_db.execute("INSERT INTO wal_filler SELECT generate_series(1, 1000)")
                source_db.execute("SELECT pg_switch_wal()")
            source_db.execute("CHECKPOINT")
            (status,) = source_db.execute(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", [slot]
            ).fetchone()
            if status == "lost":
                return
            assert time.monotonic() < deadline, f"slot {slot} not lost (wal_status {status})"

    yield lose
    admin("ALTER SYSTEM RESET max_slot_wal_keep_size")
    admin("SELECT pg_reload_conf()")


def copied(source_db, make_pipeline, **fields):
    """A pipeline that has copied both tables, and changes it has not read yet."""
    create_tables(source_db)
    insert_orders(source_db, range(1, 21))
    insert_customers(source_db, range(1, 6))
    pipeline = make_pipeline(["public.orders", "public.customers"], **fields)
    services.run_until_caught_up(pipeline)
    insert_orders(source_db, range(21, 31))
    source_db.execute("UPDATE orders SET amount = 7 WHERE id < 8")
    source_db.execute("DELETE FROM customers WHERE id = 2")
    return pipeline


def drop_slot(source_db, pipeline):
    source_db.execute("SELECT pg_drop_replication_slot(%s)", [pipeline.source.slot_name])


def states(pipeline):
    return set(pipeline.tables.values_list("snapshot_state", flat=True))


# -- no crash window ---------------------------------------------------------------------


@pytest.mark.parametrize("step", ["tables_marked_for_recopy", "slot_created"])
def test_a_run_killed_while_re_creating_a_dropped_slot_is_followed_by_a_full_re_copy(
    source_db, target, make_pipeline, step
):
    pipeline = copied(source_db, make_pipeline)
    drop_slot(source_db, pipeline)  # the changes above are now in no slot
    insert_orders(source_db, range(31, 36))

    def kill(done):
        if done == step:
            raise Crash(f"killed after {done}")

    run = services.run_pipeline(pipeline, hooks=services.RunHooks(at_slot_step=kill))
    assert run.outcome == PipelineRun.Outcome.FAILED and f"killed after {step}" in run.error
    assert states(pipeline) == {PipelineTable.SnapshotState.PENDING}  # marked before the slot exists

    insert_orders(source_db, range(36, 41))  # after the new slot's start
    services.run_until_caught_up(pipeline)
    assert_equal(source_db, target)


@pytest.mark.parametrize("step", ["tables_marked_for_recopy", "lost_slot_dropped", "slot_created"])
def test_a_run_killed_at_any_step_of_re_creating_a_lost_slot_is_followed_by_a_full_re_copy(
    source_db, target, make_pipeline, lose_slot, step
):
    pipeline = copied(source_db, make_pipeline)
    lose_slot(source_db, pipeline.source.slot_name)

    def kill(done):
        if done == step:
            raise Crash(f"killed after {done}")

    run = services.run_pipeline(pipeline, hooks=services.RunHooks(at_slot_step=kill))
    assert run.outcome == PipelineRun.Outcome.FAILED and f"killed after {step}" in run.error

    insert_orders(source_db, range(31, 36))
    services.run_until_caught_up(pipeline)
    assert_equal(source_db, target)


# -- never silent ----------------------------------------------------------------------------


def test_a_lost_slot_is_re_copied_by_default_with_a_critical_alert_on_the_run_and_the_page(
    source_db, target, make_pipeline, lose_slot, admin_browser
):
    pipeline = copied(source_db, make_pipeline)
    assert pipeline.on_slot_lost == Pipeline.OnSlotLost.RECOPY
    slot = pipeline.source.slot_name
    lose_slot(source_db, slot)

    (run, *_) = services.run_until_caught_up(pipeline)

    assert run.outcome == PipelineRun.Outcome.SUCCEEDED and run.slot_lost
    assert "was lost" in run.notes and run.snapshot_rows == 30 + 4
    assert_equal(source_db, target)
    (event,) = AlertEvent.objects.filter(source=pipeline.source)
    assert event.level == "critical" and event.slot_name == slot
    assert "was lost" in event.message and "re-copies every table" in event.message
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.RUNNING
    assert pipeline.last_alert == event.message and pipeline.last_alert_at is not None
    page = admin_browser.get(reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])).content.decode()
    assert "re-copies every table" in page
    assert services.run_pipeline(pipeline).slot_lost is False  # the new slot is fine


def test_with_on_slot_lost_fail_a_lost_slot_stops_the_pipeline_until_an_operator_refreshes(
    source_db, target, make_pipeline, lose_slot, admin_api
):
    pipeline = copied(source_db, make_pipeline, on_slot_lost=Pipeline.OnSlotLost.FAIL)
    lose_slot(source_db, pipeline.source.slot_name)

    run = services.run_pipeline(pipeline)
    again = services.run_pipeline(pipeline)  # a retry after the back-off: still stopped

    assert run.outcome == again.outcome == PipelineRun.Outcome.FAILED and run.slot_lost
    assert "Refresh the pipeline" in run.error
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.FAILED and "Refresh the pipeline" in pipeline.last_error
    assert states(pipeline) == {PipelineTable.SnapshotState.DONE}  # nothing re-copied on its own
    (event,) = AlertEvent.objects.filter(source=pipeline.source)  # one alert, not one per retry
    assert event.level == "critical" and "Refresh the pipeline" in event.message
    body = admin_api.get(f"/api/pipelines/{pipeline.pk}/").json()
    assert "Refresh the pipeline" in body["last_alert"]

    response = admin_api.post(f"/api/pipelines/{pipeline.pk}/refresh/")
    assert response.status_code == 200 and response.data["status"] == "refreshing"
    services.run_until_caught_up(pipeline)
    assert_equal(source_db, target)
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.RUNNING


def test_a_slot_dropped_under_a_pipeline_raises_the_same_alert(source_db, target, make_pipeline):
    pipeline = copied(source_db, make_pipeline)
    drop_slot(source_db, pipeline)
    (run, *_) = services.run_until_caught_up(pipeline)
    assert run.slot_lost and run.outcome == PipelineRun.Outcome.SUCCEEDED
    (event,) = AlertEvent.objects.filter(source=pipeline.source)
    assert "was dropped" in event.message
