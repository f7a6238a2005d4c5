"""The README's admin steps for a CSV source and an HTTP JSON source, followed in the admin:
add the source, add a pipeline, start it, run it, read its statistics."""

import pytest
from django.urls import reverse

from pipelines import services
from pipelines.models import Pipeline
from sources.models import Source

pytestmark = pytest.mark.django_db

PIPELINE_FORM = {
    "max_changes_per_transaction": 1000,
    "on_slot_lost": "recopy",
    "on_incompatible_schema_change": "fail",
    "max_reject_share": 0.1,
    "tables-TOTAL_FORMS": 0,
    "tables-INITIAL_FORMS": 0,
    "tables-MIN_NUM_FORMS": 0,
    "tables-MAX_NUM_FORMS": 1000,
}


def add_source(browser, name, kind, settings, secret_headers=""):
    response = browser.post(
        reverse("admin:sources_source_add"),
        {
            "name": name,
            "kind": kind,
            "settings": settings,
            "secret_headers": secret_headers,
            "pg_port": 5432,
            "sslmode": "prefer",
            "wal_warn_bytes": 1 << 30,
            "wal_critical_bytes": 5 << 30,
            "slot_inactive_alert_minutes": 30,
            "publication_name": "rosetta_pub",  # the add form's defaults, left as they are
            "slot_name": "rosetta_slot",
        },
    )
    assert response.status_code == 302, [
        line for line in response.content.decode().splitlines() if "error" in line
    ]
    return Source.objects.get(name=name)


def add_pipeline_start_and_run(browser, source, destination):
    added = browser.post(
        reverse("admin:pipelines_pipeline_add"),
        {"name": f"{source.name}-load", "source": source.pk, "destination": destination.pk, **PIPELINE_FORM},
    )
    pipeline = Pipeline.objects.get(source=source)
    page = reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])
    assert added.status_code == 302 and added["Location"] in (
        page,
        reverse("admin:pipelines_pipeline_changelist"),
    )
    confirm = browser.get(
        reverse("admin:pipelines_pipeline_act", args=[pipeline.pk, "start"])
    ).content.decode()
    assert "slot" not in confirm.split('id="content"')[1].lower()  # no replication slot here
    browser.post(reverse("admin:pipelines_pipeline_act", args=[pipeline.pk, "start"]))
    run = services.run_pipeline(Pipeline.objects.get(pk=pipeline.pk))  # what "Run now" queues
    assert run.outcome == "succeeded", run.error
    tables = browser.get(reverse("admin:pipelines_pipeline_tables", args=[pipeline.pk]))
    assert tables.status_code == 302 and tables["Location"] == page  # one table, nothing to pick
    shown = browser.get(page).content.decode()
    assert reverse("admin:pipelines_pipeline_tables", args=[pipeline.pk]) not in shown
    return pipeline, shown


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_a_csv_source_is_added_and_loaded_through_the_admin(admin_browser, tmp_path, destination):
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "orders_1.csv").write_text("Order ID,Amount\n1,10.5\n2,3\n")
    settings = f'{{"path": "{tmp_path / "exports"}", "glob": "orders_*.csv*", "primary_key": ["Order ID"]}}'
    source = add_source(admin_browser, "orders-export", "csv", settings)

    pipeline, page = add_pipeline_start_and_run(admin_browser, source, destination)

    assert "<td>orders_export</td><td>2</td>" in page
    assert "Order ID &rarr; order_id: bigint" in page


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_an_http_json_source_is_added_and_loaded_through_the_admin(admin_browser, api, destination):
    api.style = "cursor"
    api.records = [{"id": i, "name": f"n{i}"} for i in range(1, 6)]
    settings = (
        f'{{"url": "{api.url}", "records_path": "data", '
        '"pagination": {"style": "cursor", "cursor_path": "next_cursor"}, "primary_key": ["id"]}'
    )
    source = add_source(
        admin_browser, "crm-contacts", "http_json", settings, '{"Authorization": "Bearer tok-123"}'
    )
    assert (
        "tok-123"
        not in admin_browser.get(reverse("admin:sources_source_change", args=[source.pk])).content.decode()
    )

    pipeline, page = add_pipeline_start_and_run(admin_browser, source, destination)

    assert "<td>crm_contacts</td><td>5</td>" in page
    assert api.requests[0][2]["Authorization"] == "Bearer tok-123"


def test_the_admin_names_a_bad_setting_of_a_csv_source(admin_browser):
    response = admin_browser.post(
        reverse("admin:sources_source_add"),
        {
            "name": "bad",
            "kind": "csv",
            "settings": '{"path": "/tmp/x.csv", "delimiter": ";;"}',
            "pg_port": 5432,
            "sslmode": "prefer",
            "wal_warn_bytes": 1 << 30,
            "wal_critical_bytes": 5 << 30,
            "slot_inactive_alert_minutes": 30,
        },
    )
    assert response.status_code == 200
    assert "delimiter: must be exactly one character" in response.content.decode()


@pytest.mark.parametrize("destination", ["duckdb"], indirect=True)
def test_measure_lag_is_not_offered_for_a_csv_pipeline_and_refused_with_the_reason(
    admin_browser, tmp_path, destination
):
    """A CSV source has no WAL: the pipeline page offers no Measure lag button, and the
    action's URL says why instead of failing with a server error."""
    from .batch_support import make_batch_pipeline, make_source

    source = make_source("csv", {"path": str(tmp_path / "items.csv")})
    pipeline = make_batch_pipeline(source, destination)
    page = admin_browser.get(reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])).content.decode()
    assert "Measure lag" not in page and "Run now" in page

    url = reverse("admin:pipelines_pipeline_act", args=[pipeline.pk, "measure_lag"])
    for response in (admin_browser.get(url, follow=True), admin_browser.post(url, follow=True)):
        assert response.status_code == 200
        assert "has no WAL to lag behind" in response.content.decode()
