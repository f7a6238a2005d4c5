"""A walsender or destination connection terminated under a run: the run's error is
the server's own message, and a dead replication connection fails at once instead
of waiting for a confirmation that cannot come."""

import time

import psycopg
import pytest

from engine.fold import TableSpec
from engine.runner import Engine
from engine.source import SourceDatabase, SourceProblem
from engine.writers.duckdb import DuckDBWriter
from pipelines import services
from pipelines.models import PipelineRun

from .test_end_to_end import assert_equal, create_tables, insert_customers, insert_orders

TERMINATED = "terminating connection due to administrator command"


def terminate_walsender(source_db, slot):
    (terminated,) = source_db.execute(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s", [slot]
    ).fetchone()
    assert terminated


def test_a_walsender_terminated_between_two_reads_ends_the_read_with_the_servers_message(
    source_database, tmp_path
):
    conn = psycopg.connect(**source_database, autocommit=True, options="-c synchronous_commit=on")
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, qty int)")
    db = SourceDatabase(source_database)
    writer = DuckDBWriter({"path": str(tmp_path / "w.duckdb")})
    engine = Engine(
        db,
        writer,
        pipeline_key="p",
        slot="s_term",
        publication="pub_term",
        tables=[TableSpec("public", "items", "items")],
        max_changes_per_transaction=100,
    )
    try:
        engine.prepare()
        engine.snapshot_table(engine.tables[("public", "items")])
        conn.execute("INSERT INTO items VALUES (1, 1)")
        engine.run_batch()
        assert db.streaming("s_term")  # kept open for the next batch
        terminate_walsender(conn, "s_term")
        conn.execute("INSERT INTO items VALUES (2, 2)")

        with pytest.raises(SourceProblem) as failure:
            engine.run_batch()
        assert TERMINATED in str(failure.value)
        assert "no reason given" not in str(failure.value)
        engine.run_batch()  # a new stream from the slot: nothing lost
        assert writer._connection().execute("SELECT count(*) FROM items").fetchone() == (2,)
    finally:
        db.close()
        writer.close()
        conn.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("destination", ["postgres"], indirect=True)
def test_a_walsender_terminated_before_the_confirm_fails_the_run_at_once_with_the_servers_message(
    source_db, target, make_pipeline
):
    create_tables(source_db)
    insert_orders(source_db, range(1, 11))
    insert_customers(source_db, range(1, 4))
    pipeline = make_pipeline(["public.orders", "public.customers"])
    services.run_until_caught_up(pipeline)
    insert_orders(source_db, range(11, 21))

    def terminate_before_the_destination_commit():
        terminate_walsender(source_db, pipeline.source.slot_name)

    started = time.monotonic()
    run = services.run_pipeline(
        pipeline, hooks=services.RunHooks(before_commit=terminate_before_the_destination_commit)
    )
    took = time.monotonic() - started

    assert run.outcome == PipelineRun.Outcome.FAILED
    assert TERMINATED in run.error, run.error
    assert took < 5  # not the 10 s confirmation wait on a dead connection
    services.run_until_caught_up(pipeline)
    assert_equal(source_db, target)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("destination", ["postgres"], indirect=True)
def test_a_destination_connection_terminated_mid_apply_fails_the_run_with_the_servers_message(
    source_db, target, make_pipeline, destination
):
    create_tables(source_db)
    insert_orders(source_db, range(1, 11))
    insert_customers(source_db, range(1, 4))
    pipeline = make_pipeline(["public.orders", "public.customers"])
    services.run_until_caught_up(pipeline)
    insert_orders(source_db, range(11, 21))

    def terminate_the_destination_connection():
        source_db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [destination.pg_database],
        )

    run = services.run_pipeline(
        pipeline, hooks=services.RunHooks(before_commit=terminate_the_destination_connection)
    )
    assert run.outcome == PipelineRun.Outcome.FAILED
    assert TERMINATED in run.error, run.error
    services.run_until_caught_up(pipeline)
    assert_equal(source_db, target)
