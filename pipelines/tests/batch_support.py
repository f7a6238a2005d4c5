"""Fixtures for batch-source tests: CSV and HTTP JSON sources, a local HTTP server the
tests script, and a way to read what landed in the destination."""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import duckdb
import psycopg

from pipelines import services
from pipelines.models import Pipeline
from sources.models import Source


def make_source(kind: str, settings: dict, **fields) -> Source:
    source = Source(
        name=f"{kind.replace('_', '-')}-{uuid.uuid4().hex[:8]}", kind=kind, settings=settings, **fields
    )
    source.full_clean()
    source.save()
    return source


def make_batch_pipeline(source, destination, table="items", start=True, **fields) -> Pipeline:
    pipeline = Pipeline.objects.create(
        name=f"p-{uuid.uuid4().hex[:8]}", source=source, destination=destination, **fields
    )
    services.set_pipeline_tables(pipeline, [table])
    if start:
        services.start_pipeline(pipeline)
    return pipeline


def query(destination, statement: str, params=()):
    """Run a read query on the destination as an analyst would; {schema} is its schema."""
    if destination.kind == "postgres":
        with psycopg.connect(
            host=destination.pg_host,
            port=destination.pg_port,
            dbname=destination.pg_database,
            user="postgres",
        ) as conn:
            return [tuple(r) for r in conn.execute(statement.format(schema=destination.pg_schema), params)]
    with duckdb.connect(destination.duckdb_path, read_only=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return conn.execute(statement.format(schema="main").replace("%s", "?"), list(params)).fetchall()


def column_types(destination, table: str) -> dict:
    if destination.kind == "postgres":
        rows = query(
            destination,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = '{schema}' AND table_name = %s",
            [table],
        )
    else:
        rows = query(
            destination,
            "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = %s",
            [table],
        )
    return {name: kind.lower() for name, kind in rows if not name.startswith("_rosetta_")}


def checkpoint_state(destination, pipeline):
    """(part number, state) of the pipeline's checkpoint; (0, None) before its first part."""
    try:
        rows = query(
            destination,
            "SELECT lsn, state FROM {schema}._rosetta_checkpoints WHERE pipeline_key = %s",
            [pipeline.name],
        )
    except (psycopg.errors.UndefinedTable, duckdb.CatalogException):
        return 0, None
    return (rows[0][0], json.loads(rows[0][1])) if rows else (0, None)


class ScriptedApi:
    """A local HTTP JSON API. `records` is the data; `script` is a list of canned answers
    (status, headers, body, delay) served before the normal ones; every request is logged."""

    def __init__(self):
        self.records = []
        self.script = []
        self.requests = []  # (path, query dict, headers dict, monotonic time)
        self.fail_pages_once = set()  # ?page= values answered with one 503 first
        self.style = "page"
        self.page_size = 3
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/items"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def page(self, query: dict) -> tuple[dict, dict]:
        """(body, headers) of the normal answer for the query."""
        records = self.records
        since = query.get("updated_since")
        if since is not None:
            records = [r for r in records if isinstance(r, dict) and r.get("updated_at", "") > since]
        size = self.page_size
        if self.style == "page":
            page = int(query.get("page", 1))
            return {"data": records[(page - 1) * size : page * size]}, {}
        if self.style == "offset":
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", size))
            return {"data": records[offset : offset + limit]}, {}
        if self.style == "cursor":
            start = int(query.get("cursor", 0))
            end = start + size
            return {"data": records[start:end], "next_cursor": str(end) if end < len(records) else None}, {}
        if self.style == "link":
            start = int(query.get("start", 0))
            end = start + size
            headers = {}
            if end < len(records):
                extra = f"&updated_since={since}" if since else ""
                headers["Link"] = f'<{self.url}?start={end}{extra}>; rel="next"'
            return {"data": records[start:end]}, headers
        return {"data": records}, {}

    def _handler(api):  # noqa: N805 - `api` is the outer object, `self` the request handler
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                api.requests.append((parts.path, query, dict(self.headers), time.monotonic()))
                if query.get("page") in api.fail_pages_once:
                    api.fail_pages_once.discard(query["page"])
                    status, headers, body, delay = 503, {}, {"error": "down"}, 0
                elif api.script:
                    status, headers, body, delay = api.script.pop(0)
                    if delay:
                        time.sleep(delay)
                else:
                    body, headers = api.page(query)
                    status = 200
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
