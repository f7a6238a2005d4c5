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
