"""A batch run killed (SIGKILL) in the middle of a load, then run again: nothing lost, nothing doubled."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings

from conftest import TEST_ENCRYPTION_KEY
from pipelines import services

from .batch_support import checkpoint_state, make_batch_pipeline, make_source, query

ROWS = 60_000


def run_pipeline_process(pipeline, pg_cluster, part_rows: int) -> subprocess.Popen:
    """`manage.py run_pipeline NAME` in its own process, on the test database."""
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/{db['NAME']}",
        "ROSETTA_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "ROSETTA_BATCH_PART_ROWS": str(part_rows),
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_pipeline", pipeline.name],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("destination", ["postgres"], indirect=True)
def test_a_csv_load_killed_mid_run_and_run_again_loses_nothing_and_duplicates_nothing(
    transactional_db, pg_cluster, tmp_path, destination
):
    path = tmp_path / "big.csv"
    with path.open("w") as out:
        out.write("id,name,amount\n")
        for i in range(1, ROWS + 1):
            out.write(f"{i},name {i},{i % 1000}.5\n")
    source = make_source("csv", {"path": str(path), "primary_key": ["id"]})
    pipeline = make_batch_pipeline(source, destination)
    process = run_pipeline_process(pipeline, pg_cluster, part_rows=5000)
    deadline = time.monotonic() + 60
    while checkpoint_state(destination, pipeline)[0] < 3:
        assert process.poll() is None, process.stdout.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the run did not commit three parts in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    parts, _ = checkpoint_state(destination, pipeline)
    loaded = query(destination, "SELECT count(*) FROM {schema}.items")[0][0]
    assert parts >= 3 and loaded == parts * 5000 < ROWS  # killed mid-run, at a part's end

    run = services.run_pipeline(pipeline)

    assert run.outcome == "succeeded", run.error
    assert run.rows_inserted == ROWS - loaded and run.rows_updated == 0
    assert query(
        destination, "SELECT count(*), count(DISTINCT id), min(id), max(id), sum(amount) FROM {schema}.items"
    ) == [(ROWS, ROWS, 1, ROWS, sum(i % 1000 + 0.5 for i in range(1, ROWS + 1)))]


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_an_http_load_killed_while_waiting_for_a_page_resumes_at_that_page_and_ends_with_every_record_once(
    transactional_db, pg_cluster, api, destination
):
    """Pages of 3 records, one part (one DuckDB transaction) per page; the API holds page 5
    until the process is killed, so pages 1-4 are committed and page 5 is in flight."""
    api.records = [
        {"id": i, "name": f"item {i}", "updated_at": f"2024-01-{i:02d}T00:00:00Z"} for i in range(1, 21)
    ]
    held, release = threading.Event(), threading.Event()
    normal_page = api.page

    def hold_page_5(query):
        if query.get("page") == "5" and not release.is_set():
            held.set()
            release.wait(30)
        return normal_page(query)

    api.page = hold_page_5
    source = make_source(
        "http_json",
        {
            "url": api.url,
            "records_path": "data",
            "pagination": {"style": "page", "page_size": 3},
            "incremental": {"field": "updated_at", "param": "updated_since"},
            "primary_key": ["id"],
        },
    )
    pipeline = make_batch_pipeline(source, destination)
    process = run_pipeline_process(pipeline, pg_cluster, part_rows=3)
    try:
        assert held.wait(60), process.stdout.read().decode()[-2000:] if process.poll() is not None else ""
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        release.set()
    parts, state = checkpoint_state(destination, pipeline)
    assert parts == 4 and state["reader"]["next"] == {"page": 5}
    assert query(destination, "SELECT count(*) FROM {schema}.items") == [(12,)]
    api.requests.clear()

    run = services.run_pipeline(pipeline)

    assert run.outcome == "succeeded", run.error
    assert (run.rows_inserted, run.rows_updated) == (8, 0)
    assert [q.get("page") for _, q, _, _ in api.requests] == ["5", "6", "7"]  # pages 1-4 not asked again
    assert query(
        destination, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM {schema}.items"
    ) == [(20, 20, 1, 20)]
    api.requests.clear()
    again = services.run_pipeline(pipeline)
    assert (again.outcome, again.changes_read) == ("succeeded", 0)
    assert api.requests[0][1]["updated_since"] == "2024-01-20T00:00:00Z"
