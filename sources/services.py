from django.conf import settings

from engine.preflight import run_checks

from .models import Source


def test_source_connection(source: Source) -> list[dict]:
    """Connect with a short timeout and run the preflight checks for every table
    that a pipeline of this source copies."""
    from pipelines.models import PipelineTable

    tables = (
        PipelineTable.objects.filter(pipeline__source=source)
        .values_list("schema_name", "table_name")
        .distinct()
        .order_by("schema_name", "table_name")
    )
    checks = run_checks(
        source.connection_kwargs(connect_timeout=settings.ROSETTA_CONNECT_TIMEOUT),
        source.publication_name,
        list(tables),
        statement_timeout_ms=settings.ROSETTA_STATEMENT_TIMEOUT_MS,
    )
    return [check.as_dict() for check in checks]
