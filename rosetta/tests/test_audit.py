"""The audit trail: every operator action through the API, the admin or a command, and never a secret."""

import io

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse
from rest_framework.test import APIClient

from destinations.tests.factories import DestinationFactory
from pipelines.models import Pipeline
from pipelines.tests.factories import PipelineFactory, PipelineTableFactory
from rosetta.models import AuditEvent
from rosetta.testing import admin_form_data
from sources.models import Source
from sources.tests.factories import SourceFactory

SOURCE = {
    "name": "shop",
    "pg_host": "db.example.com",
    "pg_port": 5432,
    "pg_database": "shop",
    "pg_username": "replicator",
    "pg_password": "audit-secret-password",
    "publication_name": "shop_pub",
    "slot_name": "shop_slot",
}


def events(**filters):
    return list(AuditEvent.objects.filter(**filters).order_by("id"))


def assert_no_secret_recorded(*secrets):
    for event in AuditEvent.objects.all():
        text = " ".join(str(value) for value in event.__dict__.values())
        for secret in secrets:
            assert secret not in text


@pytest.fixture
def real_source(db, source_database):
    return SourceFactory(
        pg_host=source_database["host"],
        pg_port=source_database["port"],
        pg_database=source_database["dbname"],
        pg_username="postgres",
        pg_password="",
        sslmode="disable",
    )


@pytest.mark.django_db
def test_api_create_change_and_delete_are_recorded_with_the_changed_field_names(admin_api, admin_user):
    source_id = admin_api.post("/api/sources/", SOURCE, format="json").json()["id"]
    admin_api.patch(
        f"/api/sources/{source_id}/",
        {"pg_password": "another-secret", "pg_port": 5433, "name": "shop"},
        format="json",
    )
    assert admin_api.delete(f"/api/sources/{source_id}/").status_code == 204

    create, change, delete = events(object_type="sources.source", object_id=str(source_id))
    assert (create.action, change.action, delete.action) == ("create", "change", "delete")
    assert {event.via for event in (create, change, delete)} == {"api"}
    assert {event.user for event in (create, change, delete)} == {admin_user}
    assert change.username == "admin" and change.remote_addr == "127.0.0.1"
    assert "pg_password" in create.changed_fields
    # "name" was sent unchanged: only what changed is named.
    assert change.changed_fields == ["pg_password", "pg_port"]
    assert delete.object_repr == "shop"
    assert_no_secret_recorded("audit-secret-password", "another-secret")


@pytest.mark.django_db
def test_api_start_pause_refresh_and_delete_record_who_and_what(admin_api, admin_user, real_source):
    pipeline = PipelineFactory(source=real_source)
    PipelineTableFactory(pipeline=pipeline, table_name="orders")
    url = f"/api/pipelines/{pipeline.pk}"
    assert admin_api.post(f"{url}/start/").status_code == 200
    assert admin_api.post(f"{url}/refresh/", {"tables": ["public.orders"]}, format="json").status_code == 200
    assert admin_api.post(f"{url}/pause/").status_code == 200
    assert admin_api.post(f"{url}/pause/").status_code == 409  # refused: nothing done, nothing recorded
    assert admin_api.delete(f"{url}/?drop_slot=true").status_code == 204

    recorded = events(object_type="pipelines.pipeline", object_id=str(pipeline.pk))
    assert [(e.action, e.detail) for e in recorded] == [
        ("start", ""),
        ("refresh", "tables: public.orders"),
        ("pause", ""),
        ("delete", "drop_slot=true"),
    ]
    assert all(e.via == "api" and e.user == admin_user for e in recorded)


@pytest.mark.django_db
def test_deleting_without_dropping_the_slot_is_recorded_as_such(admin_api, real_source):
    pipeline = PipelineFactory(source=real_source)
    assert admin_api.delete(f"/api/pipelines/{pipeline.pk}/").status_code == 204
    assert events(action="delete")[0].detail == "drop_slot=false"


@pytest.mark.django_db
def test_test_connection_is_recorded_with_its_outcome(admin_api, tmp_path):
    destination = DestinationFactory(duckdb_path=str(tmp_path / "w.duckdb"))
    assert admin_api.post(f"/api/destinations/{destination.pk}/test-connection/").json()["ok"] is True
    (event,) = events(action="test_connection")
    assert (event.object_type, event.object_id, event.detail) == (
        "destinations.destination",
        str(destination.pk),
        "ok",
    )


@pytest.mark.django_db
def test_admin_form_edits_actions_and_deletes_land_in_the_same_trail(admin_browser, admin_user, real_source):
    source = SourceFactory(pg_password="admin-form-secret")
    url = reverse("admin:sources_source_change", args=[source.pk])
    response = admin_browser.post(url, admin_form_data(source, ["pg_password"], pg_host="other.example.com"))
    assert response.status_code == 302
    (change,) = events(object_type="sources.source", action="change")
    assert (change.via, change.user, change.changed_fields) == ("admin", admin_user, ["pg_host"])

    pipeline = PipelineFactory(source=real_source)
    admin_browser.post(
        reverse("admin:pipelines_pipeline_changelist"),
        {"action": "start", "_selected_action": [pipeline.pk]},
    )
    admin_browser.post(
        reverse("admin:pipelines_pipeline_delete", args=[pipeline.pk]), {"post": "yes", "drop_slot": "no"}
    )
    assert [(e.action, e.via, e.detail) for e in events(object_type="pipelines.pipeline")] == [
        ("start", "admin", ""),
        ("delete", "admin", "drop_slot=false"),
    ]
    assert_no_secret_recorded("admin-form-secret")


@pytest.mark.django_db
def test_rotating_secrets_by_command_is_recorded_as_a_command():
    SourceFactory()
    call_command("rotate_secrets", stdout=io.StringIO())
    (event,) = events(action="rotate_secrets")
    assert event.via == "command" and event.user is None and event.username
    assert "re-encrypted" in event.detail


@pytest.mark.django_db
def test_the_api_lists_one_objects_history_for_programs(admin_api):
    first = admin_api.post("/api/sources/", SOURCE, format="json").json()["id"]
    admin_api.post(
        "/api/sources/", {**SOURCE, "name": "other", "slot_name": "o", "publication_name": "o"}, format="json"
    )
    response = admin_api.get(f"/api/audit-events/?object_type=sources.source&object_id={first}")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["action"], r["object_repr"], r["via"], r["username"]) for r in results] == [
        ("create", "shop", "api", "admin")
    ]
    assert admin_api.post("/api/audit-events/", {}, format="json").status_code == 405


@pytest.mark.django_db
def test_the_audit_trail_is_read_only_in_the_admin_and_filterable(admin_browser, admin_api):
    source_id = admin_api.post("/api/sources/", SOURCE, format="json").json()["id"]
    event = AuditEvent.objects.get()
    changelist = reverse("admin:rosetta_auditevent_changelist")
    page = admin_browser.get(f"{changelist}?object_type=sources.source&object_id={source_id}")
    assert page.status_code == 200 and "shop" in page.content.decode()
    other = admin_browser.get(f"{changelist}?object_type=sources.source&object_id={source_id + 1}")
    assert "shop" not in other.content.decode().split('id="result_list"')[-1]
    by_user = admin_browser.get(f"{changelist}?user__id__exact={event.user_id}")
    assert by_user.status_code == 200 and "shop" in by_user.content.decode()
    assert admin_browser.get(reverse("admin:rosetta_auditevent_add")).status_code == 403
    change = admin_browser.post(reverse("admin:rosetta_auditevent_change", args=[event.pk]), {"action": "x"})
    assert change.status_code == 403
    assert AuditEvent.objects.get().action == "create"


@pytest.mark.django_db
def test_a_user_without_the_view_permission_cannot_read_the_trail(django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw")
    user.user_permissions.add(Permission.objects.get(codename="view_source"))
    client = APIClient()
    client.force_authenticate(user)
    assert client.get("/api/audit-events/").status_code == 403
    assert client.get("/api/sources/").status_code == 200


@pytest.mark.django_db
def test_a_refused_create_records_nothing(admin_api):
    assert admin_api.post("/api/sources/", {**SOURCE, "pg_port": "x"}, format="json").status_code == 400
    assert not AuditEvent.objects.exists() and not Source.objects.exists()
    assert not Pipeline.objects.exists()
