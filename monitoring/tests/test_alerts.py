"""Alert levels follow the real slots; each change is notified once, by email and webhook."""

import datetime as dt
import logging
import time

import pytest
from django.core import mail
from django.utils import timezone

from monitoring.models import AlertEvent, AlertState, Condition, SlotMetric
from monitoring.services import probe_sources

from .conftest import create_slot, generate_wal, run_sql

pytestmark = pytest.mark.django_db(transaction=True)

MB = 1024 * 1024


def level(source, condition=Condition.RETAINED_WAL) -> str:
    return AlertState.objects.get(source=source, condition=condition).level


def changes(source, condition=Condition.RETAINED_WAL) -> list[tuple[str, str]]:
    return list(
        AlertEvent.objects.filter(source=source, condition=condition, kind="change")
        .order_by("created_at")
        .values_list("previous_level", "level")
    )


def advance_slot(source) -> None:
    """What a pipeline run does after its destination commit; the checkpoint lets restart_lsn follow."""
    run_sql(source.conn, "CHECKPOINT")
    run_sql(source.conn, "SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", [source.slot_name])


def test_retained_wal_goes_warn_critical_ok_with_one_notification_per_change(make_source, webhook):
    source = make_source(wal_warn_bytes=2 * MB, wal_critical_bytes=6 * MB)
    create_slot(source.conn, source.slot_name)

    probe_sources([source])
    assert level(source) == "ok"
    assert mail.outbox == [] and webhook.requests == []

    generate_wal(source.conn, 2 * MB + 100_000)
    probe_sources([source])
    assert level(source) == "warn"
    assert len(mail.outbox) == 1 and len(webhook.requests) == 1
    email = mail.outbox[0]
    assert email.to == ["ops@example.com"]
    assert email.subject == f"[Rosetta] {source.name}: retained WAL over threshold WARN (was OK)"
    assert f"Slot {source.slot_name} retains" in email.body
    assert "Reaches the critical threshold (6 MB) in" in email.body
    assert webhook.requests[0]["text"].startswith(f"*{email.subject}*")
    assert webhook.requests[0]["rosetta"]["level"] == "warn"
    event = AlertEvent.objects.get(source=source, level="warn")
    assert event.forecast_seconds > 0 and event.slot_name == source.slot_name
    assert event.notified_at is not None and event.value_bytes >= 2 * MB

    probe_sources([source])  # still warn: nothing new
    assert len(mail.outbox) == 1 and len(webhook.requests) == 1

    generate_wal(source.conn, 4 * MB)
    probe_sources([source])
    assert level(source) == "critical"
    assert len(mail.outbox) == 2 and len(webhook.requests) == 2
    assert "CRITICAL (was WARN)" in mail.outbox[1].subject
    assert "Already over the critical threshold" in mail.outbox[1].body

    advance_slot(source)
    probe_sources([source])
    assert level(source) == "ok"
    assert len(mail.outbox) == 3 and len(webhook.requests) == 3
    assert "back to OK (was CRITICAL)" in mail.outbox[2].subject
    assert changes(source) == [("ok", "warn"), ("warn", "critical"), ("critical", "ok")]

    probe_sources([source])
    assert len(mail.outbox) == 3 and len(webhook.requests) == 3


def test_dropping_the_slot_clears_the_alert(make_source):
    source = make_source(wal_warn_bytes=1 * MB, wal_critical_bytes=2 * MB)
    create_slot(source.conn, source.slot_name)
    generate_wal(source.conn, 2 * MB)
    probe_sources([source])
    assert level(source) == "critical"

    run_sql(source.conn, "SELECT pg_drop_replication_slot(%s)", [source.slot_name])
    probe_sources([source])
    assert level(source) == "ok"
    assert changes(source) == [("ok", "critical"), ("critical", "ok")]
    assert len(mail.outbox) == 2


def test_a_bad_state_is_notified_again_after_the_repeat_interval_only(make_source, settings):
    settings.ROSETTA_ALERT_REPEAT_MINUTES = 30
    source = make_source(wal_warn_bytes=1 * MB, wal_critical_bytes=2 * MB)
    create_slot(source.conn, source.slot_name)
    generate_wal(source.conn, 2 * MB)
    probe_sources([source])
    probe_sources([source])
    assert len(mail.outbox) == 1

    # 31 minutes later, still critical: one reminder, and not another one right after.
    AlertState.objects.filter(source=source, condition=Condition.RETAINED_WAL).update(
        last_event_at=timezone.now() - dt.timedelta(minutes=31)
    )
    probe_sources([source])
    probe_sources([source])
    assert len(mail.outbox) == 2
    assert "still CRITICAL" in mail.outbox[1].subject
    reminder = AlertEvent.objects.get(source=source, kind="reminder")
    assert (reminder.previous_level, reminder.level) == ("critical", "critical")


def test_a_failing_webhook_and_mail_server_are_retried_and_never_break_the_probe(
    make_source, webhook, refusing_port, settings, caplog
):
    settings.ROSETTA_ALERT_RETRY_SECONDS = 0
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", refusing_port, 2
    webhook.fail_next = 1
    source = make_source(wal_warn_bytes=1 * MB, wal_critical_bytes=20 * MB)
    create_slot(source.conn, source.slot_name)
    generate_wal(source.conn, 1 * MB + 100_000)

    with caplog.at_level(logging.WARNING, logger="monitoring"):
        (metric,) = probe_sources([source])
    assert metric.ok and level(source) == "warn"
    event = AlertEvent.objects.get(source=source)
    assert event.notified_at is None and event.notify_attempts == 1
    assert "webhook: the webhook answered HTTP 500" in event.notify_error
    assert "email: ConnectionRefusedError" in event.notify_error
    assert "Notifying alert" in caplog.text
    assert "secret-token-xyz" not in caplog.text + event.notify_error

    # The mail server is back; the next probe retries both channels once.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    probe_sources([source])
    event.refresh_from_db()
    assert event.notified_at is not None and event.notify_attempts == 2 and event.notify_error == ""
    assert len(webhook.requests) == 2 and len(mail.outbox) == 1

    probe_sources([source])
    assert len(webhook.requests) == 2 and len(mail.outbox) == 1


def test_a_webhook_that_does_not_answer_times_out(make_source, webhook):
    webhook.stall_seconds = 3  # ROSETTA_ALERT_WEBHOOK_TIMEOUT is 1 s in these tests
    source = make_source(wal_warn_bytes=1 * MB, wal_critical_bytes=20 * MB)
    create_slot(source.conn, source.slot_name)
    generate_wal(source.conn, 1 * MB + 100_000)

    started = time.monotonic()
    (metric,) = probe_sources([source])
    assert time.monotonic() - started < 2.5
    assert metric.ok
    event = AlertEvent.objects.get(source=source)
    assert event.notify_error == "webhook: the webhook did not answer within 1 s"
    assert event.email_sent_at is not None and len(mail.outbox) == 1


def test_a_slot_inactive_for_longer_than_the_threshold_warns_until_it_advances(make_source):
    source = make_source(slot_inactive_alert_minutes=30)
    create_slot(source.conn, source.slot_name)
    probe_sources([source])
    probe_sources([source])
    assert level(source, Condition.SLOT_INACTIVE) == "ok"

    # The slot has been idle since the first probe; pretend that was 45 minutes ago.
    SlotMetric.objects.filter(source=source).update(inactive_since=timezone.now() - dt.timedelta(minutes=45))
    probe_sources([source])
    state = AlertState.objects.get(source=source, condition=Condition.SLOT_INACTIVE)
    assert state.level == "warn"
    assert f"slot {source.slot_name} for 45 min" in state.message
    assert "inactive" in mail.outbox[-1].subject

    advance_slot(source)  # a consumer read it
    probe_sources([source])
    assert level(source, Condition.SLOT_INACTIVE) == "ok"
    assert changes(source, Condition.SLOT_INACTIVE) == [("ok", "warn"), ("warn", "ok")]


def test_wal_status_extended_warns_and_lost_is_its_own_critical_alert(make_source, cluster_setting):
    source = make_source(wal_warn_bytes=1024**3, wal_critical_bytes=2 * 1024**3)
    create_slot(source.conn, source.slot_name)
    cluster_setting("max_wal_size", "32MB")
    generate_wal(source.conn, 64 * MB)  # past max_wal_size + one segment
    probe_sources([source])
    state = AlertState.objects.get(source=source, condition=Condition.WAL_STATUS)
    assert state.level == "warn", state.message
    assert "retains more WAL than max_wal_size (wal_status extended)" in state.message

    cluster_setting("max_slot_wal_keep_size", "1MB")
    run_sql(source.conn, "CHECKPOINT")
    probe_sources([source])
    state = AlertState.objects.get(source=source, condition=Condition.SLOT_LOST)
    assert state.level == "critical", state.message
    assert "is lost" in state.message and "re-copy needed" in state.message
    # The loss is one event (slot lost); the wal_status alert closes without a second one.
    assert changes(source, Condition.SLOT_LOST) == [("ok", "critical")]
    assert changes(source, Condition.WAL_STATUS) == [("ok", "warn")]
    assert AlertState.objects.get(source=source, condition=Condition.WAL_STATUS).level == "ok"
