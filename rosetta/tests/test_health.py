"""/api/health/ reports each component separately and is 503 when any is down."""

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from conftest import TEST_BROKER_URL, TEST_ENCRYPTION_KEY
from monitoring.models import WalMetric
from rosetta import heartbeat
from rosetta.models import Heartbeat
from sources.tests.factories import SourceFactory

ROOT = Path(__file__).resolve().parents[2]


def get_health():
    response = APIClient().get("/api/health/")
    return response.status_code, response.json()


@pytest.mark.django_db
def test_health_is_503_naming_the_worker_when_no_worker_was_ever_seen():
    heartbeat.record("beat")
    status, body = get_health()
    assert status == 503
    assert body["worker"] == "down (no worker has ever been seen)"
    assert body["beat"] == "ok"
    assert body["database"] == "ok"


@pytest.mark.django_db
def test_health_is_503_when_the_workers_heartbeat_is_older_than_the_stale_window(settings):
    heartbeat.record("beat")
    heartbeat.record("worker")
    Heartbeat.objects.filter(component="worker").update(
        seen_at=timezone.now() - timedelta(seconds=settings.ROSETTA_HEARTBEAT_STALE_SECONDS + 5)
    )
    status, body = get_health()
    assert status == 503
    assert body["worker"].startswith("down (last seen ")


@pytest.mark.django_db
def test_health_is_503_when_beat_was_never_seen():
    heartbeat.record("worker")
    status, body = get_health()
    assert status == 503
    assert body["beat"] == "down (no beat has ever been seen)"


@pytest.mark.django_db
def test_health_is_503_when_a_source_has_no_recent_probe(settings):
    heartbeat.record("worker")
    heartbeat.record("beat")
    old = timezone.now() - timedelta(seconds=settings.ROSETTA_PROBE_STALE_SECONDS + 60)
    probed, stale = SourceFactory(), SourceFactory()
    from sources.models import Source

    Source.objects.filter(pk__in=[probed.pk, stale.pk]).update(created_at=old)
    WalMetric.objects.create(source=probed)
    WalMetric.objects.create(source=stale, probed_at=old)
    status, body = get_health()
    assert status == 503
    assert body["probes"] == f"stale (1 source(s) not probed in {settings.ROSETTA_PROBE_STALE_SECONDS} s)"


@pytest.mark.django_db
def test_csv_and_http_sources_which_the_probe_skips_never_make_probes_stale(settings):
    heartbeat.record("worker")
    heartbeat.record("beat")
    old = timezone.now() - timedelta(seconds=settings.ROSETTA_PROBE_STALE_SECONDS + 60)
    from sources.models import Source

    exports = Source.objects.create(name="exports", kind="csv", settings={"path": "/data/*.csv"})
    api = Source.objects.create(name="reviews", kind="http_json", settings={"url": "http://127.0.0.1/r"})
    Source.objects.filter(pk__in=[exports.pk, api.pk]).update(created_at=old)
    status, body = get_health()
    assert (status, body["probes"]) == (200, "ok"), body


def _start(args, log_path, db_name, port):
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/{db_name}",
        "CELERY_BROKER_URL": TEST_BROKER_URL,
        "ROSETTA_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "CONN_MAX_AGE": "0",
    }
    log = log_path.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "rosetta", *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_for(predicate, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def test_health_turns_ok_with_a_real_worker_and_beat_and_503_once_the_worker_stops(
    celery_worker, pg_cluster, tmp_path, settings
):
    db_name = settings.DATABASES["default"]["NAME"]
    beat = _start(
        ["beat", "--loglevel=INFO", "--schedule", str(tmp_path / "beat-schedule")],
        tmp_path / "beat.log",
        db_name,
        pg_cluster.port,
    )
    try:
        assert _wait_for(lambda: Heartbeat.objects.filter(component="beat").exists()), (
            tmp_path / "beat.log"
        ).read_text()[-2000:]
        # The worker recorded its heartbeat when it became ready.
        assert Heartbeat.objects.filter(component="worker").exists()
        status, body = get_health()
        assert (status, body["worker"], body["beat"]) == (200, "ok", "ok"), body
        celery_worker.terminate()
        celery_worker.wait(timeout=10)
        # Stopped: once its heartbeat is older than the window, health says so.
        settings.ROSETTA_HEARTBEAT_STALE_SECONDS = 2
        time.sleep(2.5)
        Heartbeat.objects.filter(component="beat").update(seen_at=timezone.now())
        status, body = get_health()
        assert status == 503
        assert body["worker"].startswith("down (last seen")
        assert body["beat"] == "ok"
    finally:
        beat.terminate()
        beat.wait(timeout=10)
