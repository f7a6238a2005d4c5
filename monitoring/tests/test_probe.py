"""The probe against a real PostgreSQL 15 cluster with wal_level=logical."""

import time

import pytest

from engine.fold import BatchBuilder
from engine.lsn import parse_lsn
from monitoring.models import SlotMetric, WalMetric, WalSettings
from monitoring.services import probe_sources

from .conftest import create_slot, generate_wal, pg_wal_segments_bytes, run_sql

pytestmark = pytest.mark.django_db(transaction=True)


def probe(source) -> WalMetric:
    (metric,) = probe_sources([source])
    return metric


def slot_row(metric, name) -> SlotMetric:
    return SlotMetric.objects.get(source=metric.source, probed_at=metric.probed_at, slot_name=name)


def test_an_unread_slot_retains_at_least_the_wal_written_since(make_source, pg_cluster):
    source = make_source()
    create_slot(source.conn, source.slot_name)
    first = probe(source)
    written = generate_wal(source.conn, 3 * 1024 * 1024)
    second = probe(source)

    assert first.ok and second.ok, (first.error, second.error)
    before, after = slot_row(first, source.slot_name), slot_row(second, source.slot_name)
    assert after.retained_bytes - before.retained_bytes >= written
    assert after.unconfirmed_bytes >= written
    assert (
        after.slot_type == "logical" and after.plugin == "pgoutput" and after.database == source.pg_database
    )
    assert after.active is False and after.wal_status == "reserved"
    assert second.lsn_position - first.lsn_position >= written
    # The WAL rate comes from successive LSNs, not from the position itself.
    elapsed = (second.probed_at - first.probed_at).total_seconds()
    assert second.wal_rate_bytes_per_s == pytest.approx((second.lsn_position - first.lsn_position) / elapsed)
    assert first.wal_rate_bytes_per_s is None


def test_the_wal_directory_size_is_the_real_size_of_pg_wal(make_source, pg_cluster):
    source = make_source()
    generate_wal(source.conn, 20 * 1024 * 1024)  # a few segments
    on_disk_before = pg_wal_segments_bytes(pg_cluster)
    metric = probe(source)
    on_disk_after = pg_wal_segments_bytes(pg_cluster)

    assert metric.ok and metric.warnings == []
    assert metric.wal_dir_bytes in (on_disk_before, on_disk_after)
    assert metric.wal_segments == metric.wal_dir_bytes // (16 * 1024 * 1024)
    # A size is never the LSN position (pg_wal_lsn_diff(lsn, '0/0')).
    assert metric.wal_dir_bytes != metric.lsn_position


def test_every_slot_on_the_server_is_reported_not_only_rosettas(make_source, pg_cluster):
    source = make_source()
    other = make_source()
    create_slot(source.conn, source.slot_name)
    create_slot(other.conn, "someone_elses_slot")
    physical = "standby_slot_for_test"
    run_sql(source.conn, "SELECT pg_create_physical_replication_slot(%s, true)", [physical])
    try:
        metric = probe(source)
        names = set(
            SlotMetric.objects.filter(source=source, probed_at=metric.probed_at).values_list(
                "slot_name", flat=True
            )
        )
        assert {source.slot_name, "someone_elses_slot", physical} <= names
        standby = slot_row(metric, physical)
        assert standby.slot_type == "physical" and standby.retained_bytes is not None
        assert standby.unconfirmed_bytes is None  # physical slots have no confirmed_flush_lsn
    finally:
        run_sql(source.conn, "SELECT pg_drop_replication_slot(%s)", [physical])


def test_wal_settings_are_recorded_when_they_change(make_source, cluster_setting):
    source = make_source()
    probe(source)
    probe(source)
    assert WalSettings.objects.filter(source=source).count() == 1
    first = WalSettings.objects.get(source=source)
    assert first.max_slot_wal_keep_size == -1  # unlimited, the default
    assert first.max_wal_size == 1024**3 and first.wal_keep_size == 0

    cluster_setting("max_slot_wal_keep_size", "2GB")
    create_slot(source.conn, source.slot_name)
    metric = probe(source)
    latest = WalSettings.objects.filter(source=source).order_by("-recorded_at").first()
    assert WalSettings.objects.filter(source=source).count() == 2
    assert latest.max_slot_wal_keep_size == 2 * 1024**3
    # With a keep limit, safe_wal_size says how much WAL can still be written.
    # (PostgreSQL counts it from segment boundaries, so it can pass the limit by a segment or so.)
    assert 1024**3 < slot_row(metric, source.slot_name).safe_wal_size < 2 * 1024**3 + 64 * 1024**2


def test_a_heartbeat_reaches_the_slot_only_when_the_source_opts_in(make_source):
    source = make_source(heartbeat_enabled=False)
    run_sql(source.conn, "CREATE PUBLICATION heartbeat_pub FOR ALL TABLES")
    create_slot(source.conn, source.slot_name)

    def heartbeats() -> int:
        rows = run_sql(
            source.conn,
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, 'proto_version', '1', "
            "'publication_names', 'heartbeat_pub', 'messages', 'true')",
            [source.slot_name],
        )
        return sum(1 for (data,) in rows if data[:1] == b"M" and b"rosetta_heartbeat" in data)

    assert probe(source).heartbeat_lsn == ""
    assert heartbeats() == 0

    source.heartbeat_enabled = True
    source.save()
    metric = probe(source)
    assert metric.heartbeat_lsn
    # Decoding sees the message once its commit is flushed (the test cluster runs with
    # synchronous_commit=off, so the WAL writer flushes it within a fraction of a second).
    deadline = time.monotonic() + 5
    while heartbeats() == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert heartbeats() == 1


def test_a_probe_heartbeat_lets_a_run_move_the_slot_without_counting_a_transaction(make_source):
    """The probe's heartbeat is the run's heartbeat (engine/heartbeat.py): a run reading it
    may confirm its slot past it, and finds no work in it."""
    source = make_source(heartbeat_enabled=True)
    run_sql(source.conn, "CREATE PUBLICATION heartbeat_pub FOR ALL TABLES")
    create_slot(source.conn, source.slot_name)

    metric = probe(source)
    heartbeat_lsn = parse_lsn(metric.heartbeat_lsn)
    builder = BatchBuilder(checkpoint=0, tables={})
    deadline = time.monotonic() + 5
    while builder.read_position < heartbeat_lsn and time.monotonic() < deadline:
        builder = BatchBuilder(checkpoint=0, tables={})
        for (data,) in run_sql(
            source.conn,
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, 'proto_version', '1', "
            "'publication_names', 'heartbeat_pub', 'messages', 'true')",
            [source.slot_name],
        ):
            builder.feed(bytes(data))
        time.sleep(0.1)
    batch = builder.finish()
    assert builder.read_position >= heartbeat_lsn
    assert batch.transactions == 0 and batch.end_lsn == 0


def test_a_role_without_pg_monitor_gets_a_specific_warning_and_the_rest_is_recorded(make_source, make_role):
    role = make_role()
    source = make_source(pg_username=role)
    create_slot(source.conn, source.slot_name)

    metric = probe(source)
    assert metric.ok
    assert metric.wal_dir_bytes is None
    assert metric.warnings == [
        f"WAL directory size not recorded: the role {role} may not call pg_ls_waldir(). "
        f"Grant it with: GRANT pg_monitor TO {role};"
    ]
    assert slot_row(metric, source.slot_name).retained_bytes is not None
    assert metric.lsn_position

    run_sql(source.conn, f"GRANT pg_monitor TO {role}")
    granted = probe(source)
    assert granted.warnings == [] and granted.wal_dir_bytes > 0
