"""The Beat schedule of the workers' heartbeat, created idempotently; a worker that runs
it shows as alive on /api/health/."""

from django.db import migrations
from django.utils import timezone

HEARTBEAT_TASK = "Worker heartbeat"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every_30_seconds = IntervalSchedule.objects.filter(every=30, period="seconds").order_by(
        "pk"
    ).first() or IntervalSchedule.objects.create(every=30, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=HEARTBEAT_TASK,
        defaults={
            "task": "rosetta.tasks.record_worker_heartbeat",
            "interval": every_30_seconds,
            "expire_seconds": 60,
            "description": "A worker that runs it records that it is alive (see /api/health/).",
        },
    )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=HEARTBEAT_TASK).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rosetta", "0002_component_heartbeat"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
