"""The Beat schedule that migrate creates, and the probe task on a real Celery worker."""

import importlib
import io
import time

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from monitoring.models import SlotMetric, WalMetric
from rosetta.celery import app

from .conftest import create_slot

schedule_migration = importlib.import_module("monitoring.migrations.0002_beat_schedule")


@pytest.mark.django_db(serialized_rollback=True)
def test_the_beat_schedule_exists_after_migrate_and_names_real_tasks():
    app.loader.import_default_modules()
    probe = PeriodicTask.objects.get(name="Probe WAL on every source")
    assert probe.enabled and probe.task == "monitoring.tasks.probe_all_sources"
    assert (probe.interval.every, probe.interval.period) == (60, "seconds")
    assert probe.expire_seconds == 60
    downsample = PeriodicTask.objects.get(name="Downsample WAL metrics")
    assert downsample.task == "monitoring.tasks.downsample_wal_metrics"
    assert (downsample.interval.every, downsample.interval.period) == (1, "hours")
    assert {probe.task, downsample.task} <= set(app.tasks)


@pytest.mark.django_db(serialized_rollback=True)
def test_rerunning_the_schedule_migration_keeps_an_interval_edited_in_the_admin(admin_browser):
    probe = PeriodicTask.objects.get(name="Probe WAL on every source")
    page = admin_browser.get(f"/admin/django_celery_beat/periodictask/{probe.pk}/change/")
    assert page.status_code == 200 and b"Probe WAL on every source" in page.content
    probe.interval = IntervalSchedule.objects.create(every=5, period="minutes")
    probe.save()

    schedule_migration.create_schedule(apps, None)

    assert PeriodicTask.objects.filter(name="Probe WAL on every source").count() == 1
    probe.refresh_from_db()
    assert (probe.interval.every, probe.interval.period) == (5, "minutes")


@pytest.mark.celery_worker
def test_the_scheduled_probe_runs_on_a_real_worker(celery_worker, make_source):
    source = make_source()
    create_slot(source.conn, source.slot_name)
    # Exactly what Beat sends for the periodic task.
    app.send_task("monitoring.tasks.probe_all_sources")

    deadline = time.monotonic() + 30
    while not WalMetric.objects.filter(source=source).exists():
        assert time.monotonic() < deadline, celery_worker.log_path.read_text()[-3000:]
        time.sleep(0.2)
    metric = WalMetric.objects.get(source=source)
    assert metric.ok, metric.error
    assert metric.wal_dir_bytes > 0
    assert SlotMetric.objects.filter(source=source, slot_name=source.slot_name).exists()


@pytest.mark.django_db(transaction=True)
def test_probe_wal_prints_a_table_per_source(make_source, refusing_port):
    source = make_source()
    create_slot(source.conn, source.slot_name)
    make_source(name="offline", pg_port=refusing_port)
    out = io.StringIO()

    call_command("probe_wal", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["SOURCE", "PROBE", "WAL"]
    row = next(line for line in lines if line.startswith(source.name))
    assert source.slot_name in row and " ok " in row
    assert any(line.startswith("offline") and "FAILED" in line for line in lines)
    assert any(line.startswith("offline: ") and "refused the connection" in line for line in lines)
    assert WalMetric.objects.count() == 2

    only = io.StringIO()
    call_command("probe_wal", "--source", source.name, stdout=only)
    assert "offline" not in only.getvalue() and WalMetric.objects.count() == 3

    with pytest.raises(CommandError, match="No source named nope"):
        call_command("probe_wal", "--source", "nope")
