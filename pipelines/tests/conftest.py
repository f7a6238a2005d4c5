"""Fixtures for the engine's end-to-end tests: a real source database with a slot,
a PostgreSQL or DuckDB destination, and a pipeline between them."""

import json
import time
import uuid
from datetime import UTC, datetime

import duckdb
import psycopg
import pytest
from psycopg import sql

from destinations.models import Destination
from pipelines import services
from pipelines.models import Pipeline
from sources.models import Source


class SourceDB:
    """The source database as the application that owns it sees it."""

    def __init__(self, kwargs):
        self.kwargs = kwargs
        # The test cluster runs with synchronous_commit=off; with it on here a commit
        # is flushed (and so readable from the slot) when execute() returns.
        self.conn = psycopg.connect(**kwargs, autocommit=True, options="-c synchronous_commit=on")

    def execute(self, query, params=None):
        return self.conn.execute(query, params)

    def rows(self, table, columns, key):
        query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, key)),
        )
        return [tuple(row) for row in self.conn.execute(query)]


class TargetDB:
    """What landed in the destination, read the way an analyst would."""

    def __init__(self, destination: Destination):
        self.destination = destination

    def rows(self, table, columns, key, json_columns=(), include_deleted=False):
        d = self.destination
        where = "" if include_deleted else ' WHERE "_rosetta_deleted_at" IS NULL'
        if d.kind == "postgres":
            query = sql.SQL("SELECT {} FROM {}" + where + " ORDER BY {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.Identifier(d.pg_schema, table),
                sql.SQL(", ").join(map(sql.Identifier, key)),
            )
            with psycopg.connect(
                host=d.pg_host, port=d.pg_port, dbname=d.pg_database, user=d.pg_username
            ) as conn:
                return [tuple(row) for row in conn.execute(query)]
        quoted = ", ".join(_duck_quote(c) for c in columns)
        order = ", ".join(_duck_quote(c) for c in key)
        with _open_duckdb(d.duckdb_path) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            rows = conn.execute(
                f"SELECT {quoted} FROM main.{_duck_quote(table)}{where} ORDER BY {order}"
            ).fetchall()
        positions = [columns.index(c) for c in json_columns]
        return [
            tuple(
                json.loads(v) if i in positions and isinstance(v, str) else _utc(v) for i, v in enumerate(row)
            )
            for row in rows
        ]

    def count(self, table):
        return len(self.rows(table, ["_rosetta_lsn"], ["_rosetta_lsn"], include_deleted=True))

    def checkpoint(self, pipeline_key):
        """The destination's checkpoint for the pipeline; 0 before its first batch."""
        try:
            return self._checkpoint(pipeline_key)
        except (psycopg.errors.UndefinedTable, duckdb.CatalogException):
            return 0

    def _checkpoint(self, pipeline_key):
        d = self.destination
        if d.kind == "postgres":
            with psycopg.connect(
                host=d.pg_host, port=d.pg_port, dbname=d.pg_database, user=d.pg_username
            ) as conn:
                row = conn.execute(
                    sql.SQL("SELECT lsn FROM {} WHERE pipeline_key = %s").format(
                        sql.Identifier(d.pg_schema, "_rosetta_checkpoints")
                    ),
                    [pipeline_key],
                ).fetchone()
        else:
            with _open_duckdb(d.duckdb_path) as conn:
                row = conn.execute(
                    "SELECT lsn FROM main._rosetta_checkpoints WHERE pipeline_key = ?", [pipeline_key]
                ).fetchone()
        return row[0] if row else 0


def _duck_quote(name):
    return '"' + name.replace('"', '""') + '"'


def _open_duckdb(path, wait_seconds=20):
    """Read-only, as an analyst would; a run (in a worker) holds the file's lock while it writes."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return duckdb.connect(path, read_only=True)
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _utc(value):
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


@pytest.fixture
def source_db(source_database):
    db = SourceDB(source_database)
    yield db
    db.conn.close()


@pytest.fixture
def source_row(source_database):
    name = uuid.uuid4().hex[:8]
    return Source.objects.create(
        name=f"src-{name}",
        pg_host=source_database["host"],
        pg_port=source_database["port"],
        pg_database=source_database["dbname"],
        pg_username="postgres",
        sslmode="disable",
        publication_name=f"pub_{name}",
        slot_name=f"slot_{name}",
    )


@pytest.fixture(params=["postgres", "duckdb"])
def destination(request, make_database, pg_cluster, tmp_path):
    if request.param == "postgres":
        return Destination.objects.create(
            name=f"pg-{uuid.uuid4().hex[:8]}",
            kind="postgres",
            pg_host="127.0.0.1",
            pg_port=pg_cluster.port,
            pg_database=make_database("dst"),
            pg_username="postgres",
            pg_schema="analytics",
        )
    return Destination.objects.create(
        name=f"duck-{uuid.uuid4().hex[:8]}", kind="duckdb", duckdb_path=str(tmp_path / "warehouse.duckdb")
    )


@pytest.fixture
def target(destination):
    return TargetDB(destination)


@pytest.fixture
def make_pipeline(source_row, destination):
    def make(tables, max_changes_per_transaction=100_000, start=True, **fields):
        pipeline = Pipeline.objects.create(
            name=f"p-{uuid.uuid4().hex[:8]}",
            source=source_row,
            destination=destination,
            max_changes_per_transaction=max_changes_per_transaction,
            **fields,
        )
        services.set_pipeline_tables(pipeline, tables)
        if start:
            services.start_pipeline(pipeline)
        return pipeline

    return make


@pytest.fixture
def api():
    """A local HTTP JSON API the test scripts (batch_support.ScriptedApi)."""
    from .batch_support import ScriptedApi

    server = ScriptedApi()
    yield server
    server.close()
