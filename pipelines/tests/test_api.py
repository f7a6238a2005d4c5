import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from destinations.tests.factories import DestinationFactory
from pipelines.models import DEFAULT_MAX_CHANGES_PER_TRANSACTION, Pipeline
from sources.tests.factories import SourceFactory

from .factories import PipelineFactory, PipelineRunFactory, PipelineTableFactory

pytestmark = pytest.mark.django_db


def test_a_pipeline_is_created_with_its_tables_as_strings(admin_api):
    source, destination = SourceFactory(), DestinationFactory()
    response = admin_api.post(
        "/api/pipelines/",
        {
            "name": "orders-to-duck",
            "source": source.pk,
            "destination": destination.pk,
            "tables": ["public.orders", "sales.customers"],
        },
        format="json",
    )
    assert response.status_code == 201, response.data
    assert response.data["status"] == "created"
    assert response.data["max_changes_per_transaction"] == DEFAULT_MAX_CHANGES_PER_TRANSACTION
    assert sorted(response.data["tables"]) == ["public.orders", "sales.customers"]
    pipeline = Pipeline.objects.get(name="orders-to-duck")
    assert {(t.schema_name, t.table_name, t.target_table) for t in pipeline.tables.all()} == {
        ("public", "orders", "orders"),
        ("sales", "customers", "customers"),
    }


def test_replacing_the_tables_keeps_the_progress_of_kept_ones(admin_api):
    table = PipelineTableFactory(table_name="orders", snapshot_state="done", snapshot_rows=42)
    response = admin_api.patch(
        f"/api/pipelines/{table.pipeline.pk}/", {"tables": ["public.orders", "public.items"]}, format="json"
    )
    assert response.status_code == 200, response.data
    kept = table.pipeline.tables.get(table_name="orders")
    assert (kept.snapshot_state, kept.snapshot_rows) == ("done", 42)
    assert table.pipeline.tables.get(table_name="items").snapshot_state == "pending"


@pytest.mark.parametrize("tables", [["a.b.c"], ["public."], ["public.x", "public.x"]])
def test_bad_table_names_are_refused(admin_api, tables):
    source, destination = SourceFactory(), DestinationFactory()
    response = admin_api.post(
        "/api/pipelines/",
        {"name": "p", "source": source.pk, "destination": destination.pk, "tables": tables},
        format="json",
    )
    assert response.status_code == 400 and "tables" in response.data
    assert not Pipeline.objects.exists()


def test_status_cannot_be_written_directly(admin_api):
    pipeline = PipelineFactory()
    response = admin_api.patch(f"/api/pipelines/{pipeline.pk}/", {"status": "running"}, format="json")
    assert response.status_code == 400 and "status" in response.data
    pipeline.refresh_from_db()
    assert pipeline.status == "created"


LEGAL = [
    ("created", "start", "running"),
    ("paused", "start", "running"),
    ("failed", "start", "running"),
    ("running", "pause", "paused"),
    ("refreshing", "pause", "paused"),
    ("running", "refresh", "refreshing"),
    ("paused", "refresh", "refreshing"),
    ("failed", "refresh", "refreshing"),  # how a pipeline stopped by a lost slot goes on
]
ILLEGAL = [
    ("running", "start", "already running"),
    ("refreshing", "start", "a refresh is in progress"),
    ("created", "pause", "never started"),
    ("paused", "pause", "already paused"),
    ("failed", "pause", "failed"),
    ("created", "refresh", "never started"),
    ("refreshing", "refresh", "already in progress"),
]


@pytest.mark.parametrize("before, action, after", LEGAL)
def test_legal_transitions_through_the_api(admin_api, before, action, after):
    pipeline = PipelineFactory(status=before)
    response = admin_api.post(f"/api/pipelines/{pipeline.pk}/{action}/")
    assert response.status_code == 200, response.data
    assert response.data["status"] == after
    pipeline.refresh_from_db()
    assert pipeline.status == after


@pytest.mark.parametrize("before, action, reason", ILLEGAL)
def test_illegal_transitions_through_the_api_are_refused_with_409(admin_api, before, action, reason):
    pipeline = PipelineFactory(status=before)
    response = admin_api.post(f"/api/pipelines/{pipeline.pk}/{action}/")
    assert response.status_code == 409
    assert reason in response.data["detail"]
    pipeline.refresh_from_db()
    assert pipeline.status == before


def test_start_on_a_failed_pipeline_clears_the_error(admin_api):
    pipeline = PipelineFactory(status="failed", last_error="boom")
    admin_api.post(f"/api/pipelines/{pipeline.pk}/start/")
    pipeline.refresh_from_db()
    assert pipeline.last_error == ""


def test_refresh_of_one_table_re_snapshots_only_that_table(admin_api):
    pipeline = PipelineFactory(status="running")
    PipelineTableFactory(pipeline=pipeline, table_name="x", snapshot_state="done")
    PipelineTableFactory(pipeline=pipeline, table_name="y", snapshot_state="done")
    response = admin_api.post(
        f"/api/pipelines/{pipeline.pk}/refresh/", {"tables": ["public.x"]}, format="json"
    )
    assert response.status_code == 200, response.data
    states = dict(pipeline.tables.values_list("table_name", "snapshot_state"))
    assert states == {"x": "pending", "y": "done"}


def test_refresh_of_a_table_the_pipeline_does_not_copy_is_a_400(admin_api):
    pipeline = PipelineFactory(status="running")
    response = admin_api.post(
        f"/api/pipelines/{pipeline.pk}/refresh/", {"tables": ["public.nope"]}, format="json"
    )
    assert response.status_code == 400 and "public.nope" in str(response.data)
    pipeline.refresh_from_db()
    assert pipeline.status == "running"


def test_a_source_or_destination_in_use_cannot_be_deleted(admin_api):
    pipeline = PipelineFactory(name="busy")
    for url in (f"/api/sources/{pipeline.source.pk}/", f"/api/destinations/{pipeline.destination.pk}/"):
        response = admin_api.delete(url)
        assert response.status_code == 409
        assert "busy" in response.data["detail"]
    assert Pipeline.objects.filter(pk=pipeline.pk).exists()


def test_pipeline_runs_are_read_only_and_filterable(admin_api):
    run = PipelineRunFactory()
    PipelineRunFactory()
    listed = admin_api.get(f"/api/pipeline-runs/?pipeline={run.pipeline.pk}")
    assert [row["id"] for row in listed.data["results"]] == [run.pk]
    assert admin_api.post("/api/pipeline-runs/", {}, format="json").status_code == 405
    assert admin_api.delete(f"/api/pipeline-runs/{run.pk}/").status_code == 405


def test_transitions_need_the_change_permission(django_user_model):
    user = django_user_model.objects.create_user("viewer", password="x")
    user.user_permissions.add(Permission.objects.get(codename="view_pipeline"))
    client = APIClient()
    client.force_authenticate(user)
    pipeline = PipelineFactory()
    assert client.get(f"/api/pipelines/{pipeline.pk}/").status_code == 200
    assert client.post(f"/api/pipelines/{pipeline.pk}/start/").status_code == 403
    pipeline.refresh_from_db()
    assert pipeline.status == "created"


def test_the_schema_change_policy_defaults_to_fail_and_can_be_set_to_recopy(admin_api):
    pipeline = PipelineFactory()
    response = admin_api.get(f"/api/pipelines/{pipeline.pk}/")
    assert response.data["on_incompatible_schema_change"] == "fail"
    response = admin_api.patch(
        f"/api/pipelines/{pipeline.pk}/", {"on_incompatible_schema_change": "recopy"}, format="json"
    )
    assert response.status_code == 200, response.data
    pipeline.refresh_from_db()
    assert pipeline.on_incompatible_schema_change == Pipeline.SchemaChangePolicy.RECOPY


def test_an_unknown_schema_change_policy_is_refused_naming_the_field(admin_api):
    pipeline = PipelineFactory()
    response = admin_api.patch(
        f"/api/pipelines/{pipeline.pk}/", {"on_incompatible_schema_change": "ignore"}, format="json"
    )
    assert response.status_code == 400 and "on_incompatible_schema_change" in response.data
    pipeline.refresh_from_db()
    assert pipeline.on_incompatible_schema_change == "fail"
