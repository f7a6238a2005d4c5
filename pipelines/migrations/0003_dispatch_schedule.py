"""The Beat schedule that dispatches pipeline runs, created idempotently; edit its
interval in the admin (Periodic tasks). Rerunning never duplicates nor resets it."""

from django.db import migrations
from django.utils import timezone

DISPATCH_TASK = "Dispatch pipeline runs"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every_5_seconds = IntervalSchedule.objects.filter(every=5, period="seconds").order_by(
        "pk"
    ).first() or IntervalSchedule.objects.create(every=5, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=DISPATCH_TASK,
        defaults={
            "task": "pipelines.tasks.dispatch_pipeline_runs",
            "interval": every_5_seconds,
            # A dispatch that waited longer than a few intervals is stale: the next one will do.
            "expire_seconds": 30,
            "description": "Enqueues one run per running pipeline (and per failed one whose back-off "
            "has passed); any worker may take it.",
        },
    )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=DISPATCH_TASK).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("pipelines", "0002_pipeline_run_state"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
