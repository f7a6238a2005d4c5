"""Operations on pipelines that the API, the admin, tasks and commands share.

run_pipeline() is the batch CDC protocol of DESIGN.md around the engine
(pipelines/engine/runner.py): it takes the lock, loads the configuration,
calls the engine and records a PipelineRun.
"""

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from django.conf import settings
from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from destinations.writers import writer_for
from pipelines.engine.batch import lsn_to_str
from pipelines.engine.fold import TableSpec
from pipelines.engine.runner import BatchOutcome, Engine
from pipelines.engine.source import SourceDatabase, SourceProblem
from sources.models import Source

from . import batch
from .models import IllegalTransition, Pipeline, PipelineRun, PipelineTable

log = logging.getLogger(__name__)

__all__ = [
    "IllegalTransition",
    "parse_table_name",
    "set_pipeline_tables",
    "start_pipeline",
    "pause_pipeline",
    "refresh_pipeline",
    "delete_pipeline",
    "run_pipeline",
    "run_until_caught_up",
    "run_scheduled",
    "dispatch_pipeline_runs",
    "measure_lag",
]

# pg_try_advisory_lock(LOCK_CLASS, source id) on the metadata database. A source
# is one replication slot, so this keeps one reader per slot: two runs of a
# pipeline never overlap, across processes and machines.
LOCK_CLASS = 0x524F5345  # "ROSE"
RETRY_FIRST_SECONDS = 10
RETRY_MAX_SECONDS = 15 * 60
ACTIVE = (Pipeline.Status.RUNNING, Pipeline.Status.REFRESHING)


def parse_table_name(name: str) -> tuple[str, str]:
    """ "schema.table" (or "table", meaning public.table) -> (schema, table)."""
    parts = name.strip().split(".")
    if len(parts) == 1 and parts[0]:
        return "public", parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise ValueError(f"{name!r} is not a table name of the form schema.table.")


@transaction.atomic
def set_pipeline_tables(pipeline: Pipeline, names: list[str]) -> None:
    """Make the pipeline copy exactly these tables; kept tables keep their progress.
    The next run adds new tables to the publication and snapshots them."""
    wanted = [parse_table_name(name) for name in names]
    existing = {(t.schema_name, t.table_name): t for t in pipeline.tables.all()}
    for key, table in existing.items():
        if key not in wanted:
            table.delete()
    # A batch source's table has no snapshot: its first run loads it.
    state = PipelineTable.SnapshotState.DONE if pipeline.source.is_batch else PipelineTable.SnapshotState.PENDING
    for schema, table in wanted:
        if (schema, table) not in existing:
            PipelineTable.objects.create(
                pipeline=pipeline, schema_name=schema, table_name=table, snapshot_state=state
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


# -- runs -------------------------------------------------------------------


@dataclass
class RunHooks:
    """Fault and timing injection for tests; every hook is optional."""

    after_lock: Callable[[], None] | None = None  # the lock is held, nothing done yet
    before_commit: Callable[[], None] | None = None  # inside the destination transaction
    after_apply: Callable[[object], None] | None = None  # destination committed, slot not advanced


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
def pipeline_lock(pipeline: Pipeline):
    """Yield True while holding the pipeline's (its source slot's) advisory lock, or
    False at once if another process holds it. A dedicated connection holds the
    lock, so it ends with the process whatever happens."""
    with _metadata_connection() as conn:
        (locked,) = conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", [LOCK_CLASS, pipeline.source_id]
        ).fetchone()
        try:
            yield locked
        finally:
            if locked and not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_CLASS, pipeline.source_id])


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
    known = ("SourceProblem", "ConnectionProblem", "IncompatibleSchemaChange", "DecodeError")
    if type(error).__name__ in known:
        return text
    return f"{type(error).__name__}: {text}"


def _table_specs(pipeline: Pipeline) -> list[TableSpec]:
    return [TableSpec(t.schema_name, t.table_name, t.target_table) for t in pipeline.tables.all()]


def run_pipeline(
    pipeline: Pipeline,
    *,
    snapshot_only: bool = False,
    observer: RunObserver | None = None,
    hooks: RunHooks | None = None,
) -> PipelineRun:
    """One run: snapshot what needs it, then one CDC batch, under the pipeline's lock.
    Returns the recorded PipelineRun (outcome SKIPPED when another run held the lock)."""
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
        pipeline.refresh_from_db()
        run = PipelineRun.objects.create(pipeline=pipeline)
        run.caught_up = False
        try:
            if pipeline.source.is_batch:
                outcome = batch.run_batch_locked(pipeline, run, hooks)
            else:
                outcome = _run_locked(pipeline, run, snapshot_only, observer, hooks)
        except Exception as error:
            log.exception("Pipeline %s run failed", pipeline.name)
            run.outcome = PipelineRun.Outcome.FAILED
            run.error = describe_error(error)
            _record_failure(pipeline, run.error)
        else:
            run.outcome = PipelineRun.Outcome.SUCCEEDED
            run.caught_up = outcome is None or outcome.caught_up
            _record_success(pipeline, outcome)
            if pipeline.source.is_batch:
                batch.schedule_next(pipeline)
        run.finished_at = timezone.now()
        run.save()
        return run


def _run_locked(pipeline, run, snapshot_only, observer, hooks) -> BatchOutcome | None:
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
                pipeline_key=pipeline.name,
                slot=pipeline.source.slot_name,
                publication=pipeline.source.publication_name,
                tables=_table_specs(pipeline),
                batch_size=pipeline.batch_size,
                soft_delete=pipeline.soft_delete,
                after_apply=hooks.after_apply,
            )
            changed, slot_is_new = engine.prepare()
            notes += changed
            if slot_is_new:
                pipeline.tables.update(snapshot_state=PipelineTable.SnapshotState.PENDING)
            run.snapshot_rows = _snapshot_pending(pipeline, engine, observer)
            if snapshot_only:
                run.notes = "\n".join(notes)
                return None
            outcome = engine.run_batch()
    finally:
        writer.close()
    batch = outcome.batch
    result = outcome.result
    if batch.start_lsn:
        run.start_lsn = lsn_to_str(batch.start_lsn)
    if batch.end_lsn:
        run.end_lsn = lsn_to_str(batch.end_lsn)
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
    for (schema, table), changes in batch.tables.items():
        PipelineTable.objects.filter(pipeline=pipeline, schema_name=schema, table_name=table).update(
            rows_inserted=F("rows_inserted") + changes.inserted,
            rows_updated=F("rows_updated") + changes.updated,
            rows_deleted=F("rows_deleted") + changes.deleted,
        )
    return outcome


def _snapshot_pending(pipeline: Pipeline, engine: Engine, observer: RunObserver) -> int:
    """Snapshot each table not yet copied, one at a time: an interrupted snapshot
    resumes with the tables still pending."""
    total = 0
    specs = {spec.key: spec for spec in engine.tables.values()}
    pending = pipeline.tables.exclude(snapshot_state=PipelineTable.SnapshotState.DONE)
    for table in pending:
        table.snapshot_state = PipelineTable.SnapshotState.IN_PROGRESS
        table.save(update_fields=["snapshot_state"])
        name = table.qualified_name
        try:
            rows = engine.snapshot_table(
                specs[(table.schema_name, table.table_name)],
                progress=lambda done, estimate, name=name: observer.snapshot_progress(name, done, estimate),
            )
        except Exception:
            table.snapshot_state = PipelineTable.SnapshotState.FAILED
            table.save(update_fields=["snapshot_state"])
            raise
        table.snapshot_state = PipelineTable.SnapshotState.DONE
        table.snapshot_rows = rows
        table.snapshot_finished_at = timezone.now()
        table.save(update_fields=["snapshot_state", "snapshot_rows", "snapshot_finished_at"])
        observer.snapshot_done(name, rows)
        total += rows
    return total


def _record_success(pipeline: Pipeline, outcome: BatchOutcome | None) -> None:
    now = timezone.now()
    fields = {"consecutive_failures": 0, "next_run_at": None, "last_error": "", "updated_at": now}
    if outcome is not None:
        if outcome.slot is not None:
            fields.update(lag_bytes=outcome.slot.lag_bytes, lag_measured_at=now)
        if outcome.batch.end_lsn:
            fields["last_applied_lsn"] = lsn_to_str(outcome.batch.end_lsn)
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
    delay = min(RETRY_FIRST_SECONDS * 2 ** (failures - 1), RETRY_MAX_SECONDS)
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
    """Run batches until one reads everything the source has flushed, a run fails or
    is skipped, or max_seconds have passed."""
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    runs = []
    while True:
        run = run_pipeline(pipeline, **options)
        runs.append(run)
        if on_run:
            on_run(run)
        if run.outcome != PipelineRun.Outcome.SUCCEEDED or getattr(run, "caught_up", True):
            return runs
        if deadline is not None and time.monotonic() > deadline:
            return runs


def run_scheduled(pipeline_id: int) -> None:
    """What the run task does: catch up for a while, then let the dispatcher requeue."""
    pipeline = Pipeline.objects.select_related("source", "destination").filter(pk=pipeline_id).first()
    if pipeline is None:
        return
    try:
        runnable = pipeline.status in ACTIVE or pipeline.status == Pipeline.Status.FAILED
        if runnable:
            run_until_caught_up(pipeline, max_seconds=settings.ROSETTA_RUN_BUDGET_SECONDS)
    finally:
        Pipeline.objects.filter(pk=pipeline_id).update(run_enqueued_at=None)


def dispatch_pipeline_runs(enqueue: Callable[[int], object]) -> list[int]:
    """Enqueue one run per running or refreshing pipeline, and per failed pipeline whose
    back-off has passed, unless one is already queued. Returns the ids enqueued."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
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
        .filter(Q(run_enqueued_at__isnull=True) | Q(run_enqueued_at__lt=stale))
    )
    with transaction.atomic():
        ids = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True))
        Pipeline.objects.filter(pk__in=ids).update(run_enqueued_at=now)
        transaction.on_commit(lambda: [enqueue(pk) for pk in ids])
    return ids


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
