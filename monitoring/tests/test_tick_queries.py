"""Recording a tick costs the same number of metadata queries whatever the number of slots and sources."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from monitoring import services
from monitoring.models import SlotMetric
from monitoring.services import probe_sources
from sources.tests.factories import SourceFactory

from .conftest import create_slot, run_sql

pytestmark = pytest.mark.django_db(transaction=True)


def queries_of_a_tick() -> int:
    with CaptureQueriesContext(connection) as captured:
        metrics = probe_sources()
    assert all(metric.ok for metric in metrics)
    return len(captured)


def test_the_query_count_of_a_tick_does_not_grow_per_slot_or_per_source(make_source, monkeypatch):
    # One batch per tick, so the count does not depend on how fast the servers answer.
    monkeypatch.setattr(services, "RECORD_EVERY_SECONDS", 60)
    first = make_source()
    create_slot(first.conn, first.slot_name)
    same_server = {
        name: getattr(first, name) for name in ("pg_host", "pg_port", "pg_database", "pg_username", "sslmode")
    }
    SourceFactory(pg_password="", **same_server)
    queries_of_a_tick()  # the first tick has no previous probe to compare with
    few = queries_of_a_tick()

    names = [f"extra_{first.pk}_{index}" for index in range(12)]
    for name in names:
        create_slot(first.conn, name)
    for _ in range(8):
        SourceFactory(pg_password="", **same_server)
    try:
        queries_of_a_tick()
        many = queries_of_a_tick()
    finally:
        for name in names:
            run_sql(first.conn, "SELECT pg_drop_replication_slot(%s)", [name])

    assert SlotMetric.objects.filter(slot_name=names[0]).count() == 2 * 10
    assert many == few, (few, many)
    assert few < 30
