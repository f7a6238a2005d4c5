"""A started pipeline's replication identity is frozen (its source, its destination,
its source's host, port, database, slot and publication); what stays possible is
done through explicit, safe operations: rename, add or remove a table, move to
another destination, change the source's slot."""

import uuid

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from destinations.models import Destination
from destinations.tests.factories import DestinationFactory
from monitoring.models import AlertEvent
from pipelines import services
from pipelines.models import Pipeline, PipelineRun
from sources.tests.factories import SourceFactory

from .conftest import TargetDB
from .factories import PipelineFactory, PipelineTableFactory
from .test_end_to_end import ORDERS, assert_equal, create_tables, insert_customers, insert_orders


def assert_orders_equal(source_db, target):
    assert target.rows("orders", ORDERS, ["region", "id"], json_columns=["doc"]) == source_db.rows(
        "orders", ORDERS, ["region", "id"]
    )


def slot_exists(source_db, name):
    return bool(
        source_db.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [name]).fetchone()
    )


# -- the API and the admin refuse changes of identity ------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["running", "paused", "failed", "refreshing"])
@pytest.mark.parametrize("method", ["patch", "put"])
def test_the_api_refuses_a_new_source_for_a_started_pipeline_and_says_what_to_do(admin_api, status, method):
    pipeline = PipelineFactory(status=status)
    other = SourceFactory()
    body = {"source": other.pk}
    if method == "put":
        body.update(name=pipeline.name, destination=pipeline.destination_id, tables=[])
    response = getattr(admin_api, method)(f"/api/pipelines/{pipeline.pk}/", body, format="json")

    assert response.status_code == 400, response.data
    assert "Create a new pipeline" in str(response.data["source"])
    pipeline.refresh_from_db()
    assert pipeline.source_id != other.pk


@pytest.mark.django_db
def test_the_api_refuses_a_new_destination_for_a_started_pipeline_and_points_to_the_move_action(admin_api):
    pipeline = PipelineFactory(status="running")
    other = DestinationFactory()
    response = admin_api.patch(f"/api/pipelines/{pipeline.pk}/", {"destination": other.pk}, format="json")

    assert response.status_code == 400
    assert "/move/" in str(response.data["destination"])
    pipeline.refresh_from_db()
    assert pipeline.destination_id != other.pk


@pytest.mark.django_db
def test_a_pipeline_that_never_started_may_change_source_and_destination(admin_api):
    pipeline = PipelineFactory(status="created")
    source, destination = SourceFactory(), DestinationFactory()
    response = admin_api.patch(
        f"/api/pipelines/{pipeline.pk}/", {"source": source.pk, "destination": destination.pk}, format="json"
    )
    assert response.status_code == 200, response.data
    pipeline.refresh_from_db()
    assert (pipeline.source_id, pipeline.destination_id) == (source.pk, destination.pk)


def pipeline_form(pipeline, **changes):
    data = {
        "name": pipeline.name,
        "source": pipeline.source_id,
        "destination": pipeline.destination_id,
        "max_changes_per_transaction": pipeline.max_changes_per_transaction,
        "on_slot_lost": pipeline.on_slot_lost,
        "on_incompatible_schema_change": pipeline.on_incompatible_schema_change,
        "max_reject_share": pipeline.max_reject_share,
        "tables-TOTAL_FORMS": "0",
        "tables-INITIAL_FORMS": "0",
    }
    return {**data, **changes}


@pytest.mark.django_db
def test_the_admin_refuses_a_new_source_or_destination_for_a_started_pipeline(admin_browser):
    pipeline = PipelineFactory(status="paused")
    url = reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])
    other_source, other_destination = SourceFactory(), DestinationFactory()

    page = admin_browser.post(
        url, pipeline_form(pipeline, source=other_source.pk, destination=other_destination.pk)
    ).content.decode()

    assert "Create a new pipeline for the other source" in page
    assert "use the move action" in page
    pipeline.refresh_from_db()
    assert (pipeline.source_id, pipeline.destination_id) != (other_source.pk, other_destination.pk)

    # A rename is still fine.
    response = admin_browser.post(url, pipeline_form(pipeline, name="renamed"))
    assert response.status_code == 302
    pipeline.refresh_from_db()
    assert pipeline.name == "renamed"


SOURCE_CHANGES = [
    ("pg_host", "10.0.0.9"),
    ("pg_port", 6543),
    ("pg_database", "other"),
    ("slot_name", "another_slot"),
    ("publication_name", "another_pub"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("field, value", SOURCE_CHANGES)
def test_the_api_refuses_to_move_a_source_under_a_running_or_paused_pipeline(admin_api, field, value):
    running = PipelineFactory(status="running")
    response = admin_api.patch(f"/api/sources/{running.source_id}/", {field: value}, format="json")
    assert response.status_code == 400, response.data
    assert f"pipeline {running.name} is running" in str(response.data[field])
    running.source.refresh_from_db()
    assert getattr(running.source, field) != value

    paused = PipelineFactory(status="paused")
    response = admin_api.patch(f"/api/sources/{paused.source_id}/", {field: value}, format="json")
    assert response.status_code == 400

    # Thresholds and the name are not part of the identity.
    response = admin_api.patch(
        f"/api/sources/{running.source_id}/", {"name": "renamed", "wal_warn_bytes": 1000}, format="json"
    )
    assert response.status_code == 200


@pytest.mark.django_db
def test_a_source_whose_pipelines_never_started_may_change(admin_api):
    pipeline = PipelineFactory(status="created")
    response = admin_api.patch(f"/api/sources/{pipeline.source_id}/", {"pg_host": "10.0.0.9"}, format="json")
    assert response.status_code == 200


@pytest.mark.django_db
def test_the_source_admin_refuses_a_new_slot_under_a_running_pipeline_and_names_the_action(admin_browser):
    pipeline = PipelineFactory(status="running")
    source = pipeline.source
    data = {
        "name": source.name,
        "pg_host": source.pg_host,
        "pg_port": source.pg_port,
        "pg_database": source.pg_database,
        "pg_username": source.pg_username,
        "pg_password": "",
        "sslmode": source.sslmode,
        "publication_name": source.publication_name,
        "slot_name": "another_slot",
        "wal_warn_bytes": source.wal_warn_bytes,
        "wal_critical_bytes": source.wal_critical_bytes,
        "slot_inactive_alert_minutes": source.slot_inactive_alert_minutes,
    }
    page = admin_browser.post(reverse("admin:sources_source_change", args=[source.pk]), data).content.decode()
    assert "change-slot" in page
    source.refresh_from_db()
    assert source.slot_name != "another_slot"


@pytest.mark.django_db(transaction=True)
def test_the_database_allows_one_started_pipeline_per_source_whatever_the_path():
    first = PipelineFactory(status="running")
    second = PipelineFactory(source=first.source)  # created: may exist
    with pytest.raises(IntegrityError), transaction.atomic():
        Pipeline.objects.filter(pk=second.pk).update(status="paused")
    with pytest.raises(IntegrityError), transaction.atomic():
        PipelineFactory(source=first.source, status="running")
    with pytest.raises(services.IllegalTransition, match="one replication slot serves one pipeline"):
        services.start_pipeline(second)


# -- the safe ways, end to end -----------------------------------------------------------


def e2e(test):
    """A real source and a PostgreSQL destination on the test cluster."""
    test = pytest.mark.parametrize("destination", ["postgres"], indirect=True)(test)
    return pytest.mark.django_db(transaction=True)(test)


@e2e
def test_renaming_a_running_pipeline_keeps_its_checkpoint(admin_api, source_db, target, make_pipeline):
    create_tables(source_db)
    insert_orders(source_db, range(1, 11))
    pipeline = make_pipeline(["public.orders"])
    services.run_until_caught_up(pipeline)
    insert_orders(source_db, range(11, 21))
    services.run_until_caught_up(pipeline)
    before = target.checkpoint(pipeline.checkpoint_key)
    assert before > 0

    response = admin_api.patch(f"/api/pipelines/{pipeline.pk}/", {"name": "renamed-orders"}, format="json")
    assert response.status_code == 200
    insert_orders(source_db, range(21, 31))
    pipeline.refresh_from_db()
    (run,) = services.run_until_caught_up(pipeline)

    assert run.snapshot_rows == 0  # no re-copy
    assert target.checkpoint("renamed-orders") == 0  # no second checkpoint under the new name
    assert target.checkpoint(pipeline.checkpoint_key) > before
    assert_orders_equal(source_db, target)


@e2e
def test_a_table_added_to_a_running_pipeline_is_the_only_one_copied(
    admin_api, source_db, target, make_pipeline
):
    create_tables(source_db)
    insert_orders(source_db, range(1, 21))
    insert_customers(source_db, range(1, 6))
    pipeline = make_pipeline(["public.orders"])
    services.run_until_caught_up(pipeline)

    response = admin_api.patch(
        f"/api/pipelines/{pipeline.pk}/", {"tables": ["public.orders", "public.customers"]}, format="json"
    )
    assert response.status_code == 200
    (run,) = services.run_until_caught_up(pipeline)
    assert run.snapshot_rows == 5  # customers only
    assert_equal(source_db, target)

    response = admin_api.patch(f"/api/pipelines/{pipeline.pk}/", {"tables": ["public.orders"]}, format="json")
    assert response.status_code == 200
    insert_orders(source_db, range(21, 25))
    (run,) = services.run_until_caught_up(pipeline)
    assert run.outcome == PipelineRun.Outcome.SUCCEEDED and target.count("orders") == 24


@e2e
def test_moving_a_pipeline_to_another_destination_re_copies_every_table_there(
    admin_api, source_db, target, make_pipeline, tmp_path
):
    create_tables(source_db)
    insert_orders(source_db, range(1, 21))
    insert_customers(source_db, range(1, 6))
    pipeline = make_pipeline(["public.orders", "public.customers"])
    services.run_until_caught_up(pipeline)
    insert_orders(source_db, range(21, 31))  # not applied to the old destination yet
    new = Destination.objects.create(
        name=f"duck-{uuid.uuid4().hex[:8]}", kind="duckdb", duckdb_path=str(tmp_path / "moved.duckdb")
    )

    response = admin_api.post(f"/api/pipelines/{pipeline.pk}/move/", {"destination": new.pk}, format="json")
    assert response.status_code == 200, response.data
    assert response.data["destination"] == new.pk and response.data["status"] == "refreshing"
    same = admin_api.post(f"/api/pipelines/{pipeline.pk}/move/", {"destination": new.pk}, format="json")
    assert same.status_code == 400 and "already writes to" in str(same.data["destination"])

    pipeline.refresh_from_db()
    insert_orders(source_db, range(31, 36))
    runs = services.run_until_caught_up(pipeline)
    assert runs[0].snapshot_rows == 35 + 5
    assert_equal(source_db, TargetDB(new))
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.RUNNING


@e2e
def test_changing_a_sources_slot_asks_about_the_old_one_and_re_copies_without_alarm(
    admin_api, source_db, target, make_pipeline
):
    create_tables(source_db)
    insert_orders(source_db, range(1, 21))
    pipeline = make_pipeline(["public.orders"])
    services.run_until_caught_up(pipeline)
    old_slot = pipeline.source.slot_name
    url = f"/api/sources/{pipeline.source_id}/change-slot/"

    unanswered = admin_api.post(url, {"slot_name": "new_slot_x"}, format="json")
    assert unanswered.status_code == 400 and "drop_old_slot" in unanswered.data
    bad = admin_api.post(url, {"slot_name": "bad name", "drop_old_slot": True}, format="json")
    assert bad.status_code == 400 and "slot_name" in bad.data

    response = admin_api.post(url, {"slot_name": f"new_{old_slot}", "drop_old_slot": True}, format="json")
    assert response.status_code == 200, response.data
    assert f"dropped slot {old_slot}" in response.data["detail"]
    assert not slot_exists(source_db, old_slot)

    insert_orders(source_db, range(21, 31))
    pipeline.refresh_from_db()
    runs = services.run_until_caught_up(pipeline)
    assert runs[0].snapshot_rows == 30 and not runs[0].slot_lost
    assert slot_exists(source_db, f"new_{old_slot}")
    assert_orders_equal(source_db, target)
    assert not AlertEvent.objects.filter(source=pipeline.source).exists()  # asked for, not lost


@pytest.mark.django_db(transaction=True)
def test_the_admin_changes_a_sources_slot_only_once_asked_about_the_old_one(admin_browser):
    pipeline = PipelineFactory(status="running")
    PipelineTableFactory(pipeline=pipeline, snapshot_state="done")
    source = pipeline.source
    old = source.slot_name
    url = reverse("admin:sources_source_change_slot", args=[source.pk])

    page = admin_browser.get(url).content.decode()
    assert "keeps WAL on the source" in page and old in page
    page = admin_browser.post(url, {"slot_name": "new_slot"}).content.decode()
    assert "This field is required" in page
    source.refresh_from_db()
    assert source.slot_name == old

    response = admin_browser.post(url, {"slot_name": "new_slot", "drop_old_slot": "no"}, follow=True)
    assert f"Slot {old} stays on the source and keeps WAL" in response.content.decode()
    source.refresh_from_db()
    pipeline.refresh_from_db()
    assert source.slot_name == "new_slot" and pipeline.status == "refreshing"
    assert set(pipeline.tables.values_list("snapshot_state", flat=True)) == {"pending"}


@pytest.mark.django_db(transaction=True)
def test_the_admin_moves_a_started_pipeline_to_another_destination_with_a_re_copy(admin_browser):
    pipeline = PipelineFactory(status="paused")
    PipelineTableFactory(pipeline=pipeline, snapshot_state="done")
    key = pipeline.checkpoint_key
    other = DestinationFactory()
    url = reverse("admin:pipelines_pipeline_move", args=[pipeline.pk])

    assert "copies every table into the new destination" in admin_browser.get(url).content.decode()
    page = admin_browser.post(url, {"destination": pipeline.destination_id}).content.decode()
    assert "already writes to" in page

    response = admin_browser.post(url, {"destination": other.pk}, follow=True)
    assert "every table is copied there again" in response.content.decode()
    pipeline.refresh_from_db()
    assert pipeline.destination_id == other.pk and pipeline.status == "paused"
    assert pipeline.checkpoint_key != key  # the new destination's checkpoint starts afresh
    assert set(pipeline.tables.values_list("snapshot_state", flat=True)) == {"pending"}
