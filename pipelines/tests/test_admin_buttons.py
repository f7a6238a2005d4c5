"""The pipeline page is where the operator acts: buttons, a confirmation page saying what
each does to the source's WAL, and the recent runs with their LSN range."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse

from pipelines.models import Pipeline

from .factories import PipelineFactory, PipelineRunFactory, PipelineTableFactory

pytestmark = pytest.mark.django_db


def act_url(pipeline, action):
    return reverse("admin:pipelines_pipeline_act", args=[pipeline.pk, action])


def test_the_pipeline_page_shows_start_pause_refresh_and_run_now_buttons(admin_browser):
    pipeline = PipelineFactory(name="orders")
    page = admin_browser.get(reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])).content.decode()
    for action in ("start", "pause", "refresh", "run"):
        assert f'href="{act_url(pipeline, action)}"' in page


@pytest.mark.parametrize(
    "action, status, words",
    [
        ("start", "created", "creates the publication and the replication slot"),
        ("pause", "running", "the source keeps all WAL written from now on"),
        ("refresh", "running", "the source keeps WAL for the length of the copy"),
        ("run", "running", "only then advances the slot, releasing that WAL"),
    ],
)
def test_each_button_first_asks_saying_what_it_does_to_the_sources_wal(admin_browser, action, status, words):
    pipeline = PipelineFactory(name="orders", status=status)
    page = admin_browser.get(act_url(pipeline, action)).content.decode()
    assert words in page
    assert pipeline.source.slot_name in page
    pipeline.refresh_from_db()
    assert pipeline.status == status  # asking changes nothing


def test_confirming_pause_pauses_and_says_so(admin_browser):
    pipeline = PipelineFactory(name="orders", status="running")
    response = admin_browser.post(act_url(pipeline, "pause"), follow=True)
    pipeline.refresh_from_db()
    assert pipeline.status == "paused"
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Paused orders; its slot keeps WAL on the source until it runs again."
    ]


def test_refresh_of_one_table_recopies_only_that_table(admin_browser):
    pipeline = PipelineFactory(name="orders", status="running")
    one = PipelineTableFactory(pipeline=pipeline, table_name="a", snapshot_state="done")
    other = PipelineTableFactory(pipeline=pipeline, table_name="b", snapshot_state="done")
    assert "Only public.a" in admin_browser.get(act_url(pipeline, "refresh")).content.decode()
    admin_browser.post(act_url(pipeline, "refresh"), {"table": "public.a"})
    one.refresh_from_db()
    other.refresh_from_db()
    assert (one.snapshot_state, other.snapshot_state) == ("pending", "done")
    assert Pipeline.objects.get(pk=pipeline.pk).status == "refreshing"


def test_a_refused_button_says_why_and_changes_nothing(admin_browser):
    pipeline = PipelineFactory(name="orders", status="created")
    assert (
        "Pause is not possible now: never started."
        in admin_browser.get(act_url(pipeline, "pause")).content.decode()
    )
    response = admin_browser.post(act_url(pipeline, "pause"), follow=True)
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Pause refused: never started."]
    assert Pipeline.objects.get(pk=pipeline.pk).status == "created"


def test_run_now_queues_one_run_and_refuses_a_second_while_it_is_queued(
    admin_browser, django_capture_on_commit_callbacks
):
    pipeline = PipelineFactory(name="orders", status="running")
    with django_capture_on_commit_callbacks() as callbacks:
        admin_browser.post(act_url(pipeline, "run"))
    assert len(callbacks) == 1
    pipeline.refresh_from_db()
    assert pipeline.run_enqueued_at is not None
    response = admin_browser.post(act_url(pipeline, "run"), follow=True)
    assert [str(m) for m in get_messages(response.wsgi_request)][-1] == (
        "Run now refused: a run is already queued or in progress."
    )


def test_a_user_who_may_only_view_gets_no_buttons_and_cannot_act(client, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_pipeline"))
    client.force_login(viewer)
    pipeline = PipelineFactory(name="orders", status="running")
    page = client.get(reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])).content.decode()
    assert act_url(pipeline, "pause") not in page
    assert client.post(act_url(pipeline, "pause")).status_code == 403
    assert Pipeline.objects.get(pk=pipeline.pk).status == "running"


def test_recent_runs_show_lsn_range_changes_duration_and_seconds(admin_browser):
    pipeline = PipelineFactory(name="orders", status="running")
    run = PipelineRunFactory(
        pipeline=pipeline, outcome="succeeded", start_lsn="0/16B3748", end_lsn="0/16B9000", changes_read=1234
    )
    run.finished_at = run.started_at + timedelta(seconds=2.5)
    run.save()
    page = admin_browser.get(reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])).content.decode()
    assert "0/16B3748 &ndash; 0/16B9000" in page
    assert "1,234" in page
    assert "2.5 s" in page
    assert run.started_at.strftime("%H:%M:%S") in page
