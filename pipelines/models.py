import contextlib
import uuid

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import IntegrityError, models
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule

from destinations.models import Destination
from engine.names import TableNameError, format_table_name, parse_identifier
from engine.runner import DEFAULT_MAX_CHANGES_PER_TRANSACTION
from sources.models import Source


class IllegalTransition(Exception):
    """A start / pause / refresh that the pipeline's current status does not allow."""


def new_checkpoint_key() -> str:
    return uuid.uuid4().hex


class Pipeline(models.Model):
    """Copies a set of tables from one source to one destination: snapshot, then CDC.

    Once started, its replication identity (source, destination, checkpoint key) is
    frozen: the slot and the destination's checkpoint only make sense together.
    Moving to another destination is an explicit action that re-snapshots.
    """

    class Status(models.TextChoices):
        CREATED = "created"
        RUNNING = "running"
        PAUSED = "paused"
        REFRESHING = "refreshing"
        FAILED = "failed"

    # action -> (statuses it may start from, status it leads to). Everything
    # else is refused with a reason: see refusal_reason().
    TRANSITIONS = {
        "start": ({Status.CREATED, Status.PAUSED, Status.FAILED}, Status.RUNNING),
        "pause": ({Status.RUNNING, Status.REFRESHING}, Status.PAUSED),
        # From failed too: a pipeline stopped by a lost slot is refreshed to go on.
        "refresh": ({Status.RUNNING, Status.PAUSED, Status.FAILED}, Status.REFRESHING),
    }

    class OnSlotLost(models.TextChoices):
        RECOPY = "recopy", "re-copy every table automatically"
        FAIL = "fail", "stop as failed until an operator refreshes"

    # Changing these after the start would read another slot or write another
    # destination under the same checkpoint: see frozen_field_errors().
    FROZEN_FIELDS = ("source", "destination")

    name = models.SlugField(max_length=100, unique=True)
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="pipelines")
    destination = models.ForeignKey(Destination, on_delete=models.PROTECT, related_name="pipelines")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED, editable=False)
    max_changes_per_transaction = models.PositiveIntegerField(
        default=DEFAULT_MAX_CHANGES_PER_TRANSACTION,
        validators=[MinValueValidator(1)],
        help_text=(
            "The most changes applied in one destination transaction (with its checkpoint); a source "
            "transaction is never cut, so a larger one is applied whole. A run applies one such part "
            "while it reads the next, so memory holds about two. Smaller: less memory and shorter "
            "destination transactions; larger: fewer commits. Formerly batch_size."
        ),
    )
    soft_delete = models.BooleanField(
        default=False,
        help_text="Keep deleted rows in the destination with _rosetta_deleted_at set.",
    )
    # The destination's checkpoint row is keyed by this, never by the (editable) name.
    # Pipelines created before it existed keep their name as key (see the migration).
    checkpoint_key = models.CharField(max_length=100, unique=True, default=new_checkpoint_key, editable=False)
    # Copied from the source's kind on save, so the database can keep one started pipeline
    # per replication slot: CSV and HTTP JSON sources have no slot, and feed any number.
    reads_replication_slot = models.BooleanField(default=True, editable=False)
    on_slot_lost = models.CharField(
        "when the replication slot is lost",
        max_length=8,
        choices=OnSlotLost.choices,
        default=OnSlotLost.RECOPY,
        help_text="A lost (or dropped) slot has missed changes: re-copy every table, or stop and wait for "
        "a refresh. Either way a critical alert is raised.",
    )
    last_alert = models.TextField(
        blank=True, default="", editable=False, help_text="The last critical alert this pipeline raised."
    )
    last_alert_at = models.DateTimeField(null=True, blank=True, editable=False)

    class SchemaChangePolicy(models.TextChoices):
        FAIL = "fail", "Fail the run and say which table to refresh"
        RECOPY = "recopy", "Copy that table again automatically"

    on_incompatible_schema_change = models.CharField(
        max_length=16,
        choices=SchemaChangePolicy.choices,
        default=SchemaChangePolicy.FAIL,
        help_text=(
            "When a source table changes in a way its destination table cannot follow in place "
            "(a type that does not widen, a new primary key): stop with a message naming the table "
            "to refresh, or copy that one table again (the destination keeps the old copy until "
            "the new one is complete)."
        ),
    )
    max_reject_share = models.FloatField(
        "largest share of rejected records",
        default=0.1,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="CSV and HTTP JSON sources: a run fails once more than this share of the records it "
        "read were rejected (0.1 = 10%). Rejected records are kept in the destination's _rosetta_rejects.",
    )
    schedule_interval = models.ForeignKey(
        IntervalSchedule,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="CSV and HTTP JSON sources: run this often. PostgreSQL pipelines run continuously.",
    )
    schedule_crontab = models.ForeignKey(
        CrontabSchedule,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="CSV and HTTP JSON sources: or run at these times (a cron expression). "
        "With neither, a batch pipeline runs only when asked (API, admin, manage.py run_pipeline).",
    )
    last_error = models.TextField(blank=True, default="", editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    next_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Set by the dispatcher when it enqueues a run, cleared when the run ends:
    # a pipeline is never queued twice (see services.dispatch_pipeline_runs).
    run_enqueued_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When a run last looked at the source, and how many runs found nothing to do (those
    # leave no PipelineRun: these two fields are their whole record).
    last_checked_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When a run last read the source, busy or not."
    )
    quiet_checks = models.PositiveBigIntegerField(
        default=0, editable=False, help_text="Runs that found nothing to do (they leave no run record)."
    )
    # Measured after each run, or on request (the measure-lag action); reads never measure.
    lag_bytes = models.BigIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="WAL bytes between the slot's confirmed position and the source's current LSN.",
    )
    lag_measured_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_applied_lsn = models.CharField(max_length=32, blank=True, default="", editable=False)
    last_applied_commit_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Source commit time of the last change applied."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["status"])]
        constraints = [
            # A source is one replication slot: two started pipelines on it would take
            # turns reading it, each missing the other's changes.
            models.UniqueConstraint(
                fields=["source"],
                condition=~models.Q(status="created") & models.Q(reads_replication_slot=True),
                name="pipeline_one_started_per_source",
                violation_error_message="Another started pipeline already reads this source's replication slot.",
            )
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        if self.source_id:
            self.reads_replication_slot = not Source.objects.get(pk=self.source_id).is_batch
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "reads_replication_slot"}
        super().save(*args, **kwargs)

    @property
    def has_started(self) -> bool:
        return self.status != self.Status.CREATED

    def frozen_field_errors(self) -> dict[str, str]:
        """Errors for a source or destination changed on a started pipeline (as stored)."""
        if self.pk is None:
            return {}
        stored = Pipeline.objects.filter(pk=self.pk).values("status", "source_id", "destination_id").first()
        if stored is None or stored["status"] == self.Status.CREATED:
            return {}
        errors = {}
        if stored["source_id"] != self.source_id:
            errors["source"] = (
                "A started pipeline's source cannot change: its replication slot and the destination's "
                "checkpoint belong together. Create a new pipeline for the other source."
            )
        if stored["destination_id"] != self.destination_id:
            errors["destination"] = (
                "A started pipeline's destination cannot change here: use the move action (the admin's "
                f"/admin/pipelines/pipeline/{self.pk}/move/ page, or POST /api/pipelines/{self.pk}/move/), "
                "which re-copies every table into the new destination."
            )
        return errors

    def clean(self):
        errors = self.frozen_field_errors()
        if errors:
            raise ValidationError(errors)
        if self.schedule_interval_id and self.schedule_crontab_id:
            raise ValidationError({"schedule_crontab": "Give an interval or a cron schedule, not both."})
        source = Source.objects.filter(pk=self.source_id).first() if self.source_id else None
        if (self.schedule_interval_id or self.schedule_crontab_id) and source and not source.is_batch:
            raise ValidationError(
                {
                    "schedule_interval": "PostgreSQL pipelines run continuously; schedules are for CSV and "
                    "HTTP JSON sources."
                }
            )

    @property
    def is_batch(self) -> bool:
        return self.source.is_batch

    def schedule(self):
        """The celery schedule of a batch pipeline (interval or crontab), or None."""
        if self.schedule_interval_id:
            return self.schedule_interval.schedule
        if self.schedule_crontab_id:
            return self.schedule_crontab.schedule
        return None

    def refusal_reason(self, action: str) -> str | None:
        """Why `action` is not allowed now, in the operator's words; None if it is."""
        allowed_from, _ = self.TRANSITIONS[action]
        if self.status in allowed_from:
            return None
        reasons = {
            ("start", self.Status.RUNNING): "already running",
            ("start", self.Status.REFRESHING): "a refresh is in progress",
            ("pause", self.Status.PAUSED): "already paused",
            ("pause", self.Status.CREATED): "never started",
            ("pause", self.Status.FAILED): "failed; start it again or leave it",
            ("refresh", self.Status.REFRESHING): "a refresh is already in progress",
            ("refresh", self.Status.CREATED): "never started; start it first",
        }
        return reasons.get((action, self.status), f"not allowed while {self.status}")

    def transition(self, action: str) -> None:
        """Apply a start / pause / refresh, or raise IllegalTransition.

        The conditional UPDATE makes two racing requests agree: only one of
        them finds the row still in an allowed status.
        """
        allowed_from, target = self.TRANSITIONS[action]
        fields = {"status": target, "updated_at": timezone.now()}
        if action == "start":
            fields.update(last_error="", consecutive_failures=0, next_run_at=None)
        try:
            updated = Pipeline.objects.filter(pk=self.pk, status__in=allowed_from).update(**fields)
        except IntegrityError:  # pipeline_one_started_per_source, a start that raced another
            raise IllegalTransition(
                "another pipeline on the same source has started meanwhile; one replication slot "
                "serves one pipeline"
            ) from None
        if not updated:
            self.refresh_from_db(fields=["status"])
            raise IllegalTransition(self.refusal_reason(action) or "status changed meanwhile")
        for name, value in fields.items():
            setattr(self, name, value)

    def mark_failed(self, error: str) -> None:
        self.status = self.Status.FAILED
        self.last_error = error
        self.save(update_fields=["status", "last_error", "updated_at"])


def table_name_validator(value: str) -> None:
    """A schema or table name as PostgreSQL spells it (any character but NUL, 63 bytes),
    or written in double quotes: see engine.names."""
    try:
        parse_identifier(value)
    except TableNameError as error:
        raise ValidationError(str(error), code="invalid") from None


class PipelineTable(models.Model):
    """One source table that a pipeline copies, with its snapshot progress."""

    class SnapshotState(models.TextChoices):
        PENDING = "pending"
        IN_PROGRESS = "in_progress"
        DONE = "done"
        FAILED = "failed"

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="tables")
    schema_name = models.CharField(max_length=63, default="public", validators=[table_name_validator])
    table_name = models.CharField(max_length=63, validators=[table_name_validator])
    target_table = models.CharField(
        max_length=63,
        blank=True,
        validators=[table_name_validator],
        help_text=(
            "Table name in the destination; defaults to the source table's name, or "
            "<schema>__<table> when another table of the pipeline already has that name."
        ),
    )
    snapshot_state = models.CharField(
        max_length=16, choices=SnapshotState.choices, default=SnapshotState.PENDING
    )
    snapshot_rows = models.BigIntegerField(default=0)
    # While a snapshot runs: rows copied so far and the planner's estimate, so the
    # pipeline page shows how far it is (written at most once a second).
    snapshot_rows_copied = models.BigIntegerField(default=0, editable=False)
    snapshot_rows_estimate = models.BigIntegerField(null=True, blank=True, editable=False)
    snapshot_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    snapshot_finished_at = models.DateTimeField(null=True, blank=True)
    rows_inserted = models.BigIntegerField(default=0)
    rows_updated = models.BigIntegerField(default=0)
    rows_deleted = models.BigIntegerField(default=0)
    column_mapping = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        help_text="CSV and HTTP JSON sources: each field's column name in the destination (normalized).",
    )
    column_types = models.JSONField(default=dict, blank=True, editable=False)
    # The table's last copy, until a run has confirmed past its position: the changes
    # from before it that a later run still reads are skipped (another shape) or keep the
    # copy's value (a replaced column). See TableSpec.copied_shape; saved with "done".
    copied_below_lsn = models.CharField(max_length=32, blank=True, default="", editable=False)
    copied_shape = models.JSONField(null=True, blank=True, editable=False)
    copied_replaced = models.JSONField(default=list, blank=True, editable=False)

    class Meta:
        ordering = ["pipeline", "schema_name", "table_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["pipeline", "schema_name", "table_name"],
                name="pipeline_table_unique",
                violation_error_message="This pipeline already copies that table.",
            ),
            models.UniqueConstraint(
                fields=["pipeline", "target_table"],
                name="pipeline_target_table_unique",
                violation_error_message=(
                    "Another table of this pipeline goes into that destination table: give one of them "
                    "another target table."
                ),
            ),
        ]

    def __str__(self):
        return self.qualified_name

    def save(self, *args, **kwargs):
        if not self.target_table:
            self.target_table = self.table_name
        super().save(*args, **kwargs)

    def clean(self):
        """A name typed in quotes (the admin) is stored without them, as the API's parser does."""
        for field in ("schema_name", "table_name", "target_table"):
            value = getattr(self, field)
            if value:
                with contextlib.suppress(TableNameError):  # the field's validator reports it
                    setattr(self, field, parse_identifier(value))
        if not self.target_table:
            self.target_table = self.table_name  # before the unique checks, not at save()

    @property
    def qualified_name(self) -> str:
        """`schema.table`, quoted where a part needs it (engine.names)."""
        return format_table_name(self.schema_name, self.table_name)


class PipelineRun(models.Model):
    """One run of a pipeline that did work (or failed, or was skipped): its LSN range, what it
    read and applied, how it ended. A run that finds nothing to do leaves no row; the
    pipeline's last_checked_at and quiet_checks record it. Pruned by services.prune_runs."""

    class Outcome(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"  # another run held the pipeline's lock
        # Its process died (a killed worker): closed by the next run, which noticed.
        INTERRUPTED = "interrupted"

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="runs")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    start_lsn = models.CharField(max_length=32, blank=True, default="")
    end_lsn = models.CharField(max_length=32, blank=True, default="")
    snapshot_rows = models.BigIntegerField(default=0)
    changes_read = models.BigIntegerField(default=0)
    rows_inserted = models.BigIntegerField(default=0)
    rows_updated = models.BigIntegerField(default=0)
    rows_deleted = models.BigIntegerField(default=0)
    bytes_read = models.BigIntegerField(default=0)
    rows_rejected = models.BigIntegerField(
        default=0, help_text="CSV and HTTP JSON sources: records kept in _rosetta_rejects instead of loaded."
    )
    notes = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    slot_lost = models.BooleanField(
        default=False, help_text="This run found the replication slot lost or dropped (and raised an alert)."
    )

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["pipeline", "-started_at"]),
            models.Index(fields=["outcome", "-started_at"]),
            # Newest first across pipelines: the API and admin lists of runs.
            models.Index(fields=["-started_at"], name="pipelinerun_started"),
        ]

    def __str__(self):
        return f"{self.pipeline} run at {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
