"""Sets up the demo: an admin login, a sample shop database as the source, a DuckDB
destination and a running pipeline between them; `--generate` keeps writing to the shop."""

import random
import secrets
import time
from pathlib import Path

import psycopg
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from psycopg import sql
from psycopg.types.json import Jsonb

from destinations.models import Destination
from pipelines import services
from pipelines.models import Pipeline
from sources.models import Source

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
        parser.add_argument("--generate", action="store_true", help="Write sample changes until stopped.")

    def handle(self, *args, **options):
        conninfo = {
            "host": options["source_host"],
            "port": options["source_port"],
            "dbname": options["source_database"],
            "user": options["source_user"],
        }
        if options["generate"]:
            return self.generate(conninfo)
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
        self.stdout.write(f"admin password: {password}")

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

    def generate(self, conninfo):
        """A steady trickle of inserts, updates and deletes, so the pipeline has something to copy."""
        with psycopg.connect(**conninfo, autocommit=True) as conn:
            while True:
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
