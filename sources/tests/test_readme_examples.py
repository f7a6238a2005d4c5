"""The README's example of each source kind is a body the API accepts as it is written."""

import json
import re
from pathlib import Path

import pytest

from sources.models import Source

pytestmark = pytest.mark.django_db

README = Path(__file__).resolve().parents[2] / "README.md"


def source_kind_examples() -> list[dict]:
    section = README.read_text().split("\n## Source kinds\n", 1)[1].split("\n## ", 1)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]


def test_the_readme_shows_one_example_of_each_source_kind_and_the_api_accepts_each(admin_api):
    examples = [e for e in source_kind_examples() if "kind" in e]
    assert sorted(example["kind"] for example in examples) == ["csv", "http_json", "postgres"]

    for example in examples:
        response = admin_api.post("/api/sources/", example, format="json")
        assert response.status_code == 201, (example["name"], response.data)

    crm = Source.objects.get(kind="http_json")
    assert crm.header_secrets() == example_secret(examples)
    assert crm.batch_settings().pagination["style"] == "cursor"
    assert Source.objects.get(kind="csv").batch_settings().encoding == "latin-1"


def example_secret(examples):
    return next(e for e in examples if e["kind"] == "http_json")["secret_headers"]


def test_the_readmes_batch_pipeline_body_names_its_table_and_schedule(admin_api, tmp_path):
    from destinations.models import Destination
    from pipelines.models import Pipeline

    crm = next(e for e in source_kind_examples() if e.get("kind") == "http_json")
    body = next(e for e in source_kind_examples() if "schedule_cron" in e)
    source = admin_api.post("/api/sources/", crm, format="json").data["id"]
    destination = Destination.objects.create(name="w", kind="duckdb", duckdb_path=str(tmp_path / "w.duckdb"))

    response = admin_api.post(
        "/api/pipelines/", {**body, "source": source, "destination": destination.pk}, format="json"
    )

    assert response.status_code == 201, response.data
    assert response.data["schedule_cron"] == "0 * * * *"
    assert [t.target_table for t in Pipeline.objects.get().tables.all()] == ["contacts"]
