"""The admin overview: pipeline statuses, sources by WAL health, the largest retained WAL."""

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from monitoring.models import AlertEvent, AlertState, SlotMetric, WalMetric
from pipelines.models import Pipeline
from pipelines.tests.factories import PipelineFactory
from sources.tests.factories import SourceFactory

pytestmark = pytest.mark.django_db
GB = 1024**3


def probed(source, *slots, ok=True):
    now = timezone.now()
    WalMetric.objects.create(source=source, probed_at=now, ok=ok, error="" if ok else "timeout")
    for name, retained in slots:
        SlotMetric.objects.create(source=source, probed_at=now, slot_name=name, retained_bytes=retained)


def test_the_overview_counts_pipelines_by_status_and_sources_by_wal_health(admin_browser):
    for status in ["running", "running", "paused", "failed"]:
        PipelineFactory(status=status, last_error="boom: connection refused" if status == "failed" else "")
    healthy, filling = SourceFactory(name="healthy"), SourceFactory(name="filling")
    SourceFactory(name="never-probed")
    probed(healthy, ("slot_a", 10 * 1024**2))
    probed(filling, ("slot_big", 6 * GB), ("slot_small", GB // 2))
    AlertState.objects.create(source=filling, condition="retained_wal", level="critical")
    AlertEvent.objects.create(
        source=filling,
        condition="retained_wal",
        previous_level="ok",
        level="critical",
        message="6.0 GB retained",
    )

    response = admin_browser.get("/admin/overview/")
    assert response.status_code == 200
    statuses = {row["status"]: row["count"] for row in response.context["pipeline_statuses"]}
    assert statuses[Pipeline.Status.RUNNING] == 2
    assert statuses[Pipeline.Status.PAUSED] == 1
    assert statuses[Pipeline.Status.FAILED] == 1
    health = {row["health"]: row["count"] for row in response.context["health"]}
    # never-probed, and each pipeline's own source: never probed, so "unknown".
    assert health == {"critical": 1, "warn": 0, "unknown": 1 + 4, "ok": 1}
    largest = response.context["largest"]
    assert [(row["source"].name, row["slot"]) for row in largest] == [
        ("filling", "slot_big"),
        ("healthy", "slot_a"),
    ]
    page = response.content.decode()
    assert "6.0 GB" in page
    assert "boom: connection refused" in page
    assert "6.0 GB retained" in page


def test_the_admin_index_links_the_overview(admin_browser):
    page = admin_browser.get("/admin/").content.decode()
    assert 'href="/admin/overview/"' in page


def test_the_overview_runs_the_same_queries_for_few_or_many_sources_and_pipelines(admin_browser):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert admin_browser.get("/admin/overview/").status_code == 200
        return len(captured)

    probed(SourceFactory(), ("slot", GB))
    PipelineFactory(status="failed", last_error="x")
    few = queries()
    for _ in range(15):
        probed(SourceFactory(), ("slot", GB))
        PipelineFactory(status="failed", last_error="x")
    assert queries() == few


def test_staff_without_view_permissions_do_not_see_the_overview(client, django_user_model):
    staff = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/overview/").status_code == 403
    staff.user_permissions.add(
        Permission.objects.get(codename="view_pipeline"), Permission.objects.get(codename="view_source")
    )
    assert client.get("/admin/overview/").status_code == 200
