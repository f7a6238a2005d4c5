"""A slot is judged once per server, whatever the number of sources on it; its loss is its own alert."""

import pytest
from django.core import mail

from monitoring.models import AlertEvent, AlertState, Condition, SlotMetric
from monitoring.services import probe_sources
from sources.tests.factories import SourceFactory

from .conftest import create_slot, generate_wal, make_slot_lost, run_sql

pytestmark = pytest.mark.django_db(transaction=True)

MB = 1024 * 1024


def test_thirty_sources_on_one_server_and_one_lost_slot_give_one_notification(
    make_source, cluster_setting, webhook
):
    first = make_source(name="source-00")
    same_server = {
        "pg_host": first.pg_host,
        "pg_port": first.pg_port,
        "pg_database": first.pg_database,
        "pg_username": first.pg_username,
        "pg_password": "",
        "sslmode": "disable",
    }
    sources = [first] + [SourceFactory(name=f"source-{index:02d}", **same_server) for index in range(1, 30)]
    owner = sources[17]
    create_slot(first.conn, owner.slot_name)
    owner.conn = first.conn
    make_slot_lost(owner, cluster_setting)

    metrics = probe_sources()
    assert len(metrics) == 30 and all(metric.ok for metric in metrics)
    assert SlotMetric.objects.filter(slot_name=owner.slot_name, wal_status="lost").count() == 30

    lost = AlertEvent.objects.filter(condition=Condition.SLOT_LOST)
    assert [(event.source_id, event.level) for event in lost] == [(owner.pk, "critical")]
    assert AlertEvent.objects.count() == 1
    assert len(mail.outbox) == 1 and len(webhook.requests) == 1
    assert mail.outbox[0].subject == f"[Rosetta] {owner.name}: slot lost CRITICAL (was OK)"
    assert "re-copy needed" in mail.outbox[0].body
    state = AlertState.objects.get(condition=Condition.SLOT_LOST)
    assert state.slot_name == owner.slot_name and state.source == owner
    system_identifier = run_sql(first.conn, "SELECT system_identifier::text FROM pg_control_system()")[0][0]
    assert state.server_id == system_identifier

    probe_sources()  # the next tick: still lost, nothing new
    assert len(mail.outbox) == 1 and len(webhook.requests) == 1


def test_a_slot_going_from_unreserved_to_lost_is_notified_as_lost(make_source, cluster_setting):
    source = make_source(wal_warn_bytes=1024**3, wal_critical_bytes=2 * 1024**3)
    create_slot(source.conn, source.slot_name)
    cluster_setting("max_wal_size", "32MB")
    generate_wal(source.conn, 40 * MB)
    cluster_setting("max_slot_wal_keep_size", "1MB")  # no checkpoint yet: the WAL is still there

    probe_sources([source])
    assert SlotMetric.objects.latest("probed_at").wal_status == "unreserved"
    assert AlertState.objects.get(condition=Condition.WAL_STATUS).level == "critical"
    assert len(mail.outbox) == 1 and "will be lost" in mail.outbox[0].body

    run_sql(source.conn, "CHECKPOINT")
    probe_sources([source])
    assert SlotMetric.objects.latest("probed_at").wal_status == "lost"
    assert len(mail.outbox) == 2
    assert mail.outbox[1].subject == f"[Rosetta] {source.name}: slot lost CRITICAL (was OK)"
    assert f"Slot {source.slot_name} on {source} is lost" in mail.outbox[1].body

    probe_sources([source])
    assert len(mail.outbox) == 2


def test_the_alert_state_admin_lists_slot_alerts_by_source_and_slot(
    make_source, cluster_setting, admin_browser
):
    source = make_source()
    create_slot(source.conn, source.slot_name)
    make_slot_lost(source, cluster_setting)
    probe_sources([source])

    page = admin_browser.get(f"/admin/monitoring/alertstate/?q={source.slot_name}").content.decode()
    assert source.slot_name in page and "slot lost" in page and "re-copy needed" in page
