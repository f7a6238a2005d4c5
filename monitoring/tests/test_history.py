"""Metric history: downsampling keeps hourly maxima, and "last 24 h of source X" stays an index scan."""

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from monitoring.models import Resolution, SlotMetric, WalMetric
from monitoring.services import downsample_metrics
from sources.tests.factories import SourceFactory

pytestmark = pytest.mark.django_db

HOUR = dt.timedelta(hours=1)


def test_downsampling_keeps_the_hourly_maximum_and_leaves_recent_rows_alone(settings):
    settings.ROSETTA_METRICS_FULL_RESOLUTION_DAYS = 7
    settings.ROSETTA_METRICS_HOURLY_RETENTION_DAYS = 30
    source = SourceFactory()
    now = timezone.now()
    old_hour = (now - dt.timedelta(days=8)).replace(minute=0, second=0, microsecond=0)
    for minute, (wal, retained, safe, status, ok) in enumerate(
        [
            (100, 10, 900, "reserved", True),
            (300, 70, 500, "extended", True),  # the hour's maxima (and minimum safe_wal_size)
            (None, None, None, "", False),  # a failed probe: no slot rows
            (200, 30, 700, "reserved", True),
        ]
    ):
        at = old_hour + dt.timedelta(minutes=10 * minute)
        WalMetric.objects.create(
            source=source, probed_at=at, ok=ok, wal_dir_bytes=wal, lsn_position=1000 + minute if ok else None
        )
        if ok:
            SlotMetric.objects.create(
                source=source,
                probed_at=at,
                slot_name="slot_a",
                retained_bytes=retained,
                unconfirmed_bytes=retained // 2,
                safe_wal_size=safe,
                wal_status=status,
            )
    WalMetric.objects.create(source=source, probed_at=old_hour + HOUR, wal_dir_bytes=50)
    recent = WalMetric.objects.create(source=source, probed_at=now - dt.timedelta(days=1), wal_dir_bytes=999)
    ancient = WalMetric.objects.create(
        source=source, probed_at=now - dt.timedelta(days=40), resolution=Resolution.HOURLY, wal_dir_bytes=1
    )

    counts = downsample_metrics(now)

    assert counts == {"wal_rows_merged": 5, "slot_rows_merged": 3, "hourly_rows_deleted": 1}
    hourly = WalMetric.objects.get(source=source, probed_at=old_hour)
    assert hourly.resolution == "hourly" and hourly.probes == 4
    assert hourly.wal_dir_bytes == 300 and hourly.ok is True
    assert hourly.error == "1 of 4 probes failed in this hour."
    assert WalMetric.objects.get(source=source, probed_at=old_hour + HOUR).wal_dir_bytes == 50
    slot = SlotMetric.objects.get(source=source)
    assert (slot.resolution, slot.probed_at) == ("hourly", old_hour)
    assert (slot.retained_bytes, slot.unconfirmed_bytes, slot.safe_wal_size) == (70, 35, 500)
    assert slot.wal_status == "extended"
    assert WalMetric.objects.filter(pk=recent.pk, resolution="raw").exists()
    assert not WalMetric.objects.filter(pk=ancient.pk).exists()

    # Running it again changes nothing.
    assert downsample_metrics(now) == {"wal_rows_merged": 0, "slot_rows_merged": 0, "hourly_rows_deleted": 0}
    assert WalMetric.objects.filter(source=source).count() == 3


def test_last_24_hours_of_one_source_is_an_index_scan():
    sources = [SourceFactory() for _ in range(20)]
    ids = [source.pk for source in sources]
    with connection.cursor() as cursor:
        # 20 sources x 10,000 probes (a week at one a minute) = 200,000 rows.
        cursor.execute(
            """
            INSERT INTO monitoring_walmetric
                (source_id, probed_at, resolution, probes, ok, error, warnings, duration_ms, in_recovery,
                 lsn_position, wal_dir_bytes, heartbeat_lsn)
            SELECT s, now() - make_interval(mins => g), 'raw', 1, true, '', '[]', 5, false,
                   g, 16777216, ''
            FROM unnest(%s::bigint[]) AS s, generate_series(1, 10000) AS g
            """,
            [ids],
        )
        cursor.execute("ANALYZE monitoring_walmetric")
    queryset = WalMetric.objects.filter(
        source=sources[3], probed_at__gte=timezone.now() - dt.timedelta(hours=24)
    ).order_by("probed_at")
    plan = queryset.explain(analyze=True)
    assert "Index Scan" in plan and "walmetric_source_time" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert queryset.count() in (1439, 1440)
