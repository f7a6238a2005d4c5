"""The Beat schedule that prunes old pipeline runs (services.prune_runs), created
idempotently; edit its interval in the admin (Periodic tasks)."""

from django.db import migrations
from django.utils import timezone

PRUNE_TASK = "Prune pipeline runs"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every_hour = IntervalSchedule.objects.filter(every=1, period="hours").order_by(
        "pk"
    ).first() or IntervalSchedule.objects.create(every=1, period="hours")
    PeriodicTask.objects.get_or_create(
        name=PRUNE_TASK,
        defaults={
            "task": "pipelines.tasks.prune_runs",
            "interval": every_hour,
            "expire_seconds": 30 * 60,
            "description": "Deletes pipeline runs older than ROSETTA_RUN_HISTORY_DAYS (failed ones after "
            "ROSETTA_FAILED_RUN_HISTORY_DAYS), keeping each pipeline's newest run.",
        },
    )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=PRUNE_TASK).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("pipelines", "0012_max_changes_per_transaction_and_quiet_checks"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
