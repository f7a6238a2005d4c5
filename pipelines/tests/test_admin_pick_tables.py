"""Creating a pipeline offers the source's tables to pick, with the row estimate and
whether updates and deletes can be matched, instead of a free text box."""

import psycopg
import pytest
from django.urls import reverse

from destinations.models import Destination
from pipelines.models import Pipeline

from .factories import PipelineFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def source_row(source_row, source_database):
    with psycopg.connect(**source_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        conn.execute("INSERT INTO orders SELECT generate_series(1, 1200)")
        conn.execute("CREATE TABLE audit_log (line text)")
        conn.execute("CREATE TABLE events (id int)")
        conn.execute("ALTER TABLE events REPLICA IDENTITY FULL")
        conn.execute(
            "CREATE TABLE coded (code text NOT NULL); CREATE UNIQUE INDEX coded_code ON coded (code)"
        )
        conn.execute("ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code")
        conn.execute("CREATE TABLE muted (id int PRIMARY KEY); ALTER TABLE muted REPLICA IDENTITY NOTHING")
        conn.execute("ANALYZE orders")
    return source_row


def test_a_new_pipeline_goes_on_to_pick_tables_from_the_sources_list(admin_browser, source_row, tmp_path):
    destination = Destination.objects.create(
        name="duck", kind="duckdb", duckdb_path=str(tmp_path / "w.duckdb")
    )
    response = admin_browser.post(
        reverse("admin:pipelines_pipeline_add"),
        {
            "name": "shop",
            "source": source_row.pk,
            "destination": destination.pk,
            "max_changes_per_transaction": 1000,
            "on_slot_lost": "recopy",
            "on_incompatible_schema_change": "fail",
            "max_reject_share": 0.1,
            "tables-TOTAL_FORMS": 0,
            "tables-INITIAL_FORMS": 0,
            "tables-MIN_NUM_FORMS": 0,
            "tables-MAX_NUM_FORMS": 1000,
        },
    )
    pipeline = Pipeline.objects.get(name="shop")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:pipelines_pipeline_tables", args=[pipeline.pk])
    page = admin_browser.get(response["Location"]).content.decode()
    rows = page.split('id="source-tables"')[1]
    # the same words as the preflight check and the run (engine.preflight.table_identity)
    assert "public.orders</label></td>\n<td>1200</td>\n<td>a primary key (id)" in rows
    assert (
        "public.coded</label></td>\n<td>not analysed yet</td>\n<td>REPLICA IDENTITY USING INDEX coded_code"
        in rows
    )
    nothing = "</label></td>\n<td>not analysed yet</td>\n<td><strong>nothing</strong>: Table "
    assert f"public.events{nothing}public.events has REPLICA IDENTITY FULL but no primary key" in rows
    assert f"public.audit_log{nothing}public.audit_log has no primary key and no replica identity" in rows
    assert f"public.muted{nothing}public.muted has REPLICA IDENTITY NOTHING" in rows
    assert "ALTER TABLE &quot;public&quot;.&quot;muted&quot; REPLICA IDENTITY DEFAULT" in rows  # and the fix

    admin_browser.post(response["Location"], {"table": ["public.orders", "public.events"]})
    assert sorted(t.qualified_name for t in pipeline.tables.all()) == ["public.events", "public.orders"]
    again = admin_browser.get(response["Location"]).content.decode()
    assert 'value="public.orders" id="table-5" checked' in again


def test_an_unreachable_source_is_said_in_one_line_without_the_password(admin_browser):
    pipeline = PipelineFactory(source__pg_host="127.0.0.1", source__pg_port=1)
    page = admin_browser.get(reverse("admin:pipelines_pipeline_tables", args=[pipeline.pk])).content.decode()
    assert "Could not list the source's tables: 127.0.0.1:1 refused the connection" in page
    assert pipeline.source.pg_password not in page
