"""Sets up the demo: an admin login, a sample shop database as the source, a DuckDB
destination and a running pipeline between them; `--generate` keeps writing to the shop.

Beside it, two batch sources into a second DuckDB file: a folder of CSV exports
(`--generate` drops a new one every minute) and a small HTTP JSON API of product reviews
(`--serve-api` serves it, pages of 200, `?updated_since=`), each pipeline on a one-minute
interval schedule."""

import json
import random
import secrets
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from psycopg import sql
from psycopg.types.json import Jsonb

from destinations.models import Destination
from pipelines import schedules, services
from pipelines.models import Pipeline
from sources.models import Source

REVIEWS_START = datetime(2024, 1, 1, tzinfo=UTC)
REVIEWS_PAGE = 200

SHOP_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id bigserial PRIMARY KEY,
    email text NOT NULL,
    country text,
    tags text[],
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    total numeric(12, 2) NOT NULL,
    status text NOT NULL DEFAULT 'new',
    details jsonb,
    ordered_at timestamptz NOT NULL DEFAULT now()
);
"""
TABLES = ["public.customers", "public.orders"]


class Command(BaseCommand):
    help = "Create the demo objects (idempotent), or with --generate keep writing sample changes."

    def add_arguments(self, parser):
        parser.add_argument("--source-host", default="127.0.0.1")
        parser.add_argument("--source-port", type=int, default=5432)
        parser.add_argument("--source-database", default="rosetta_demo_shop")
        parser.add_argument("--source-user", default="postgres")
        parser.add_argument("--duckdb-path", default=".demo/warehouse.duckdb")
        parser.add_argument("--admin-password", default="")
        parser.add_argument("--exports-dir", default=".demo/exports", help="Where the demo's CSV exports go.")
        parser.add_argument("--files-duckdb-path", default=".demo/files.duckdb")
        parser.add_argument("--api-port", type=int, default=8765)
        parser.add_argument("--generate", action="store_true", help="Write sample changes until stopped.")
        parser.add_argument(
            "--serve-api", action="store_true", help="Serve the demo's reviews API until stopped."
        )

    def handle(self, *args, **options):
        conninfo = {
            "host": options["source_host"],
            "port": options["source_port"],
            "dbname": options["source_database"],
            "user": options["source_user"],
        }
        if options["serve_api"]:
            return self.serve_api(options["api_port"])
        if options["generate"]:
            return self.generate(conninfo, Path(options["exports_dir"]))
        self.create_shop(conninfo)
        password = options["admin_password"] or secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(
            username="admin", defaults={"email": "admin@localhost", "is_staff": True, "is_superuser": True}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        source, _ = Source.objects.update_or_create(
            name="demo-shop",
            defaults={
                "pg_host": conninfo["host"],
                "pg_port": conninfo["port"],
                "pg_database": conninfo["dbname"],
                "pg_username": conninfo["user"],
                "sslmode": "disable",
                "publication_name": "rosetta_demo_pub",
                "slot_name": "rosetta_demo_slot",
            },
        )
        destination, _ = Destination.objects.update_or_create(
            # Stored absolute: destinations never keep a path relative to some process's directory.
            name="demo-warehouse",
            defaults={"kind": "duckdb", "duckdb_path": str(Path(options["duckdb_path"]).resolve())},
        )
        pipeline, created = Pipeline.objects.get_or_create(
            name="shop-to-duckdb", defaults={"source": source, "destination": destination}
        )
        if created:
            services.set_pipeline_tables(pipeline, TABLES)
        if pipeline.refusal_reason("start") is None:
            services.start_pipeline(pipeline)
        self.create_batch_pipelines(
            Path(options["exports_dir"]), options["files_duckdb_path"], options["api_port"]
        )
        self.stdout.write(f"admin password: {password}")

    def create_batch_pipelines(self, exports: Path, duckdb_path: str, api_port: int):
        """A CSV source (a folder of exports) and an HTTP JSON source (the reviews API), each
        loaded every minute into a DuckDB file of their own."""
        exports = exports.resolve()
        exports.mkdir(parents=True, exist_ok=True)
        if not any(exports.glob("products_*.csv")):
            write_products_export(exports, 0)
        files, _ = Destination.objects.update_or_create(
            name="demo-files-warehouse", defaults={"kind": "duckdb", "duckdb_path": duckdb_path}
        )
        every_minute = schedules.interval_for(60)
        sources = {
            "products-to-duckdb": Source(
                name="demo-product-exports",
                kind=Source.Kind.CSV,
                settings={"path": str(exports), "glob": "products_*.csv", "primary_key": ["Product ID"]},
            ),
            "reviews-to-duckdb": Source(
                name="demo-reviews-api",
                kind=Source.Kind.HTTP_JSON,
                settings={
                    "url": f"http://127.0.0.1:{api_port}/reviews",
                    "records_path": "data",
                    "pagination": {"style": "page", "page_param": "page", "page_size": REVIEWS_PAGE},
                    "incremental": {"field": "updated_at", "param": "updated_since"},
                    "requests_per_second": 20,
                    "primary_key": ["id"],
                },
                secret_headers=json.dumps({"Authorization": "Bearer demo-token"}),
            ),
        }
        for pipeline_name, wanted in sources.items():
            wanted.full_clean(validate_unique=False)
            source, _ = Source.objects.update_or_create(
                name=wanted.name,
                defaults={
                    "kind": wanted.kind,
                    "settings": wanted.settings,
                    "secret_headers": wanted.secret_headers,
                },
            )
            pipeline, created = Pipeline.objects.get_or_create(
                name=pipeline_name,
                defaults={"source": source, "destination": files, "schedule_interval": every_minute},
            )
            if created:
                services.set_pipeline_tables(pipeline, [pipeline_name.split("-")[0]])
            if pipeline.refusal_reason("start") is None:
                services.start_pipeline(pipeline)

    def serve_api(self, port: int):
        """The demo's reviews API: more reviews every minute, some older ones edited."""

        class Reviews(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                if parts.path != "/reviews":
                    self.send_error(404)
                    return
                if self.headers.get("Authorization") != "Bearer demo-token":
                    self.send_error(401)
                    return
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                records = demo_reviews(datetime.now(UTC))
                since = query.get("updated_since")
                if since:
                    records = [r for r in records if r["updated_at"] > since]
                page = max(int(query.get("page", "1")), 1)
                body = json.dumps({"data": records[(page - 1) * REVIEWS_PAGE : page * REVIEWS_PAGE]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", port), Reviews)
        self.stdout.write(f"demo reviews API on http://127.0.0.1:{port}/reviews")
        server.serve_forever()

    def create_shop(self, conninfo):
        admin = {**conninfo, "dbname": "postgres"}
        try:
            with psycopg.connect(**admin, autocommit=True, connect_timeout=5) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", [conninfo["dbname"]]
                ).fetchone()
                if not exists:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(conninfo["dbname"])))
            with psycopg.connect(**conninfo, autocommit=True) as conn:
                conn.execute(SHOP_SCHEMA)
                if conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 0:
                    conn.execute(
                        "INSERT INTO customers (email, country, tags) "
                        "SELECT 'customer' || i || '@example.com', (ARRAY['NL','DE','FR','ID'])[1 + i % 4], "
                        "ARRAY['demo'] FROM generate_series(1, 1000) i"
                    )
                    conn.execute(
                        "INSERT INTO orders (customer_id, total, details) "
                        "SELECT 1 + i % 1000, round((random() * 500)::numeric, 2), "
                        "jsonb_build_object('items', 1 + i % 5, 'channel', 'web') FROM generate_series(1, 5000) i"
                    )
        except psycopg.OperationalError as error:
            raise CommandError(f"Cannot reach the demo source database: {error}") from None

    def generate(self, conninfo, exports: Path):
        """A steady trickle of inserts, updates and deletes, so the pipeline has something to copy;
        and a new CSV export every minute."""
        last_export = time.monotonic()
        with psycopg.connect(**conninfo, autocommit=True) as conn:
            while True:
                if time.monotonic() - last_export > 60 and exports.is_dir():
                    write_products_export(exports, len(list(exports.glob("products_*.csv"))))
                    last_export = time.monotonic()
                with conn.transaction():
                    customer = conn.execute(
                        "INSERT INTO customers (email, country) VALUES (%s, 'NL') RETURNING id",
                        [f"new{random.randrange(10**9)}@example.com"],
                    ).fetchone()[0]
                    conn.execute(
                        "INSERT INTO orders (customer_id, total, details) VALUES (%s, %s, %s)",
                        [
                            customer,
                            round(random.uniform(5, 500), 2),
                            Jsonb({"channel": "app"}),
                        ],
                    )
                    conn.execute(
                        "UPDATE orders SET status = 'shipped' WHERE id = "
                        "(SELECT id FROM orders WHERE status = 'new' ORDER BY random() LIMIT 1)"
                    )
                    conn.execute(
                        "DELETE FROM orders WHERE id = (SELECT min(id) FROM orders) AND random() < 0.3"
                    )
                time.sleep(1)


def write_products_export(folder: Path, number: int) -> Path:
    """products_NNNN.csv: 100 products, some of them already in earlier exports with new prices."""
    rng = random.Random(number)
    path = folder / f"products_{number:04d}.csv"
    lines = ["Product ID,Name,Price (EUR),In Stock,Added On,Tags"]
    for i in range(number * 50 + 1, number * 50 + 101):
        lines.append(
            f'{i},"Product {i}, size {rng.choice("SML")}",{rng.randint(100, 99999) / 100},'
            f"{rng.choice(['true', 'false'])},{(datetime(2024, 1, 1) + timedelta(days=i % 365)).date()},"
            f'"{rng.choice(["new", "sale", "eco"])}"'
        )
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(path)  # appears whole: a run never reads half an export
    return path


def demo_reviews(now: datetime) -> list[dict]:
    """Ten reviews per minute since the start of today; every seventh one edited an hour later."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    count = int((now - day).total_seconds() // 6) + 20
    reviews = []
    for i in range(1, count + 1):
        created = day + timedelta(seconds=6 * i)
        updated = (
            created + timedelta(hours=1) if i % 7 == 0 and created + timedelta(hours=1) <= now else created
        )
        reviews.append(
            {
                "id": i,
                "product_id": 1 + i % 300,
                "stars": 1 + i % 5,
                "text": f"Review {i}" + (" (edited)" if updated != created else ""),
                "author": {"name": f"user{i % 97}", "verified": i % 3 == 0},
                "updated_at": updated.isoformat().replace("+00:00", "Z"),
            }
        )
    reviews.sort(key=lambda r: (r["updated_at"], r["id"]))
    return reviews
