"""Small things an operator trips over: seconds on run times, no bulk delete of records,
the last successful probe, a favicon."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring.models import WalMetric
from pipelines.tests.factories import PipelineRunFactory
from sources.tests.factories import SourceFactory

pytestmark = pytest.mark.django_db


def test_run_start_times_show_seconds_so_runs_five_seconds_apart_differ(admin_browser):
    at = timezone.now().replace(microsecond=0)
    PipelineRunFactory(started_at=at)
    PipelineRunFactory(started_at=at + timedelta(seconds=5))
    page = admin_browser.get(reverse("admin:pipelines_pipelinerun_changelist")).content.decode()
    local = timezone.localtime(at)
    assert local.strftime("%Y-%m-%d %H:%M:%S") in page
    assert (local + timedelta(seconds=5)).strftime("%Y-%m-%d %H:%M:%S") in page


@pytest.mark.parametrize(
    "changelist",
    [
        "admin:pipelines_pipelinerun_changelist",
        "admin:monitoring_alertevent_changelist",
        "admin:monitoring_walmetric_changelist",
        "admin:monitoring_slotmetric_changelist",
    ],
)
def test_read_only_lists_offer_no_delete_selected(admin_browser, changelist):
    PipelineRunFactory()
    WalMetric.objects.create(source=SourceFactory())
    page = admin_browser.get(reverse(changelist)).content.decode()
    assert 'value="delete_selected"' not in page


def test_the_last_successful_probe_is_set_after_a_successful_probe(admin_api):
    source = SourceFactory()
    WalMetric.objects.create(source=source, ok=True, duration_ms=12)
    body = admin_api.get(f"/api/sources/{source.pk}/wal/").json()
    assert body["last_successful_probe"] is not None
    assert body["last_successful_probe"] == body["last_probe"]


def test_admin_pages_link_a_favicon_and_favicon_ico_leads_to_it(admin_browser):
    page = admin_browser.get("/admin/").content.decode()
    assert 'rel="icon"' in page and "rosetta/favicon.svg" in page
    response = admin_browser.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("rosetta/favicon.svg")
