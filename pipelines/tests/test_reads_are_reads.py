"""Reads are reads: showing a pipeline (API detail and list, admin page) returns the stored
figures without connecting to the source or writing anything; measuring the lag live is
an explicit POST (and an admin button)."""

import socket
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from pipelines import services
from pipelines.models import Pipeline
from pipelines.tests.factories import PipelineFactory
from sources.tests.factories import SourceFactory

from .test_end_to_end import create_tables, insert_orders


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers: a connection attempt to it
    hangs until the client's timeout (ROSETTA_CONNECT_TIMEOUT, 5 s)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


def writes(queries) -> list[str]:
    return [
        q["sql"] for q in queries if q["sql"].lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE")
    ]


@pytest.mark.django_db
def test_showing_a_pipeline_whose_source_hangs_is_fast_and_writes_nothing(
    admin_api, admin_browser, silent_server
):
    source = SourceFactory(pg_port=silent_server)
    pipeline = PipelineFactory(
        source=source, status=Pipeline.Status.RUNNING, lag_bytes=1234, lag_measured_at=timezone.now()
    )
    before = Pipeline.objects.filter(pk=pipeline.pk).values().get()

    for url in (
        f"/api/pipelines/{pipeline.pk}/",
        "/api/pipelines/",
        reverse("admin:pipelines_pipeline_change", args=[pipeline.pk]),
        reverse("admin:pipelines_pipeline_changelist"),
    ):
        client = admin_browser if url.startswith("/admin") else admin_api
        started = time.monotonic()
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200, url
        assert time.monotonic() - started < 2, f"{url} waited for the source"
        assert writes(queries) == [], url

    body = admin_api.get(f"/api/pipelines/{pipeline.pk}/").json()
    assert body["lag_bytes"] == 1234 and "lag_error" not in body
    assert Pipeline.objects.filter(pk=pipeline.pk).values().get() == before


@pytest.mark.django_db
def test_measuring_the_lag_of_a_source_that_hangs_says_why_and_keeps_the_figures(admin_api, silent_server):
    pipeline = PipelineFactory(source=SourceFactory(pg_port=silent_server), lag_bytes=1234)

    response = admin_api.post(f"/api/pipelines/{pipeline.pk}/measure-lag/")

    assert response.status_code == 503
    assert "not measured" in response.json()["detail"]
    assert Pipeline.objects.get(pk=pipeline.pk).lag_bytes == 1234


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_measure_lag_reads_the_source_and_a_get_then_shows_it(
    admin_api, admin_browser, source_db, make_pipeline
):
    create_tables(source_db)
    pipeline = make_pipeline(["public.orders"])
    services.run_pipeline(pipeline)
    stored = Pipeline.objects.get(pk=pipeline.pk).lag_bytes
    insert_orders(source_db, range(1, 300))

    with CaptureQueriesContext(connection) as queries:
        assert admin_api.get(f"/api/pipelines/{pipeline.pk}/").json()["lag_bytes"] == stored
    assert writes(queries) == []

    body = admin_api.post(f"/api/pipelines/{pipeline.pk}/measure-lag/").json()
    assert body["lag_bytes"] > 10_000
    assert admin_api.get(f"/api/pipelines/{pipeline.pk}/").json()["lag_bytes"] == body["lag_bytes"]

    url = reverse("admin:pipelines_pipeline_act", args=[pipeline.pk, "measure_lag"])
    assert "Measure lag" in admin_browser.get(url).content.decode()
    response = admin_browser.post(url, follow=True)
    assert "bytes of WAL behind its source" in response.content.decode()


@pytest.mark.django_db
def test_the_old_batch_size_field_is_refused_naming_its_new_name(admin_api):
    pipeline = PipelineFactory()

    response = admin_api.patch(f"/api/pipelines/{pipeline.pk}/", {"batch_size": 5000}, format="json")

    assert response.status_code == 400
    assert "max_changes_per_transaction" in str(response.data["batch_size"])
    response = admin_api.patch(
        f"/api/pipelines/{pipeline.pk}/", {"max_changes_per_transaction": 5000}, format="json"
    )
    assert response.status_code == 200 and response.json()["max_changes_per_transaction"] == 5000
