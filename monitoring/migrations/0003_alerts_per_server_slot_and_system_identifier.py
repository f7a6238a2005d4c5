from django.db import migrations, models

SLOT_CONDITIONS = ("retained_wal", "slot_inactive", "wal_status", "slot_lost")


def key_the_states(apps, schema_editor):
    """Probe-failure states keep their level under their new key. Slot states were per
    source; they are judged again per server and slot at the next probe."""
    AlertState = apps.get_model("monitoring", "AlertState")
    AlertState.objects.filter(condition__in=SLOT_CONDITIONS).delete()
    for state in AlertState.objects.all():
        state.key = f"source:{state.source_id}:{state.condition}"
        state.save(update_fields=["key"])


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0002_beat_schedule"),
        ("sources", "0002_source_wal_monitoring_options"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="alertstate",
            name="alertstate_one_per_condition",
        ),
        migrations.AddField(
            model_name="alertstate",
            name="key",
            field=models.CharField(max_length=300, null=True),
        ),
        migrations.RunPython(key_the_states, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="alertstate",
            name="key",
            field=models.CharField(max_length=300, unique=True),
        ),
        migrations.AddField(
            model_name="alertstate",
            name="server_id",
            field=models.CharField(
                blank=True,
                default="",
                help_text="The server's system identifier (or host:port).",
                max_length=200,
            ),
        ),
        migrations.AddField(
            model_name="alertstate",
            name="slot_name",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="walmetric",
            name="system_identifier",
            field=models.CharField(
                blank=True,
                default="",
                db_default="",
                help_text="The server's pg_control_system() system_identifier.",
                max_length=32,
            ),
        ),
        migrations.AlterField(
            model_name="alertevent",
            name="condition",
            field=models.CharField(
                choices=[
                    ("retained_wal", "retained WAL over threshold"),
                    ("slot_inactive", "slot inactive"),
                    ("wal_status", "slot wal_status"),
                    ("slot_lost", "slot lost"),
                    ("probe_failed", "probe failing"),
                ],
                max_length=32,
            ),
        ),
        migrations.AlterField(
            model_name="alertstate",
            name="condition",
            field=models.CharField(
                choices=[
                    ("retained_wal", "retained WAL over threshold"),
                    ("slot_inactive", "slot inactive"),
                    ("wal_status", "slot wal_status"),
                    ("slot_lost", "slot lost"),
                    ("probe_failed", "probe failing"),
                ],
                max_length=32,
            ),
        ),
        migrations.AddIndex(
            model_name="alertstate",
            index=models.Index(fields=["source", "condition"], name="alertstate_source_condition"),
        ),
    ]
