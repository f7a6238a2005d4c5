"""While a table is copied, the pipeline's page says how far: rows copied of the planner's
estimate, stored by the run as the copy goes (at most once a second). Into PostgreSQL the
copy is binary: the rows copied are the source's own count (pg_stat_progress_copy)."""

import re
import uuid

import pytest
from django.urls import reverse
from psycopg import sql

from engine.source import SourceDatabase
from pipelines import services
from pipelines.models import PipelineTable

from .factories import PipelineFactory, PipelineTableFactory

# Not inside a test transaction: creating a slot waits for every open transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def inline_snapshot_cell(page: str) -> str:
    return page.split('class="field-snapshot"')[1].split("</td>")[0]


class PageWatcher(services.RunObserver):
    """Opens the pipeline's page while the copy runs, as an operator would."""

    def __init__(self, client, url):
        self.client, self.url, self.pages = client, url, []

    def snapshot_progress(self, table, rows, estimate):
        self.pages.append(self.client.get(self.url).content.decode())


@pytest.mark.parametrize("destination", ["duckdb", "postgres"], indirect=True)
def test_the_pipeline_page_shows_rows_copied_of_the_estimate_while_a_table_is_copied(
    admin_browser, make_pipeline, source_db
):
    # About 12 MB as CSV: a dozen chunks of the copy, so the page is seen mid-way.
    source_db.execute(
        "CREATE TABLE events (id int PRIMARY KEY, body text);"
        "INSERT INTO events SELECT g, repeat('x', 100) FROM generate_series(1, 120000) g;"
        "ANALYZE events"
    )
    pipeline = make_pipeline(["public.events"])
    watcher = PageWatcher(admin_browser, reverse("admin:pipelines_pipeline_change", args=[pipeline.pk]))

    run = services.run_pipeline(pipeline, snapshot_only=True, observer=watcher)

    assert run.outcome == "succeeded", run.error
    assert len(watcher.pages) >= 2
    # The first report is stored at once; the page opened at the next one shows it.
    seen = inline_snapshot_cell(watcher.pages[1])
    assert "copying: " in seen and " of ~120,000 rows (" in seen, seen
    assert "<progress" in seen
    copied = int(re.search(r"copying: ([\d,]+) of", seen).group(1).replace(",", ""))
    assert 0 < copied <= 120_000, seen
    table = PipelineTable.objects.get(pipeline=pipeline)
    assert (table.snapshot_state, table.snapshot_rows_copied) == ("done", 120_000)
    done = admin_browser.get(reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])).content.decode()
    assert "done, 120,000 rows" in inline_snapshot_cell(done)


def test_a_table_being_copied_shows_its_progress_and_a_pending_one_says_pending(admin_browser):
    pipeline = PipelineFactory(status="refreshing")
    PipelineTableFactory(
        pipeline=pipeline,
        table_name="a",
        snapshot_state="in_progress",
        snapshot_rows_copied=2_500,
        snapshot_rows_estimate=10_000,
    )
    PipelineTableFactory(pipeline=pipeline, table_name="b", snapshot_state="pending")
    PipelineTableFactory(
        pipeline=pipeline,
        table_name="c",
        snapshot_state="in_progress",
        snapshot_rows_copied=0,
        snapshot_rows_estimate=7_000,
    )
    page = admin_browser.get(reverse("admin:pipelines_pipeline_change", args=[pipeline.pk])).content.decode()
    cells = page.split('class="field-snapshot"')[1:]
    assert "copying: 2,500 of ~10,000 rows (25%)" in cells[0]
    assert "<p>pending</p>" in cells[1].split("</td>")[0]
    # Rows not counted (yet): the estimate, without a bar stuck at 0 %.
    assert "copying: ~7,000 rows estimated" in cells[2] and "<progress" not in cells[2].split("</td>")[0]


def test_a_snapshot_whose_progress_cannot_be_read_still_copies_every_row(source_database, source_db):
    # A role allowed two connections: the run's own and the copy's; the side connection
    # that reads the copy's progress is refused.
    role = f"limited_{uuid.uuid4().hex[:8]}"
    source_db.execute(
        "CREATE TABLE events (id int PRIMARY KEY, body text);"
        "INSERT INTO events SELECT g, repeat('x', 100) FROM generate_series(1, 120000) g"
    )
    source_db.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 2").format(sql.Identifier(role)))
    source_db.execute(sql.SQL("GRANT SELECT ON events TO {}").format(sql.Identifier(role)))
    try:
        with SourceDatabase({**source_database, "user": role}) as source:
            relation = source.describe_table("public", "events")
            with source.snapshot(relation, "binary") as chunks:
                seen = [(len(chunk), source.snapshot_rows_sent()) for chunk in chunks]
    finally:
        source_db.execute(
            sql.SQL("DROP OWNED BY {}; DROP ROLE {}").format(sql.Identifier(role), sql.Identifier(role))
        )
    # 19 bytes of header, then per row: field count, two (length, value) pairs; 2 bytes trailer.
    assert sum(size for size, _ in seen) == 19 + 120_000 * (2 + 4 + 4 + 4 + 100) + 2
    assert len(seen) >= 2 and all(rows == 0 for _, rows in seen)
    # Pieces of about 1 MB (one row more at most): reading and writing alternate finely
    # enough that the sockets keep both servers busy (engine.source.SNAPSHOT_CHUNK_BYTES).
    assert all(size < 2**20 + 200 for size, _ in seen) and len(seen) >= 13
