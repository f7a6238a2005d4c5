"""A lost slot reads as lost everywhere; a slot that reserves nothing shows no size; forecasts count from the probe."""

import datetime as dt

import pytest
from django.utils import timezone

from monitoring.models import Resolution, SlotMetric, WalMetric
from monitoring.selectors import source_wal_state
from monitoring.services import downsample_metrics, probe_sources
from pipelines.tests.factories import PipelineFactory
from sources.tests.factories import SourceFactory

from .conftest import create_slot, generate_wal, make_slot_lost, run_sql

MB = 1024 * 1024


@pytest.mark.django_db(transaction=True)
def test_a_lost_slot_shows_no_figures_a_lost_forecast_and_its_pipeline(
    make_source, cluster_setting, admin_api, admin_browser
):
    source = make_source(wal_warn_bytes=1 * MB, wal_critical_bytes=1024**3)
    pipeline = PipelineFactory(source=source, name="orders-to-warehouse")
    create_slot(source.conn, source.slot_name)
    probe_sources([source])
    generate_wal(source.conn, 2 * MB)
    probe_sources([source])  # a growing slot: a growth rate before the loss
    make_slot_lost(source, cluster_setting)
    probe_sources([source])
    lost_probe = WalMetric.objects.filter(source=source).latest("probed_at")

    (slot,) = admin_api.get(f"/api/sources/{source.pk}/wal/").data["slots"]
    assert slot["lost"] is True and slot["wal_status"] == "lost"
    assert slot["retained"] == slot["unconfirmed"] == slot["safe_wal"] == "n/a (lost)"
    assert slot["retained_bytes"] is None and slot["safe_wal_size"] is None
    assert slot["level"] == "critical"
    summary = slot["forecast"]["summary"]
    assert summary.startswith("lost at ") and summary.endswith(": re-copy needed"), summary
    assert "Growing" not in summary
    assert dt.datetime.fromisoformat(slot["forecast"]["lost_at"]) == lost_probe.probed_at
    assert [p["name"] for p in slot["pipelines"]] == ["orders-to-warehouse"]

    page = admin_browser.get(f"/admin/sources/source/{source.pk}/change/").content.decode()
    assert "n/a (lost)" in page and "re-copy needed" in page and "unlimited" not in page
    assert f'href="/admin/pipelines/pipeline/{pipeline.pk}/change/"' in page
    listing = admin_browser.get(
        f"/admin/monitoring/slotmetric/?source__id__exact={source.pk}"
    ).content.decode()
    assert "n/a (lost)" in listing


@pytest.mark.django_db(transaction=True)
def test_a_physical_slot_without_reserved_wal_shows_no_size(make_source, admin_api, cluster_setting):
    cluster_setting("max_slot_wal_keep_size", "64MB")
    source = make_source()
    name = f"phys_{source.pk}"
    run_sql(source.conn, "SELECT pg_create_physical_replication_slot(%s)", [name])
    try:
        probe_sources([source])
        slots = {
            slot["slot_name"]: slot for slot in admin_api.get(f"/api/sources/{source.pk}/wal/").data["slots"]
        }
    finally:
        run_sql(source.conn, "SELECT pg_drop_replication_slot(%s)", [name])
    slot = slots[name]
    assert slot["reserves_wal"] is False
    assert slot["retained"] == "-" and slot["safe_wal"] == "-" and slot["retained_bytes"] is None


@pytest.mark.django_db(transaction=True)
def test_forecast_times_count_from_the_probe_not_from_the_request(make_source):
    source = make_source(wal_warn_bytes=1024**3, wal_critical_bytes=2 * 1024**3)
    create_slot(source.conn, source.slot_name)
    probe_sources([source])
    generate_wal(source.conn, 2 * MB)
    probe_sources([source])
    probed_at = WalMetric.objects.filter(source=source).latest("probed_at").probed_at

    for later in (dt.timedelta(0), dt.timedelta(minutes=50)):
        forecast = source_wal_state(source, now=probed_at + later)["slots"][0]["forecast"]
        assert forecast["seconds_to_critical"] > 0
        critical_at = dt.datetime.fromisoformat(forecast["critical_at"])
        assert abs((critical_at - probed_at).total_seconds() - forecast["seconds_to_critical"]) < 0.01


@pytest.mark.django_db
def test_downsampling_an_hour_that_ended_lost_keeps_lost_and_no_safe_wal_size(settings):
    settings.ROSETTA_METRICS_FULL_RESOLUTION_DAYS = 7
    source = SourceFactory()
    old_hour = (timezone.now() - dt.timedelta(days=8)).replace(minute=0, second=0, microsecond=0)
    for minute, (safe, status) in enumerate([(50 * MB, "reserved"), (10 * MB, "unreserved"), (None, "lost")]):
        at = old_hour + dt.timedelta(minutes=10 * minute)
        WalMetric.objects.create(source=source, probed_at=at, ok=True, lsn_position=1000 + minute)
        SlotMetric.objects.create(
            source=source,
            probed_at=at,
            slot_name="slot_a",
            restart_lsn="" if status == "lost" else "0/10",
            retained_bytes=None if status == "lost" else 20 * MB,
            safe_wal_size=safe,
            wal_status=status,
        )

    downsample_metrics()

    hourly = SlotMetric.objects.get(source=source, resolution=Resolution.HOURLY)
    assert hourly.wal_status == "lost" and hourly.safe_wal_size is None
    assert hourly.display_safe_wal_size == "n/a (lost)"
