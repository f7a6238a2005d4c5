"""A CSV pipeline into Snowflake (fakesnow) through the same services, API and admin as the
other destinations: run, run again, statistics and preview."""

import pytest

from destinations.tests.factories import SnowflakeDestinationFactory
from destinations.tests.fakesnow_support import fake_snowflake, read_table
from pipelines import services

from .batch_support import make_batch_pipeline, make_source

pytestmark = pytest.mark.django_db


def test_a_csv_pipeline_into_snowflake_loads_each_file_once_and_shows_stats_and_rows(
    admin_api, admin_browser, tmp_path
):
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "1.csv").write_text("Order ID,Amount,Note\n1,10,first\n2,20,second\nx\n")
    destination = SnowflakeDestinationFactory()
    source = make_source("csv", {"path": str(folder), "primary_key": ["Order ID"]})
    pipeline = make_batch_pipeline(source, destination, table="orders", max_reject_share=0.5)

    with fake_snowflake(destination.writer_settings()) as analyst:
        first = services.run_pipeline(pipeline)
        again = services.run_pipeline(pipeline)
        (folder / "2.csv").write_text("Order ID,Amount,Note,Region\n2,n/a,changed,EU\n3,30,third,US\n")
        drift = services.run_pipeline(pipeline)
        stats = admin_api.get(f"/api/pipelines/{pipeline.pk}/stats/")
        data = admin_api.get(f"/api/pipelines/{pipeline.pk}/data/", {"search": "CHANGED"})
        page = admin_browser.get(f"/admin/pipelines/pipeline/{pipeline.pk}/change/").content.decode()
        rows = read_table(analyst, "orders", '"order_id"')
        rejects = read_table(analyst, "_rosetta_rejects", '"line"')

    assert first.outcome == "succeeded", first.error
    assert (first.rows_inserted, first.rows_rejected, again.changes_read) == (2, 1, 0)
    assert drift.outcome == "succeeded", drift.error
    assert (drift.rows_inserted, drift.rows_updated) == (1, 1)
    assert "Column amount of orders widened from bigint to text: 2.csv line 2 has 'n/a' there." in drift.notes
    assert [(r["order_id"], r["amount"], r["note"], r["region"]) for r in rows] == [
        (1, "10", "first", None),
        (2, "n/a", "changed", "EU"),
        (3, "30", "third", "US"),
    ]
    assert [(r["origin"], r["line"]) for r in rejects] == [("1.csv", 4)]
    assert stats.status_code == 200 and stats.data["tables"][0]["rows"] == 3, stats.data
    assert stats.data["rows_rejected"] == 1 and stats.data["runs"]["succeeded"] == 3
    assert data.status_code == 200 and data.data["count"] == 1, data.data
    assert "<td>orders</td><td>3</td>" in page
