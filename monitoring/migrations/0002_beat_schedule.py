"""The Beat schedule for WAL monitoring, created idempotently; edit its interval in the admin
(Periodic tasks). Rerunning the migration never duplicates nor resets an edited schedule."""

from django.db import migrations
from django.utils import timezone

PROBE_TASK = "Probe WAL on every source"
DOWNSAMPLE_TASK = "Downsample WAL metrics"


def interval(IntervalSchedule, every, period):
    schedule = IntervalSchedule.objects.filter(every=every, period=period).order_by("pk").first()
    return schedule or IntervalSchedule.objects.create(every=every, period=period)


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTask.objects.get_or_create(
        name=PROBE_TASK,
        defaults={
            "task": "monitoring.tasks.probe_all_sources",
            "interval": interval(IntervalSchedule, 60, "seconds"),
            # A probe that waited longer than its interval in the queue is stale: drop it.
            "expire_seconds": 60,
            "description": "Measures WAL and replication slots on every source and moves the alerts.",
        },
    )
    PeriodicTask.objects.get_or_create(
        name=DOWNSAMPLE_TASK,
        defaults={
            "task": "monitoring.tasks.downsample_wal_metrics",
            "interval": interval(IntervalSchedule, 1, "hours"),
            "description": "Keeps per-probe WAL metrics for ROSETTA_METRICS_FULL_RESOLUTION_DAYS, "
            "then hourly maxima.",
        },
    )
    # Tell a running Beat (DatabaseScheduler) that its schedule changed.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[PROBE_TASK, DOWNSAMPLE_TASK]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
