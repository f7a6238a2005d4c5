"""Operations on pipelines that the API, the admin, tasks and commands share."""

from django.db import transaction

from .models import IllegalTransition, Pipeline, PipelineTable

__all__ = [
    "IllegalTransition",
    "parse_table_name",
    "set_pipeline_tables",
    "start_pipeline",
    "pause_pipeline",
    "refresh_pipeline",
]


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
    """Make the pipeline copy exactly these tables; kept tables keep their progress."""
    wanted = [parse_table_name(name) for name in names]
    existing = {(t.schema_name, t.table_name): t for t in pipeline.tables.all()}
    for key, table in existing.items():
        if key not in wanted:
            table.delete()
    for schema, table in wanted:
        if (schema, table) not in existing:
            PipelineTable.objects.create(pipeline=pipeline, schema_name=schema, table_name=table)


def start_pipeline(pipeline: Pipeline) -> None:
    pipeline.transition("start")


def pause_pipeline(pipeline: Pipeline) -> None:
    pipeline.transition("pause")


@transaction.atomic
def refresh_pipeline(pipeline: Pipeline, tables: list[str] | None = None) -> list[str]:
    """Re-snapshot all tables, or only the named ones. Returns the tables to re-copy."""
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
