"""The operator's path in a real browser (Debian's chromium driven by Playwright) against
Django's live server and a real Celery worker: log in; add a source and run its check; add
a DuckDB destination; create a pipeline picking its tables; start it from its page; see a run and rows; pause
it; see the front page flag a slot over its warn threshold. The front page's screenshot is
kept in .artifacts/front-page.png (its top in front-page-top.png); docs/front-page.png is the
demo's front page (scripts/demo.sh), taken the same way."""

import time
import uuid
from pathlib import Path

import psycopg
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts"


@pytest.fixture
def page(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls of the test are
    # plain synchronous code, not async views. Only for this test, never for subprocesses.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    assert Path(CHROMIUM).exists(), (
        "Debian's chromium is missing: run scripts/setup.sh (apt-get install chromium)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        # Generous: the machine running the suite may be busy (a worker run, chromium, pytest).
        context.set_default_timeout(30_000)
        yield context.new_page()
        browser.close()


def wait_until(page, url, predicate, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        page.goto(url)
        if predicate(page.content()):
            return
        time.sleep(1)
    raise AssertionError(f"{url} never showed what was expected:\n{page.inner_text('#content')[:3000]}")


def run_list_action(page, changelist, name, action):
    page.goto(changelist)
    page.get_by_role("row").filter(has_text=name).locator("input.action-select").check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def test_an_operator_sets_up_starts_watches_and_pauses_a_pipeline_in_a_browser(
    page, live_server, celery_worker, source_database, django_user_model, tmp_path
):
    from destinations.models import Destination
    from pipelines.models import Pipeline
    from sources.models import Source

    django_user_model.objects.create_superuser("operator", "op@example.com", "operator-pass")
    with psycopg.connect(**source_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric)")
        conn.execute("INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 25) g")
    suffix = uuid.uuid4().hex[:6]
    base = live_server.url

    # Log in.
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-pass")
    page.click("input[type=submit]")
    page.wait_for_selector("#at-risk")

    # Add a source (a low warn threshold, so its slot is soon over it) and run its check.
    page.goto(f"{base}/admin/sources/source/add/")
    page.fill("#id_name", "shop")
    page.fill("#id_pg_host", "127.0.0.1")
    page.fill("#id_pg_port", str(source_database["port"]))
    page.fill("#id_pg_database", source_database["dbname"])
    page.fill("#id_pg_username", "postgres")
    page.select_option("#id_sslmode", "disable")
    page.fill("#id_publication_name", f"pub_{suffix}")
    page.fill("#id_slot_name", f"slot_{suffix}")
    page.fill("#id_wal_warn_bytes", "1")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    run_list_action(page, f"{base}/admin/sources/source/", "shop", "test_connection")
    assert "shop: all checks passed." in page.inner_text(".messagelist").lower()

    # Add a DuckDB destination.
    page.goto(f"{base}/admin/destinations/destination/add/")
    page.fill("#id_name", "warehouse")
    page.select_option("#id_kind", "duckdb")
    page.fill("#id_duckdb_path", str(tmp_path / "warehouse.duckdb"))
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")

    # Create a pipeline, then pick public.orders from the source's own list of tables.
    page.goto(f"{base}/admin/pipelines/pipeline/add/")
    page.fill("#id_name", "shop-to-duckdb")
    page.select_option("#id_source", str(Source.objects.get(name="shop").pk))
    page.select_option("#id_destination", str(Destination.objects.get(name="warehouse").pk))
    page.click("input[name=_continue]")
    page.wait_for_selector("#source-tables")
    assert "primary key" in page.inner_text("#source-tables")
    page.check("input[name=table][value='public.orders']")
    page.click("input[type=submit][value='Save tables']")
    assert "copies 1 table(s): public.orders" in page.inner_text(".messagelist")
    pipeline = Pipeline.objects.get(name="shop-to-duckdb")
    pipeline_page = f"{base}/admin/pipelines/pipeline/{pipeline.pk}/change/"

    # Start it from its page: the button asks first, saying what it does to the WAL.
    page.goto(pipeline_page)
    page.click("text=Start")
    assert "creates the publication and the replication slot" in page.inner_text(".rosetta-wal-effect")
    page.click("input[type=submit][value=Start]")
    assert "started shop-to-duckdb." in page.inner_text(".messagelist").lower()

    # Run now, and see the run and the copied rows appear.
    page.click("text=Run now")
    page.click("input[type=submit][value='Run now']")
    wait_until(page, pipeline_page, lambda html: "succeeded" in html and "done, 25 rows" in html)
    # The page keeps the window's width: the tables inline fits (or scrolls inside its box).
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280

    # Pause it.
    page.click("text=Pause")
    page.click("input[type=submit][value=Pause]")
    assert "paused shop-to-duckdb" in page.inner_text(".messagelist").lower()
    assert Pipeline.objects.get(pk=pipeline.pk).status == "paused"

    # Probe WAL now: the slot retains more than the 1-byte warn threshold.
    run_list_action(page, f"{base}/admin/sources/source/", "shop", "probe_wal_now")
    # The source's page: its slots table and charts fit the window or scroll inside their box.
    page.goto(f"{base}/admin/sources/source/{Source.objects.get(name='shop').pk}/change/")
    page.wait_for_selector(".rosetta-wal-panel")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    # Not cut off by the form row either: the panel ends inside the window.
    panel = page.locator(".rosetta-wal-panel").bounding_box()
    assert panel["x"] + panel["width"] <= 1280, panel
    page.goto(f"{base}/admin/")
    at_risk = page.inner_text("#at-risk")
    assert "source shop, slot " in at_risk and "warn" in at_risk
    assert page.locator("#at-risk a", has_text="shop").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "front-page.png"), full_page=True)
    # The part docs/front-page.png shows in the README.
    page.screenshot(
        path=str(ARTIFACTS / "front-page-top.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 470}
    )
