"""Operations on pipelines that the API, the admin, tasks and commands share.

run_pipeline() is the batch CDC protocol of docs/architecture.md around the engine
(engine/runner.py): it takes the lock, loads the configuration, opens one source
stream and one destination writer, lets the engine apply part after part, and
records a PipelineRun when the run did work.
"""

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from django.conf import settings
from django.db import connections, transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from engine.backoff import backoff_seconds
from engine.fold import TableSpec
from engine.lsn import format_lsn, parse_lsn
from engine.names import MAX_IDENTIFIER_BYTES, format_table_name, parse_table_name
from engine.runner import BatchOutcome, Engine
from engine.source import SlotState, SourceDatabase, SourceProblem
from engine.writers import writer_for
from rosetta.logs import log_context
from sources.models import Source

from . import batch
from .models import IllegalTransition, Pipeline, PipelineRun, PipelineTable, new_checkpoint_key

log = logging.getLogger(__name__)

__all__ = [
    "IllegalTransition",
    "parse_table_name",
    "set_pipeline_tables",
    "start_pipeline",
    "pause_pipeline",
    "refresh_pipeline",
    "delete_pipeline",
    "move_pipeline",
    "change_source_slot",
    "run_pipeline",
    "run_until_caught_up",
    "run_scheduled",
    "dispatch_pipeline_runs",
    "measure_lag",
    "prune_runs",
]

# pg_try_advisory_lock(LOCK_CLASS, source id) on the metadata database. A source
# is one replication slot, so this keeps one reader per slot: two runs of a
# pipeline never overlap, across processes and machines.
LOCK_CLASS = 0x524F5345  # "ROSE"
RETRY_FIRST_SECONDS = 10
RETRY_MAX_SECONDS = 15 * 60
ACTIVE = (Pipeline.Status.RUNNING, Pipeline.Status.REFRESHING)
PROGRESS_EVERY_SECONDS = 1.0


@transaction.atomic
def set_pipeline_tables(pipeline: Pipeline, names: list[str]) -> None:
    """Make the pipeline copy exactly these tables; kept tables keep their progress.
    The next run adds new tables to the publication and snapshots them.

    A new table's destination table is its own name, or `<schema>__<table>` when
    another table of the pipeline already has that name (same name in two schemas,
    public first): two source tables never share a destination table. Raises
    ValueError when even that name is taken."""
    wanted = [parse_table_name(name) for name in names]
    existing = {(t.schema_name, t.table_name): t for t in pipeline.tables.all()}
    for key, table in existing.items():
        if key not in wanted:
            table.delete()
    targets = {t.target_table: key for key, t in existing.items() if key in wanted}
    new = sorted((key for key in wanted if key not in existing), key=lambda k: (k[0] != "public", k))
    # A batch source's table has no snapshot: its first run loads it.
    state = (
        PipelineTable.SnapshotState.DONE if pipeline.source.is_batch else PipelineTable.SnapshotState.PENDING
    )
    for schema, table in new:
        target = default_target_table(schema, table, taken=targets)
        targets[target] = (schema, table)
        PipelineTable.objects.create(
            pipeline=pipeline, schema_name=schema, table_name=table, target_table=target, snapshot_state=state
        )


def default_target_table(schema: str, table: str, taken: dict) -> str:
    """The destination table name for a new table: see set_pipeline_tables."""
    for target in (table, f"{schema}__{table}"):
        if target not in taken and len(target.encode()) <= MAX_IDENTIFIER_BYTES:
            return target
    other = taken.get(table) or taken.get(f"{schema}__{table}")
    raise ValueError(
        f"{format_table_name(schema, table)} would go into the same destination table as "
        f"{format_table_name(*other) if other else 'another table'}: rename one's destination table "
        "(target table) in the admin first."
    )


def start_pipeline(pipeline: Pipeline) -> None:
    """Start (or retry a failed pipeline). The next run creates the publication and
    the slot when missing, and snapshots the tables that need it."""
    if pipeline.source.is_batch:
        pipeline.transition("start")  # no slot: several pipelines may load one CSV or API source
        return
    other = (
        Pipeline.objects.filter(source_id=pipeline.source_id)
        .exclude(pk=pipeline.pk)
        .exclude(status=Pipeline.Status.CREATED)
        .first()
    )
    if other is not None:
        raise IllegalTransition(
            f"source {pipeline.source} already feeds pipeline {other.name}, and one replication slot "
            "serves one pipeline; add another source for the same database with its own slot name"
        )
    pipeline.transition("start")


def pause_pipeline(pipeline: Pipeline) -> None:
    """Stop scheduling runs. The slot stays, so nothing is lost, but it keeps WAL on the
    source until the pipeline runs again (the WAL monitor shows how much)."""
    pipeline.transition("pause")


@transaction.atomic
def refresh_pipeline(pipeline: Pipeline, tables: list[str] | None = None) -> list[str]:
    """Re-snapshot all tables, or only the named ones. Returns the tables to re-copy.
    The destination keeps serving the old copy until the new one is complete."""
    selected = pipeline.tables.all()
    if tables:
        wanted = {parse_table_name(name) for name in tables}
        known = {(t.schema_name, t.table_name) for t in selected}
        unknown = sorted(f"{s}.{t}" for s, t in wanted - known)
        if unknown:
            raise ValueError(f"The pipeline does not copy {', '.join(unknown)}.")
        selected = [t for t in selected if (t.schema_name, t.table_name) in wanted]
    pipeline.transition("refresh")
    PipelineTable.objects.filter(pk__in=[t.pk for t in selected]).update(
        snapshot_state=PipelineTable.SnapshotState.PENDING
    )
    return [t.qualified_name for t in selected]


def delete_pipeline(pipeline: Pipeline, drop_slot: bool) -> str:
    """Delete the pipeline; with drop_slot, also drop its replication slot on the source.
    A kept slot keeps WAL on the source until someone drops it. Returns what was done."""
    source = pipeline.source
    with pipeline_lock(pipeline) as locked:
        if not locked:
            raise IllegalTransition("a run is in progress; try again in a moment")
        done = f"Deleted pipeline {pipeline.name}"
        if source.is_batch:
            pipeline.delete()
            return done + "."
        if drop_slot:
            try:
                with _source(pipeline, timeout_ms=settings.ROSETTA_STATEMENT_TIMEOUT_MS) as db:
                    dropped = db.drop_slot(source.slot_name)
            except psycopg.Error as error:
                raise SourceProblem(
                    f"Could not drop slot {source.slot_name}: {describe_error(error)}"
                ) from None
            done += (
                f" and dropped replication slot {source.slot_name} on {source.name}"
                if dropped
                else f"; replication slot {source.slot_name} did not exist on {source.name}"
            )
        else:
            done += (
                f"; replication slot {source.slot_name} stays on {source.name} and keeps WAL there "
                "until it is dropped"
            )
        pipeline.delete()
    return done + "."


def move_pipeline(pipeline: Pipeline, destination) -> str:
    """Write to another destination from now on: every table is re-copied into it under
    a new checkpoint key, then changes go on from the same slot. The old destination
    keeps its copy as it is. Returns what was done."""
    if destination.pk == pipeline.destination_id:
        raise ValueError(f"{pipeline.name} already writes to {destination.name}.")
    with pipeline_lock(pipeline) as locked:
        if not locked:
            raise IllegalTransition("a run is in progress; try again in a moment")
        with transaction.atomic():
            pipeline.tables.update(snapshot_state=PipelineTable.SnapshotState.PENDING)
            fields = {
                "destination": destination,
                "checkpoint_key": new_checkpoint_key(),
                "updated_at": timezone.now(),
            }
            Pipeline.objects.filter(pk=pipeline.pk).update(**fields)
            Pipeline.objects.filter(pk=pipeline.pk, status=Pipeline.Status.RUNNING).update(
                status=Pipeline.Status.REFRESHING
            )
    pipeline.refresh_from_db()
    return f"{pipeline.name} now writes to {destination.name}; every table is copied there again."


def change_source_slot(source, slot_name: str, drop_old_slot: bool) -> str:
    """Read the source through another replication slot. The new slot starts at "now",
    so every table of the source's pipeline is marked for re-copy in the same
    transaction that renames the slot; then the old slot is dropped if asked (a kept
    slot keeps WAL on the source). Returns what was done."""
    from sources.models import Source

    old = source.slot_name
    if slot_name == old:
        raise ValueError(f"{source.name} already uses slot {old}.")
    clash = Source.objects.filter(
        pg_host=source.pg_host, pg_port=source.pg_port, pg_database=source.pg_database, slot_name=slot_name
    ).exclude(pk=source.pk)
    if clash.exists():
        raise ValueError(f"Another source already uses slot {slot_name} on this database.")
    with source_lock(source.pk) as locked:
        if not locked:
            raise IllegalTransition("a run is in progress; try again in a moment")
        with transaction.atomic():
            PipelineTable.objects.filter(pipeline__source=source).update(
                snapshot_state=PipelineTable.SnapshotState.PENDING
            )
            Pipeline.objects.filter(source=source, status=Pipeline.Status.RUNNING).update(
                status=Pipeline.Status.REFRESHING
            )
            Source.objects.filter(pk=source.pk).update(slot_name=slot_name, updated_at=timezone.now())
        source.refresh_from_db()
        done = f"{source.name} now reads through slot {slot_name}; its pipeline re-copies every table"
        if not drop_old_slot:
            return done + f". Slot {old} stays on the source and keeps WAL there until it is dropped."
        try:
            with SourceDatabase(
                source.connection_kwargs(connect_timeout=settings.ROSETTA_CONNECT_TIMEOUT),
                statement_timeout_ms=settings.ROSETTA_STATEMENT_TIMEOUT_MS,
            ) as db:
                dropped = db.drop_slot(old)
        except (psycopg.Error, SourceProblem) as error:
            return (
                done + f"; could not drop slot {old} ({describe_error(error)}): it keeps WAL until dropped."
            )
        return done + (f" and dropped slot {old}." if dropped else f"; slot {old} did not exist.")


# -- runs -------------------------------------------------------------------


@dataclass
class RunHooks:
    """Fault and timing injection for tests; every hook is optional."""

    after_lock: Callable[[], None] | None = None  # the lock is held, nothing done yet
    before_apply: Callable[[object], None] | None = None  # a part was read, not handed to the writer yet
    before_commit: Callable[[], None] | None = None  # inside the destination transaction
    after_apply: Callable[[object], None] | None = None  # destination committed, slot not advanced
    # Around a slot's (re)creation, with the step just done: "tables_marked_for_recopy",
    # "lost_slot_dropped", "slot_created" (see Engine.prepare).
    at_slot_step: Callable[[str], None] | None = None


class RunObserver:
    """What a run reports as it goes; the management command prints it."""

    def snapshot_progress(self, table: str, rows: int, estimate: int) -> None:
        pass

    def snapshot_done(self, table: str, rows: int) -> None:
        pass


def _metadata_connection() -> psycopg.Connection:
    params = connections["default"].get_connection_params()
    params.pop("context", None)
    params.pop("cursor_factory", None)
    return psycopg.connect(**params, autocommit=True)


@contextmanager
def source_lock(source_id: int):
    """Yield True while holding the source slot's advisory lock, or False at once if
    another process holds it. A dedicated connection holds the lock, so it ends
    with the process whatever happens."""
    with _metadata_connection() as conn:
        (locked,) = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_CLASS, source_id]).fetchone()
        try:
            yield locked
        finally:
            if locked and not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_CLASS, source_id])


def pipeline_lock(pipeline: Pipeline):
    """The pipeline's run lock: its source slot's (see source_lock)."""
    return source_lock(pipeline.source_id)


def _source(pipeline: Pipeline, timeout_ms: int | None = None) -> SourceDatabase:
    peek_timeout_ms = settings.ROSETTA_PEEK_TIMEOUT_SECONDS * 1000
    return SourceDatabase(
        pipeline.source.connection_kwargs(connect_timeout=settings.ROSETTA_CONNECT_TIMEOUT),
        statement_timeout_ms=timeout_ms or peek_timeout_ms,
    )


def describe_error(error: Exception) -> str:
    """One readable line (plus detail) for the run and the pipeline; never a secret:
    connection errors are already reworded without the DSN."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, psycopg.Error):
        first = text.splitlines()[0]
        return f"Database error ({type(error).__name__}): {first}"
    if type(error).__name__ == "SoftTimeLimitExceeded":  # Celery's, raised inside the run task
        return (
            f"The run task reached its time limit (ROSETTA_SNAPSHOT_TIME_LIMIT_SECONDS = "
            f"{settings.ROSETTA_SNAPSHOT_TIME_LIMIT_SECONDS} s); the next run resumes with the tables not "
            "copied yet. Raise the setting if one table takes longer to copy."
        )
    known = (
        "SlotLost",
        "SourceProblem",
        "ConnectionProblem",
        "IncompatibleSchemaChange",
        "DecodeError",
        "UnstorableValue",
    )
    if type(error).__name__ in known:
        return text
    return f"{type(error).__name__}: {text}"


def _table_specs(pipeline: Pipeline) -> list[TableSpec]:
    """The tables as the engine needs them, with what an earlier run's copy left to skip
    or keep (TableSpec.copied_shape): a run may end before reading past its copy."""
    return [
        TableSpec(
            t.schema_name,
            t.table_name,
            t.target_table,
            copied_shape=tuple(tuple(column) for column in t.copied_shape) if t.copied_shape else None,
            copied_below_lsn=parse_lsn(t.copied_below_lsn) or 0,
            copied_replaced=frozenset(t.copied_replaced),
        )
        for t in pipeline.tables.all()
    ]


def _forget_copies_read_past(pipeline: Pipeline, slot: SlotState | None) -> None:
    """Once the slot has confirmed past a copy's position, no change from before it can
    come again: the copy's record is no longer needed (_table_specs)."""
    if slot is None:
        return
    for table in pipeline.tables.exclude(copied_below_lsn=""):
        if parse_lsn(table.copied_below_lsn) <= slot.confirmed_flush_lsn:
            PipelineTable.objects.filter(pk=table.pk, copied_below_lsn=table.copied_below_lsn).update(
                copied_below_lsn="", copied_shape=None, copied_replaced=[]
            )


def run_pipeline(
    pipeline: Pipeline,
    *,
    snapshot_only: bool = False,
    observer: RunObserver | None = None,
    hooks: RunHooks | None = None,
    budget_seconds: float | None = None,
) -> PipelineRun:
    """One run under the pipeline's lock, over one source stream and one destination
    writer: snapshot what needs it, then apply changes part after part (each part its
    own destination transaction with its checkpoint) until caught up; with
    budget_seconds, on as changes arrive until the source goes quiet or the budget ends.

    Returns the PipelineRun. A run that does work is recorded (saved when the work
    begins, so a killed run is found by the next one); a run that finds nothing to do
    is not saved (its pk is None): the pipeline's last_checked_at and quiet_checks
    say it looked. Outcome SKIPPED (recorded) when another run held the lock."""
    observer = observer or RunObserver()
    hooks = hooks or RunHooks()
    with pipeline_lock(pipeline) as locked:
        if not locked:
            return PipelineRun.objects.create(
                pipeline=pipeline,
                outcome=PipelineRun.Outcome.SKIPPED,
                finished_at=timezone.now(),
                notes="Another run of this pipeline held its lock.",
            )
        if hooks.after_lock:
            hooks.after_lock()
        deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
        pipeline.refresh_from_db()
        interrupted = close_interrupted_runs(pipeline)
        run = PipelineRun(pipeline=pipeline, started_at=timezone.now())
        run.caught_up = False
        run.deadline_reached = False

        context = ExitStack()

        def record_run() -> None:
            """The run does work: save its row now (outcome RUNNING until it ends); log lines
            name it from here on."""
            if run.pk is None:
                run.save()
                context.enter_context(log_context(run=run.pk))
                log.info("Run started")

        with log_context(pipeline=pipeline.name), context:
            if interrupted or pipeline.source.is_batch:
                record_run()
            try:
                if pipeline.source.is_batch:
                    outcome = batch.run_batch_locked(pipeline, run, hooks)
                else:
                    outcome = _run_locked(pipeline, run, snapshot_only, observer, hooks, record_run, deadline)
            except Exception as error:
                record_run()
                run.outcome = PipelineRun.Outcome.FAILED
                run.error = describe_error(error)
                # The worded error (never a DSN); the traceback only when debugging.
                log.error("Run failed: %s", run.error, exc_info=log.isEnabledFor(logging.DEBUG))
                _record_failure(pipeline, run.error)
            else:
                run.outcome = PipelineRun.Outcome.SUCCEEDED
                run.caught_up = outcome is None or outcome.caught_up
                run.deadline_reached = outcome is not None and getattr(outcome, "deadline_reached", False)
                _record_success(pipeline, outcome, worked=run.pk is not None)
                if pipeline.source.is_batch:
                    batch.schedule_next(pipeline)
                if run.pk is None:
                    log.debug("Nothing to do")
                else:
                    log.info(
                        "Run succeeded: %s changes read, %s snapshot rows",
                        run.changes_read,
                        run.snapshot_rows,
                    )
            if run.pk is None:
                run.finished_at = timezone.now()
                return run  # nothing done: no row
            if interrupted:
                run.notes = "\n".join(
                    filter(
                        None, [f"Closed {interrupted} earlier run(s) left running as interrupted.", run.notes]
                    )
                )
            run.finished_at = timezone.now()
            run.save()
        return run


def close_interrupted_runs(pipeline: Pipeline) -> int:
    """Make the record true after a run whose process died (a killed worker): under
    the pipeline's lock no other run is alive, so a run still `running` was
    interrupted, and a table still `in_progress` was not copied. Returns the runs closed."""
    now = timezone.now()
    closed = PipelineRun.objects.filter(pipeline=pipeline, outcome=PipelineRun.Outcome.RUNNING).update(
        outcome=PipelineRun.Outcome.INTERRUPTED,
        finished_at=now,
        error=(
            "Interrupted: the process running it ended without recording an outcome (a killed worker "
            f"or a crash); noticed by the next run at {now:%Y-%m-%d %H:%M:%S %Z}."
        ),
    )
    pipeline.tables.filter(snapshot_state=PipelineTable.SnapshotState.IN_PROGRESS).update(
        snapshot_state=PipelineTable.SnapshotState.PENDING
    )
    return closed


def _run_locked(pipeline, run, snapshot_only, observer, hooks, record_run, deadline) -> BatchOutcome | None:
    """The run's work with one source connection, one replication stream and one writer,
    all opened here once and closed at the end. Calls record_run() before anything is
    written, so the run is on record if its process dies from then on."""
    destination = pipeline.destination
    writer = writer_for(
        destination.kind, destination.writer_settings(), connect_timeout=settings.ROSETTA_CONNECT_TIMEOUT
    )
    writer.before_commit_hook = hooks.before_commit
    notes = []
    try:
        with _source(pipeline) as source:
            engine = Engine(
                source,
                writer,
                pipeline_key=pipeline.checkpoint_key,
                slot=pipeline.source.slot_name,
                publication=pipeline.source.publication_name,
                tables=_table_specs(pipeline),
                max_changes_per_transaction=pipeline.max_changes_per_transaction,
                soft_delete=pipeline.soft_delete,
                after_apply=hooks.after_apply,
                before_apply=lambda part: _before_apply(part, record_run, hooks),
                after_part=_ProgressRecorder(pipeline, run),
                recopy_incompatible=(
                    pipeline.on_incompatible_schema_change == Pipeline.SchemaChangePolicy.RECOPY
                ),
            )

            def before_new_slot(lost):
                record_run()
                _before_new_slot(pipeline, run, lost)

            changed, _ = engine.prepare(before_new_slot=before_new_slot, at_step=hooks.at_slot_step)
            notes += changed
            notes += _align_schemas(pipeline, engine)
            if notes or pipeline.tables.exclude(snapshot_state=PipelineTable.SnapshotState.DONE).exists():
                record_run()
            run.snapshot_rows = _snapshot_pending(pipeline, engine, observer)
            if snapshot_only:
                run.notes = "\n".join(notes)
                return None
            outcome = engine.run_batch(until=deadline)
    finally:
        writer.close()
    _forget_copies_read_past(pipeline, outcome.slot)
    batch = outcome.batch
    result = outcome.result
    if batch.transactions or outcome.skipped_transactions or outcome.recopy or batch.notes:
        record_run()
    _mark_for_recopy(pipeline, outcome.recopy)
    if batch.start_lsn:
        run.start_lsn = format_lsn(batch.start_lsn)
    if batch.end_lsn:
        run.end_lsn = format_lsn(batch.end_lsn)
    run.changes_read = batch.changes
    run.bytes_read = batch.bytes_read
    if result is not None:
        run.rows_inserted, run.rows_updated, run.rows_deleted = (
            result.inserted,
            result.updated,
            result.deleted,
        )
        notes += result.notes
    notes += batch.notes
    if outcome.skipped_transactions:
        notes.append(
            f"Skipped {outcome.skipped_transactions} transactions that the destination already had "
            "(a replay after an interrupted run)."
        )
    run.notes = "\n".join(notes)
    return outcome


def _before_apply(part, record_run, hooks: RunHooks) -> None:
    record_run()
    if hooks.before_apply:
        hooks.before_apply(part)


class _ProgressRecorder:
    """After a part's commit: the tables' row counters take the part's changes at once, and
    the run record keeps its totals in memory, so a run that fails after committing parts
    still counts them; the pipeline shows how far the destination is while a long run goes
    on, written at most once a second (the run's end writes the final figures)."""

    def __init__(self, pipeline: Pipeline, run: PipelineRun):
        self.pipeline = pipeline
        self.run = run
        self.written = 0.0

    def __call__(self, part) -> None:
        run = self.run
        for (schema, table), changes in part.tables.items():
            PipelineTable.objects.filter(pipeline=self.pipeline, schema_name=schema, table_name=table).update(
                rows_inserted=F("rows_inserted") + changes.inserted,
                rows_updated=F("rows_updated") + changes.updated,
                rows_deleted=F("rows_deleted") + changes.deleted,
            )
            run.rows_inserted += changes.inserted
            run.rows_updated += changes.updated
            run.rows_deleted += changes.deleted
        if part.start_lsn and not run.start_lsn:
            run.start_lsn = format_lsn(part.start_lsn)
        if part.end_lsn:
            run.end_lsn = format_lsn(part.end_lsn)
        run.changes_read += part.changes
        run.bytes_read += part.bytes_read
        now = time.monotonic()
        if now - self.written < PROGRESS_EVERY_SECONDS or not part.end_lsn:
            return
        self.written = now
        fields = {"last_applied_lsn": format_lsn(part.end_lsn)}
        if part.last_commit_time:
            fields["last_applied_commit_at"] = part.last_commit_time
        Pipeline.objects.filter(pk=self.pipeline.pk).update(**fields)


class SlotLost(SourceProblem):
    """The slot was lost or dropped and the pipeline asks an operator to refresh."""


def _before_new_slot(pipeline: Pipeline, run: PipelineRun, lost: bool) -> None:
    """Called by the engine before it creates (or re-creates) the slot: mark every
    table for re-copy, committed, so a run killed after this point re-copies. When
    tables had been copied, changes are missing: raise a critical alert, and with
    on_slot_lost=fail stop here instead."""
    copied = pipeline.tables.filter(snapshot_state=PipelineTable.SnapshotState.DONE).exists()
    if copied:
        source = pipeline.source
        what = "was lost (the server removed WAL it still needed)" if lost else "disappeared (it was dropped)"
        run.slot_lost = True
        PipelineRun.objects.filter(pk=run.pk).update(slot_lost=True)
        if pipeline.on_slot_lost == Pipeline.OnSlotLost.FAIL:
            message = (
                f"Replication slot {source.slot_name} on {source.name} {what}: changes since the last run "
                f"are missing from the destination of pipeline {pipeline.name}. Refresh the pipeline to "
                "re-copy every table (its Refresh action, or POST /api/pipelines/{id}/refresh/)."
            )
            _raise_alert(pipeline, message)
            raise SlotLost(message)
        message = (
            f"Replication slot {source.slot_name} on {source.name} {what}: pipeline {pipeline.name} "
            "re-creates it and re-copies every table."
        )
        _raise_alert(pipeline, message)
    pipeline.tables.update(snapshot_state=PipelineTable.SnapshotState.PENDING)


def _raise_alert(pipeline: Pipeline, message: str) -> None:
    from monitoring.services import raise_pipeline_alert

    repeat = timedelta(minutes=settings.ROSETTA_ALERT_REPEAT_MINUTES)
    now = timezone.now()
    recent = (
        pipeline.last_alert == message and pipeline.last_alert_at and now - pipeline.last_alert_at < repeat
    )
    if not recent:  # a failing pipeline retries often: one event, then reminders at the alert pace
        raise_pipeline_alert(pipeline.source, message, slot_name=pipeline.source.slot_name)
    Pipeline.objects.filter(pk=pipeline.pk).update(last_alert=message, last_alert_at=now)
    pipeline.last_alert, pipeline.last_alert_at = message, now


def _align_schemas(pipeline: Pipeline, engine: Engine) -> list[str]:
    """Once per run: the copied tables follow their source's schema changes, even without
    a change to carry them; those that need a new copy are marked for one (this run's
    snapshot step makes it). Returns the notes."""
    copied = pipeline.tables.filter(snapshot_state=PipelineTable.SnapshotState.DONE)
    check = engine.align_schemas([(t.schema_name, t.table_name) for t in copied])
    _mark_for_recopy(pipeline, check.recopy)
    return check.notes + list(check.recopy.values())


def _mark_for_recopy(pipeline: Pipeline, tables: dict[tuple[str, str], str]) -> None:
    for schema, table in tables:
        PipelineTable.objects.filter(pipeline=pipeline, schema_name=schema, table_name=table).update(
            snapshot_state=PipelineTable.SnapshotState.PENDING
        )


class SnapshotProgress:
    """The engine's snapshot progress callback: tells the observer every time, and stores
    rows copied and the estimate on the table at most once per PROGRESS_EVERY_SECONDS, so
    the pipeline page shows how far a long copy is without a write per chunk."""

    PROGRESS_EVERY_SECONDS = 1.0

    def __init__(self, table: PipelineTable, observer: RunObserver):
        self.table, self.observer = table, observer
        self.stored_at = None

    def __call__(self, rows: int, estimate: int) -> None:
        self.observer.snapshot_progress(self.table.qualified_name, rows, estimate)
        now = time.monotonic()
        if self.stored_at is None or now - self.stored_at >= self.PROGRESS_EVERY_SECONDS:
            self.stored_at = now
            PipelineTable.objects.filter(pk=self.table.pk).update(
                snapshot_rows_copied=rows, snapshot_rows_estimate=estimate
            )


def _snapshot_pending(pipeline: Pipeline, engine: Engine, observer: RunObserver) -> int:
    """Snapshot each table not yet copied, one at a time: an interrupted snapshot
    resumes with the tables still pending."""
    total = 0
    specs = {spec.key: spec for spec in engine.tables.values()}
    pending = pipeline.tables.exclude(snapshot_state=PipelineTable.SnapshotState.DONE)
    for table in pending:
        table.snapshot_state = PipelineTable.SnapshotState.IN_PROGRESS
        table.snapshot_rows_copied, table.snapshot_rows_estimate = 0, None
        table.snapshot_started_at = timezone.now()
        table.save(
            update_fields=[
                "snapshot_state",
                "snapshot_rows_copied",
                "snapshot_rows_estimate",
                "snapshot_started_at",
            ]
        )
        try:
            rows = engine.snapshot_table(
                specs[(table.schema_name, table.table_name)],
                progress=SnapshotProgress(table, observer),
            )
        except Exception:
            table.snapshot_state = PipelineTable.SnapshotState.FAILED
            table.save(update_fields=["snapshot_state"])
            raise
        spec = specs[(table.schema_name, table.table_name)]
        table.snapshot_state = PipelineTable.SnapshotState.DONE
        table.snapshot_rows = table.snapshot_rows_copied = rows
        table.snapshot_finished_at = timezone.now()
        # In the same write as "done": the next run must know what the copy holds.
        table.copied_below_lsn = format_lsn(spec.copied_below_lsn)
        table.copied_shape = [list(column) for column in spec.copied_shape]
        table.copied_replaced = sorted(spec.copied_replaced)
        table.save(
            update_fields=[
                "snapshot_state",
                "snapshot_rows",
                "snapshot_rows_copied",
                "snapshot_finished_at",
                "copied_below_lsn",
                "copied_shape",
                "copied_replaced",
            ]
        )
        observer.snapshot_done(table.qualified_name, rows)
        total += rows
    return total


def _record_success(pipeline: Pipeline, outcome: BatchOutcome | None, worked: bool) -> None:
    now = timezone.now()
    fields = {"consecutive_failures": 0, "next_run_at": None, "last_error": "", "last_checked_at": now}
    if not worked:
        fields["quiet_checks"] = F("quiet_checks") + 1
    if outcome is not None:
        if outcome.slot is not None:
            fields.update(lag_bytes=outcome.slot.lag_bytes, lag_measured_at=now)
        if outcome.batch.end_lsn:
            fields["last_applied_lsn"] = format_lsn(outcome.batch.end_lsn)
        if outcome.batch.last_commit_time:
            fields["last_applied_commit_at"] = outcome.batch.last_commit_time
    Pipeline.objects.filter(pk=pipeline.pk).update(**fields)
    # A failed pipeline that runs again is running; a refresh ends when every table is copied.
    all_copied = not pipeline.tables.exclude(snapshot_state=PipelineTable.SnapshotState.DONE).exists()
    if all_copied:
        Pipeline.objects.filter(
            pk=pipeline.pk, status__in=[Pipeline.Status.FAILED, Pipeline.Status.REFRESHING]
        ).update(status=Pipeline.Status.RUNNING)
    pipeline.refresh_from_db()


def _record_failure(pipeline: Pipeline, error: str) -> None:
    """Mark the pipeline failed and back off: 10 s, 20 s, 40 s ... up to 15 minutes."""
    pipeline.refresh_from_db()
    failures = pipeline.consecutive_failures + 1
    delay = backoff_seconds(failures, RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS)
    now = timezone.now()
    fields = {
        "consecutive_failures": failures,
        "next_run_at": now + timedelta(seconds=delay),
        "last_error": error,
        "updated_at": now,
    }
    Pipeline.objects.filter(pk=pipeline.pk).update(**fields)
    # A pause that happened meanwhile stays a pause.
    Pipeline.objects.filter(pk=pipeline.pk).exclude(status=Pipeline.Status.PAUSED).update(
        status=Pipeline.Status.FAILED
    )
    pipeline.refresh_from_db()


def run_until_caught_up(
    pipeline: Pipeline,
    *,
    max_seconds: float | None = None,
    on_run: Callable[[PipelineRun], None] | None = None,
    **options,
) -> list[PipelineRun]:
    """One run (run_pipeline) that reads until caught up; with max_seconds, one that goes
    on applying changes as they arrive for that long. Returns [the run] (unsaved when
    there was nothing to do)."""
    run = run_pipeline(pipeline, budget_seconds=max_seconds, **options)
    if on_run:
        on_run(run)
    return [run]


def run_scheduled(pipeline_id: int, requeue: Callable[[int], object] | None = None) -> None:
    """What the run task does: one run of up to ROSETTA_RUN_BUDGET_SECONDS. A run that
    was still busy when its budget ended is queued again at once (through `requeue`),
    so a busy pipeline's changes never wait for the next dispatch; otherwise the
    dispatcher queues the next run."""
    pipeline = Pipeline.objects.select_related("source", "destination").filter(pk=pipeline_id).first()
    if pipeline is None:
        return
    busy = False
    try:
        runnable = pipeline.status in ACTIVE or pipeline.status == Pipeline.Status.FAILED
        if runnable:
            (run,) = run_until_caught_up(pipeline, max_seconds=settings.ROSETTA_RUN_BUDGET_SECONDS)
            busy = run.outcome == PipelineRun.Outcome.SUCCEEDED and run.deadline_reached
    finally:
        still_active = Pipeline.objects.filter(pk=pipeline_id, status__in=ACTIVE)
        if busy and requeue is not None and still_active.update(run_enqueued_at=timezone.now()):
            try:
                requeue(pipeline_id)
            except Exception:  # the broker refused: the dispatcher queues it instead, not after a lease
                Pipeline.objects.filter(pk=pipeline_id).update(run_enqueued_at=None)
                raise
        else:
            Pipeline.objects.filter(pk=pipeline_id).update(run_enqueued_at=None)


def dispatch_pipeline_runs(enqueue: Callable[[int], object]) -> list[int]:
    """Enqueue one run per running or refreshing pipeline, and per failed pipeline whose
    back-off has passed, unless one is already queued. Returns the ids enqueued."""
    now = timezone.now()
    # A run that is alive holds its lock; one queued longer than the lease with no
    # lock held was lost with its worker (or waits behind others: a second one is
    # harmless, it finds the lock taken or nothing to do).
    stale = now - timedelta(seconds=settings.ROSETTA_RUN_LEASE_SECONDS)
    due = (
        Pipeline.objects.filter(
            Q(status__in=ACTIVE) | Q(status=Pipeline.Status.FAILED, next_run_at__isnull=False)
        )
        # A batch pipeline without a schedule runs only when asked (batch.schedule_next).
        .exclude(
            Q(source__kind__in=Source.BATCH_KINDS)
            & Q(schedule_interval__isnull=True)
            & Q(schedule_crontab__isnull=True)
        )
        .filter(Q(next_run_at__isnull=True) | Q(next_run_at__lte=now))
        .filter(
            Q(run_enqueued_at__isnull=True)
            | (Q(run_enqueued_at__lt=stale) & ~Q(source_id__in=_sources_with_a_run_in_progress()))
        )
    )
    with transaction.atomic():
        ids = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True))
        Pipeline.objects.filter(pk__in=ids).update(run_enqueued_at=now)
        transaction.on_commit(lambda: [enqueue(pk) for pk in ids])
    return ids


def _sources_with_a_run_in_progress() -> list[int]:
    """Sources whose run lock (pipeline_lock) some live process holds right now."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid "
            "AND objsubid = 2 AND granted",
            [LOCK_CLASS],
        )
        return [row[0] for row in cursor.fetchall()]


def measure_lag(pipeline: Pipeline) -> str | None:
    """Measure the slot's lag on the source now and store it; returns an error text
    (the stored figures stay) when the source does not answer."""
    if pipeline.source.is_batch:
        return None  # no replication slot, no lag in bytes
    try:
        with _source(pipeline, timeout_ms=settings.ROSETTA_STATEMENT_TIMEOUT_MS) as source:
            state = source.slot_state(pipeline.source.slot_name)
    except Exception as error:
        return describe_error(error)
    if state is None:
        return f"Replication slot {pipeline.source.slot_name} does not exist (yet) on {pipeline.source.name}."
    now = timezone.now()
    Pipeline.objects.filter(pk=pipeline.pk).update(lag_bytes=state.lag_bytes, lag_measured_at=now)
    pipeline.lag_bytes, pipeline.lag_measured_at = state.lag_bytes, now
    return None


PRUNE_CHUNK = 10_000
FAILURES = (PipelineRun.Outcome.FAILED, PipelineRun.Outcome.INTERRUPTED)


def prune_runs(now=None) -> int:
    """Delete runs older than ROSETTA_RUN_HISTORY_DAYS (failed and interrupted ones older
    than ROSETTA_FAILED_RUN_HISTORY_DAYS), keeping each pipeline's newest run so its page
    still says when it last worked. Deletes in chunks, each its own short transaction.
    Returns the runs deleted."""
    now = now or timezone.now()
    kept_days = timedelta(days=settings.ROSETTA_RUN_HISTORY_DAYS)
    failed_days = timedelta(days=settings.ROSETTA_FAILED_RUN_HISTORY_DAYS)
    newest = PipelineRun.objects.filter(pipeline=OuterRef("pk")).order_by("-started_at").values("pk")[:1]
    old = (
        PipelineRun.objects.filter(
            (Q(started_at__lt=now - kept_days) & ~Q(outcome__in=FAILURES))
            | Q(started_at__lt=now - failed_days)
        )
        .exclude(outcome=PipelineRun.Outcome.RUNNING)
        .exclude(
            pk__in=Pipeline.objects.annotate(newest=Subquery(newest))
            .filter(newest__isnull=False)
            .values("newest")
        )
    )
    deleted = 0
    while True:
        chunk = list(old.values_list("pk", flat=True)[:PRUNE_CHUNK])
        if not chunk:
            return deleted
        deleted += PipelineRun.objects.filter(pk__in=chunk).delete()[0]
