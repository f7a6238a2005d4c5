"""GET /metrics: Prometheus text from the database, protected by a token or an allow-list."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from monitoring.models import SlotMetric, WalMetric
from pipelines.tests.factories import PipelineFactory, PipelineRunFactory, PipelineTableFactory

pytestmark = pytest.mark.django_db


def scrape(client=None, **headers):
    response = (client or Client()).get("/metrics", **headers)
    return response


def samples(response) -> dict:
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_are_refused_without_the_token_from_an_address_not_allowed(settings):
    settings.ROSETTA_METRICS_ALLOWED_IPS = []
    settings.ROSETTA_METRICS_TOKEN = "s3cret-scrape-token"
    assert scrape().status_code == 403
    assert scrape(HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert scrape(HTTP_AUTHORIZATION="Bearer s3cret-scrape-token").status_code == 200


def test_metrics_answer_an_allowed_address_without_a_token(settings):
    settings.ROSETTA_METRICS_TOKEN = ""
    settings.ROSETTA_METRICS_ALLOWED_IPS = ["127.0.0.1"]
    assert scrape(REMOTE_ADDR="127.0.0.1").status_code == 200
    assert scrape(REMOTE_ADDR="10.1.2.3").status_code == 403


def test_metrics_report_slots_pipelines_runs_and_probe_failures(settings):
    now = timezone.now()
    pipeline = PipelineFactory(
        name="orders",
        status="running",
        lag_bytes=4096,
        lag_measured_at=now,
        last_applied_commit_at=now - timedelta(seconds=30),
    )
    source = pipeline.source
    WalMetric.objects.create(source=source, probed_at=now - timedelta(minutes=2), ok=False, error="timeout")
    WalMetric.objects.create(source=source, probed_at=now)
    SlotMetric.objects.create(
        source=source, probed_at=now - timedelta(minutes=1), slot_name="s", retained_bytes=1
    )
    SlotMetric.objects.create(
        source=source,
        probed_at=now,
        slot_name="rosetta_slot_with_a_long_name",
        retained_bytes=123456,
        unconfirmed_bytes=4096,
        active=False,
        wal_status="extended",
    )
    PipelineTableFactory(pipeline=pipeline, rows_inserted=10, rows_updated=5, rows_deleted=1)
    run = PipelineRunFactory(pipeline=pipeline, outcome="failed", started_at=now - timedelta(minutes=1))
    run.finished_at = run.started_at + timedelta(seconds=3)
    run.save()
    found = samples(scrape(REMOTE_ADDR="127.0.0.1"))
    slot = (("slot", "rosetta_slot_with_a_long_name"), ("source", source.name))
    assert found[("rosetta_slot_retained_bytes", slot)] == 123456
    assert found[("rosetta_slot_unconfirmed_bytes", slot)] == 4096
    assert found[("rosetta_slot_active", slot)] == 0
    assert found[("rosetta_slot_wal_status", tuple(sorted((*slot, ("wal_status", "extended")))))] == 1
    assert found[("rosetta_pipeline_lag_bytes", (("pipeline", "orders"),))] == 4096
    assert found[("rosetta_pipeline_lag_seconds", (("pipeline", "orders"),))] == 30
    assert found[("rosetta_pipeline_status", (("pipeline", "orders"), ("status", "running")))] == 1
    assert found[("rosetta_pipeline_changes_applied_total", (("pipeline", "orders"),))] == 16
    assert found[("rosetta_pipeline_runs_last_hour", (("outcome", "failed"), ("pipeline", "orders")))] == 1
    assert found[("rosetta_pipeline_run_duration_seconds_max_last_hour", (("pipeline", "orders"),))] == 3
    assert found[("rosetta_source_probe_failures_last_hour", (("source", source.name),))] == 1
    assert found[("rosetta_source_probe_ok", (("source", source.name),))] == 1


def test_two_web_processes_agree_because_figures_come_from_the_database(settings):
    PipelineFactory(name="orders", status="paused", lag_bytes=7, lag_measured_at=timezone.now())
    first = samples(scrape(Client(), REMOTE_ADDR="127.0.0.1"))
    second = samples(scrape(Client(), REMOTE_ADDR="127.0.0.1"))
    assert first == second
    assert first[("rosetta_pipeline_status", (("pipeline", "orders"), ("status", "paused")))] == 1


def readme_alert_rules() -> list[dict]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("Sample alert rules, `rosetta-rules.yml`")[1].split("```yaml\n")[1].split("```")[0]
    return yaml.safe_load(block)["groups"][0]["rules"]


def test_the_readme_alert_rules_name_only_series_that_metrics_exports(settings):
    """A rule on a series /metrics does not export never fires: the README's sample rules
    must match what a scrape returns."""
    now = timezone.now()
    pipeline = PipelineFactory(name="orders", status="failed", lag_bytes=1, lag_measured_at=now)
    WalMetric.objects.create(source=pipeline.source, probed_at=now)
    SlotMetric.objects.create(
        source=pipeline.source, probed_at=now, slot_name="s", retained_bytes=1, wal_status="lost"
    )
    exported = {name for name, _ in samples(scrape(REMOTE_ADDR="127.0.0.1"))}
    rules = readme_alert_rules()
    assert {"RosettaSlotLost", "RosettaPipelineFailed", "RosettaPipelineLagging"} <= {
        r["alert"] for r in rules
    }
    for rule in rules:
        for series in re.findall(r"\brosetta_[a-z_]+", rule["expr"]):
            assert series in exported, f"{rule['alert']} uses {series}, which /metrics does not export"
