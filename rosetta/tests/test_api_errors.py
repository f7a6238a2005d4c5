"""One error shape: every 4xx/5xx under /api/ is a JSON object, with field errors where a field is at fault."""

import pytest
from django.test import override_settings
from django.urls import path

from pipelines.models import Pipeline, PipelineTable
from pipelines.tests.factories import PipelineFactory, PipelineTableFactory
from rosetta import urls as project_urls
from sources.tests.factories import SourceFactory


def broken_view(request):
    raise RuntimeError("something broke")


urlpatterns = [path("api/broken/", broken_view), *project_urls.urlpatterns]


@pytest.fixture
def pipeline(db):
    pipeline = PipelineFactory(status=Pipeline.Status.RUNNING)
    for name in ("orders", "customers"):
        PipelineTableFactory(
            pipeline=pipeline, table_name=name, snapshot_state=PipelineTable.SnapshotState.DONE
        )
    return pipeline


def test_refresh_refuses_an_unknown_key_and_names_it(admin_api, pipeline):
    response = admin_api.post(
        f"/api/pipelines/{pipeline.pk}/refresh/", {"table": ["public.orders"]}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"table": ["Unknown field."]}
    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.RUNNING
    assert set(pipeline.tables.values_list("snapshot_state", flat=True)) == {PipelineTable.SnapshotState.DONE}


@pytest.mark.parametrize("action", ["start", "pause"])
def test_actions_without_a_body_refuse_any_key(admin_api, pipeline, action):
    response = admin_api.post(f"/api/pipelines/{pipeline.pk}/{action}/", {"force": True}, format="json")
    assert response.status_code == 400
    assert response.json() == {"force": ["Unknown field."]}


def test_source_test_connection_refuses_an_unknown_key(admin_api, db):
    source = SourceFactory()
    response = admin_api.post(f"/api/sources/{source.pk}/test-connection/", {"timeout": 1}, format="json")
    assert response.status_code == 400
    assert response.json() == {"timeout": ["Unknown field."]}


def test_delete_refuses_a_boolean_that_is_neither_true_nor_false(admin_api, pipeline):
    response = admin_api.delete(f"/api/pipelines/{pipeline.pk}/?drop_slot=maybe")
    assert response.status_code == 400
    assert "drop_slot" in response.json()
    assert Pipeline.objects.filter(pk=pipeline.pk).exists()


@pytest.mark.parametrize("debug", [False, True])
def test_an_oversized_body_is_413_in_json(admin_api, pipeline, settings, debug):
    settings.DEBUG = debug
    body = b'{"tables": ["' + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + b'"]}'
    response = admin_api.generic(
        "POST", f"/api/pipelines/{pipeline.pk}/refresh/", body, content_type="application/json"
    )
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert "too large" in response.json()["detail"]


@pytest.mark.parametrize("debug", [False, True])
def test_an_unknown_api_url_is_a_json_404(admin_api, settings, debug):
    settings.DEBUG = debug
    response = admin_api.get("/api/no-such-thing/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"]


@pytest.mark.parametrize("debug", [False, True])
def test_a_server_error_under_the_api_is_a_json_500(admin_api, settings, debug):
    settings.DEBUG = debug
    admin_api.raise_request_exception = False
    with override_settings(ROOT_URLCONF=__name__):
        response = admin_api.get("/api/broken/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert "something broke" not in response.content.decode()


def test_a_nul_character_in_search_answers_an_error_object(admin_api, db):
    response = admin_api.get("/api/pipelines/?search=%00")
    assert response.status_code == 400
    assert isinstance(response.json(), dict)
    assert "search" in response.json()


def test_pages_outside_the_api_keep_djangos_own_404(client, db):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("url", ["/api/wal-metrics/", "/api/slot-metrics/", "/api/alerts/"])
def test_a_time_filter_with_an_offset_postgresql_refuses_is_compared_in_utc(admin_api, db, url):
    # Found by the API fuzz test: ISO 8601 allows -23:22, PostgreSQL only up to ±15:59.
    response = admin_api.get(url, {"since": "1686-03-02T03:16:58.699-23:22"})
    assert response.status_code == 200, response.content[:300]


def test_a_browser_asking_for_html_still_gets_the_error_object(admin_api, db):
    response = admin_api.get("/api/pipelines/999999/", HTTP_ACCEPT="text/html")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "No Pipeline matches the given query."}
