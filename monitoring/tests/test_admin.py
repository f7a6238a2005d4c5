"""What an operator sees in the admin: health on the source list, the WAL panel, fast metric lists."""

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring.models import AlertEvent, SlotMetric, WalMetric
from monitoring.services import probe_sources
from sources.tests.factories import SourceFactory

from .conftest import create_slot, generate_wal

MB = 1024 * 1024


@pytest.mark.django_db(transaction=True)
def test_the_source_list_shows_health_and_largest_retained_wal(admin_browser, make_source):
    watched = make_source(name="watched", wal_warn_bytes=1 * MB, wal_critical_bytes=2 * MB)
    create_slot(watched.conn, watched.slot_name)
    generate_wal(watched.conn, 2 * MB)
    calm = make_source(name="calm")
    probe_sources([watched, calm])
    SourceFactory(name="never-probed")

    page = admin_browser.get("/admin/sources/source/").content.decode()
    rows = {name: row for row in page.split("<tr")[1:] for name in re.findall(r">([a-z-]+)</a></th>", row)}
    assert ">critical<" in rows["watched"]
    assert re.search(rf"\d(\.\d)? MB \({watched.slot_name}\)", rows["watched"])
    assert ">ok<" in rows["calm"]
    assert ">unknown<" in rows["never-probed"]


@pytest.mark.django_db(transaction=True)
def test_the_source_page_shows_wal_size_slots_forecast_and_charts(admin_browser, make_source):
    source = make_source(wal_warn_bytes=1 * MB, wal_critical_bytes=100 * MB, pg_password="panel-secret-pw")
    create_slot(source.conn, source.slot_name)
    probe_sources([source])
    generate_wal(source.conn, 2 * MB)
    probe_sources([source])

    for minutes in range(5, 65, 5):  # an hour of earlier history, one probe per 5 minutes
        at = timezone.now() - dt.timedelta(minutes=minutes)
        WalMetric.objects.create(source=source, probed_at=at, wal_dir_bytes=32 * MB)
        SlotMetric.objects.create(source=source, probed_at=at, slot_name=source.slot_name, retained_bytes=MB)

    page = admin_browser.get(f"/admin/sources/source/{source.pk}/change/").content.decode()
    panel = page[page.index('class="rosetta-wal-panel"') :]
    assert "WAL directory (pg_wal)" in panel and " segments" in panel
    assert f"<strong>{source.slot_name}</strong> (this source's slot)" in panel
    assert "% of 100 MB" in panel and "warning 1 MB, critical 100 MB" in panel
    assert "Reaches the critical threshold (100 MB) in" in panel
    assert (
        panel.count('<svg xmlns="http://www.w3.org/2000/svg" width="760"') == 2
        and "Last 24 hours" in panel
        and "Last 7 days" in panel
    )
    assert f"slot {source.slot_name}" in panel  # a chart series per slot
    chart_24h = panel[panel.index("Last 24 hours") : panel.index("Last 7 days")]
    assert chart_24h.count("<polyline") == 2  # WAL directory and the slot, each a line
    assert "warn 1 MB" in chart_24h and "critical 100 MB" in chart_24h  # threshold lines
    assert "panel-secret-pw" not in page


def insert_wal_metrics(source, count: int) -> None:
    """`count` probes of `source`, one a second going back, the nth with wal_dir_bytes = n."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO monitoring_walmetric (source_id, probed_at, resolution, probes, ok, error, warnings, "
            "duration_ms, in_recovery, wal_dir_bytes, heartbeat_lsn) "
            "SELECT %s, now() - make_interval(secs => g), 'raw', 1, true, '', '[]', 1, false, g, '' "
            "FROM generate_series(1, %s) g",
            [source.pk, count],
        )
        cursor.execute("ANALYZE monitoring_walmetric")


@pytest.mark.django_db
def test_metric_changelists_never_count_every_row(admin_browser):
    source = SourceFactory()
    insert_wal_metrics(source, 30000)
    for url in [
        "/admin/monitoring/walmetric/",
        f"/admin/monitoring/walmetric/?source__id__exact={source.pk}",
        "/admin/monitoring/slotmetric/",
    ]:
        with CaptureQueriesContext(connection) as captured:
            response = admin_browser.get(url)
        assert response.status_code == 200
        counts = [query["sql"] for query in captured.captured_queries if "COUNT(" in query["sql"].upper()]
        assert all("LIMIT" in sql.upper() for sql in counts), counts
    unfiltered = admin_browser.get("/admin/monitoring/walmetric/").content.decode()
    assert re.search(r"\b(29|30|31)\d{3} WAL metrics", unfiltered)  # PostgreSQL's estimate


@pytest.mark.django_db
def test_a_filtered_metric_list_pages_past_the_first_ten_thousand_rows(admin_browser):
    """The metric lists share the run lists' paginator (rosetta/pagination.py): beyond the
    exact range a filtered list is estimated, not cut off at 10,000 rows."""
    source, other = SourceFactory(), SourceFactory()
    insert_wal_metrics(source, 12000)
    insert_wal_metrics(other, 10)
    # Newest first, 100 a page: page 115 holds the probes 11,401 to 11,500 seconds old.
    response = admin_browser.get(f"/admin/monitoring/walmetric/?source__id__exact={source.pk}&p=115")
    assert response.status_code == 200
    page = response.content.decode()
    assert "11.1 kB" in page  # wal_dir_bytes 11,401..11,500 (11.1 kB to 11.2 kB)


@pytest.mark.django_db
def test_alert_events_have_a_filtered_admin(admin_browser):
    source = SourceFactory()
    for level, message in [("warn", "getting full"), ("critical", "nearly full")]:
        AlertEvent.objects.create(
            source=source, condition="retained_wal", previous_level="ok", level=level, message=message
        )
    page = admin_browser.get("/admin/monitoring/alertevent/?level__exact=critical").content.decode()
    assert "nearly full" in page and "getting full" not in page
    assert "By condition" in page and "By level" in page
    event = AlertEvent.objects.get(level="critical")
    detail = admin_browser.get(f"/admin/monitoring/alertevent/{event.pk}/change/").content.decode()
    assert "nearly full" in detail and 'name="_save"' not in detail  # a record, not editable


@pytest.mark.django_db(transaction=True)
def test_probe_wal_now_action_reports_each_source(admin_browser, make_source, make_role):
    role = make_role()
    source = make_source(pg_username=role)
    response = admin_browser.post(
        "/admin/sources/source/", {"action": "probe_wal_now", "_selected_action": [source.pk]}, follow=True
    )
    text = response.content.decode()
    assert f"{source.name[0].upper()}{source.name[1:]}: WAL directory n/a; slots:" in text
    assert f"GRANT pg_monitor TO {role};" in text
    assert WalMetric.objects.filter(source=source, ok=True).count() == 1


def test_no_probe_is_older_than_the_stale_window_for_a_fresh_source():
    # Guard for the badge logic: a source probed just now is never "unknown" because of age.
    from monitoring.selectors import health_of

    class Probed:
        wal_last_probe_at = timezone.now() - dt.timedelta(seconds=5)
        wal_last_probe_ok = True
        wal_worst_alert_rank = 0

    assert health_of(Probed()) == "ok"
    Probed.wal_last_probe_at = timezone.now() - dt.timedelta(hours=2)
    assert health_of(Probed()) == "unknown"
