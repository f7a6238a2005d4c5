import psycopg
import pytest

from engine.writers.duckdb import DuckDBWriter
from engine.writers.postgres import PostgresWriter


@pytest.fixture
def pg_destination(make_database, pg_cluster):
    """Writer settings for a fresh destination database on the test cluster."""
    return {
        "host": "127.0.0.1",
        "port": pg_cluster.port,
        "database": make_database("dst"),
        "username": "postgres",
        "password": "",
        "schema": "analytics",
    }


@pytest.fixture
def pg_writer(pg_destination):
    writer = PostgresWriter(pg_destination)
    yield writer
    writer.close()


@pytest.fixture
def pg_reader(pg_destination):
    """A separate autocommit connection to the destination, as an analyst would have."""
    with psycopg.connect(
        host=pg_destination["host"],
        port=pg_destination["port"],
        dbname=pg_destination["database"],
        user="postgres",
        autocommit=True,
    ) as conn:
        yield conn


@pytest.fixture
def source_conn(source_database):
    """An autocommit connection to a fresh source database, for building tables to snapshot."""
    with psycopg.connect(**source_database, autocommit=True) as conn:
        yield conn


@pytest.fixture
def duckdb_writer(tmp_path):
    writer = DuckDBWriter({"path": str(tmp_path / "warehouse.duckdb")})
    yield writer
    writer.close()


class Target:
    """A writer and a reader of what it wrote, the same for every destination kind."""

    def __init__(self, kind, writer, query, schema):
        self.kind, self.writer, self._query, self.schema = kind, writer, query, schema

    def table(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'

    def rows(self, statement: str, params=()) -> list[tuple]:
        return self._query(statement, params)


@pytest.fixture(params=["postgres", "duckdb"])
def target(request, tmp_path):
    """Each writer behind one small facade, with a separate reading connection."""
    if request.param == "postgres":
        settings = request.getfixturevalue("pg_destination")
        reader = request.getfixturevalue("pg_reader")
        writer = PostgresWriter(settings)
        yield Target("postgres", writer, lambda s, p: reader.execute(s, p).fetchall(), "analytics")
    else:
        path = str(tmp_path / "warehouse.duckdb")
        writer = DuckDBWriter({"path": path})
        connections = []

        def query(statement, params):
            # a connection of its own (same process, so DuckDB shares the open file)
            if not connections:
                import duckdb

                connections.append(duckdb.connect(path))
            return connections[0].execute(statement.replace("%s", "?"), list(params)).fetchall()

        yield Target("duckdb", writer, query, "main")
        for conn in connections:
            conn.close()
    writer.close()
