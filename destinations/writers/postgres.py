"""The PostgreSQL destination."""

import psycopg

from sources.preflight import describe_connection_error

from .base import ConnectionProblem, Writer


class PostgresWriter(Writer):
    kind = "postgres"

    def connect(self, **extra) -> psycopg.Connection:
        s = self.settings
        try:
            return psycopg.connect(
                host=s["host"],
                port=s["port"],
                dbname=s["database"],
                user=s["username"],
                password=s.get("password") or None,
                connect_timeout=self.connect_timeout,
                application_name="rosetta",
                **extra,
            )
        except psycopg.OperationalError as error:
            raise ConnectionProblem(describe_connection_error(error, s["host"], s["port"])) from None

    def test_connection(self) -> str:
        schema = self.settings["schema"]
        with self.connect(autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            exists, can_create_in, can_create_schema = conn.execute(
                """
                SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s),
                       EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s
                               AND has_schema_privilege(oid, 'CREATE')),
                       has_database_privilege(current_database(), 'CREATE')
                """,
                {"schema": schema},
            ).fetchone()
        if exists and not can_create_in:
            raise ConnectionProblem(
                f"Connected to PostgreSQL {version}, but the user may not create tables in schema {schema}."
            )
        if not exists and not can_create_schema:
            raise ConnectionProblem(
                f"Connected to PostgreSQL {version}, but schema {schema} does not exist "
                "and the user may not create it."
            )
        where = f"schema {schema}" if exists else f"schema {schema} (Rosetta will create it)"
        return f"Connected to PostgreSQL {version}; Rosetta can write to {where}."
