"""The admin's front page answers "is anything wrong?": at-risk items first as links,
then every pipeline (status, lag, rows in the last hour, a trend) and every source (WAL
health, largest slot, owned or orphaned)."""

from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from monitoring.models import AlertState, SlotMetric, WalMetric
from pipelines.tests.factories import PipelineFactory, PipelineRunFactory
from rosetta.admin_site import RosettaAdminSite
from sources.tests.factories import SourceFactory

pytestmark = pytest.mark.django_db
GB = 1024**3


def probed(source, *slots, rate=None):
    now = timezone.now()
    WalMetric.objects.create(source=source, probed_at=now, wal_rate_bytes_per_s=rate)
    for name, retained in slots:
        SlotMetric.objects.create(source=source, probed_at=now, slot_name=name, retained_bytes=retained)


def at_risk_section(page: str) -> str:
    return page.split('id="at-risk"')[1].split('id="pipelines"')[0]


def test_the_admin_is_rosettas_own_site_with_the_front_page_as_its_index(admin_browser):
    assert isinstance(admin.site, RosettaAdminSite)
    page = admin_browser.get("/admin/").content.decode()
    assert "<title>Is anything wrong? | Rosetta</title>" in page
    assert 'id="at-risk"' in page
    assert "Django administration" not in page


def test_failed_pipelines_and_critical_sources_come_first_as_links(admin_browser):
    failed = PipelineFactory(name="orders", status="failed", last_error="connection refused")
    PipelineFactory(name="healthy", status="running")
    filling = SourceFactory(name="filling")
    probed(filling, ("slot_big", 6 * GB))
    AlertState.objects.create(source=filling, condition="retained_wal", level="critical")
    section = at_risk_section(admin_browser.get("/admin/").content.decode())
    assert f'<a href="{reverse("admin:pipelines_pipeline_change", args=[failed.pk])}">orders</a>' in section
    assert "connection refused" in section
    assert f'<a href="{reverse("admin:sources_source_change", args=[filling.pk])}">filling</a>' in section
    assert "slot slot_big retains 6 GB" in section
    assert "healthy" not in section


def test_a_slot_reaching_critical_within_a_day_is_flagged_with_the_time_left(admin_browser):
    source = SourceFactory(name="steady", wal_warn_bytes=4 * GB, wal_critical_bytes=5 * GB)
    probed(source, ("slot_growing", 4 * GB), rate=GB / 3600)  # 1 GB an hour, 1 GB to go
    section = at_risk_section(admin_browser.get("/admin/").content.decode())
    assert "slot slot_growing on" in section
    assert "reaches the critical threshold in 1 h" in section


def test_nothing_wrong_says_so(admin_browser):
    PipelineFactory(status="running")
    assert "Nothing is wrong" in at_risk_section(admin_browser.get("/admin/").content.decode())


def test_every_pipeline_shows_status_lag_rows_of_the_last_hour_and_a_trend(admin_browser):
    now = timezone.now()
    pipeline = PipelineFactory(
        name="orders",
        status="running",
        lag_bytes=3 * 1024**2,
        lag_measured_at=now,
        last_applied_commit_at=now - timedelta(seconds=90),
    )
    PipelineRunFactory(
        pipeline=pipeline, started_at=now - timedelta(minutes=5), rows_inserted=1200, rows_updated=34
    )
    PipelineRunFactory(pipeline=pipeline, started_at=now - timedelta(hours=3), rows_inserted=999)
    response = admin_browser.get("/admin/")
    (row,) = response.context["pipeline_rows"]
    assert (row["lag_bytes"], row["lag_time"], row["rows_last_hour"]) == ("3 MB", "1 min 30 s", "1,234")
    assert "<svg" in str(row["trend"]) and "max 1,234" in str(row["trend"])


def test_a_slot_on_a_shared_server_is_named_once_and_said_to_belong_to_no_pipeline(admin_browser):
    sources = [
        SourceFactory(name=f"s{i}", pg_host="db1", pg_port=5432, pg_database=f"d{i}") for i in range(3)
    ]
    for source in sources:
        probed(source, ("forgotten_slot_with_a_long_name", 2 * GB))
    page = admin_browser.get("/admin/").content.decode()
    sources_section = page.split('id="sources"')[1]
    assert sources_section.count("(orphaned: it keeps WAL until dropped)") == 1
    assert sources_section.count("(same server as a source above)") == 2
    assert "forgotten_slot_with_a_long_name" in sources_section


def test_a_slot_read_by_a_pipeline_names_its_pipeline(admin_browser):
    pipeline = PipelineFactory(name="orders", status="running")
    probed(pipeline.source, (pipeline.source.slot_name, GB))
    sources_section = admin_browser.get("/admin/").content.decode().split('id="sources"')[1]
    assert "pipeline orders" in sources_section


def test_the_front_page_runs_the_same_queries_for_few_or_many_pipelines_and_sources(admin_browser):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert admin_browser.get("/admin/").status_code == 200
        return len(captured)

    def add():
        pipeline = PipelineFactory(status="failed", last_error="x")
        PipelineRunFactory(pipeline=pipeline, rows_inserted=5)
        probed(pipeline.source, ("slot", GB))

    add()
    few = queries()
    for _ in range(60):  # more than one page of pipelines
        add()
    assert queries() == few


def test_staff_without_view_permissions_see_the_app_list_but_no_front_page(client, django_user_model):
    staff = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(staff)
    PipelineFactory(name="secret-plans", status="failed")
    page = client.get("/admin/").content.decode()
    assert 'id="at-risk"' not in page and "secret-plans" not in page
    staff.user_permissions.add(
        Permission.objects.get(codename="view_pipeline"), Permission.objects.get(codename="view_source")
    )
    assert "secret-plans" in client.get("/admin/").content.decode()


def probed_lag(source, *unconfirmed_mb, minutes_apart=4):
    """Probes of the source's slot, the oldest first, ending now."""
    now = timezone.now()
    for i, mb in enumerate(reversed(unconfirmed_mb)):
        SlotMetric.objects.create(
            source=source,
            probed_at=now - timedelta(minutes=i * minutes_apart),
            slot_name=source.slot_name,
            retained_bytes=mb * 1024**2,
            unconfirmed_bytes=mb * 1024**2,
        )


def test_a_running_pipeline_whose_lag_keeps_growing_is_flagged_as_falling_behind(admin_browser):
    pipeline = PipelineFactory(name="orders", status="running")
    probed_lag(pipeline.source, 10, 40, 70, 100)  # 30 MB more every 4 minutes
    section = at_risk_section(admin_browser.get("/admin/").content.decode())
    link = f'<a href="{reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])}">orders</a>'
    assert f"pipeline {link} falls behind: its lag grew by about 112.5 MB in the last 15 min" in section


def test_a_pipeline_keeping_up_or_paused_is_not_said_to_fall_behind(admin_browser):
    keeping_up = PipelineFactory(name="keeping-up", status="running")
    probed_lag(keeping_up.source, 50, 2, 60, 1)  # read down to nothing at every run
    paused = PipelineFactory(name="paused-on-purpose", status="paused")
    probed_lag(paused.source, 10, 40, 70, 100)  # the WAL thresholds watch a paused slot
    section = at_risk_section(admin_browser.get("/admin/").content.decode())
    assert "falls behind" not in section
    assert "Nothing is wrong" in section


def test_csv_and_http_sources_are_said_to_have_no_wal_not_to_be_unknown(admin_browser):
    from sources.models import Source

    Source.objects.create(name="exports", kind="csv", settings={"path": "/data/*.csv"})
    PipelineFactory(name="orders", status="running")  # a PostgreSQL source, never probed
    page = admin_browser.get("/admin/").content.decode()
    sources_section = page.split('id="sources"')[1]
    exports_row = sources_section.split(">exports</a>")[1].split("</tr>")[0]
    assert "no WAL" in exports_row and "CSV files: no replication slot" in exports_row
    assert "unknown" not in exports_row and "not probed yet" not in exports_row
    # The source that does need a look comes first.
    assert sources_section.index("not probed yet") < sources_section.index(">exports</a>")


def test_a_lost_slot_is_named_among_the_at_risk_items(admin_browser):
    source = SourceFactory(name="shop")
    AlertState.objects.create(
        key="server:1:slot:rosetta_slot:slot_lost",
        source=source,
        condition="slot_lost",
        slot_name="rosetta_slot",
        level="critical",
    )
    section = at_risk_section(admin_browser.get("/admin/").content.decode())
    link = f'<a href="{reverse("admin:sources_source_change", args=[source.pk])}">shop</a>'
    assert f"slot rosetta_slot on {link} is lost (since " in section
    assert "a pipeline reading it must copy its tables again" in section
