"""The WAL API: history filtered by source and time, alerts, the source's WAL state, probe now."""

import datetime as dt

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from monitoring.models import AlertEvent, SlotMetric, WalMetric
from sources.tests.factories import SourceFactory

from .conftest import create_slot, generate_wal

MB = 1024 * 1024


def metrics_for(source, minutes):
    now = timezone.now()
    for minute in minutes:
        at = now - dt.timedelta(minutes=minute)
        WalMetric.objects.create(source=source, probed_at=at, wal_dir_bytes=minute * MB, lsn_position=minute)
        SlotMetric.objects.create(source=source, probed_at=at, slot_name="slot_a", retained_bytes=minute)
        SlotMetric.objects.create(source=source, probed_at=at, slot_name="slot_b", retained_bytes=2 * minute)
    return now


@pytest.mark.django_db
def test_wal_metrics_are_filtered_by_source_and_time_and_ordered_by_time(admin_api):
    source, other = SourceFactory(), SourceFactory()
    now = metrics_for(source, [50, 40, 30, 20, 10])
    metrics_for(other, [35])
    since = (now - dt.timedelta(minutes=45)).isoformat()
    until = (now - dt.timedelta(minutes=15)).isoformat()

    response = admin_api.get("/api/wal-metrics/", {"source": source.pk, "since": since, "until": until})
    assert response.status_code == 200
    rows = response.data["results"]
    assert [row["wal_dir_bytes"] for row in rows] == [40 * MB, 30 * MB, 20 * MB]
    assert rows[0]["source_name"] == source.name and rows[0]["current_lsn"] == "0/28"

    newest_first = admin_api.get("/api/wal-metrics/", {"source_name": source.name, "ordering": "-probed_at"})
    assert [row["wal_dir_bytes"] for row in newest_first.data["results"]][:2] == [10 * MB, 20 * MB]


@pytest.mark.django_db
def test_metric_lists_page_with_a_cursor_without_counting_rows(admin_api):
    source = SourceFactory()
    metrics_for(source, range(1, 31))
    with CaptureQueriesContext(connection) as captured:
        first = admin_api.get(
            "/api/slot-metrics/", {"source": source.pk, "slot_name": "slot_b", "page_size": 10}
        )
    assert not any("COUNT(" in query["sql"].upper() for query in captured.captured_queries)
    assert len(captured) <= 4
    assert [row["retained_bytes"] for row in first.data["results"]] == [60 - 2 * i for i in range(10)]
    second = admin_api.get(first.data["next"])
    assert [row["retained_bytes"] for row in second.data["results"]] == [40 - 2 * i for i in range(10)]
    assert {row["slot_name"] for row in second.data["results"]} == {"slot_b"}


@pytest.mark.django_db
def test_alerts_are_listed_newest_first_and_filtered_by_level(admin_api):
    source = SourceFactory()
    for minutes, (previous, level) in zip(
        [30, 20, 10], [("ok", "warn"), ("warn", "critical"), ("critical", "ok")], strict=False
    ):
        AlertEvent.objects.create(
            source=source,
            created_at=timezone.now() - dt.timedelta(minutes=minutes),
            condition="retained_wal",
            previous_level=previous,
            level=level,
            message=f"to {level}",
        )
    response = admin_api.get("/api/alerts/")
    assert [row["level"] for row in response.data["results"]] == ["ok", "critical", "warn"]
    critical = admin_api.get("/api/alerts/", {"level": "critical", "source": source.pk})
    assert [row["message"] for row in critical.data["results"]] == ["to critical"]


@pytest.mark.django_db(transaction=True)
def test_the_source_wal_endpoint_shows_slots_thresholds_forecast_and_health(admin_api, make_source):
    source = make_source(wal_warn_bytes=1 * MB, wal_critical_bytes=50 * MB, pg_password="")
    unknown = admin_api.get(f"/api/sources/{source.pk}/wal/")
    assert unknown.data["health"] == "unknown" and unknown.data["last_probe"] is None

    create_slot(source.conn, source.slot_name)
    assert admin_api.post(f"/api/sources/{source.pk}/probe/").status_code == 200
    generate_wal(source.conn, 2 * MB)
    response = admin_api.post(f"/api/sources/{source.pk}/probe/")
    assert response.status_code == 200
    state = response.data
    assert state["health"] == "warn"
    assert state["last_probe"]["ok"] and state["last_probe"]["wal_dir_bytes"] > 0
    assert state["last_probe"]["wal_rate_bytes_per_s"] > 0
    (slot,) = state["slots"]
    assert slot["slot_name"] == source.slot_name and slot["is_sources_slot"]
    assert slot["retained_bytes"] >= 2 * MB and slot["level"] == "warn"
    assert slot["percent_of_critical"] == pytest.approx(100 * slot["retained_bytes"] / (50 * MB), abs=0.1)
    assert state["forecast"]["slot_name"] == source.slot_name
    assert state["forecast"]["seconds_to_critical"] > 0
    assert "Reaches the critical threshold (50 MB)" in state["forecast"]["summary"]
    assert state["settings"]["max_slot_wal_keep_size"] == -1
    assert {alert["condition"]: alert["level"] for alert in state["alerts"]}["retained_wal"] == "warn"
    assert (
        admin_api.get(f"/api/sources/{source.pk}/wal/").data["slots"][0]["retained_bytes"]
        == slot["retained_bytes"]
    )
    assert WalMetric.objects.filter(source=source).count() == 2


@pytest.mark.django_db(transaction=True)
def test_probing_needs_the_change_permission_and_never_shows_the_password(django_user_model, make_source):
    source = make_source(pg_password="probe-secret-pw")
    viewer = django_user_model.objects.create_user("viewer", password="x")
    viewer.user_permissions.add(Permission.objects.get(codename="view_source"))
    client = APIClient()
    client.force_authenticate(viewer)

    assert client.post(f"/api/sources/{source.pk}/probe/").status_code == 403
    assert not WalMetric.objects.exists()
    response = client.get(f"/api/sources/{source.pk}/wal/")
    assert response.status_code == 200
    assert b"probe-secret-pw" not in response.content
