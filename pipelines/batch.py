"""Runs, statistics and previews of pipelines whose source is CSV files or an HTTP JSON API.

The batch counterpart of services.run_pipeline's CDC path: services calls
run_batch_locked() under the same pipeline lock and records the PipelineRun the
same way; the data path itself is engine.batch_sources (plain Python).
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from engine.batch_sources.csv import CsvReader
from engine.batch_sources.http_json import HttpJsonReader
from engine.batch_sources.loader import BatchLoader
from engine.batch_sources.schema import normalize_name
from engine.writers import writer_for
from sources.models import Source

from .models import Pipeline, PipelineRun, PipelineTable

log = logging.getLogger(__name__)
MAX_PAGE_SIZE = 500


def _writer(pipeline: Pipeline):
    destination = pipeline.destination
    return writer_for(
        destination.kind, destination.writer_settings(), connect_timeout=settings.ROSETTA_CONNECT_TIMEOUT
    )


def batch_table(pipeline: Pipeline) -> PipelineTable:
    """The one destination table of a batch pipeline; named after the source unless set."""
    table = pipeline.tables.first()
    if table is None:
        name = normalize_name(pipeline.source.name)
        table = PipelineTable.objects.create(
            pipeline=pipeline,
            table_name=name,
            snapshot_state=PipelineTable.SnapshotState.DONE,
        )
    return table


def reader_for(source: Source):
    source_settings = source.batch_settings()
    if source.kind == Source.Kind.CSV:
        return CsvReader(source_settings), source_settings
    return HttpJsonReader(source_settings, source.header_secrets()), source_settings


def run_batch_locked(pipeline: Pipeline, run: PipelineRun, hooks) -> None:
    """Load what is new at the source, in parts (each one destination transaction with its
    checkpoint). A table waiting for a refresh is loaded again from the start."""
    table = batch_table(pipeline)
    reader, source_settings = reader_for(pipeline.source)
    writer = _writer(pipeline)
    writer.before_commit_hook = hooks.before_commit
    notes = []
    loader = BatchLoader(
        reader,
        writer,
        pipeline_key=pipeline.name,
        source_name=pipeline.source.name,
        target_table=table.target_table,
        primary_key=source_settings.primary_key,
        json_values=pipeline.source.kind == Source.Kind.HTTP_JSON,
        part_rows=settings.ROSETTA_BATCH_PART_ROWS,
        max_reject_share=pipeline.max_reject_share,
    )
    try:
        refreshing = table.snapshot_state != PipelineTable.SnapshotState.DONE
        if refreshing and writer.reset_checkpoint(pipeline.name):
            notes.append("Refresh: the checkpoint was cleared, everything is loaded again.")
        try:
            loader.run()
        finally:
            _record_counts(pipeline, table, run, loader, notes)
    finally:
        writer.close()
    PipelineTable.objects.filter(pk=table.pk).update(
        snapshot_state=PipelineTable.SnapshotState.DONE, snapshot_finished_at=timezone.now()
    )


def _record_counts(pipeline, table, run, loader, notes) -> None:
    outcome = getattr(loader, "outcome", None)
    if outcome is None:
        return
    run.changes_read = outcome.records + outcome.rejects
    run.rows_inserted = outcome.result.inserted
    run.rows_updated = outcome.result.updated
    run.rows_rejected = outcome.rejects
    if outcome.parts:
        run.start_lsn, run.end_lsn = f"part {outcome.first_part}", f"part {outcome.last_part}"
    reader = loader.reader
    client = getattr(reader, "client", None)
    if client is not None and client.retries_made:
        notes.append(f"{client.retries_made} request(s) were retried ({client.requests_made} made in all).")
    if outcome.rejects:
        notes.append(
            f"{outcome.rejects} record(s) rejected: they are in the destination's _rosetta_rejects table "
            "with their file or URL, line and reason."
        )
    run.notes = "\n".join(notes + outcome.notes)
    fields = {
        "rows_inserted": F("rows_inserted") + outcome.result.inserted,
        "rows_updated": F("rows_updated") + outcome.result.updated,
    }
    if outcome.mapping:
        fields.update(column_mapping=outcome.mapping, column_types=outcome.column_types)
    PipelineTable.objects.filter(pk=table.pk).update(**fields)


def schedule_next(pipeline: Pipeline) -> None:
    """After a successful run of a scheduled batch pipeline: when the dispatcher runs it next."""
    schedule = pipeline.schedule()
    if schedule is None:
        return
    now = timezone.now()
    remaining = schedule.remaining_estimate(now)
    if remaining <= timedelta(0):
        remaining = timedelta(seconds=1)
    Pipeline.objects.filter(pk=pipeline.pk).update(next_run_at=now + remaining)


# -- statistics and preview -----------------------------------------------------------


def pipeline_stats(pipeline: Pipeline, count_destination: bool = True) -> dict:
    """Rows per table (counted in the destination), runs by outcome, last success, rows per
    second of the last successful run, rejects. Works for CDC pipelines too; without
    count_destination the destination is not asked (rows: None)."""
    runs = pipeline.runs.aggregate(
        total=Count("pk"),
        succeeded=Count("pk", filter=Q(outcome=PipelineRun.Outcome.SUCCEEDED)),
        failed=Count("pk", filter=Q(outcome=PipelineRun.Outcome.FAILED)),
        skipped=Count("pk", filter=Q(outcome=PipelineRun.Outcome.SKIPPED)),
        rows_rejected=Sum("rows_rejected"),
        rows_inserted=Sum("rows_inserted"),
        rows_updated=Sum("rows_updated"),
        rows_deleted=Sum("rows_deleted"),
    )
    last = pipeline.runs.filter(outcome=PipelineRun.Outcome.SUCCEEDED).order_by("-started_at").first()
    rows_per_second = None
    if last is not None and last.duration_seconds:
        moved = last.rows_inserted + last.rows_updated + last.rows_deleted + last.snapshot_rows
        rows_per_second = round(moved / last.duration_seconds, 1)
    tables, error = [], None
    writer = None
    try:
        if count_destination:
            writer = _writer(pipeline)
            for table in pipeline.tables.all():
                tables.append({"table": table.target_table, "rows": writer.count_rows(table.target_table)})
    except Exception as problem:  # noqa: BLE001 - the stats say why, the page stays up
        error = _describe(problem)
    finally:
        if writer is not None:
            writer.close()
    known = {t["table"] for t in tables}
    tables += [
        {"table": t.target_table, "rows": None} for t in pipeline.tables.all() if t.target_table not in known
    ]
    by_name = {t.target_table: t for t in pipeline.tables.all()}
    for entry in tables:
        table = by_name.get(entry["table"])
        entry.update(
            rows_inserted=table.rows_inserted,
            rows_updated=table.rows_updated,
            rows_deleted=table.rows_deleted,
            column_mapping=table.column_mapping,
        )
    return {
        "pipeline": pipeline.name,
        "source_kind": pipeline.source.kind,
        "tables": tables,
        "tables_error": error,
        "runs": {key: runs[key] for key in ("total", "succeeded", "failed", "skipped")},
        "rows_inserted": runs["rows_inserted"] or 0,
        "rows_updated": runs["rows_updated"] or 0,
        "rows_deleted": runs["rows_deleted"] or 0,
        "rows_rejected": runs["rows_rejected"] or 0,
        "last_success_at": last.finished_at if last else None,
        "last_run_rows_per_second": rows_per_second,
    }


def _describe(error: Exception) -> str:
    from .services import describe_error

    return describe_error(error)


class PreviewRefused(ValueError):
    """A preview request naming a table the pipeline does not write, or a bad page; says which."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def preview_rows(
    pipeline: Pipeline, table: str = "", page: int = 1, page_size: int = 50, search: str = ""
) -> dict:
    """A page of a destination table of this pipeline, read-only."""
    targets = [t.target_table for t in pipeline.tables.all()]
    if not targets:
        raise PreviewRefused("table", "The pipeline has no table yet.")
    table = table or targets[0]
    if table not in targets:
        raise PreviewRefused(
            "table", f"{table!r} is not a table of this pipeline (it writes {', '.join(targets)})."
        )
    if page < 1:
        raise PreviewRefused("page", "must be 1 or more.")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise PreviewRefused("page_size", f"must be between 1 and {MAX_PAGE_SIZE}.")
    writer = _writer(pipeline)
    try:
        columns, rows, count = writer.preview_rows(table, (page - 1) * page_size, page_size, search.strip())
    finally:
        writer.close()
    return {
        "table": table,
        "tables": targets,
        "page": page,
        "page_size": page_size,
        "search": search,
        "count": count,
        "columns": columns,
        "rows": [[_plain(value) for value in row] for row in rows],
    }


def _plain(value):
    """A value the API and the admin can show as it is."""
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def reset_pipeline(pipeline: Pipeline) -> str:
    """Forget a batch pipeline's checkpoint in the destination: the next run loads every
    file (or page) again. Rows already loaded stay and are merged over."""
    if not pipeline.source.is_batch:
        raise ValueError(
            f"{pipeline.name} reads PostgreSQL changes; its position is the replication slot. "
            "Refresh it to copy its tables again."
        )
    from .services import pipeline_lock

    with pipeline_lock(pipeline) as locked:
        if not locked:
            raise ValueError("a run is in progress; try again in a moment")
        writer = _writer(pipeline)
        try:
            found = writer.reset_checkpoint(pipeline.name)
        finally:
            writer.close()
    if found:
        return f"Cleared the checkpoint of {pipeline.name}: the next run loads everything again."
    return f"{pipeline.name} had no checkpoint: the next run loads everything anyway."
