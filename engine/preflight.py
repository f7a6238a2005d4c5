"""Connection test and preflight checks for a source database (plain psycopg, no Django).

Each check says in plain words what it found, so an operator can fix the
source before a pipeline fails on it.
"""

from dataclasses import asdict, dataclass, field

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
                ""
                if wal_level == "logical"
                else "ALTER SYSTEM SET wal_level = logical;  -- then restart PostgreSQL",
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
        may_monitor = (
            is_superuser
            or conn.execute("SELECT pg_has_role(current_user, 'pg_monitor', 'MEMBER')").fetchone()[0]
        )
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
    identity = table_identity(conn, schema, table)
    if identity.problem:
        quoted = sql.Identifier(schema, table).as_string(conn)
        return Check(f"table {name}", False, identity.problem, f"ALTER TABLE {quoted} ADD PRIMARY KEY (...);")
    return Check(f"table {name}", True, f"Table {name} has {identity.how}.")


@dataclass
class TableIdentity:
    """How Rosetta tells a table's rows apart, or why it cannot (`problem`: what is
    wrong and the SQL that fixes it). The pipeline's run and the preflight check both
    use table_identity(), so they never disagree."""

    key_columns: list[str] = field(default_factory=list)
    how: str = ""  # "a primary key (id)", "REPLICA IDENTITY USING INDEX t_code_key (code)"
    problem: str | None = None
    is_partitioned: bool = False


_IDENTITY_QUERY = """
SELECT c.oid, c.relkind, c.relreplident,
       (SELECT array_agg(a.attname::text ORDER BY k.position) FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = c.oid AND i.indisprimary),
       (SELECT array_agg(a.attname::text ORDER BY k.position) FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = c.oid AND i.indisreplident),
       (SELECT ic.relname::text FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
         WHERE i.indrelid = c.oid AND i.indisreplident)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
"""


def table_identity(conn, schema: str, table: str) -> TableIdentity:
    """The key Rosetta matches a table's rows by: its replica identity index under
    REPLICA IDENTITY USING INDEX, otherwise its primary key. Refused (`problem`):
    no primary key under DEFAULT (adding the table to a publication would make the
    application's own UPDATE and DELETE fail), REPLICA IDENTITY NOTHING, and FULL
    without a primary key: identical rows cannot be told apart, and Rosetta's
    snapshot may overlap the changes that follow it, which a keyed merge absorbs but
    a multiset of rows would count twice. A partitioned table's partitions must
    each have a usable identity too."""
    name = f"{schema}.{table}"
    row = conn.execute(
        _IDENTITY_QUERY + " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        [schema, table],
    ).fetchone()
    if row is None:
        return TableIdentity(problem=f"Table {name} does not exist (or the user cannot see it).")
    identity = _identity(conn, row, sql.Identifier(schema, table).as_string(conn), name)
    if identity.problem is None and row[1] == "p":
        identity.is_partitioned = True
        for partition in conn.execute(
            _IDENTITY_QUERY.replace("SELECT c.oid,", "SELECT c.oid, n.nspname::text, c.relname::text,")
            + " WHERE c.oid IN (SELECT relid FROM pg_partition_tree(%s) WHERE isleaf)",
            [row[0]],
        ).fetchall():
            oid, part_schema, part_table, *rest = partition
            part = _identity(
                conn,
                (oid, *rest),
                sql.Identifier(part_schema, part_table).as_string(conn),
                f"{part_schema}.{part_table}",
            )
            if part.problem:
                identity.problem = f"Partition {part_schema}.{part_table} of {name}: {part.problem}"
                break
    return identity


def _identity(conn, row, quoted: str, name: str) -> TableIdentity:
    _oid, _kind, replica_identity, primary_key, index_columns, index_name = row
    fix = (
        f"give it a primary key (ALTER TABLE {quoted} ADD PRIMARY KEY (...)), or a unique index on "
        f"NOT NULL columns and ALTER TABLE {quoted} REPLICA IDENTITY USING INDEX <that index>"
    )
    if replica_identity == "i" and index_columns:
        return TableIdentity(
            list(index_columns), f"REPLICA IDENTITY USING INDEX {index_name} ({', '.join(index_columns)})"
        )
    if replica_identity in ("d", "f") and primary_key:
        how = f"a primary key ({', '.join(primary_key)})"
        return TableIdentity(
            list(primary_key), how + (" and REPLICA IDENTITY FULL" if replica_identity == "f" else "")
        )
    if replica_identity == "f":
        problem = (
            f"Table {name} has REPLICA IDENTITY FULL but no primary key: Rosetta cannot tell identical "
            "rows apart (an update or delete of one would reach all of them), so it does not replicate "
            f"it. To fix: {fix}."
        )
    elif replica_identity == "n" or replica_identity == "i":
        problem = (
            f"Table {name} has REPLICA IDENTITY NOTHING (or USING INDEX on an index that is gone): in a "
            "publication, the application's own UPDATE and DELETE on it would fail. To fix: "
            f"ALTER TABLE {quoted} REPLICA IDENTITY DEFAULT with a primary key, or {fix}."
        )
    else:
        problem = (
            f"Table {name} has no primary key and no replica identity: added to a publication, the "
            "application's own UPDATE and DELETE on it would fail, so Rosetta does not add it. To fix: "
            f"{fix}."
        )
    return TableIdentity(problem=problem)


@dataclass
class SourceTable:
    schema: str
    table: str
    row_estimate: int | None  # pg_class.reltuples; None before the first ANALYZE
    identity: TableIdentity  # as table_identity() says, partitions aside

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


def list_tables(connect_kwargs: dict, statement_timeout_ms: int = 10_000) -> list[SourceTable]:
    """The user tables a pipeline could copy, with the planner's row estimate and how
    updates and deletes are matched or why they cannot be (the same words as the
    preflight check and the run; a partitioned table's partitions are checked there)."""
    with psycopg.connect(**connect_kwargs, autocommit=True) as conn:
        conn.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
        rows = conn.execute(
            _IDENTITY_QUERY.replace(
                "SELECT c.oid,", "SELECT n.nspname::text, c.relname::text, c.reltuples::bigint, c.oid,"
            )
            + """
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
              AND has_table_privilege(c.oid, 'SELECT')
            ORDER BY 1, 2
            LIMIT 5000
            """
        ).fetchall()
        return [
            SourceTable(
                schema,
                table,
                None if estimate is None or estimate < 0 else estimate,
                _identity(
                    conn, identity_row, sql.Identifier(schema, table).as_string(conn), f"{schema}.{table}"
                ),
            )
            for schema, table, estimate, *identity_row in rows
        ]
