"""One writer module per destination kind, behind the small interface in base.py.

Writers are plain Python: they take a dict of the destination's settings
(Destination.writer_settings()) and know nothing of Django.
"""

from importlib import import_module

from .base import ConnectionProblem, Writer

WRITER_CLASSES = {
    "postgres": "engine.writers.postgres.PostgresWriter",
    "duckdb": "engine.writers.duckdb.DuckDBWriter",
    "snowflake": "engine.writers.snowflake.SnowflakeWriter",
}


def writer_for(kind: str, settings: dict, **options) -> Writer:
    module_name, class_name = WRITER_CLASSES[kind].rsplit(".", 1)
    return getattr(import_module(module_name), class_name)(settings, **options)


__all__ = ["ConnectionProblem", "Writer", "writer_for"]
