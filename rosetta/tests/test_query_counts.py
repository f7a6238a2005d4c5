"""Every API list endpoint runs a constant number of queries, whatever the page holds."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from destinations.tests.factories import DestinationFactory
from pipelines.tests.factories import PipelineRunFactory, PipelineTableFactory
from sources.tests.factories import SourceFactory

pytestmark = pytest.mark.django_db


def make_rows(count: int) -> None:
    for _ in range(count):
        table = PipelineTableFactory(
            pipeline__source=SourceFactory(), pipeline__destination=DestinationFactory()
        )
        PipelineTableFactory(pipeline=table.pipeline)
        PipelineRunFactory(pipeline=table.pipeline)


def queries_for(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return len(captured)


ENDPOINTS = ["/api/sources/", "/api/destinations/", "/api/pipelines/", "/api/pipeline-runs/"]


@pytest.mark.parametrize("url", ENDPOINTS)
def test_list_endpoints_run_the_same_queries_for_2_or_20_rows(admin_api, url):
    make_rows(2)
    small = queries_for(admin_api, url)
    make_rows(18)
    large = queries_for(admin_api, url)
    assert small == large, f"{url}: {small} queries for 2 rows, {large} for 20"
    assert large <= 5


def test_a_pipeline_list_page_is_independent_of_the_page_size(admin_api):
    make_rows(30)
    five = admin_api.get("/api/pipelines/?page_size=5")
    assert len(five.data["results"]) == 5
    assert queries_for(admin_api, "/api/pipelines/?page_size=5") == queries_for(
        admin_api, "/api/pipelines/?page_size=30"
    )


def make_history(count: int) -> None:
    """WAL and slot metrics and alert events, each row on its own source (so a missing
    select_related would show as one more query per row)."""
    from django.utils import timezone

    from monitoring.models import AlertEvent, SlotMetric, WalMetric

    for _ in range(count):
        source = SourceFactory()
        now = timezone.now()
        WalMetric.objects.create(source=source, probed_at=now, wal_dir_bytes=1024, lsn_position=4096)
        SlotMetric.objects.create(source=source, probed_at=now, slot_name=source.slot_name, retained_bytes=1)
        AlertEvent.objects.create(
            source=source, condition="retained_wal", previous_level="ok", level="warn", message="WAL grows."
        )


EVERY_LIST_ENDPOINT = [*ENDPOINTS, "/api/wal-metrics/", "/api/slot-metrics/", "/api/alerts/"]


@pytest.mark.parametrize("url", EVERY_LIST_ENDPOINT)
def test_every_list_endpoint_runs_the_same_queries_for_a_page_of_2_or_of_25(admin_api, url):
    make_rows(25)
    make_history(25)
    two = queries_for(admin_api, f"{url}?page_size=2")
    twenty_five = queries_for(admin_api, f"{url}?page_size=25")
    page = admin_api.get(f"{url}?page_size=25").data["results"]
    assert len(page) == 25
    assert two == twenty_five, f"{url}: {two} queries for a page of 2, {twenty_five} for 25"
    assert twenty_five <= 5


@pytest.mark.parametrize("url", ["/api/wal-metrics/", "/api/slot-metrics/", "/api/alerts/"])
def test_history_endpoints_run_the_same_queries_for_2_or_20_rows(admin_api, url):
    make_history(2)
    small = queries_for(admin_api, url)
    make_history(18)
    large = queries_for(admin_api, url)
    assert small == large, f"{url}: {small} queries for 2 rows, {large} for 20"
