import psycopg
import pytest

from destinations.writers.duckdb import DuckDBWriter
from destinations.writers.postgres import PostgresWriter


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
