"""A run holds one replication stream and one destination writer, and applies part after
part, each its own destination transaction, until caught up; the run task goes on while
changes arrive, within its time budget, and is queued again at once if still busy."""

import threading
import time

import psycopg
import pytest
from django.test import override_settings

from engine import stream
from pipelines import services
from pipelines.models import Pipeline, PipelineRun

from .test_end_to_end import create_tables, insert_orders

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("destination", ["duckdb"], indirect=True),
]


@pytest.fixture
def opened(monkeypatch):
    """Counts the walsender streams and destination writers opened."""
    counts = {"streams": 0, "writers": 0}
    open_stream = stream.ReplicationStream.open
    make_writer = services.writer_for

    def counting_open(self):
        counts["streams"] += 1
        return open_stream(self)

    def counting_writer(*args, **kwargs):
        counts["writers"] += 1
        return make_writer(*args, **kwargs)

    monkeypatch.setattr(stream.ReplicationStream, "open", counting_open)
    monkeypatch.setattr(services, "writer_for", counting_writer)
    return counts


def pipeline_with_backlog(source_db, make_pipeline, transactions: int) -> Pipeline:
    """A running pipeline in parts of 10 changes, and `transactions` source transactions
    of 10 inserts each waiting in its slot: one part per transaction."""
    create_tables(source_db)
    pipeline = make_pipeline(["public.orders"], max_changes_per_transaction=10)
    services.run_pipeline(pipeline)  # slot, snapshot of the empty table
    for start in range(1, transactions * 10, 10):
        insert_orders(source_db, range(start, start + 10))
    return pipeline


def test_a_backlog_is_applied_in_parts_over_one_stream_and_one_writer(
    source_db, target, make_pipeline, opened
):
    pipeline = pipeline_with_backlog(source_db, make_pipeline, transactions=6)
    opened.update(streams=0, writers=0)
    parts = []

    (run,) = services.run_until_caught_up(pipeline, hooks=services.RunHooks(after_apply=parts.append))

    assert run.outcome == PipelineRun.Outcome.SUCCEEDED, run.error
    assert opened == {"streams": 1, "writers": 1}
    assert [part.changes for part in parts] == [10] * 6  # six destination transactions
    assert run.changes_read == 60 and run.rows_inserted == 60
    assert run.start_lsn and run.end_lsn and run.start_lsn != run.end_lsn
    assert target.count("orders") == 60
    assert PipelineRun.objects.filter(pipeline=pipeline).count() == 2  # the snapshot's run and this one


def test_the_run_task_applies_changes_that_arrive_while_it_runs(source_db, target, make_pipeline, opened):
    create_tables(source_db)
    pipeline = make_pipeline(["public.orders"], max_changes_per_transaction=10)
    services.run_pipeline(pipeline)
    insert_orders(source_db, range(1, 11))
    late = threading.Event()

    def write_more(part):
        if not late.is_set():
            late.set()
            insert_orders(source_db, range(11, 21))  # arrives after the run has read its backlog

    opened.update(streams=0, writers=0)
    run = services.run_pipeline(pipeline, budget_seconds=60, hooks=services.RunHooks(before_apply=write_more))

    assert run.outcome == PipelineRun.Outcome.SUCCEEDED, run.error
    assert run.changes_read == 20 and target.count("orders") == 20
    assert opened == {"streams": 1, "writers": 1}
    assert not run.deadline_reached  # it ended because the source went quiet
    assert run.duration_seconds < 30


@override_settings(ROSETTA_RUN_BUDGET_SECONDS=0)
def test_a_run_still_busy_when_its_budget_ends_is_queued_again_at_once(source_db, target, make_pipeline):
    pipeline = pipeline_with_backlog(source_db, make_pipeline, transactions=4)
    queued = []

    services.run_scheduled(pipeline.pk, requeue=queued.append)

    assert queued == [pipeline.pk]  # not left for the next dispatch
    assert Pipeline.objects.get(pk=pipeline.pk).run_enqueued_at is not None
    assert 0 < target.count("orders") < 40
    for _ in range(10):
        if target.count("orders") == 40:
            break
        services.run_scheduled(pipeline.pk, requeue=queued.append)
    assert target.count("orders") == 40

    queued.clear()
    services.run_scheduled(pipeline.pk, requeue=queued.append)  # nothing left: the dispatcher decides
    assert queued == []
    assert Pipeline.objects.get(pk=pipeline.pk).run_enqueued_at is None


def test_a_busy_run_keeps_its_stream_while_changes_keep_coming(
    source_db, source_database, target, make_pipeline, opened
):
    """Reads outpace commits (a read finds nothing new between two): the run stays on until
    its budget ends, instead of ending at the first empty read and waiting for a dispatch."""
    create_tables(source_db)
    pipeline = make_pipeline(["public.orders"])
    services.run_pipeline(pipeline)
    stop = threading.Event()

    def write():
        with psycopg.connect(**source_database, autocommit=True, options="-c synchronous_commit=on") as conn:
            n = 0
            while not stop.is_set():
                n += 1
                conn.execute("INSERT INTO orders (region, id, amount) VALUES ('eu', %s, 1)", [n])
                time.sleep(0.2)  # gaps a read outpaces, shorter than QUIET_SECONDS

    writer = threading.Thread(target=write)
    writer.start()
    opened.update(streams=0, writers=0)
    try:
        run = services.run_pipeline(pipeline, budget_seconds=3)
    finally:
        stop.set()
        writer.join()

    assert run.outcome == PipelineRun.Outcome.SUCCEEDED, run.error
    assert run.deadline_reached and run.duration_seconds >= 3
    assert opened == {"streams": 1, "writers": 1}
    services.run_until_caught_up(pipeline)
    assert target.count("orders") == source_db.execute("SELECT count(*) FROM orders").fetchone()[0]


def test_a_run_that_fails_after_committing_parts_still_counts_them(source_db, target, make_pipeline):
    """A run now lasts many parts: one that fails late must not lose the record of the parts
    it committed (the table counters and the run's counts), as the destination has them."""
    pipeline = pipeline_with_backlog(source_db, make_pipeline, transactions=6)
    seen = []

    def fail_late(part):
        seen.append(part)
        if len(seen) == 5:
            raise RuntimeError("the destination went away")

    (run,) = services.run_until_caught_up(pipeline, hooks=services.RunHooks(before_apply=fail_late))

    assert run.outcome == PipelineRun.Outcome.FAILED
    assert target.count("orders") == 40  # parts 1-4 committed before part 5 failed
    assert pipeline.tables.get().rows_inserted == 40
    assert run.rows_inserted == 40 and run.changes_read == 40
    stored = PipelineRun.objects.get(pk=run.pk)
    assert (stored.rows_inserted, stored.changes_read) == (40, 40)
    assert slot_confirmed_past(source_db, pipeline, run.end_lsn)


def test_parts_are_applied_with_a_short_switch_interval_and_the_process_gets_its_own_back(
    source_db, target, make_pipeline
):
    """The applier thread waits for the destination's answers; at Python's default 5 ms
    switch interval each answer then waited for the reader's slice. A run shortens it
    while its parts are applied, and gives the process its own back, failed or not."""
    import sys

    from engine.runner import APPLY_SWITCH_INTERVAL_SECONDS

    create_tables(source_db)
    pipeline = make_pipeline(["public.orders"], max_changes_per_transaction=10)
    services.run_pipeline(pipeline)
    insert_orders(source_db, range(1, 31))
    own = sys.getswitchinterval()
    during = []

    def note(part):
        during.append(sys.getswitchinterval())

    (run,) = services.run_until_caught_up(pipeline, hooks=services.RunHooks(after_apply=note))
    assert run.outcome == PipelineRun.Outcome.SUCCEEDED, run.error
    assert during and all(value == pytest.approx(APPLY_SWITCH_INTERVAL_SECONDS) for value in during)
    assert sys.getswitchinterval() == own

    insert_orders(source_db, range(31, 41))

    def fail(part):
        raise RuntimeError("the destination went away")

    (run,) = services.run_until_caught_up(pipeline, hooks=services.RunHooks(before_apply=fail))
    assert run.outcome == PipelineRun.Outcome.FAILED
    assert sys.getswitchinterval() == own


def test_each_part_is_prepared_by_the_reading_thread_before_it_is_applied(
    source_db, target, make_pipeline, monkeypatch
):
    """Writer.prepare_batch (the PostgreSQL writer's binary COPYs, the DuckDB writer's Arrow
    arrays) runs in the thread that reads, before the part before it is waited for, not in
    the applier's turn."""
    from engine.writers.duckdb import DuckDBWriter

    pipeline = pipeline_with_backlog(source_db, make_pipeline, transactions=4)
    events = []
    prepare, apply = DuckDBWriter.prepare_batch, DuckDBWriter.apply_batch

    def recorded_prepare(self, batch):
        events.append(("prepare", batch, threading.current_thread().name))  # the batch kept: no id reused
        return prepare(self, batch)

    def recorded_apply(self, key, batch, **kwargs):
        events.append(("apply", batch, threading.current_thread().name))
        return apply(self, key, batch, **kwargs)

    monkeypatch.setattr(DuckDBWriter, "prepare_batch", recorded_prepare)
    monkeypatch.setattr(DuckDBWriter, "apply_batch", recorded_apply)
    (run,) = services.run_until_caught_up(pipeline)
    assert run.outcome == PipelineRun.Outcome.SUCCEEDED, run.error
    assert target.count("orders") == 40
    applied = [batch for kind, batch, _ in events if kind == "apply"]
    assert len(applied) == 4
    for batch in applied:
        (prepared,) = [n for n, event in enumerate(events) if event[0] == "prepare" and event[1] is batch]
        (applying,) = [n for n, event in enumerate(events) if event[0] == "apply" and event[1] is batch]
        assert prepared < applying
        assert not events[prepared][2].startswith("rosetta-apply")
        assert events[applying][2].startswith("rosetta-apply")


@pytest.mark.parametrize(
    "step, error",
    [("prepare", "out of memory, say"), ("read", "Source: the replication connection was lost")],
)
def test_a_part_whose_read_or_preparation_fails_leaves_the_part_before_confirmed_and_counted(
    source_db, target, make_pipeline, monkeypatch, step, error
):
    """Part n + 1 is read from the source and prepared (prepare_batch) while part n is
    applied: when either fails, part n is waited for, confirmed and counted before the run
    fails, like a failure after it."""
    from engine.source import SourceDatabase, SourceProblem
    from engine.writers.duckdb import DuckDBWriter

    owner, name, exception = {
        "prepare": (DuckDBWriter, "prepare_batch", RuntimeError),
        "read": (SourceDatabase, "stream", SourceProblem),
    }[step]
    pipeline = pipeline_with_backlog(source_db, make_pipeline, transactions=3)
    calls = []
    original = getattr(owner, name)

    def fail_second(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise exception(error)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, fail_second)
    (run,) = services.run_until_caught_up(pipeline)
    assert run.outcome == PipelineRun.Outcome.FAILED
    assert error in run.error
    assert target.count("orders") == 10
    assert (run.rows_inserted, run.changes_read) == (10, 10)
    assert pipeline.tables.get().rows_inserted == 10
    # the slot moved past the committed part: the next run does not read it again
    assert slot_confirmed_past(source_db, pipeline, run.end_lsn)


def slot_confirmed_past(source_db, pipeline, lsn: str) -> bool:
    return source_db.execute(
        "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
        [lsn, pipeline.source.slot_name],
    ).fetchone()[0]


@pytest.fixture
def applies_started(monkeypatch):
    """The number of parts whose apply has begun, as a Condition to wait on."""
    from engine.writers.duckdb import DuckDBWriter

    started = {"parts": 0, "changed": threading.Condition()}
    apply = DuckDBWriter.apply_batch

    def counted(self, key, batch, **kwargs):
        with started["changed"]:
            started["parts"] += 1
            started["changed"].notify_all()
        return apply(self, key, batch, **kwargs)

    monkeypatch.setattr(DuckDBWriter, "apply_batch", counted)
    return started


def test_the_next_part_is_applied_while_the_slot_is_moved_past_the_one_before(
    source_db, target, make_pipeline, monkeypatch, applies_started
):
    """Moving the slot past a committed part is a round trip to the source and a wait until
    the slot shows it: part n + 1 is handed to the applier first, so that the destination
    does not wait between its two transactions."""
    from engine.source import SourceDatabase

    pipeline = pipeline_with_backlog(source_db, make_pipeline, transactions=3)
    seen_at_advance = []  # parts whose apply had begun when the slot was moved past part n
    advance = SourceDatabase.advance

    def watched(self, slot, lsn):
        changed = applies_started["changed"]
        with changed:
            if len(seen_at_advance) < 2:  # parts 1 and 2 have a part after them
                changed.wait_for(lambda: applies_started["parts"] > len(seen_at_advance) + 1, timeout=5)
            seen_at_advance.append(applies_started["parts"])
        return advance(self, slot, lsn)

    monkeypatch.setattr(SourceDatabase, "advance", watched)
    (run,) = services.run_until_caught_up(pipeline)
    assert run.outcome == PipelineRun.Outcome.SUCCEEDED, run.error
    assert target.count("orders") == 30
    assert seen_at_advance[:2] == [2, 3]  # part 2 begun when part 1 was confirmed, part 3 at part 2


def test_a_part_handed_over_before_the_slot_failed_to_move_is_counted(
    source_db, target, make_pipeline, monkeypatch, applies_started
):
    """Part n + 1 is already with the applier when moving the slot past part n fails: the
    run fails, but both parts are in the destination and both are counted."""
    from engine.source import SourceDatabase, SourceProblem

    pipeline = pipeline_with_backlog(source_db, make_pipeline, transactions=3)

    def lost(self, slot, lsn):
        with applies_started["changed"]:
            applies_started["changed"].wait_for(lambda: applies_started["parts"] >= 2, timeout=5)
        raise SourceProblem("Source: the replication connection was lost")

    monkeypatch.setattr(SourceDatabase, "advance", lost)
    (run,) = services.run_until_caught_up(pipeline)
    assert run.outcome == PipelineRun.Outcome.FAILED
    assert "replication connection was lost" in run.error
    assert target.count("orders") == 20
    assert (run.rows_inserted, run.changes_read) == (20, 20)
    assert pipeline.tables.get().rows_inserted == 20

    monkeypatch.undo()  # the next run skips what the destination has and applies the rest
    (run,) = services.run_until_caught_up(pipeline)
    assert run.outcome == PipelineRun.Outcome.SUCCEEDED, run.error
    assert target.count("orders") == 30
    assert pipeline.tables.get().rows_inserted == 30
