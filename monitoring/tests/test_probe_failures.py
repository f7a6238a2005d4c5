"""Dead, hanging and unknown sources fail their own probe in words, on time, and never hold up the others."""

import time

import pytest
from django.core import mail

from monitoring.models import AlertEvent, AlertState, Condition, WalMetric
from monitoring.services import probe_sources
from sources.tests.factories import SourceFactory

from .conftest import create_slot

pytestmark = pytest.mark.django_db(transaction=True)


def test_dead_and_hanging_sources_fail_within_the_timeout_while_the_others_are_probed(
    make_source, refusing_port, hanging_port, stalling_port, settings
):
    settings.ROSETTA_STATEMENT_TIMEOUT_MS = 1000
    healthy = make_source()
    create_slot(healthy.conn, healthy.slot_name)
    refused = make_source(name="refuses", pg_port=refusing_port)
    hanging = make_source(name="never-answers", pg_port=hanging_port)
    stalled = make_source(name="stops-answering", pg_port=stalling_port)
    unknown = make_source(name="no-such-host", pg_host="db.does-not-exist.invalid")

    started = time.monotonic()
    metrics = {metric.source.name: metric for metric in probe_sources()}
    elapsed = time.monotonic() - started

    # Connect timeout 2 s; a server that stops answering after connecting is cut at
    # connect timeout + statement timeout + 2 s = 5 s. All in parallel, not one after another.
    assert elapsed < 7.5, elapsed
    assert metrics[healthy.name].ok
    assert metrics[healthy.name].slot_rows[0].slot_name == healthy.slot_name
    assert not metrics["refuses"].ok
    assert "refused the connection" in metrics["refuses"].error
    assert not metrics["never-answers"].ok
    assert "within the timeout" in metrics["never-answers"].error
    assert not metrics["stops-answering"].ok
    assert "did not answer within 5 s" in metrics["stops-answering"].error
    assert "the connection was closed" in metrics["stops-answering"].error
    assert not metrics["no-such-host"].ok
    assert "does not resolve (DNS)" in metrics["no-such-host"].error
    for name in ("refuses", "never-answers", "stops-answering", "no-such-host"):
        row = WalMetric.objects.get(source__name=name)
        assert row.ok is False and row.error == metrics[name].error
        assert row.wal_dir_bytes is None and row.lsn_position is None
    assert {refused.pk, hanging.pk, stalled.pk, unknown.pk}.isdisjoint(
        WalMetric.objects.filter(ok=True).values_list("source", flat=True)
    )


def test_a_source_failing_n_probes_in_a_row_is_critical_until_it_answers(
    make_source, refusing_port, pg_cluster
):
    source = make_source(pg_port=refusing_port)

    probe_sources([source])
    probe_sources([source])
    assert AlertState.objects.get(source=source, condition=Condition.PROBE_FAILED).level == "ok"
    assert len(mail.outbox) == 0

    probe_sources([source])  # the third failure in a row (ROSETTA_PROBE_FAILURES_ALERT = 3)
    state = AlertState.objects.get(source=source, condition=Condition.PROBE_FAILED)
    assert state.level == "critical"
    assert "The last 3 WAL probes" in state.message and "refused the connection" in state.message
    assert len(mail.outbox) == 1
    assert "probe failing CRITICAL" in mail.outbox[0].subject

    probe_sources([source])
    assert len(mail.outbox) == 1  # still failing: no new notification

    source.pg_port = pg_cluster.port
    source.save()
    probe_sources([source])
    assert AlertState.objects.get(source=source, condition=Condition.PROBE_FAILED).level == "ok"
    assert len(mail.outbox) == 2 and "back to OK" in mail.outbox[1].subject
    assert list(
        AlertEvent.objects.filter(source=source).order_by("created_at").values_list("previous_level", "level")
    ) == [("ok", "critical"), ("critical", "ok")]


def test_a_wrong_password_is_reported_as_an_authentication_failure(replica_cluster):
    source = SourceFactory(
        pg_host="127.0.0.1",
        pg_port=replica_cluster.port,
        pg_database="app",
        pg_username="app_user",
        pg_password="wrong-password-456",
        sslmode="disable",
    )
    (metric,) = probe_sources([source])
    assert not metric.ok
    assert metric.error == "Authentication failed: check the user name and password."
    assert "wrong-password-456" not in metric.error

    source.pg_password = "right-password-123"
    source.save()
    (metric,) = probe_sources([source])
    assert metric.ok and metric.slot_rows == []


def test_a_password_that_cannot_be_decrypted_fails_its_own_probe_only(make_source):
    from django.db import connection

    make_source(name="healthy")
    broken = make_source(name="broken-secret")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE sources_source SET pg_password = 'not-a-fernet-token' WHERE id = %s", [broken.pk]
        )

    metrics = {metric.source.name: metric for metric in probe_sources()}

    assert metrics["healthy"].ok
    assert not metrics["broken-secret"].ok and metrics["broken-secret"].error
    assert "not-a-fernet-token" not in metrics["broken-secret"].error
    assert WalMetric.objects.get(source=broken).ok is False
