"""A PostgreSQL snapshot that fails on either side, as a run copies a table
(Engine.snapshot_table: the source's COPY -> PostgresWriter.load_snapshot): the run
fails with the server's message (libpq's when a server's backend is gone) and the
destination keeps its old copy; the source's COPY is stopped, not left sending."""

import time

import psycopg
import pytest

from engine.fold import TableSpec
from engine.runner import Engine
from engine.source import SourceDatabase
from engine.writers.postgres import PostgresWriter

# ~150 MB of binary COPY: far more than the sockets between the servers and this process
# buffer, so the source's COPY is still sending when the first chunk reaches the writer.
ROWS, WIDTH = 150_000, 1000


def old_copy(pg_reader):
    return pg_reader.execute("SELECT id, body FROM analytics.events ORDER BY id").fetchall()


@pytest.fixture
def engine(source_database, source_conn, pg_destination):
    source_conn.execute("CREATE TABLE public.events (id bigint PRIMARY KEY, body text)")
    source_conn.execute("INSERT INTO public.events VALUES (1, 'old'), (2, 'old')")
    writer = PostgresWriter(pg_destination)
    with SourceDatabase(source_database) as source:
        engine = Engine(
            source, writer, pipeline_key="p", slot="no_slot", publication="no_publication",
            tables=[TableSpec("public", "events", "events")], max_changes_per_transaction=1000,
        )  # fmt: skip
        assert engine.snapshot_table(engine.tables[("public", "events")]) == 2  # the old copy
        source_conn.execute(
            "INSERT INTO public.events SELECT g, repeat('n', %s) FROM generate_series(3, %s) g", [WIDTH, ROWS]
        )
        yield engine
    writer.close()


@pytest.mark.parametrize(
    "stop, message",
    [
        # an error in the source's COPY statement: the server's own message
        ("pg_cancel_backend", "canceling statement due to user request"),
        # the source's backend gone: libpq reads the closed socket before the server's
        # last message, and says so
        ("pg_terminate_backend", "server closed the connection unexpectedly|terminating connection"),
    ],
)
def test_a_source_copy_that_fails_midway_fails_the_snapshot_with_its_message_and_keeps_the_old_copy(
    engine, source_conn, pg_reader, stop, message
):
    before = old_copy(pg_reader)
    stopped = []

    def stop_the_source_copy(rows, estimate):
        if not stopped:  # at the first chunk; the chunks already sent still arrive after it
            (pid,) = source_conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT%' AND pid <> pg_backend_pid()"
            ).fetchone()
            source_conn.execute(f"SELECT {stop}(%s)", [pid])
            stopped.append(pid)

    with pytest.raises(psycopg.Error, match=message):
        engine.snapshot_table(engine.tables[("public", "events")], progress=stop_the_source_copy)
    assert old_copy(pg_reader) == before


def test_a_destination_that_dies_midway_fails_the_snapshot_stops_the_source_copy_and_keeps_the_old_copy(
    engine, source_conn, pg_reader
):
    before = old_copy(pg_reader)
    destination_pid = engine.writer._connection().info.backend_pid
    reports = []

    def kill_the_destination(rows, estimate):
        reports.append(rows)
        if len(reports) == 1:
            pg_reader.execute("SELECT pg_terminate_backend(%s)", [destination_pid])

    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as failure:
        engine.snapshot_table(engine.tables[("public", "events")], progress=kill_the_destination)
    assert time.monotonic() - started < 30
    assert "terminating connection due to administrator command" in str(
        failure.value
    ) or "server closed the connection" in str(failure.value)
    assert len(reports) < 10  # not read to the end: the write failed at the next chunk
    assert old_copy(pg_reader) == before
    # the source's COPY was cancelled and its connection closed, not left sending
    assert not source_conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT%' AND pid <> pg_backend_pid()"
    ).fetchall()


def test_a_destination_that_refuses_the_load_fails_the_snapshot_with_its_message_and_keeps_the_old_copy(
    engine, source_conn, pg_reader, pg_destination
):
    before = old_copy(pg_reader)
    pg_reader.execute(f'ALTER DATABASE "{pg_destination["database"]}" SET default_transaction_read_only = on')
    engine.writer.close()  # the next connection takes the setting
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="read-only transaction"):
        engine.snapshot_table(engine.tables[("public", "events")])
    assert old_copy(pg_reader) == before
    assert not source_conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT%' AND pid <> pg_backend_pid()"
    ).fetchall()
