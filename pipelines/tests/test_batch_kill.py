"""A batch run killed (SIGKILL) in the middle of a load, then run again: nothing lost, nothing doubled."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from conftest import TEST_ENCRYPTION_KEY
from pipelines import services

from .batch_support import checkpoint_state, make_batch_pipeline, make_source, query

ROWS = 60_000


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
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/{db['NAME']}",
        "ROSETTA_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "ROSETTA_BATCH_PART_ROWS": "5000",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_pipeline", pipeline.name],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
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
