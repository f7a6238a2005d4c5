"""Statistics and data preview of a pipeline (API, admin, commands), reset, and the
per-pipeline interval or cron schedule of batch pipelines."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from pipelines import services
from pipelines.models import Pipeline

from .batch_support import checkpoint_state, make_batch_pipeline, make_source

pytestmark = pytest.mark.django_db


@pytest.fixture
def loaded_pipeline(tmp_path, destination):
    lines = "".join(f"{i},{'apple' if i % 10 == 0 else 'pear'} {i},{i}\n" for i in range(1, 121))
    (tmp_path / "fruit.csv").write_text("id,name,weight\n" + lines + "x,bad\n")
    source = make_source("csv", {"path": str(tmp_path / "fruit.csv"), "primary_key": ["id"]})
    pipeline = make_batch_pipeline(source, destination, table="fruit")
    run = services.run_pipeline(pipeline)
    assert run.outcome == "succeeded", run.error
    return pipeline


def test_stats_give_rows_per_table_runs_last_success_rate_and_rejects(admin_api, loaded_pipeline):
    response = admin_api.get(f"/api/pipelines/{loaded_pipeline.pk}/stats/")

    assert response.status_code == 200, response.data
    data = response.data
    assert data["tables"][0]["table"] == "fruit" and data["tables"][0]["rows"] == 120
    assert data["tables"][0]["column_mapping"] == {"id": "id", "name": "name", "weight": "weight"}
    assert data["runs"] == {"total": 1, "succeeded": 1, "failed": 0, "skipped": 0}
    assert data["rows_rejected"] == 1 and data["rows_inserted"] == 120
    assert data["last_success_at"] is not None and data["last_run_rows_per_second"] > 0


def test_data_pages_through_the_destination_table_and_searches_it(admin_api, loaded_pipeline):
    url = f"/api/pipelines/{loaded_pipeline.pk}/data/"
    first = admin_api.get(url, {"table": "fruit", "page": 1, "page_size": 50})
    third = admin_api.get(url, {"table": "fruit", "page": 3, "page_size": 50})
    found = admin_api.get(url, {"search": "APPLE", "page_size": 500})

    assert first.status_code == 200, first.data
    assert first.data["count"] == 120 and len(first.data["rows"]) == 50
    assert first.data["columns"][:3] == ["id", "name", "weight"]
    assert len(third.data["rows"]) == 20
    ids = {row[0] for row in first.data["rows"]} | {row[0] for row in third.data["rows"]}
    assert len(ids) == 70
    assert found.data["count"] == 12
    assert {row[1] for row in found.data["rows"]} == {f"apple {i}" for i in range(10, 121, 10)}


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
@pytest.mark.parametrize(
    "params, field",
    [
        ({"table": "auth_user"}, "table"),
        ({"page": 0}, "page"),
        ({"page_size": 10_000}, "page_size"),
        ({"page": "x"}, "page"),
    ],
)
def test_data_refuses_a_table_the_pipeline_does_not_write_and_bad_pages(
    admin_api, loaded_pipeline, params, field
):
    response = admin_api.get(f"/api/pipelines/{loaded_pipeline.pk}/data/", params)
    assert response.status_code == 400
    assert field in response.data


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_stats_and_data_need_the_view_permission(django_user_model, loaded_pipeline):
    user = django_user_model.objects.create_user("nobody", password="x")
    client = APIClient()
    client.force_authenticate(user)
    for path in ("stats", "data"):
        assert client.get(f"/api/pipelines/{loaded_pipeline.pk}/{path}/").status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_pipeline"))
    user = django_user_model.objects.get(pk=user.pk)
    client.force_authenticate(user)
    assert client.get(f"/api/pipelines/{loaded_pipeline.pk}/data/").status_code == 200


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_the_admin_page_shows_statistics_and_the_preview_page_shows_rows(
    admin_browser, loaded_pipeline, django_user_model, client
):
    page = admin_browser.get(f"/admin/pipelines/pipeline/{loaded_pipeline.pk}/change/").content.decode()
    assert "Rows per second in the last successful run" in page
    assert "Rejected records: 1" in page
    assert "<td>fruit</td><td>120</td>" in page
    assert "name &rarr; name: text" in page
    assert 'name="schedule_interval"' in page and 'name="schedule_crontab"' in page
    assert 'name="max_reject_share"' in page

    preview = admin_browser.get(
        f"/admin/pipelines/pipeline/{loaded_pipeline.pk}/preview/", {"search": "apple 12", "page_size": 5}
    ).content.decode()
    assert "<td>apple 120</td>" in preview and "pear" not in preview

    nobody = django_user_model.objects.create_user("staff", password="x", is_staff=True)
    client.force_login(nobody)
    refused = client.get(f"/admin/pipelines/pipeline/{loaded_pipeline.pk}/preview/")
    assert refused.status_code == 403


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_pipeline_stats_command_prints_the_figures(loaded_pipeline):
    out = StringIO()
    call_command("pipeline_stats", loaded_pipeline.name, stdout=out)
    text = out.getvalue()
    assert "fruit: 120 rows in the destination" in text
    assert "Runs: 1 (1 succeeded, 0 failed, 0 skipped)" in text
    assert "Rejected records: 1" in text


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_reset_pipeline_asks_first_then_clears_the_checkpoint_so_the_next_run_loads_everything(
    loaded_pipeline, destination, monkeypatch
):
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(CommandError, match="Not confirmed"):
        call_command("reset_pipeline", loaded_pipeline.name)
    assert checkpoint_state(destination, loaded_pipeline)[0] == 1

    out = StringIO()
    call_command("reset_pipeline", loaded_pipeline.name, "--yes", stdout=out)
    assert "Cleared the checkpoint" in out.getvalue()
    assert checkpoint_state(destination, loaded_pipeline) == (0, None)
    run = services.run_pipeline(loaded_pipeline)
    assert (run.changes_read, run.rows_inserted, run.rows_updated) == (121, 0, 120)


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_run_pipeline_command_runs_a_csv_pipeline(tmp_path, destination):
    (tmp_path / "a.csv").write_text("id\n1\n2\n")
    pipeline = make_batch_pipeline(
        make_source("csv", {"path": str(tmp_path / "a.csv")}), destination, start=False
    )
    out = StringIO()
    call_command("run_pipeline", pipeline.name, stdout=out)
    assert "2 records read, +2" in out.getvalue()


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_schedules_are_set_in_the_api_and_decide_when_the_dispatcher_runs_a_batch_pipeline(
    admin_api, tmp_path, destination
):
    (tmp_path / "a.csv").write_text("id\n1\n")
    source = make_source("csv", {"path": str(tmp_path / "a.csv")})
    unscheduled = make_batch_pipeline(source, destination)
    scheduled = make_batch_pipeline(source, destination)

    response = admin_api.patch(
        f"/api/pipelines/{scheduled.pk}/", {"schedule_every_seconds": 3600}, format="json"
    )
    assert response.status_code == 200, response.data
    assert response.data["schedule_every_seconds"] == 3600 and response.data["schedule_cron"] is None

    assert services.dispatch_pipeline_runs(enqueue=lambda pk: None) == [scheduled.pk]
    Pipeline.objects.update(run_enqueued_at=None)
    services.run_pipeline(scheduled)
    scheduled.refresh_from_db()
    assert timedelta(minutes=59) < scheduled.next_run_at - timezone.now() <= timedelta(hours=1)
    assert (
        services.dispatch_pipeline_runs(enqueue=lambda pk: None) == []
    )  # not due yet, and never the unscheduled one

    cron = admin_api.patch(
        f"/api/pipelines/{unscheduled.pk}/", {"schedule_cron": "*/15 * * * *"}, format="json"
    )
    assert cron.status_code == 200 and cron.data["schedule_cron"] == "*/15 * * * *"
    both = admin_api.patch(f"/api/pipelines/{unscheduled.pk}/", {"schedule_every_seconds": 60}, format="json")
    assert both.status_code == 400 and "schedule_crontab" in both.data
    bad = admin_api.patch(f"/api/pipelines/{unscheduled.pk}/", {"schedule_cron": "every hour"}, format="json")
    assert bad.status_code == 400 and "a cron expression has 5" in str(bad.data["schedule_cron"])


def test_a_cdc_pipeline_refuses_a_schedule(admin_api):
    from pipelines.tests.factories import PipelineFactory

    pipeline = PipelineFactory()
    response = admin_api.patch(
        f"/api/pipelines/{pipeline.pk}/", {"schedule_every_seconds": 60}, format="json"
    )
    assert response.status_code == 400 and "schedule_interval" in response.data


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_beat_dispatch_runs_a_scheduled_csv_pipeline_on_a_real_celery_worker(
    celery_worker, tmp_path, destination
):
    import time

    from pipelines import schedules, tasks
    from pipelines.models import PipelineRun

    (tmp_path / "a.csv").write_text("id,name\n1,a\n2,b\n")
    source = make_source("csv", {"path": str(tmp_path / "a.csv"), "primary_key": ["id"]})
    pipeline = make_batch_pipeline(source, destination, schedule_interval=schedules.interval_for(3600))

    tasks.dispatch_pipeline_runs.delay()  # what Beat sends every few seconds
    deadline = time.monotonic() + 60
    while not PipelineRun.objects.filter(pipeline=pipeline, outcome="succeeded").exists():
        assert time.monotonic() < deadline, celery_worker.log_path.read_text()[-3000:]
        time.sleep(0.2)
    run = PipelineRun.objects.get(pipeline=pipeline)
    assert (run.rows_inserted, run.rows_rejected) == (2, 0)
    pipeline.refresh_from_db()
    assert pipeline.next_run_at is not None  # the next run waits for the interval


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_the_admin_edits_a_batch_pipelines_schedule_and_refuses_two_at_once(
    admin_browser, tmp_path, destination
):
    from django.urls import reverse

    from pipelines import schedules

    (tmp_path / "a.csv").write_text("id\n1\n")
    source = make_source("csv", {"path": str(tmp_path / "a.csv")})
    pipeline = Pipeline.objects.create(name="nightly", source=source, destination=destination)
    hourly, quarterly = schedules.interval_for(3600), schedules.crontab_for("*/15 * * * *")
    url = reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])
    form = {
        "name": "nightly",
        "source": source.pk,
        "destination": destination.pk,
        "max_changes_per_transaction": 1000,
        "on_slot_lost": "recopy",
        "on_incompatible_schema_change": "fail",
        "max_reject_share": 0.2,
        "tables-TOTAL_FORMS": 0,
        "tables-INITIAL_FORMS": 0,
        "tables-MIN_NUM_FORMS": 0,
        "tables-MAX_NUM_FORMS": 1000,
    }
    page = admin_browser.get(url).content.decode()
    assert f'<option value="{hourly.pk}">every 3600 seconds</option>' in page
    assert f'<option value="{quarterly.pk}">*/15 * * * * (m/h/dM/MY/d) UTC</option>' in page

    saved = admin_browser.post(url, {**form, "schedule_interval": hourly.pk})
    assert saved.status_code == 302, saved.content.decode()[-3000:]
    pipeline.refresh_from_db()
    assert schedules.interval_seconds(pipeline.schedule_interval) == 3600 and pipeline.max_reject_share == 0.2
    assert "Schedule: every 3600 s." in admin_browser.get(url).content.decode()

    both = admin_browser.post(
        url, {**form, "schedule_interval": hourly.pk, "schedule_crontab": quarterly.pk}
    ).content.decode()
    assert "Give an interval or a cron schedule, not both." in both

    admin_browser.post(url, {**form, "schedule_crontab": quarterly.pk})
    pipeline.refresh_from_db()
    assert pipeline.schedule_interval is None
    assert schedules.cron_expression(pipeline.schedule_crontab) == "*/15 * * * *"
