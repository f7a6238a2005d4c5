"""One parser for `schema.table` (engine.names), used by the API, the admin and the engine."""

import pytest
from django.urls import reverse

from destinations.tests.factories import DestinationFactory
from engine.names import TableNameError, format_table_name, parse_table_name
from pipelines.models import Pipeline, PipelineTable
from sources.tests.factories import SourceFactory

from .factories import PipelineFactory, PipelineTableFactory


@pytest.mark.parametrize(
    "text, expected",
    [
        ("public.t", ("public", "t")),
        ('"public"."t"', ("public", "t")),
        ("t", ("public", "t")),
        (" sales . Orders ", ("sales", "Orders")),
        ('"my schema"."a.b"', ("my schema", "a.b")),
        ('"say ""hi"""."x"', ('say "hi"', "x")),
        ('Ünïcødé."täble 1"', ("Ünïcødé", "täble 1")),
        ("public.my table", ("public", "my table")),
    ],
)
def test_a_table_name_is_read_like_sql_with_quoted_parts(text, expected):
    assert parse_table_name(text) == expected
    assert parse_table_name(format_table_name(*expected)) == expected


@pytest.mark.parametrize("text", ["a.b.c", "public.", ".t", '"a', 'a"b', '"".t', "x" * 64, "a\x00b"])
def test_a_name_that_cannot_be_read_is_refused_with_the_reason(text):
    with pytest.raises(TableNameError):
        parse_table_name(text)


@pytest.mark.django_db
def test_the_api_stores_a_quoted_name_without_its_quotes(admin_api):
    source, destination = SourceFactory(), DestinationFactory()
    response = admin_api.post(
        "/api/pipelines/",
        {
            "name": "quoted",
            "source": source.pk,
            "destination": destination.pk,
            "tables": ['"public"."t"', '"my schema"."odd.name"', 'public."with ""quote"""'],
        },
        format="json",
    )
    assert response.status_code == 201, response.data
    pipeline = Pipeline.objects.get(name="quoted")
    assert {(t.schema_name, t.table_name) for t in pipeline.tables.all()} == {
        ("public", "t"),
        ("my schema", "odd.name"),
        ("public", 'with "quote"'),
    }
    assert sorted(response.data["tables"]) == sorted(
        ['my schema."odd.name"', "public.t", 'public."with ""quote"""']
    )
    # public.t and "public"."t" are one table
    again = admin_api.patch(
        f"/api/pipelines/{pipeline.pk}/", {"tables": ["public.t", '"public"."t"']}, format="json"
    )
    assert again.status_code == 400 and "tables" in again.data


@pytest.mark.django_db
def test_the_pipeline_shows_where_a_name_taken_in_another_schema_goes(admin_api):
    source, destination = SourceFactory(), DestinationFactory()
    response = admin_api.post(
        "/api/pipelines/",
        {
            "name": "dups",
            "source": source.pk,
            "destination": destination.pk,
            "tables": ["public.dup", "other.dup"],
        },
        format="json",
    )
    assert response.status_code == 201, response.data
    shown = admin_api.get(f"/api/pipelines/{response.data['id']}/").data["table_progress"]
    assert sorted((t["schema_name"], t["table_name"], t["target_table"]) for t in shown) == [
        ("other", "dup", "other__dup"),
        ("public", "dup", "dup"),
    ]


@pytest.mark.django_db
def test_the_admin_accepts_the_names_the_api_accepts(admin_browser):
    pipeline = PipelineFactory()
    kept = PipelineTableFactory(pipeline=pipeline, schema_name="public", table_name="a.b")
    url = reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])
    page = admin_browser.get(url)
    assert 'value="&quot;a.b&quot;"' in page.content.decode()  # shown quoted, as it is typed
    data = {
        "name": pipeline.name,
        "source": pipeline.source_id,
        "destination": pipeline.destination_id,
        "max_changes_per_transaction": pipeline.max_changes_per_transaction,
        "on_slot_lost": pipeline.on_slot_lost,
        "on_incompatible_schema_change": pipeline.on_incompatible_schema_change,
        "max_reject_share": pipeline.max_reject_share,
        "tables-TOTAL_FORMS": "2",
        "tables-INITIAL_FORMS": "1",
        "tables-MIN_NUM_FORMS": "0",
        "tables-MAX_NUM_FORMS": "1000",
        "tables-0-id": kept.pk,
        "tables-0-pipeline": pipeline.pk,
        "tables-0-schema_name": "public",
        "tables-0-table_name": '"a.b"',
        "tables-0-target_table": '"a.b"',
        "tables-1-pipeline": pipeline.pk,
        "tables-1-schema_name": '"Sales Data"',
        "tables-1-table_name": "my table",
        "tables-1-target_table": "",
    }
    response = admin_browser.post(url, data)
    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    assert set(PipelineTable.objects.filter(pipeline=pipeline).values_list("schema_name", "table_name")) == {
        ("public", "a.b"),
        ("Sales Data", "my table"),
    }
