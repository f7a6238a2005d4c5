"""Structured logs: JSON when LOG_FORMAT=json, every line of a run naming its pipeline and
run, never a secret."""

import json
import logging
import uuid

import pytest

from destinations.models import Destination
from pipelines import services
from pipelines.models import Pipeline
from rosetta.logs import ContextFilter, JsonFormatter, log_context
from sources.models import Source


@pytest.fixture
def json_lines():
    """The root logger writing JSON, as LOG_FORMAT=json configures it, into a list."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(json.loads(self.format(record)))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lines
    root.removeHandler(handler)


def test_a_line_inside_a_run_context_carries_pipeline_and_run_as_json(json_lines):
    with log_context(pipeline="orders", run=42):
        logging.getLogger("engine").warning("slow %s", "peek")
    logging.getLogger("engine").warning("outside")
    assert json_lines[0]["message"] == "slow peek"
    assert (json_lines[0]["pipeline"], json_lines[0]["run"], json_lines[0]["level"]) == (
        "orders",
        42,
        "WARNING",
    )
    assert "pipeline" not in json_lines[1]


def test_the_plain_format_names_the_pipeline_and_run_too(settings):
    formatter = logging.Formatter(settings.LOGGING["formatters"]["plain"]["format"])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    with log_context(pipeline="orders", run=7):
        ContextFilter().filter(record)
    assert formatter.format(record).endswith("INFO x pipeline=orders run=7: hello")


@pytest.mark.django_db
def test_every_line_of_a_failing_run_names_pipeline_and_run_and_no_secret(json_lines, pg_cluster, tmp_path):
    password = f"pw-{uuid.uuid4().hex}"
    source = Source.objects.create(
        name="wrong-password",
        pg_host="127.0.0.1",
        pg_port=pg_cluster.port,
        pg_database="nonexistent_db",
        pg_username="nobody",
        pg_password=password,
        sslmode="disable",
        publication_name="pub_x",
        slot_name="slot_x",
    )
    destination = Destination.objects.create(
        name="duck", kind="duckdb", duckdb_path=str(tmp_path / "w.duckdb")
    )
    pipeline = Pipeline.objects.create(name="orders", source=source, destination=destination)
    services.set_pipeline_tables(pipeline, ["public.t"])
    services.start_pipeline(pipeline)
    run = services.run_pipeline(pipeline)
    assert run.outcome == "failed"
    run_lines = [line for line in json_lines if line["logger"].startswith("pipelines")]
    assert [line["message"] for line in run_lines][0] == "Run started"
    assert any(line["message"].startswith("Run failed: ") for line in run_lines)
    assert all((line.get("pipeline"), line.get("run")) == ("orders", run.pk) for line in run_lines)
    assert password not in json.dumps(json_lines)
