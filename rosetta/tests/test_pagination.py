"""Run lists count exactly up to a limit and estimate beyond it, and paging still reaches every run."""

import pytest

from pipelines.tests.factories import PipelineFactory, PipelineRunFactory
from rosetta.pagination import EstimatedCountPaginator

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_exact_range(monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "EXACT_UP_TO", 5)


def test_a_short_run_list_has_an_exact_count_and_page_numbers(admin_api, small_exact_range):
    pipeline = PipelineFactory()
    for _ in range(4):
        PipelineRunFactory(pipeline=pipeline)
    page = admin_api.get("/api/pipeline-runs/?page_size=3").json()
    assert page["count"] == 4
    assert admin_api.get("/api/pipeline-runs/?page_size=3&page=3").status_code == 404


def test_paging_past_the_exact_range_reaches_every_run_once(admin_api, small_exact_range):
    pipeline = PipelineFactory()
    runs = {PipelineRunFactory(pipeline=pipeline).pk for _ in range(12)}
    seen, url, pages = [], "/api/pipeline-runs/?page_size=5", 0
    while url:
        page = admin_api.get(url).json()
        assert page["count"] > 5  # an estimate, never below what the exact range counted
        seen += [run["id"] for run in page["results"]]
        url, pages = page["next"], pages + 1
        assert pages < 10
    assert sorted(seen) == sorted(runs)
    assert pages == 3


def test_a_filtered_run_list_counts_only_the_matching_runs(admin_api, small_exact_range):
    mine, other = PipelineFactory(), PipelineFactory()
    for _ in range(3):
        PipelineRunFactory(pipeline=mine)
    for _ in range(9):
        PipelineRunFactory(pipeline=other)
    page = admin_api.get(f"/api/pipeline-runs/?pipeline={mine.pk}").json()
    assert page["count"] == 3
    assert {run["pipeline"] for run in page["results"]} == {mine.pk}


def test_the_run_admin_pages_through_runs_beyond_the_exact_range(admin_browser, small_exact_range):
    pipeline = PipelineFactory(name="orders-to-duckdb")
    for _ in range(8):
        PipelineRunFactory(pipeline=pipeline)
    response = admin_browser.get("/admin/pipelines/pipelinerun/")
    assert response.status_code == 200
    assert response.content.decode().count("orders-to-duckdb") >= 8
