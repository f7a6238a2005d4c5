"""Connection test and preflight checks for a source database (plain psycopg, no Django).

Each check says in plain words what it found, so an operator can fix the
source before a pipeline fails on it.
"""

from dataclasses import asdict, dataclass

import psycopg
from psycopg import sql


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    fix: str = ""  # the SQL that fixes a failed check, run by someone who may

    def as_dict(self) -> dict:
        return asdict(self)


def describe_connection_error(error: Exception, host: str, port: int) -> str:
    """One line saying why a connection failed, without echoing the password or the DSN."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    lowered = text.lower()
    if "timeout expired" in lowered or "timed out" in lowered:
        return f"No answer from {host}:{port} within the timeout."
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        return f"The host name {host!r} does not resolve (DNS)."
    if "connection refused" in lowered:
        return f"{host}:{port} refused the connection: is PostgreSQL running and listening there?"
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return "Authentication failed: check the user name and password."
    if "does not exist" in lowered and "database" in lowered:
        return "The database does not exist on that server."
    if "no pg_hba.conf entry" in lowered:
        return "The server's pg_hba.conf does not allow this host, user or database."
    return f"Could not connect: {text}"


def run_checks(
    connect_kwargs: dict,
    publication_name: str,
    tables: list[tuple[str, str]] = (),
    statement_timeout_ms: int = 10_000,
) -> list[Check]:
    """Connect, then check everything logical replication needs. Never raises for a server problem."""
    host, port = connect_kwargs.get("host"), connect_kwargs.get("port")
    try:
        conn = psycopg.connect(**connect_kwargs, autocommit=True)
    except psycopg.Error as error:
        return [Check("connection", False, describe_connection_error(error, host, port))]

    checks = []
    with conn:
        conn.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
        version = conn.execute("SHOW server_version").fetchone()[0]
        checks.append(
            Check("connection", True, f"Connected to PostgreSQL {version} as {connect_kwargs.get('user')}.")
        )
        wal_level = conn.execute("SHOW wal_level").fetchone()[0]
        checks.append(
            Check(
                "wal_level",
                wal_level == "logical",
                "wal_level is logical."
                if wal_level == "logical"
                else f"wal_level is {wal_level!r}; set wal_level = logical and restart the server.",
                "" if wal_level == "logical" else "ALTER SYSTEM SET wal_level = logical;  -- then restart PostgreSQL",
            )
        )
        user = sql.Identifier(connect_kwargs.get("user") or "").as_string(conn)
        can_replicate, is_superuser = conn.execute(
            "SELECT rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        checks.append(
            Check(
                "replication_privilege",
                can_replicate or is_superuser,
                "The user may replicate."
                if can_replicate or is_superuser
                else "The user has neither REPLICATION nor superuser: run ALTER ROLE ... WITH REPLICATION.",
                "" if can_replicate or is_superuser else f"ALTER ROLE {user} WITH REPLICATION;",
            )
        )
        may_monitor = is_superuser or conn.execute(
            "SELECT pg_has_role(current_user, 'pg_monitor', 'MEMBER')"
        ).fetchone()[0]
        checks.append(
            Check(
                "monitoring_privilege",
                may_monitor,
                "The user may read the WAL directory's size (pg_monitor)."
                if may_monitor
                else "The user is not in pg_monitor: the WAL probe cannot measure the WAL directory.",
                "" if may_monitor else f"GRANT pg_monitor TO {user};",
            )
        )
        publication = _publication_check(conn, publication_name, is_superuser)
        if not publication.ok:
            database = sql.Identifier(conn.info.dbname).as_string(conn)
            publication.fix = f"GRANT CREATE ON DATABASE {database} TO {user};"
        checks.append(publication)
        for schema, table in tables:
            checks.append(_table_check(conn, schema, table))
    return checks


def _publication_check(conn, publication_name: str, is_superuser: bool) -> Check:
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [publication_name]).fetchone()
    if exists:
        return Check("publication", True, f"Publication {publication_name} exists.")
    can_create = (
        is_superuser
        or conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()[0]
    )
    if can_create:
        return Check(
            "publication", True, f"Publication {publication_name} does not exist yet; Rosetta can create it."
        )
    return Check(
        "publication",
        False,
        f"Publication {publication_name} does not exist and the user may not create it: "
        "create it as the tables' owner, or GRANT CREATE ON DATABASE to the user.",
    )


def _table_check(conn, schema: str, table: str) -> Check:
    name = f"{schema}.{table}"
    row = conn.execute(
        """
        SELECT c.relreplident,
               EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
        """,
        [schema, table],
    ).fetchone()
    if row is None:
        return Check(f"table {name}", False, f"Table {name} does not exist (or the user cannot see it).")
    replica_identity, has_primary_key = row
    if has_primary_key or replica_identity == "f":
        how = "a primary key" if has_primary_key else "REPLICA IDENTITY FULL"
        return Check(f"table {name}", True, f"Table {name} has {how}.")
    quoted = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table)).as_string(conn)
    return Check(
        f"table {name}",
        False,
        f"Table {name} has no primary key: add one, or run ALTER TABLE {name} REPLICA IDENTITY FULL, "
        "so updates and deletes can be matched.",
        f"ALTER TABLE {quoted} REPLICA IDENTITY FULL;",
    )


@dataclass
class SourceTable:
    schema: str
    table: str
    row_estimate: int | None  # pg_class.reltuples; None before the first ANALYZE
    has_primary_key: bool
    replica_identity_full: bool

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


def list_tables(connect_kwargs: dict, statement_timeout_ms: int = 10_000) -> list[SourceTable]:
    """The user tables a pipeline could copy, with the planner's row estimate and whether
    updates and deletes can be matched (a primary key or REPLICA IDENTITY FULL)."""
    with psycopg.connect(**connect_kwargs, autocommit=True) as conn:
        conn.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
        rows = conn.execute(
            """
            SELECT n.nspname, c.relname, c.reltuples::bigint,
                   EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                   c.relreplident = 'f'
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
              AND has_table_privilege(c.oid, 'SELECT')
            ORDER BY 1, 2
            LIMIT 5000
            """
        ).fetchall()
    return [
        SourceTable(schema, table, None if estimate is None or estimate < 0 else estimate, pk, full)
        for schema, table, estimate, pk, full in rows
    ]
