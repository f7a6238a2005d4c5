"""batch_size becomes max_changes_per_transaction, and quiet runs are counted on the pipeline.

batch_size was the most changes one run read, applied in parts of at most 50,000 per
destination transaction. A run now reads until caught up, and the setting is the part
size; each pipeline keeps the part size it had: min(batch_size, 50,000). Pipelines still
at the old default (1,000,000) take the new default, chosen by measurement.
"""

from django.core.validators import MinValueValidator
from django.db import migrations, models

OLD_DEFAULT = 1_000_000
OLD_PART = 50_000
NEW_DEFAULT = 20_000


def keep_part_sizes(apps, schema_editor):
    Pipeline = apps.get_model("pipelines", "Pipeline")
    Pipeline.objects.filter(max_changes_per_transaction=OLD_DEFAULT).update(
        max_changes_per_transaction=NEW_DEFAULT
    )
    Pipeline.objects.filter(max_changes_per_transaction__gt=OLD_PART).update(
        max_changes_per_transaction=OLD_PART
    )


class Migration(migrations.Migration):
    dependencies = [
        ("pipelines", "0011_table_snapshot_progress"),
    ]

    operations = [
        migrations.RenameField("pipeline", "batch_size", "max_changes_per_transaction"),
        migrations.RunPython(keep_part_sizes, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="pipeline",
            name="max_changes_per_transaction",
            field=models.PositiveIntegerField(
                default=NEW_DEFAULT,
                help_text=(
                    "The most changes applied in one destination transaction (with its checkpoint); a source "
                    "transaction is never cut, so a larger one is applied whole. A run applies one such part "
                    "while it reads the next, so memory holds about two. Smaller: less memory and shorter "
                    "destination transactions; larger: fewer commits. Formerly batch_size."
                ),
                validators=[MinValueValidator(1)],
            ),
        ),
        migrations.AddField(
            model_name="pipeline",
            name="last_checked_at",
            field=models.DateTimeField(
                blank=True,
                editable=False,
                help_text="When a run last read the source, busy or not.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="pipeline",
            name="quiet_checks",
            field=models.PositiveBigIntegerField(
                default=0,
                editable=False,
                help_text="Runs that found nothing to do (they leave no run record).",
            ),
        ),
    ]
