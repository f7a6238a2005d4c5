"""The demo's CSV and HTTP sources load into their DuckDB file, as the demo's worker would run them."""

import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command

from pipelines import services
from pipelines.models import Pipeline
from rosetta.management.commands.demo import Command

pytestmark = pytest.mark.django_db


def test_the_demo_adds_a_csv_and_an_http_source_whose_pipelines_load_on_a_schedule(tmp_path, monkeypatch):
    from http.server import ThreadingHTTPServer

    servers = []
    original_init = ThreadingHTTPServer.__init__

    def keep(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        servers.append(self)

    monkeypatch.setattr(ThreadingHTTPServer, "__init__", keep)
    api = threading.Thread(target=Command().serve_api, args=(0,), daemon=True)
    api.start()
    while not servers:
        time.sleep(0.01)
    port = servers[0].server_address[1]
    monkeypatch.setattr(Command, "create_shop", lambda self, conninfo: None)
    call_command(
        "demo",
        "--exports-dir",
        str(tmp_path / "exports"),
        "--files-duckdb-path",
        str(tmp_path / "files.duckdb"),
        "--duckdb-path",
        str(tmp_path / "shop.duckdb"),
        "--api-port",
        str(port),
        stdout=StringIO(),
    )
    try:
        for name, table in (("products-to-duckdb", "products"), ("reviews-to-duckdb", "reviews")):
            pipeline = Pipeline.objects.get(name=name)
            assert pipeline.status == "running" and pipeline.schedule_interval.every == 60
            run = services.run_pipeline(pipeline)
            assert run.outcome == "succeeded", run.error
            assert run.rows_inserted > 0 and pipeline.tables.get().target_table == table
        mapping = Pipeline.objects.get(name="products-to-duckdb").tables.get().column_mapping
        assert mapping["Price (EUR)"] == "price_eur"
    finally:
        servers[0].shutdown()
