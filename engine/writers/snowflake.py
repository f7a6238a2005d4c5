"""The Snowflake destination (key-pair authentication).

Every batch is staged in bulk, never row by row: the rows of each table become
one Parquet file of text values, PUT to a temporary internal stage and loaded
with COPY INTO a temporary staging table. One transaction then applies, per
table, an optional DELETE (a source TRUNCATE) and one MERGE (upserts and deletes
by primary key), and writes the checkpoint. DDL (CREATE TABLE, ALTER TABLE ADD
COLUMN, the staging tables) runs before that transaction, because Snowflake
commits any open transaction on DDL; it is idempotent, so a replay repeats it
harmlessly.

A snapshot goes the same way into a new table (the source's CSV parsed by
Arrow, Parquet files PUT, one COPY into a temporary table, one INSERT ... SELECT),
which then swaps places with the target: readers see the old copy until the
new one is complete.

Staged values are text; the MERGE (or the snapshot's INSERT) casts them to the
target column types, so the formats are ours (ISO 8601, hex for BINARY, JSON
for VARIANT) and do not depend on the account's input-format parameters.

Names are always double-quoted: a source table `Orders` with a column `order`
becomes "Orders"."order" in Snowflake, exactly as spelled in PostgreSQL (query
it with the quotes).
"""

import base64
import datetime
import hashlib
import json
import math
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from psycopg import sql as pg_sql

from engine import pgtypes
from engine.batch import UNCHANGED, ApplyResult, SchemaAlignment
from engine.lsn import format_lsn

from . import pgcsv, schema_changes, types
from .base import (
    CHECKPOINTS,
    DELETED_AT,
    LSN,
    REJECTS,
    SYNCED_AT,
    ConnectionProblem,
    IncompatibleSchemaChange,
    UnstorableValue,
    Writer,
    dump_state,
    like_pattern,
    load_state,
    truncated_note,
    unchanged_columns_stored_as_null,
)

DROPPED_COMMENT = schema_changes.DROPPED_COMMENT
STAGE = "_rosetta_stage"
LSN_TYPE = "NUMBER(20,0)"  # an LSN is an unsigned 64-bit integer: 20 digits
SNAPSHOT_FILE_BYTES = 64 * 1024 * 1024  # CSV bytes per staged Parquet file

# The Snowflake column type for each PostgreSQL type (see snowflake_type()).
_SCALAR_TYPES = {
    types.BOOL: "BOOLEAN",
    types.BYTEA: "BINARY",
    types.INT2: "NUMBER(5,0)",
    types.INT4: "NUMBER(10,0)",
    types.INT8: "NUMBER(19,0)",
    types.OID: "NUMBER(10,0)",
    types.FLOAT4: "FLOAT",
    types.FLOAT8: "FLOAT",
    types.DATE: "DATE",
    types.TIME: "TIME(6)",
    types.TIMESTAMP: "TIMESTAMP_NTZ(6)",
    types.TIMESTAMPTZ: "TIMESTAMP_TZ(6)",
    types.JSON: "VARIANT",
    types.JSONB: "VARIANT",
}

# Session parameters that make our SQL mean the same on every account: quoted
# names stay case-sensitive, and text casts parse ISO 8601 whatever the
# account's input formats are.
SESSION_PARAMETERS = {
    "QUOTED_IDENTIFIERS_IGNORE_CASE": False,
    "TIMEZONE": "UTC",
    "TIMESTAMP_INPUT_FORMAT": "AUTO",
    "DATE_INPUT_FORMAT": "AUTO",
    "TIME_INPUT_FORMAT": "AUTO",
    "BINARY_INPUT_FORMAT": "HEX",
}


def snowflake_type(oid: int, typmod: int = -1) -> str:
    """The Snowflake column type for a PostgreSQL column.

    Integers and numeric(p,s) become NUMBER(p,s); an unconstrained numeric (or
    one wider than Snowflake's 38 digits) becomes VARCHAR holding the exact
    value, as a NUMBER would round it. json, jsonb and arrays become VARIANT;
    text, uuid, interval and every type Rosetta does not know become VARCHAR
    holding PostgreSQL's text form.
    """
    if types.is_array(oid):
        return "VARIANT"
    if oid == types.NUMERIC:
        precision_scale = types.decimal38_precision_scale(typmod)
        if precision_scale is None:
            return "VARCHAR"
        precision, scale = precision_scale
        return f"NUMBER({precision},{scale})"
    return _SCALAR_TYPES.get(oid, "VARCHAR")


# Column types whose cast from the staged text can refuse a value (see _unfit_value).
_CAST_FAMILIES = {"NUMBER", "FLOAT", "BOOLEAN", "DATE", "TIME", "TIMESTAMP_NTZ", "TIMESTAMP_TZ"}


def quote(name: str) -> str:
    """A Snowflake quoted identifier: case and reserved words survive."""
    return '"' + name.replace('"', '""') + '"'


def _type_signature(sql_type: str) -> tuple:
    """(family, precision, scale) as INFORMATION_SCHEMA.COLUMNS shows a type."""
    family, _, rest = sql_type.partition("(")
    family = {"VARCHAR": "TEXT"}.get(family, family)
    if family == "NUMBER":
        precision, scale = rest.rstrip(")").split(",")
        return family, int(precision), int(scale)
    return family, None, None


def _cast(expression: str, sql_type: str) -> str:
    """SQL turning a staged text value into the column's type."""
    family = _type_signature(sql_type)[0]
    if family == "TEXT":
        return expression
    if family == "VARIANT":
        return f"PARSE_JSON({expression})"
    if family == "BINARY":
        return f"TO_BINARY({expression}, 'HEX')"
    return f"CAST({expression} AS {sql_type})"


TEXT_SIGNATURE = ("TEXT", None, None)
WIDEN_PREFIX = "_rosetta_widen_"  # the new column while a column is rewritten as VARCHAR


class SnowflakeDialect(schema_changes.Dialect):
    """Snowflake types as INFORMATION_SCHEMA.COLUMNS shows them ((family, precision, scale),
    see _type_signature). Snowflake's ALTER COLUMN changes a type only to a NUMBER of the
    same scale and a larger precision; a change to VARCHAR (a batch field whose values
    stopped fitting their type, or a source column that became text) is a rewrite of the
    column instead (SnowflakeWriter._rewrite_as_text), for any column but a key."""

    def column_type(self, column):
        return _type_signature(snowflake_type(column.type_oid, column.type_modifier))

    def source_type(self, destination_type):
        family, precision, scale = destination_type
        if family == "NUMBER":
            integer = {(5, 0): types.INT2, (10, 0): types.INT4, (19, 0): types.INT8}.get((precision, scale))
            return (integer, -1) if integer else (types.NUMERIC, ((precision << 16) | scale) + 4)
        oid = _SOURCE_OIDS.get(family)
        return (oid, -1) if oid else None

    def converts_in_place(self, old, new) -> bool:
        return new == TEXT_SIGNATURE or self.alters(old, new)

    @staticmethod
    def alters(old, new) -> bool:
        """True if ALTER COLUMN ... SET DATA TYPE makes the change."""
        return old[0] == new[0] == "NUMBER" and old[2] == new[2] and new[1] >= old[1]

    def type_name(self, destination_type) -> str:
        family, precision, scale = destination_type
        if family == "NUMBER":
            return f"NUMBER({precision},{scale})"
        return {"TEXT": "VARCHAR"}.get(family, family)


# Snowflake type family -> the narrowest PostgreSQL type stored as it (see snowflake_type)
_SOURCE_OIDS = {
    "TEXT": types.TEXT,
    "FLOAT": types.FLOAT4,
    "VARIANT": types.JSONB,
    "BOOLEAN": types.BOOL,
    "BINARY": types.BYTEA,
    "DATE": types.DATE,
    "TIME": types.TIME,
    "TIMESTAMP_NTZ": types.TIMESTAMP,
    "TIMESTAMP_TZ": types.TIMESTAMPTZ,
}
DIALECT = SnowflakeDialect()
META_TYPES = {LSN: LSN_TYPE, SYNCED_AT: "TIMESTAMP_TZ(6)", DELETED_AT: "TIMESTAMP_TZ(6)"}


def load_private_key(pem: str | None, path: str | None, passphrase: str | None) -> bytes:
    """The key as DER bytes for the connector, loaded in memory, never written to disk."""
    try:
        data = pem.encode() if pem else Path(path).read_bytes()
    except OSError as error:
        raise ConnectionProblem(f"Cannot read the private key file {path}: {error.strerror}.") from None
    encrypted = b"ENCRYPTED" in data
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode() if passphrase else None)
    except TypeError:
        if passphrase:
            raise ConnectionProblem(
                "The private key is not encrypted, but a passphrase is set: clear the passphrase."
            ) from None
        raise ConnectionProblem("The private key is encrypted: set its passphrase.") from None
    except ValueError:
        if passphrase and encrypted:
            raise ConnectionProblem("Wrong passphrase: it does not decrypt the private key.") from None
        raise ConnectionProblem(
            "Bad key: the private key is not a PEM private key. Paste the whole PEM file, "
            "from -----BEGIN to -----END."
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConnectionProblem("Bad key: Snowflake key-pair authentication needs an RSA private key.")
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def public_key_fingerprint(private_key_der: bytes) -> str:
    """Snowflake's RSA_PUBLIC_KEY_FP of the key ("SHA256:..."), to compare with DESC USER."""
    key = serialization.load_der_private_key(private_key_der, password=None)
    public_der = key.public_key().public_bytes(
        encoding=serialization.Encoding.DER, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(public_der).digest()).decode()


def describe_snowflake_error(error: Exception, settings: dict) -> str:
    """The connector's error in an operator's words: what is wrong and what to do.

    Snowflake's own text is kept where it names the object; it never holds a secret.
    """
    errno = getattr(error, "errno", None)
    message = (getattr(error, "msg", None) or str(error)).strip()
    lowered = message.lower()
    user = settings.get("user") or "?"
    role = settings.get("role") or "the user's default role"
    warehouse = settings.get("warehouse") or "?"
    account = settings.get("account") or "?"

    if errno == 390144 or "jwt token is invalid" in lowered:
        return (
            f"Bad key: Snowflake rejected the key pair for user {user}. The public key set on the user "
            f"(ALTER USER {user} SET RSA_PUBLIC_KEY='...') does not match this private key."
        )
    if errno in (390100, 260004) or "incorrect username or password" in lowered:
        return (
            f"Snowflake rejected the login of user {user}: the user does not exist, or has no RSA "
            "public key for key-pair authentication."
        )
    if errno in (390101, 390102) or "user access disabled" in lowered or "temporarily locked" in lowered:
        return f"Snowflake user {user} is disabled or locked: {message}"
    if errno == 390189 or ("role" in lowered and "not granted" in lowered):
        return f"Missing privilege: role {role} is not granted to user {user} (GRANT ROLE {role} TO USER {user})."
    if errno == 608 or "is suspended" in lowered or "cannot be resumed" in lowered:
        return (
            f"Warehouse suspended: {message} Resume it (ALTER WAREHOUSE {warehouse} RESUME), "
            "turn on its AUTO_RESUME, or raise its resource monitor's quota."
        )
    if errno == 606 or "no active warehouse" in lowered:
        return (
            f"Warehouse {warehouse} cannot be used: it does not exist, or role {role} has no USAGE on it "
            f"(GRANT USAGE ON WAREHOUSE {warehouse} TO ROLE {role})."
        )
    if errno == 3001 or getattr(error, "sqlstate", None) == "42501" or "insufficient privileges" in lowered:
        return f"Missing privilege: role {role} may not do this: {message} See the README for the grants."
    if errno in (390201, 2003, 2043) or "does not exist or not authorized" in lowered:
        return f"Missing object or privilege: {message} (or role {role} has no USAGE on it)."
    if errno in (604, 630) or "timeout" in lowered:
        return f"Snowflake cancelled a statement that ran too long: {message}"
    if type(error).__name__ == "ForbiddenError" or errno in (250001, 251012, 250003) or "connect" in lowered:
        return f"Cannot reach Snowflake account {account}: {message} Check the account identifier and the network."
    return (
        f"Snowflake refused a statement (error {errno}): {message}"
        if errno
        else f"Snowflake error: {message}"
    )


def _scalar_text(value) -> str:
    """A Python value as text Snowflake casts back exactly (ISO 8601 for times)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else {"inf": "inf", "-inf": "-inf"}.get(repr(value), "NaN")
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def _json_text(value) -> str:
    """JSON for a VARIANT: what PostgreSQL's to_json() gives for the same value
    (exact numbers, ISO 8601 times, bytea as "\\x..."), so CDC rows and
    snapshot rows (to_json on the source) land the same."""
    if value is None or isinstance(value, (bool, int, str)):
        return json.dumps(value)
    if isinstance(value, float):
        return json.dumps(value) if math.isfinite(value) else json.dumps(_scalar_text(value))
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else json.dumps(str(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_json_text(item) for item in value) + "]"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return json.dumps("\\x" + bytes(value).hex())
    return json.dumps(_scalar_text(value))


def _staged_text(value, family: str):
    """The staged text of a column value (None for NULL)."""
    if value is None:
        return None
    if family == "VARIANT":
        return _json_text(value)
    if family == "BINARY" and isinstance(value, str):
        return value[2:] if value.startswith("\\x") else value.encode().hex()
    return _scalar_text(value)


class SnowflakeWriter(Writer):
    kind = "snowflake"
    snapshot_format = "csv"

    def __init__(self, settings: dict, connect_timeout: int = 10):
        super().__init__(settings, connect_timeout)
        self._conn = None
        self._stage_ready = False
        self._checkpoints_ready = False
        self._columns: dict[str, dict[str, tuple]] = {}  # target table -> column -> type signature

    # -- connection -------------------------------------------------------------

    def connect(self):
        import snowflake.connector

        s = self.settings
        key = load_private_key(
            s.get("private_key"), s.get("private_key_path"), s.get("private_key_passphrase")
        )
        try:
            return snowflake.connector.connect(
                account=s["account"],
                user=s["user"],
                role=s.get("role") or None,
                warehouse=s["warehouse"],
                database=s["database"],
                schema=s["schema"],
                private_key=key,
                login_timeout=self.connect_timeout,
                network_timeout=self.connect_timeout,
                session_parameters=SESSION_PARAMETERS,
                application="Rosetta",
            )
        except snowflake.connector.errors.Error as error:
            raise ConnectionProblem(describe_snowflake_error(error, s)) from None

    def _connection(self):
        if self._conn is None:
            self._conn = self.connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._stage_ready = False

    def _run(self, statement: str, params=None):
        """Every statement goes through here (so tests can see the SQL sent)."""
        return self._connection().cursor().execute(statement, params)

    def _problem(self, error) -> ConnectionProblem:
        return ConnectionProblem(describe_snowflake_error(error, self.settings))

    def _unfit_value(self, relation, target_table: str, staging: str, sql_types: list[str]):
        """After Snowflake refused a statement: the first staged value that a column's type
        cannot hold (NaN in a NUMBER, infinity in a TIMESTAMP ...), as an UnstorableValue
        naming the table, the column and the value; None if there is none (or the
        connection cannot tell)."""
        import snowflake.connector

        checked = [(i, t) for i, t in enumerate(sql_types) if _type_signature(t)[0] in _CAST_FAMILIES]
        if not checked:
            return None
        firsts = ", ".join(f"MIN(CASE WHEN TRY_CAST(c{i} AS {t}) IS NULL THEN c{i} END)" for i, t in checked)
        try:
            row = self._run(f"SELECT {firsts} FROM {quote(staging)}").fetchone()
        except snowflake.connector.errors.Error:
            return None
        for (position, sql_type), value in zip(checked, row or (), strict=False):
            if value is not None:
                name = relation.columns[position].name
                return UnstorableValue(
                    f"{relation.schema}.{relation.name}: column {name} ({sql_type}) has the value {value!r}, "
                    f"which Snowflake cannot store in {self.settings.get('schema')}.{target_table}; nothing of "
                    "this batch was written. See the README's Snowflake type table: give the source column a "
                    "type stored as text (numeric without precision, text), then refresh the table."
                )
        return None

    def test_connection(self) -> str:
        import snowflake.connector

        s = self.settings
        with self.connect() as conn:
            cursor = conn.cursor()
            try:
                account, role, warehouse, database, schema = cursor.execute(
                    "SELECT CURRENT_ACCOUNT(), CURRENT_ROLE(), CURRENT_WAREHOUSE(), "
                    "CURRENT_DATABASE(), CURRENT_SCHEMA()"
                ).fetchone()
                found = f"Connected to Snowflake account {account} as role {role}"
                if not warehouse:
                    raise ConnectionProblem(
                        f"{found}, but warehouse {s['warehouse']} cannot be used: it does not exist or "
                        f"role {role} has no USAGE on it (GRANT USAGE ON WAREHOUSE {s['warehouse']} TO ROLE {role})."
                    )
                found += f" on warehouse {warehouse}"
                if not database or not schema:
                    missing = f"database {s['database']}" if not database else f"schema {s['schema']}"
                    raise ConnectionProblem(
                        f"{found}, but {missing} does not exist or role {role} has no USAGE on it."
                    )
                # Creating a table proves CREATE TABLE on the schema; inserting a row
                # needs a running (or auto-resuming) warehouse; the temporary stage
                # proves CREATE STAGE. Everything Rosetta does needs these three.
                probe = quote("_rosetta_write_test")
                cursor.execute(f"CREATE OR REPLACE TABLE {probe} ({quote('x')} NUMBER(1,0))")
                try:
                    cursor.execute(f"INSERT INTO {probe} ({quote('x')}) SELECT 1")
                finally:
                    cursor.execute(f"DROP TABLE IF EXISTS {probe}")
                cursor.execute(f"CREATE TEMPORARY STAGE IF NOT EXISTS {quote(STAGE)}")
            except snowflake.connector.errors.Error as error:
                raise ConnectionProblem(describe_snowflake_error(error, s)) from None
        return f"{found}; Rosetta can create and write tables in schema {database}.{schema}."

    # -- tables, stage, loading ----------------------------------------------------

    def _ensure_stage(self) -> None:
        """A temporary internal stage: private to the session, gone when it ends."""
        if not self._stage_ready:
            self._run(f"CREATE TEMPORARY STAGE IF NOT EXISTS {quote(STAGE)}")
            self._stage_ready = True

    def _ensure_checkpoints(self) -> None:
        if not self._checkpoints_ready:
            self._run(
                f"CREATE TABLE IF NOT EXISTS {quote(CHECKPOINTS)} ({quote('pipeline_key')} VARCHAR NOT NULL, "
                f"{quote('lsn')} {LSN_TYPE} NOT NULL, {quote('updated_at')} TIMESTAMP_TZ(6) NOT NULL, "
                f"{quote('state')} VARCHAR, PRIMARY KEY ({quote('pipeline_key')}))"
            )
            # a checkpoint table from before batch sources
            self._run(f"ALTER TABLE {quote(CHECKPOINTS)} ADD COLUMN IF NOT EXISTS {quote('state')} VARCHAR")
            self._checkpoints_ready = True

    def _table_columns(self, table: str) -> dict[str, tuple]:
        """The target table's columns as {name: ((family, precision, scale), nullable, comment)};
        {} if the table does not exist."""
        if table not in self._columns:
            rows = self._run(
                "SELECT column_name, data_type, numeric_precision, numeric_scale, is_nullable, comment "
                "FROM information_schema.columns "
                "WHERE table_schema = CURRENT_SCHEMA() AND table_name = %(table)s ORDER BY ordinal_position",
                {"table": table},
            ).fetchall()
            if not rows:
                return {}
            self._columns[table] = {
                name: (
                    (family, int(precision), int(scale)) if family == "NUMBER" else (family, None, None),
                    nullable == "YES",
                    comment,
                )
                for name, family, precision, scale, nullable, comment in rows
            }
        return self._columns[table]

    @staticmethod
    def _create_table_sql(relation, table: str, sql_types: list[str], replace: bool = False) -> str:
        keys = relation.key_columns
        definitions = [
            f"{quote(column.name)} {sql_type}" + (" NOT NULL" if column.name in keys else "")
            for column, sql_type in zip(relation.columns, sql_types, strict=True)
        ]
        definitions += [f"{quote(LSN)} {LSN_TYPE}", f"{quote(SYNCED_AT)} TIMESTAMP_TZ(6)"]
        definitions.append(f"{quote(DELETED_AT)} TIMESTAMP_TZ(6)")
        if keys:  # not enforced by Snowflake; declared, it documents the table for BI tools
            definitions.append(f"PRIMARY KEY ({', '.join(quote(k) for k in keys)})")
        create = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE IF NOT EXISTS"
        return f"{create} {quote(table)} ({', '.join(definitions)})"

    def align_table(self, relation, target_table: str, fills=None, not_sent=frozenset()) -> SchemaAlignment:
        import snowflake.connector

        alignment = SchemaAlignment()
        self._columns.pop(target_table, None)  # read the table as it is now
        try:
            if self._table_columns(target_table):
                alignment.recopy = self._ensure_table(
                    target_table, relation, alignment.notes, fills, not_sent, replaced=alignment.replaced
                )[1]
        except snowflake.connector.errors.Error as error:
            raise self._problem(error) from error
        return alignment

    def _ensure_table(
        self, table: str, relation, notes: list[str], fills=None, not_sent=frozenset(), replaced=None
    ) -> tuple[list[str], str | None]:
        """Create the target table, or bring it in line with the relation as the
        schema-change planner says (engine/writers/schema_changes.py).
        Returns the relation's column types and why the table must be copied again (or None)."""
        sql_types = [snowflake_type(c.type_oid, c.type_modifier) for c in relation.columns]
        existing = self._table_columns(table)
        if not existing:
            self._run(self._create_table_sql(relation, table, sql_types))
            self._record_source_columns(table, relation)
            return sql_types, None
        if any(name.startswith(WIDEN_PREFIX) for name in existing):
            self._finish_rewrites(table, existing, notes)
            existing = self._table_columns(table)
        columns = [
            schema_changes.DestinationColumn(
                name, signature, nullable, comment == DROPPED_COMMENT, schema_changes.source_number(comment)
            )
            for name, (signature, nullable, comment) in existing.items()
        ]
        plan = schema_changes.plan(
            relation,
            columns,
            DIALECT,
            where=f"{self.settings.get('schema')}.{table}",
            existing_key=[c.name for c in columns if not c.nullable and c.name not in META_TYPES],
            fills=fills,
            not_sent=not_sent,
            meta_columns={name: _type_signature(sql_type) for name, sql_type in META_TYPES.items()},
        )
        rendered = dict(zip(relation.column_names, sql_types, strict=True)) | META_TYPES
        source_columns = {c.name: c for c in relation.columns}
        for action in plan.actions:
            self._render(table, action, rendered, source_columns)
        notes += plan.notes
        if replaced is not None:
            replaced += plan.replaced
        if plan.actions:
            self._columns.pop(table, None)
        return sql_types, plan.recopy

    def _render(self, table: str, action, sql_types: dict, source_columns: dict) -> None:
        """One planned schema change, in Snowflake's SQL (DDL: outside the batch's transaction)."""
        if isinstance(action, schema_changes.WidenColumn) and not DIALECT.alters(
            action.old_type, action.new_type
        ):
            self._rewrite_as_text(table, action.name, action.old_type)
            source_column = source_columns.get(action.name)
            if source_column is not None and source_column.number:
                # the new column carries no comment yet: record the source column it holds
                self._render(
                    table, schema_changes.RecordSourceColumn(action.name, source_column.number), {}, {}
                )
            return
        statements = schema_changes.schema_change_ddl(
            action,
            quote(table),
            quote(action.name),
            sql_types.get(action.name),
            set_type="SET DATA TYPE",
            no_comment="''",
        )
        for statement in statements:
            self._run(statement)
        if schema_changes.fills_values(action):
            self._fill(table, source_columns[action.name], sql_types[action.name], action.fill)

    def _rewrite_as_text(self, table: str, name: str, old_type) -> None:
        """Column `name` as VARCHAR, every value kept in its text form (VARIANT as JSON): a new
        column filled from the old one takes its place. Each step is DDL (committed at once);
        a run that dies between them is finished by the next one (_finish_rewrites)."""
        _, nullable, _ = self._table_columns(table)[name]
        if not nullable:
            raise IncompatibleSchemaChange(
                f"The key column {name} of {self.settings.get('schema')}.{table} would change from "
                f"{DIALECT.type_name(old_type)} to VARCHAR, which Snowflake cannot do to a key column "
                "in place: refresh the table so that it is copied again with the new type."
            )
        target, column, new = quote(table), quote(name), quote(WIDEN_PREFIX + name)
        value = f"TO_JSON({column})" if old_type[0] == "VARIANT" else f"CAST({column} AS VARCHAR)"
        try:
            self._run(f"ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {new} VARCHAR")
            self._run(f"UPDATE {target} SET {new} = {value}")
            self._run(f"ALTER TABLE {target} DROP COLUMN {column}")
            self._run(f"ALTER TABLE {target} RENAME COLUMN {new} TO {column}")
        finally:
            self._columns.pop(table, None)  # whichever step it reached, the table is read again

    def _finish_rewrites(self, table: str, existing: dict, notes: list[str]) -> None:
        """After a run died in _rewrite_as_text: a rewrite whose old column is gone only lacks
        its rename; one whose old column is still there starts again (the planner asks for it)."""
        for name in [n for n in existing if n.startswith(WIDEN_PREFIX)]:
            old = name[len(WIDEN_PREFIX) :]
            if old in existing:
                self._run(f"ALTER TABLE {quote(table)} DROP COLUMN {quote(name)}")
            else:
                self._run(f"ALTER TABLE {quote(table)} RENAME COLUMN {quote(name)} TO {quote(old)}")
                notes.append(
                    f"Column {old} of {self.settings.get('schema')}.{table}: its rewrite as VARCHAR, "
                    "interrupted in an earlier run, is finished."
                )
        self._columns.pop(table, None)

    def _record_source_columns(self, table: str, relation) -> None:
        """Each column's comment names the source column it holds (schema_changes.py);
        one statement per column (Snowflake's DDL commits on its own: a column left
        without its comment makes the next run copy the table again, never less)."""
        for column in relation.columns:
            if column.number:
                self._render(table, schema_changes.RecordSourceColumn(column.name, column.number), {}, {})

    def _fill(self, table: str, column, sql_type: str, text: str | None) -> None:
        """Every row's `column` := the value whose PostgreSQL text form is `text`, staged
        and cast as a CDC value is."""
        value = None
        if text is not None:
            value = _staged_text(
                pgtypes.converter(column.type_oid)(text.encode()), _type_signature(sql_type)[0]
            )
        self._run(
            f"UPDATE {quote(table)} SET {quote(column.name)} = {_cast('%(fill)s', sql_type)}", {"fill": value}
        )

    def _put(self, table: pa.Table, path: Path, folder: str) -> None:
        """Upload one Parquet file of rows (never a key) to the temporary stage: the
        connector's PUT reads a local file."""
        pq.write_table(table, path, compression="snappy")
        try:
            rows = self._run(
                f"PUT 'file://{path.as_posix()}' @{quote(STAGE)}/{folder}/ AUTO_COMPRESS = FALSE"
            ).fetchall()
        finally:
            path.unlink()  # the stage has it now: local disk holds one file at a time
        for row in rows:
            status, message = row[6], row[7]
            if status not in ("UPLOADED", "SKIPPED"):
                raise ConnectionProblem(
                    f"Snowflake did not accept the staged file {path.name}: {status} {message}"
                )

    def _copy(self, statement: str) -> None:
        for row in self._run(statement).fetchall():
            if len(row) > 1 and row[1] not in ("LOADED", "LOAD_SKIPPED"):
                raise ConnectionProblem(f"Snowflake could not load staged file {row[0]}: {row[1]} {row[6]}")

    # -- snapshot ----------------------------------------------------------------

    def snapshot_columns(self, relation) -> list[pg_sql.Composable]:
        """Let PostgreSQL write what Snowflake casts back exactly: ISO 8601 times,
        hex bytea, and arrays as JSON (its to_json() keeps element types)."""
        columns = super().snapshot_columns(relation)
        for index, column in enumerate(relation.columns):
            name = pg_sql.Identifier(column.name)
            if types.is_array(column.type_oid):
                columns[index] = pg_sql.SQL("to_json({})").format(name)
            elif column.type_oid in (types.TIMESTAMP, types.TIMESTAMPTZ):
                columns[index] = pg_sql.SQL("to_json({}) #>> '{{}}'").format(name)
            elif column.type_oid == types.BYTEA:
                columns[index] = pg_sql.SQL("encode({}, 'hex')").format(name)
        return columns

    def load_snapshot(self, relation, target_table: str, chunks, snapshot_lsn: int) -> int:
        """Load into a new table, then swap it with the target: readers see the old
        copy until the new one is complete."""
        import snowflake.connector

        sql_types = [snowflake_type(c.type_oid, c.type_modifier) for c in relation.columns]
        new_table, staging = f"_rosetta_new_{target_table}", "_rosetta_snapshot"
        folder = f"snapshot_{uuid.uuid4().hex}"
        staged = [f"c{i}" for i in range(len(sql_types))]
        rows = 0
        try:
            self._ensure_stage()
            self._run(self._create_table_sql(relation, new_table, sql_types, replace=True))
            self._run(
                f"CREATE OR REPLACE TEMPORARY TABLE {quote(staging)} "
                f"({', '.join(f'{quote(name)} VARCHAR' for name in staged)})"
            )
            with tempfile.TemporaryDirectory(prefix="rosetta-snowflake-") as workdir:
                for number, data in enumerate(self._csv_pieces(chunks)):
                    table = self._read_csv(data, len(sql_types))
                    rows += table.num_rows
                    self._put(table, Path(workdir) / f"part_{number:05d}.parquet", folder)
            if rows:
                # COPY only extracts the text (COPY transformations allow few functions);
                # an INSERT ... SELECT casts it, in bulk, like a batch's MERGE does.
                self._copy(
                    f"COPY INTO {quote(staging)} ({', '.join(quote(name) for name in staged)}) "
                    f"FROM (SELECT {', '.join(f'$1:{quote(name)}::VARCHAR' for name in staged)} "
                    f"FROM @{quote(STAGE)}/{folder}/) FILE_FORMAT = (TYPE = PARQUET) PURGE = TRUE"
                )
                names = [quote(c.name) for c in relation.columns] + [quote(LSN), quote(SYNCED_AT)]
                typed = [_cast(f"s.{quote(name)}", t) for name, t in zip(staged, sql_types, strict=True)]
                self._run(
                    f"INSERT INTO {quote(new_table)} ({', '.join(names)}) "
                    f"SELECT {', '.join(typed)}, {int(snapshot_lsn)}, CURRENT_TIMESTAMP() FROM {quote(staging)} AS s"
                )
            self._run(f"DROP TABLE IF EXISTS {quote(staging)}")
            self._record_source_columns(new_table, relation)
            if self._table_columns(target_table):
                self._run(f"ALTER TABLE {quote(new_table)} SWAP WITH {quote(target_table)}")
                self._run(f"DROP TABLE {quote(new_table)}")
            else:
                self._run(f"ALTER TABLE {quote(new_table)} RENAME TO {quote(target_table)}")
        except snowflake.connector.errors.Error as error:
            unfit = self._unfit_value(relation, target_table, staging, sql_types) if rows else None
            raise unfit or self._problem(error) from error
        finally:
            self._columns.pop(target_table, None)
        return rows

    @staticmethod
    def _csv_pieces(chunks):
        """Regroup COPY chunks into pieces of about SNAPSHOT_FILE_BYTES that end on a record."""
        return pgcsv.pieces(chunks, SNAPSHOT_FILE_BYTES)

    @staticmethod
    def _read_csv(data: bytes, width: int) -> pa.Table:
        return pgcsv.read_table(data, width)

    # -- CDC -----------------------------------------------------------------------

    def read_checkpoint(self, pipeline_key: str) -> int:
        import snowflake.connector

        try:
            self._ensure_checkpoints()
            row = self._run(
                f"SELECT {quote('lsn')} FROM {quote(CHECKPOINTS)} WHERE {quote('pipeline_key')} = %(pipeline)s",
                {"pipeline": pipeline_key},
            ).fetchone()
        except snowflake.connector.errors.Error as error:
            raise self._problem(error) from error
        return int(row[0]) if row else 0

    def read_checkpoint_state(self, pipeline_key: str) -> tuple[int, dict | None]:
        import snowflake.connector

        try:
            self._ensure_checkpoints()
            row = self._run(
                f"SELECT {quote('lsn')}, {quote('state')} FROM {quote(CHECKPOINTS)} "
                f"WHERE {quote('pipeline_key')} = %(pipeline)s",
                {"pipeline": pipeline_key},
            ).fetchone()
        except snowflake.connector.errors.Error as error:
            raise self._problem(error) from error
        return (int(row[0]), load_state(row[1])) if row else (0, None)

    def reset_checkpoint(self, pipeline_key: str) -> bool:
        self._ensure_checkpoints()
        found = self._run(
            f"SELECT COUNT(*) FROM {quote(CHECKPOINTS)} WHERE {quote('pipeline_key')} = %(pipeline)s",
            {"pipeline": pipeline_key},
        ).fetchone()[0]
        self._run(
            f"DELETE FROM {quote(CHECKPOINTS)} WHERE {quote('pipeline_key')} = %(pipeline)s",
            {"pipeline": pipeline_key},
        )
        return bool(found)

    def _ensure_rejects(self) -> None:
        """DDL commits in Snowflake: the rejects table is made before the batch's transaction."""
        self._run(
            f"CREATE TABLE IF NOT EXISTS {quote(REJECTS)} ({quote('pipeline_key')} VARCHAR NOT NULL, "
            f"{quote('origin')} VARCHAR NOT NULL, {quote('line')} NUMBER(20,0), {quote('reason')} VARCHAR NOT NULL, "
            f"{quote('record')} VARCHAR, {quote('rejected_at')} TIMESTAMP_TZ(6) NOT NULL)"
        )

    def _write_rejects(self, pipeline_key: str, rejects: list[tuple]) -> None:
        names = ", ".join(
            quote(n) for n in ("pipeline_key", "origin", "line", "reason", "record", "rejected_at")
        )
        for origin, line, reason, raw in rejects:
            self._run(
                f"INSERT INTO {quote(REJECTS)} ({names}) SELECT %(pipeline)s, %(origin)s, %(line)s, %(reason)s, "
                "%(record)s, CURRENT_TIMESTAMP()",
                {"pipeline": pipeline_key, "origin": origin, "line": line, "reason": reason, "record": raw},
            )

    def count_rows(self, table: str) -> int | None:
        if not self._table_columns(table):
            return None
        return int(self._run(f"SELECT COUNT(*) FROM {quote(table)}").fetchone()[0])

    def preview_rows(self, table: str, offset: int, limit: int, search: str = "") -> tuple[list, list, int]:
        self._columns.pop(table, None)
        columns = list(self._table_columns(table))
        if not columns:
            return [], [], 0
        where, params = "", {"limit": limit, "offset": offset}
        if search:
            # Snowflake's CONCAT_WS is NULL if any part is: every column counts as '' then.
            text = ", ".join(f"COALESCE(TO_VARCHAR({quote(name)}), '')" for name in columns)
            where = f" WHERE CONCAT_WS(' ', {text}) ILIKE %(pattern)s ESCAPE '\\\\'"
            params["pattern"] = like_pattern(search)
        total = int(self._run(f"SELECT COUNT(*) FROM {quote(table)}{where}", params).fetchone()[0])
        order = ", ".join(quote(name) for name in columns)
        rows = self._run(
            f"SELECT {order} FROM {quote(table)}{where} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s",
            params,
        ).fetchall()
        return columns, [tuple(row) for row in rows], total

    def apply_batch(self, pipeline_key: str, batch, soft_delete: bool = False):
        import snowflake.connector

        result = ApplyResult()
        if batch.is_empty:
            return result
        staged = []
        try:
            checkpoint = self.read_checkpoint(pipeline_key)
            if batch.end_lsn <= checkpoint:
                result.notes.append(
                    f"Changes up to {format_lsn(batch.end_lsn)} were already applied "
                    f"(checkpoint {format_lsn(checkpoint)}): nothing to do."
                )
                return result
            staged = self._prepare_tables(batch, result)
            if batch.rejects:
                self._ensure_rejects()
            self._run("BEGIN")
            try:
                for changes, sql_types, staging, unchanged in staged:
                    self._apply_table(changes, sql_types, staging, unchanged, soft_delete, result)
                self._write_checkpoint(pipeline_key, batch.end_lsn, batch.checkpoint_state)
                if batch.rejects:
                    self._write_rejects(pipeline_key, batch.rejects)
                if self.before_commit_hook is not None:
                    self.before_commit_hook()
                self._run("COMMIT")
            except BaseException:
                self._rollback()
                raise
            for _, _, staging, _ in staged:
                if staging:
                    self._run(f"DROP TABLE IF EXISTS {quote(staging)}")
        except snowflake.connector.errors.Error as error:
            for changes, sql_types, staging, _ in staged:
                unfit = staging and self._unfit_value(
                    changes.relation, changes.target_table, staging, sql_types
                )
                if unfit:
                    raise unfit from error
            raise self._problem(error) from error
        return result

    def _rollback(self):
        try:
            self._run("ROLLBACK")
        except Exception:  # the connection may be gone; Snowflake rolls back on its own then
            self.close()

    def _write_checkpoint(self, pipeline_key: str, end_lsn: int, state: dict | None = None) -> None:
        key, lsn, updated_at = quote("pipeline_key"), quote("lsn"), quote("updated_at")
        state_column = quote("state")
        self._run(
            f"MERGE INTO {quote(CHECKPOINTS)} AS c USING (SELECT %(pipeline)s AS {key}, %(lsn)s AS {lsn}, "
            f"%(state)s AS {state_column}) AS s "
            f"ON c.{key} = s.{key} "
            f"WHEN MATCHED THEN UPDATE SET c.{lsn} = s.{lsn}, c.{updated_at} = CURRENT_TIMESTAMP(), "
            f"c.{state_column} = s.{state_column} "
            f"WHEN NOT MATCHED THEN INSERT ({key}, {lsn}, {updated_at}, {state_column}) "
            f"VALUES (s.{key}, s.{lsn}, CURRENT_TIMESTAMP(), s.{state_column})",
            {"pipeline": pipeline_key, "lsn": int(end_lsn), "state": dump_state(state)},
        )

    def _prepare_tables(self, batch, result) -> list:
        """Create or widen the target tables and stage each one's rows (all DDL and
        loading of private staging tables, before the transaction)."""
        staged = []
        for index, key in enumerate(sorted(batch.tables)):
            changes = batch.tables[key]
            relation = changes.relation
            schema_changes.require_key(relation)
            sql_types, recopy = self._ensure_table(
                changes.target_table, relation, result.notes, changes.column_fills
            )
            if recopy:
                result.recopy[(relation.schema, relation.name)] = recopy
            staging, unchanged = None, set()
            if changes.upserts or changes.deletes:
                staging = f"_rosetta_batch_{index}"
                unchanged = self._stage_changes(changes, sql_types, staging)
            staged.append((changes, sql_types, staging, unchanged))
        return staged

    def _stage_changes(self, changes, sql_types: list[str], staging: str) -> set[int]:
        """Load the table's folded changes into a temporary staging table of text
        columns c0..cN, op ('U'/'D'), lsn, and a flag uI for each column that has an
        unchanged TOASTed value somewhere. Returns the flagged column positions."""
        relation = changes.relation
        families = [_type_signature(t)[0] for t in sql_types]
        names = relation.column_names
        key_positions = [names.index(k) for k in relation.key_columns]
        columns: list[list] = [[] for _ in names]
        unchanged: dict[int, list] = {}
        ops, lsns = [], []
        for count, (row, lsn) in enumerate(changes.upserts.values()):
            for i, name in enumerate(names):
                value = row.get(name)
                if value is UNCHANGED:
                    unchanged.setdefault(i, [False] * count).append(True)
                    columns[i].append(None)
                    continue
                if i in unchanged:
                    unchanged[i].append(False)
                columns[i].append(_staged_text(value, families[i]))
            ops.append("U")
            lsns.append(str(lsn))
        for key, lsn in changes.deletes.items():
            for i in range(len(names)):
                columns[i].append(None)
            for position, value in zip(key_positions, key, strict=True):
                columns[position][-1] = _staged_text(value, families[position])
            ops.append("D")
            lsns.append(str(lsn))
        total = len(ops)
        arrays = {f"c{i}": pa.array(values, pa.string()) for i, values in enumerate(columns)}
        for i, flags in unchanged.items():
            arrays[f"u{i}"] = pa.array(flags + [False] * (total - len(flags)), pa.bool_())
        arrays["op"] = pa.array(ops, pa.string())
        arrays["lsn"] = pa.array(lsns, pa.string())
        table = pa.table(arrays)

        definitions = [f"{quote(f'c{i}')} VARCHAR" for i in range(len(names))]
        definitions += [f"{quote(f'u{i}')} BOOLEAN" for i in unchanged]
        definitions += [f"{quote('op')} VARCHAR(1)", f"{quote('lsn')} {LSN_TYPE}"]
        self._run(f"CREATE OR REPLACE TEMPORARY TABLE {quote(staging)} ({', '.join(definitions)})")
        self._ensure_stage()
        folder = f"batch_{uuid.uuid4().hex}"
        with tempfile.TemporaryDirectory(prefix="rosetta-snowflake-") as workdir:
            self._put(table, Path(workdir) / "changes.parquet", folder)
        selects = [f'$1:"c{i}"::VARCHAR' for i in range(len(names))]
        selects += [f'$1:"u{i}"::BOOLEAN' for i in unchanged]
        selects += ['$1:"op"::VARCHAR', f'$1:"lsn"::{LSN_TYPE}']
        targets = [quote(name) for name in table.column_names]
        self._copy(
            f"COPY INTO {quote(staging)} ({', '.join(targets)}) FROM (SELECT {', '.join(selects)} "
            f"FROM @{quote(STAGE)}/{folder}/) FILE_FORMAT = (TYPE = PARQUET) PURGE = TRUE"
        )
        return set(unchanged)

    def _apply_table(self, changes, sql_types, staging, unchanged, soft_delete: bool, result) -> None:
        """Inside the batch's transaction: the table's TRUNCATE, then one MERGE."""
        relation = changes.relation
        source_name = f"{relation.schema}.{relation.name}"
        where = f"{self.settings.get('schema')}.{changes.target_table}"
        target = quote(changes.target_table)
        lsn, synced, deleted_at = quote(LSN), quote(SYNCED_AT), quote(DELETED_AT)
        if changes.truncated:
            if soft_delete:
                self._run(
                    f"UPDATE {target} SET {deleted_at} = CURRENT_TIMESTAMP(), {synced} = CURRENT_TIMESTAMP() "
                    f"WHERE {deleted_at} IS NULL"
                )
            else:
                self._run(f"DELETE FROM {target}")
            result.notes.append(truncated_note(relation, where, soft_delete))
        if not staging:
            return
        names, keys = relation.column_names, relation.key_columns
        op = f"s.{quote('_rosetta_op')}"

        # The staged rows, typed; an unchanged TOASTed value takes the target's value.
        selects = []
        for i, (name, sql_type) in enumerate(zip(names, sql_types, strict=True)):
            typed = _cast(f"s.{quote(f'c{i}')}", sql_type)
            if i in unchanged:
                typed = f"IFF(s.{quote(f'u{i}')}, old.{quote(name)}, {typed})"
            selects.append(f"{typed} AS {quote(name)}")
        selects += [f"s.{quote('op')} AS {quote('_rosetta_op')}", f"s.{quote('lsn')} AS {lsn}"]
        selects.append(f"CURRENT_TIMESTAMP() AS {synced}")
        source = f"SELECT {', '.join(selects)} FROM {quote(staging)} AS s"
        if unchanged:
            match_old = " AND ".join(
                f"old.{quote(k)} = {_cast(quote(f'c{names.index(k)}'), sql_types[names.index(k)])}"
                for k in keys
            )
            source += f" LEFT JOIN {target} AS old ON {match_old}"
            flagged = " OR ".join(f"f.{quote(f'u{i}')}" for i in sorted(unchanged))
            staged_keys = " AND ".join(
                f"t.{quote(k)} = {_cast('f.' + quote(f'c{names.index(k)}'), sql_types[names.index(k)])}"
                for k in keys
            )
            missing = self._run(
                f"SELECT COUNT(*) FROM {quote(staging)} AS f LEFT JOIN {target} AS t ON {staged_keys} "
                f"WHERE f.{quote('op')} = 'U' AND ({flagged}) AND t.{quote(keys[0])} IS NULL"
            ).fetchone()[0]
            if missing:
                result.notes.append(
                    unchanged_columns_stored_as_null(missing, source_name, "some columns", where)
                )

        on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in keys)
        if soft_delete:
            deleted = self._run(
                f"SELECT COUNT(*) FROM ({source}) AS s JOIN {target} AS t ON {on} "
                f"WHERE {op} = 'D' AND t.{deleted_at} IS NULL"
            ).fetchone()[0]
            on_delete = (
                f"WHEN MATCHED AND {op} = 'D' AND t.{deleted_at} IS NULL THEN UPDATE SET "
                f"t.{deleted_at} = s.{synced}, t.{synced} = s.{synced}, t.{lsn} = s.{lsn}"
            )
        else:
            on_delete = f"WHEN MATCHED AND {op} = 'D' THEN DELETE"
        updates = [f"t.{quote(n)} = s.{quote(n)}" for n in names if n not in keys]
        updates += [f"t.{lsn} = s.{lsn}", f"t.{synced} = s.{synced}", f"t.{deleted_at} = NULL"]
        columns = [quote(n) for n in names] + [lsn, synced]
        values = [f"s.{quote(n)}" for n in names] + [f"s.{lsn}", f"s.{synced}"]
        cursor = self._run(
            f"MERGE INTO {target} AS t USING ({source}) AS s ON {on} "
            f"{on_delete} "
            f"WHEN MATCHED AND {op} = 'U' THEN UPDATE SET {', '.join(updates)} "
            f"WHEN NOT MATCHED AND {op} = 'U' THEN INSERT ({', '.join(columns)}) VALUES ({', '.join(values)})"
        )
        counts = dict(zip([d.name for d in cursor.description], cursor.fetchone() or (), strict=False))
        result.inserted += int(counts.get("number of rows inserted") or 0)
        updated = int(counts.get("number of rows updated") or 0)
        if soft_delete:
            result.deleted += int(deleted)
            result.updated += updated - int(deleted)
        else:
            result.deleted += int(counts.get("number of rows deleted") or 0)
            result.updated += updated
