"""The run list in the admin at scale: one pipeline's runs without listing every pipeline."""

import pytest

from pipelines.tests.factories import PipelineFactory, PipelineRunFactory

pytestmark = pytest.mark.django_db


def test_all_runs_of_a_pipeline_shows_only_its_runs(admin_browser):
    mine, other = PipelineFactory(name="mine-pipeline"), PipelineFactory(name="other-pipeline")
    PipelineRunFactory(pipeline=mine, error="mine failed once")
    PipelineRunFactory(pipeline=other, error="other failed once")

    page = admin_browser.get(f"/admin/pipelines/pipelinerun/?pipeline__id__exact={mine.pk}")
    assert page.status_code == 200
    text = page.content.decode()
    assert "mine failed once" in text
    assert "other failed once" not in text


def test_the_run_list_does_not_offer_every_pipeline_as_a_filter_choice(admin_browser):
    PipelineRunFactory(pipeline=PipelineFactory(name="listed-nowhere"), error="")
    text = admin_browser.get("/admin/pipelines/pipelinerun/?outcome__exact=failed").content.decode()
    assert "listed-nowhere" not in text
