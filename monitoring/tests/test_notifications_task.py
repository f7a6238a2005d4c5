"""Notifications go out from their own task on a real worker: a webhook that hangs never holds up a tick."""

import time

import pytest

from monitoring.models import AlertEvent
from monitoring.services import probe_sources
from rosetta.celery import app

from .conftest import create_slot, generate_wal

MB = 1024 * 1024


@pytest.fixture
def hanging_webhook(webhook, monkeypatch, monitoring_settings):
    """The webhook answers after 6 s; the worker (started after this) waits up to 30 s for it."""
    webhook.stall_seconds = 6
    monitoring_settings.ROSETTA_ALERT_WEBHOOK_TIMEOUT = 30
    monkeypatch.setenv("ROSETTA_ALERT_WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("ROSETTA_ALERT_WEBHOOK_TIMEOUT", "30")
    monkeypatch.setenv("ROSETTA_ALERT_EMAILS", "ops@example.com")
    app.conf.task_always_eager = False  # restored by the notifications_inline fixture
    return webhook


@pytest.mark.celery_worker
def test_a_hanging_webhook_never_delays_the_probe_tick(hanging_webhook, celery_worker, make_source):
    source = make_source(wal_warn_bytes=1 * MB, wal_critical_bytes=20 * MB)
    create_slot(source.conn, source.slot_name)
    generate_wal(source.conn, 1 * MB + 100_000)

    started = time.monotonic()
    (metric,) = probe_sources([source])
    probe_sources([source])
    assert time.monotonic() - started < 4  # two ticks, while the worker waits on the webhook
    assert metric.ok
    event = AlertEvent.objects.get(source=source)
    assert event.notified_at is None

    deadline = time.monotonic() + 30
    while AlertEvent.objects.get(pk=event.pk).notified_at is None:
        assert time.monotonic() < deadline, celery_worker.log_path.read_text()[-3000:]
        time.sleep(0.2)
    assert len(hanging_webhook.requests) == 1
    assert hanging_webhook.requests[0]["rosetta"]["level"] == "warn"
