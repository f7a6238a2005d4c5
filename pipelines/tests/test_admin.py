import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from pipelines.models import Pipeline

from .factories import PipelineFactory, PipelineRunFactory, PipelineTableFactory
from .test_api import ILLEGAL, LEGAL

pytestmark = pytest.mark.django_db


def run_action(browser, action, pipelines):
    response = browser.post(
        reverse("admin:pipelines_pipeline_changelist"),
        {"action": action, "_selected_action": [p.pk for p in pipelines]},
        follow=True,
    )
    assert response.status_code == 200
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_start_action_reports_per_object_what_happened(admin_browser):
    fresh = [PipelineFactory(name="a"), PipelineFactory(name="b", status="paused")]
    running = PipelineFactory(name="c", status="running")
    messages = run_action(admin_browser, "start", [*fresh, running])
    assert messages == ["2 started (a, b); 1 refused: already running (c)"]
    assert set(Pipeline.objects.values_list("name", "status")) == {
        ("a", "running"),
        ("b", "running"),
        ("c", "running"),
    }


@pytest.mark.parametrize(
    "action, before, after", [("pause", "running", "paused"), ("refresh", "paused", "refreshing")]
)
def test_pause_and_refresh_actions_use_the_state_machine(admin_browser, action, before, after):
    allowed = PipelineFactory(name="ok", status=before)
    refused = PipelineFactory(name="new", status="created")
    messages = run_action(admin_browser, action, [allowed, refused])
    assert messages[0].startswith(
        f"1 {after if action == 'pause' else 'refreshing'} (ok); 1 refused: never started"
    )
    allowed.refresh_from_db()
    refused.refresh_from_db()
    assert (allowed.status, refused.status) == (after, "created")


@pytest.mark.parametrize("before, action, after", LEGAL)
def test_every_legal_transition_from_the_admin_action(admin_browser, before, action, after):
    pipeline = PipelineFactory(name="p", status=before)
    messages = run_action(admin_browser, action, [pipeline])
    assert messages[0].startswith("1 ") and "refused" not in messages[0]
    pipeline.refresh_from_db()
    assert pipeline.status == after


@pytest.mark.parametrize("before, action, reason", ILLEGAL)
def test_every_illegal_transition_from_the_admin_action_is_refused(admin_browser, before, action, reason):
    pipeline = PipelineFactory(name="p", status=before)
    messages = run_action(admin_browser, action, [pipeline])
    assert "1 refused: " in messages[0] and reason in messages[0]
    pipeline.refresh_from_db()
    assert pipeline.status == before


def test_changelist_shows_status_badge_last_run_and_error(admin_browser):
    pipeline = PipelineFactory(
        name="orders", status="failed", last_error="relation public.orders does not exist"
    )
    PipelineRunFactory(pipeline=pipeline, outcome="failed")
    page = admin_browser.get(reverse("admin:pipelines_pipeline_changelist")).content.decode()
    assert "orders" in page and "relation public.orders does not exist" in page
    assert "background:#c62828" in page  # the red failed badge


def test_change_page_shows_tables_inline_and_recent_runs(admin_browser):
    table = PipelineTableFactory(table_name="orders", snapshot_state="done", snapshot_rows=1234)
    PipelineRunFactory(pipeline=table.pipeline, end_lsn="0/ABCDEF0")
    page = admin_browser.get(
        reverse("admin:pipelines_pipeline_change", args=[table.pipeline.pk])
    ).content.decode()
    assert 'value="orders"' in page
    assert "done, 1,234 rows" in page
    assert "0/ABCDEF0" in page


def test_run_history_is_read_only(admin_browser):
    run = PipelineRunFactory()
    assert admin_browser.get(reverse("admin:pipelines_pipelinerun_add")).status_code == 403
    page = admin_browser.get(reverse("admin:pipelines_pipelinerun_change", args=[run.pk])).content.decode()
    assert 'name="_save"' not in page


def test_change_page_offers_the_schema_change_policy(admin_browser):
    pipeline = PipelineTableFactory().pipeline
    page = admin_browser.get(reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])).content.decode()
    assert 'name="on_incompatible_schema_change"' in page
    assert "Copy that table again automatically" in page and "Fail the run" in page
