"""The DuckDB destination: an embedded database file on the workers.

Target tables live in the file's `main` schema (or settings["schema"]) under
the pipeline table's target name, with the types of
engine.writers.types.duckdb_type (DECIMAL(p,s) up to 38 digits, VARCHAR
for a wider or unconstrained numeric, JSON for json/jsonb, LISTs for arrays,
VARCHAR for user-defined types; a DECIMAL, TIMESTAMP or LIST column that meets a
value it cannot hold takes the value's exact form, see EXACT_FORM_COMMENT), and
Rosetta's columns:

- `_rosetta_lsn BIGINT`: commit LSN of the row's last change, as a number (the
  snapshot LSN for rows from a snapshot); format_lsn() shows it as '16/B374D848'.
- `_rosetta_synced_at TIMESTAMPTZ`: when Rosetta's transaction wrote the row.
- `_rosetta_deleted_at TIMESTAMPTZ`: set instead of deleting when the pipeline
  keeps soft deletes; NULL otherwise.

Tables get no PRIMARY KEY: DuckDB keeps such indexes in memory and checks them
on every write, while the merge already matches rows on the source's key (and
follows a key change without DDL). `_rosetta_checkpoints` holds each
pipeline's last applied end LSN (a batch source's part number, and its reader
position as JSON in `state`), written in the batch's transaction, as are a
batch source's rejected records in `_rosetta_rejects`.

Batches go in through Arrow tables and one MERGE per group of rows, never row
by row. DuckDB lets one process write a file at a time: the connection is
opened per run and closed by close(), and opening waits a little for another
process (a query session, say) to let go of the file.
"""

import contextlib
import datetime
import decimal
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from engine import pgtypes
from engine.batch import UNCHANGED, ApplyResult, SchemaAlignment
from engine.fold import _fastfold
from engine.lsn import format_lsn

from . import pgcsv, schema_changes, types
from .base import (
    CHECKPOINTS,
    DELETED_AT,
    LSN,
    REJECTS,
    SYNCED_AT,
    ConnectionProblem,
    UnstorableValue,
    Writer,
    dump_state,
    group_by_unchanged,
    like_pattern,
    load_state,
    truncated_note,
    unchanged_columns_stored_as_null,
)

META_COLUMNS = {LSN: "BIGINT", SYNCED_AT: "TIMESTAMP WITH TIME ZONE", DELETED_AT: "TIMESTAMP WITH TIME ZONE"}
DROPPED_COMMENT = schema_changes.DROPPED_COMMENT
LOCK_WAIT_SECONDS = 30
# DuckDB's buffer cap for merges (a big batch's updates live in memory until commit)
# and, lower, for snapshot loads, where the cache would otherwise grow with the table.
# settings["memory_limit"] / settings["snapshot_memory_limit"] override them.
MEMORY_LIMIT = "1GB"
SNAPSHOT_MEMORY_LIMIT = "64MB"
# COPY bytes parsed at a time in a snapshot (more when one row is larger: see pgcsv).
CSV_PIECE_BYTES = 4 << 20

_INTEGER_RANK = {"SMALLINT": 1, "INTEGER": 2, "BIGINT": 3}
_DATE_TYPES = ("DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE")
_INTEGER_DIGITS = {"SMALLINT": 5, "INTEGER": 10, "BIGINT": 19}

# DuckDB type -> the Arrow type a batch column is built as; the SQL then casts
# it to the column type (a no-op where they match).
_ARROW_TYPES = {
    "BOOLEAN": pa.bool_(),
    "SMALLINT": pa.int64(),
    "INTEGER": pa.int64(),
    "BIGINT": pa.int64(),
    "FLOAT": pa.float64(),
    "DOUBLE": pa.float64(),
    "BLOB": pa.binary(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"),
    "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC"),
}


def quote(name: str) -> str:
    """A DuckDB identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def decimal_precision_scale(duck_type: str) -> tuple[int, int] | None:
    if duck_type.startswith("DECIMAL("):
        precision, scale = duck_type[8:-1].split(",")
        return int(precision), int(scale)
    return None


class DuckDBDialect(schema_changes.Dialect):
    """DuckDB types as duckdb_columns() spells them (types.duckdb_type); ALTER ... TYPE
    converts any widening. `exact_columns`: the columns of one table that hold their
    values' exact form (see EXACT_FORM_COMMENT)."""

    def __init__(self, exact_columns=frozenset()):
        self.exact_columns = exact_columns

    def column_type(self, column):
        duck_type = types.duckdb_type(column.type_oid, column.type_modifier)
        return exact_form(duck_type) if column.name in self.exact_columns else duck_type

    def source_type(self, destination_type):
        if destination_type.endswith("[]"):
            element = self.source_type(destination_type[:-2])
            array = _ARRAY_OF.get(element[0]) if element else None
            return (array, element[1]) if array else None
        precision_scale = decimal_precision_scale(destination_type)
        if precision_scale:
            return types.NUMERIC, ((precision_scale[0] << 16) | precision_scale[1]) + 4
        oid = _SOURCE_OIDS.get(destination_type)
        return (oid, -1) if oid else None


# DuckDB type -> the narrowest PostgreSQL type stored as it (see types.duckdb_type)
_SOURCE_OIDS = {
    "BOOLEAN": types.BOOL,
    "BLOB": types.BYTEA,
    "SMALLINT": types.INT2,
    "INTEGER": types.INT4,
    "BIGINT": types.INT8,
    "JSON": types.JSONB,
    "FLOAT": types.FLOAT4,
    "DOUBLE": types.FLOAT8,
    "DATE": types.DATE,
    "TIME": types.TIME,
    "TIMESTAMP": types.TIMESTAMP,
    "TIMESTAMP WITH TIME ZONE": types.TIMESTAMPTZ,
    "INTERVAL": types.INTERVAL,
    "TIME WITH TIME ZONE": types.TIMETZ,
    "UUID": types.UUID,
    "VARCHAR": types.TEXT,
}
_ARRAY_OF = {element: array for array, element in types.ARRAY_ELEMENT.items()}
DIALECT = DuckDBDialect()

# DuckDB types narrower than the PostgreSQL type they stand for: DECIMAL(p,s) has no
# NaN or infinity, TIMESTAMP [WITH TIME ZONE] ends in 294247 AD where PostgreSQL's end
# in 294276 AD, and a LIST has one number of dimensions where an array has any. A
# column of one that meets a value it cannot hold becomes a column of the value's
# exact form (exact_form: PostgreSQL's text form, arrays as JSON), every value of it
# converted, marked by this comment so every later run keeps it so.
EXACT_FORM_COMMENT = "Rosetta: holds the exact form of the source values (one did not fit {type})."
_EXACT_FORM_PREFIX = EXACT_FORM_COMMENT.split("(")[0]


def _exact_form_mark(comment: str | None) -> str | None:
    """The exact-form mark in a column's comment (after its source-column mark, if any)."""
    start = (comment or "").find(_EXACT_FORM_PREFIX)
    return comment[start:] if start >= 0 else None


def is_narrow(duck_type: str) -> bool:
    return duck_type.startswith("DECIMAL") or duck_type.endswith("[]") or duck_type in _DATE_TYPES[1:]


def exact_form(duck_type: str) -> str:
    """The type holding every value a column of narrow `duck_type` may receive."""
    if duck_type.endswith("[]"):
        return "JSON"
    return "VARCHAR" if is_narrow(duck_type) else duck_type


def _pg_era(text: str, suffix: str = "") -> str:
    """DuckDB's '0044-03-15 (BC) 12:00:00' spelled as PostgreSQL does ('... 12:00:00 BC')."""
    return (
        f"CASE WHEN contains({text}, ' (BC)') THEN replace({text}, ' (BC)', '') || '{suffix} BC' "
        f"ELSE {text} || '{suffix}' END"
    )


def exact_form_of(column: str, duck_type: str) -> str:
    """SQL turning a value of the narrow `duck_type` into its exact form: what the
    source would have sent for it (PostgreSQL's text form in its session settings,
    arrays as JSON)."""
    if duck_type.endswith("[]"):
        return f"to_json({column})"
    if duck_type == "TIMESTAMP":
        return _pg_era(f"CAST({column} AS VARCHAR)")
    if duck_type == "TIMESTAMP WITH TIME ZONE":
        utc = f"CAST(timezone('UTC', {column}) AS VARCHAR)"
        return f"CASE WHEN isinf({column}) THEN CAST({column} AS VARCHAR) ELSE {_pg_era(utc, '+00')} END"
    return f"CAST({column} AS VARCHAR)"


def from_text(expression: str, duck_type: str, csv: bool = False) -> str:
    """SQL turning PostgreSQL's text form of a value into `duck_type`.

    Intervals lose the '+' PostgreSQL writes before a positive time part after
    a negative day count, which DuckDB does not read; arrays arrive as JSON
    (Writer.snapshot_columns asks the source for array_to_json); bytea in a COPY
    is hex ('\\x0102').
    """
    if duck_type == "VARCHAR":
        return expression
    if duck_type in _DATE_TYPES:
        # PostgreSQL writes a BC date as '0044-03-15 BC'; DuckDB reads the same day
        # as year -43 (astronomical numbering), and would read the text as AD.
        x = "{0}" if expression == "{}" else expression  # a template, formatted once by the caller
        return (
            f"CASE WHEN ends_with({x}, ' BC') THEN CAST('-' || lpad(CAST(CAST(split_part({x}, '-', 1) "
            f"AS BIGINT) - 1 AS VARCHAR), 4, '0') || substr({x}, strpos({x}, '-'), "
            f"length({x}) - strpos({x}, '-') - 2) AS {duck_type}) ELSE CAST({x} AS {duck_type}) END"
        )
    if duck_type == "INTERVAL":
        return f"CAST(replace({expression}, '+', '') AS INTERVAL)"
    if duck_type.endswith("[]"):
        if duck_type != "JSON[]":
            # DuckDB would cast a nested array to a list of its texts: make it fail instead
            # (as a conversion, which TRY and the exact form take care of).
            x = "{0}" if expression == "{}" else expression
            expression = f"CASE WHEN starts_with({x}, '[[') THEN 'multi-dimensional' ELSE {x} END"
        return f"CAST(CAST({expression} AS JSON) AS {duck_type})"
    if duck_type == "BLOB" and csv:
        return f"unhex(substr({expression}, 3))"
    return f"CAST({expression} AS {duck_type})"


def unstorable_value(error: duckdb.Error, relation, duck_types: dict, where: str) -> UnstorableValue:
    """DuckDB names neither the column nor (always) the value of a failed cast: find
    the column(s) of the type it names, and say which value, where and what to do."""
    text = str(error).splitlines()[0].removeprefix("Conversion Error: ")
    text = re.sub(r" when casting from source column \S+", "", text)  # our positional name, not the column's
    values = re.findall(r'"([^"]*)"', text) or re.findall(r": (\S.*)$", text)
    lowered = text.lower()
    columns = [name for name, duck_type in duck_types.items() if f"to {duck_type.lower()}" in lowered]
    if not columns:
        kinds = {"timestamp": _DATE_TYPES[1:], "date": ("DATE",), "numerical": (), "list": ()}
        for word, wanted in kinds.items():
            if word in lowered:
                columns = [
                    name
                    for name, duck_type in duck_types.items()
                    if duck_type in wanted or (not wanted and duck_type.endswith("[]"))
                ]
                break
    value = values[0] if values else "?"
    column = (
        f"column {columns[0]} ({duck_types[columns[0]]})"
        if len(columns) == 1
        else f"one of the columns {', '.join(columns)}"
        if columns
        else "a column"
    )
    return UnstorableValue(
        f"{relation.schema}.{relation.name}: {column} has the value {value!r}, which DuckDB cannot store "
        f"in {where} ({text}). See the README's type table: store such values in a column of another "
        "type on the source (text keeps any value), then refresh the table."
    )


def _megabytes(limit: str) -> int:
    """'64MB' / '1GB' -> megabytes (DuckDB's memory_limit spelling)."""
    number, unit = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]i?B)\s*", limit, re.IGNORECASE).groups()
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit[0].upper()]
    return int(float(number) * scale)


def _text(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _dump_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def arrow_column(values: list, duck_type: str) -> tuple[pa.Array, str]:
    """An Arrow array for a batch column, and the SQL expression (on column `{}`)
    that turns it into `duck_type`. Values arrive typed (see batch.py); a column
    whose values do not fit the usual Arrow type (say a timestamp 'infinity'
    kept as text) goes as text and is cast by DuckDB."""
    if duck_type == "JSON":
        return pa.array(
            [None if v is None else _dump_json(v) for v in values], pa.string()
        ), "CAST({} AS JSON)"
    if duck_type.endswith("[]"):
        element = duck_type[:-2]
        if element in ("JSON", "UUID") or element.startswith("DECIMAL"):
            convert = _dump_json if element == "JSON" else str
            values = [
                None
                if v is None
                else [None if x is None else convert(x) for x in v]
                if isinstance(v, list)
                else v
                for v in values
            ]
            arrow_element = pa.string()
        else:
            arrow_element = _ARROW_TYPES.get(element, pa.string())
        try:
            return pa.array(values, pa.list_(arrow_element)), f"CAST({{}} AS {duck_type})"
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass
    else:
        precision_scale = decimal_precision_scale(duck_type)
        arrow_type = pa.decimal128(*precision_scale) if precision_scale else _ARROW_TYPES.get(duck_type)
        if arrow_type is not None:
            try:
                return pa.array(values, arrow_type), f"CAST({{}} AS {duck_type})"
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
                pass
    texts = [None if v is None else v if type(v) is str else _text(v) for v in values]
    return pa.array(texts, pa.string()), from_text("{}", duck_type)


def arrow_text_column(values: list, duck_type: str, type_oid: int) -> tuple[pa.Array, str]:
    """arrow_column for PostgreSQL's text form (TableChanges.text_values): a string
    column cast by DuckDB, as the snapshot's CSV is. Arrays ('{1,2}', which DuckDB
    cannot read) are converted to Python lists first, and for a JSON column (an
    array's exact form) to JSON as the snapshot's array_to_json writes it."""
    if duck_type.endswith("[]") or (duck_type == "JSON" and types.is_array(type_oid)):
        # An array with explicit bounds ('[0:1]={1,2}') goes as a JSON string of its text,
        # as the snapshot sends it (see snapshot_columns): a list would lose the bounds.
        convert = pgtypes.converter(type_oid)
        if duck_type == "JSON":
            texts = [
                None
                if v is None
                else json.dumps(v)
                if v.startswith("[")
                else _json_like_postgres(convert(v.encode()))
                for v in values
            ]
            return pa.array(texts, pa.string()), "CAST({} AS JSON)"
        values = [
            None if v is None else json.dumps(v) if v.startswith("[") else convert(v.encode()) for v in values
        ]
        return arrow_column(values, duck_type)
    return pa.array(values, pa.string()), from_text("{}", duck_type, csv=True)


_SPECIAL_NUMBERS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _json_like_postgres(value) -> str:
    """JSON of an array (as psycopg loads it) as PostgreSQL's array_to_json writes it:
    numbers as numbers, NaN and infinities as strings, times in ISO 8601, bytea as '\\x..'."""
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(_json_like_postgres(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, decimal.Decimal)):
        text = str(value)
        special = _SPECIAL_NUMBERS.get(text.lower().lstrip("+"))
        return json.dumps(special) if special else text
    if isinstance(value, (bytes, bytearray, memoryview)):
        return json.dumps("\\x" + bytes(value).hex())
    if isinstance(value, (datetime.date, datetime.time)):
        return json.dumps(value.isoformat())
    if isinstance(value, (str, dict)):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(str(value), ensure_ascii=False)


def _recorded_key(relation) -> list[str]:
    """The key columns a new table marks NOT NULL, which is how it records its key for
    the schema-change planner. None under REPLICA IDENTITY FULL, where every column is
    part of the key and may hold NULL."""
    return [] if relation.replica_identity == "f" else relation.key_columns


def column_lists(rows: list, columns: list[str]) -> list[list]:
    """The rows' ((row, lsn) pairs) values, one list per column (None where a row lacks
    it): compiled (engine/_fastfold.pyx) where it is built."""
    if _fastfold is not None:
        return _fastfold.column_lists(rows, columns)
    return [[row.get(name) for row, _ in rows] for name in columns]


def string_arrays(rows: list, columns: list[str]) -> list[pa.Array]:
    """The rows' ((row, lsn) pairs) text values as one Arrow string array per column (null
    where a row lacks it). Compiled where it is built: the arrays' buffers made straight
    from the rows (engine/_fastfold.pyx text_columns); else, and for a column that holds
    something other than text, pyarrow.array over the column's values."""
    buffers = _fastfold.text_columns(rows, columns) if _fastfold is not None else [None] * len(columns)
    arrays = []
    for position, made in enumerate(buffers):
        if made is None:
            arrays.append(pa.array(column_lists(rows, [columns[position]])[0], pa.string()))
            continue
        validity, offsets, data, nulls = made
        arrays.append(
            pa.Array.from_buffers(
                pa.string(),
                len(rows),
                [pa.py_buffer(validity) if nulls else None, pa.py_buffer(offsets), pa.py_buffer(data)],
                null_count=nulls,
            )
        )
    return arrays


@dataclass
class _PreparedGroup:
    """prepare_batch's work on a table's rows without unchanged columns: a string array per
    column (None for an array type, made at apply time) and their LSNs."""

    columns: list[str]
    rows: list
    arrays: list
    lsns: pa.Array

    def values(self, position: int) -> list:
        return column_lists(self.rows, [self.columns[position]])[0]


class _ValuesDoNotFit(Exception):
    """A table's changes hold a value its DuckDB column's type cannot (see _make_room)."""

    def __init__(self, changes, error):
        super().__init__(str(error))
        self.changes, self.error = changes, error


class DuckDBWriter(Writer):
    kind = "duckdb"
    # PostgreSQL's CSV (defaults, no header) read by Arrow's streaming CSV reader.
    snapshot_format = "csv"
    # CDC values as text, cast by DuckDB like the snapshot's CSV (see arrow_text_column).
    accepts_text_values = True

    def __init__(self, settings: dict, connect_timeout: int = 10):
        super().__init__(settings, connect_timeout)
        self._conn = None
        self._verified = {}

    @property
    def schema(self) -> str:
        return self.settings.get("schema") or "main"

    @property
    def _memory_limit(self) -> str:
        return self.settings.get("memory_limit") or MEMORY_LIMIT

    def connect(self) -> duckdb.DuckDBPyConnection:
        path = Path(self.settings["path"])
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                return duckdb.connect(str(path))
            except duckdb.IOException as error:
                if "lock" not in str(error).lower() or time.monotonic() > deadline:
                    raise ConnectionProblem(f"Cannot open DuckDB file {path}: {error}") from None
                time.sleep(0.2)  # another process has the file open; it usually lets go soon
            except (OSError, duckdb.Error) as error:
                raise ConnectionProblem(f"Cannot open DuckDB file {path}: {error}") from None

    def test_connection(self) -> str:
        with self.connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS _rosetta_write_test (x INTEGER)")
            conn.execute("DROP TABLE _rosetta_write_test")
            version = conn.execute("SELECT version()").fetchone()[0]
        return f"Opened DuckDB {version} file {self.settings['path']} and wrote to it."

    # -- the CDC contract ---------------------------------------------------------

    def snapshot_columns(self, relation):
        """Arrays as JSON, which DuckDB casts to LISTs (PostgreSQL's '{...}' it cannot read).
        An array with other lower bounds than 1 ('[0:1]={1,2}'), which JSON would lose, as
        a JSON string of its text form: no LIST takes it, so the column takes the exact form."""
        from psycopg import sql

        expressions = super().snapshot_columns(relation)
        for position, column in enumerate(relation.columns):
            if types.duckdb_type(column.type_oid, column.type_modifier).endswith("[]"):
                expressions[position] = sql.SQL(
                    "CASE WHEN replace(array_dims({0}), '[1:', '') LIKE '%[%' THEN to_json({0}::text) "
                    "ELSE array_to_json({0}) END"
                ).format(sql.Identifier(column.name))
        return expressions

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            conn = self.connect()
            # DuckDB would take 80% of the machine's memory for its buffers; a worker
            # runs many pipelines, so cap it (DuckDB spills to disk past the cap).
            # Insertion order is of no use to a merge and costs memory in big loads.
            conn.execute("SET memory_limit = ?", [self._memory_limit])
            conn.execute("SET preserve_insertion_order = false")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _table(self, name: str) -> str:
        return f"{quote(self.schema)}.{quote(name)}"

    def read_checkpoint(self, pipeline_key: str) -> int:
        conn = self._connection()
        if not self._table_exists(conn, CHECKPOINTS):
            return 0
        rows = conn.execute(
            f"SELECT lsn FROM {self._table(CHECKPOINTS)} WHERE pipeline_key = ?", [pipeline_key]
        ).fetchall()
        return rows[0][0] if rows else 0

    def read_checkpoint_state(self, pipeline_key: str) -> tuple[int, dict | None]:
        conn = self._connection()
        if not self._table_exists(conn, CHECKPOINTS):
            return 0, None
        self._ensure_checkpoint_table(conn)
        rows = conn.execute(
            f"SELECT lsn, state FROM {self._table(CHECKPOINTS)} WHERE pipeline_key = ?", [pipeline_key]
        ).fetchall()
        return (rows[0][0], load_state(rows[0][1])) if rows else (0, None)

    def reset_checkpoint(self, pipeline_key: str) -> bool:
        conn = self._connection()
        if not self._table_exists(conn, CHECKPOINTS):
            return False
        found = conn.execute(
            f"SELECT count(*) FROM {self._table(CHECKPOINTS)} WHERE pipeline_key = ?", [pipeline_key]
        ).fetchone()[0]
        conn.execute(f"DELETE FROM {self._table(CHECKPOINTS)} WHERE pipeline_key = ?", [pipeline_key])
        return bool(found)

    def _write_rejects(self, conn, pipeline_key: str, rejects: list[tuple]) -> None:
        table = self._table(REJECTS)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (pipeline_key VARCHAR NOT NULL, origin VARCHAR NOT NULL, "
            "line BIGINT, reason VARCHAR NOT NULL, record VARCHAR, rejected_at TIMESTAMP WITH TIME ZONE NOT NULL)"
        )
        conn.executemany(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, now())",
            [[pipeline_key, origin, line, reason, raw] for origin, line, reason, raw in rejects],
        )

    def count_rows(self, table: str) -> int | None:
        if self._conn is None and not Path(self.settings["path"]).exists():
            return None  # nothing loaded yet; reading must not create the file
        conn = self._connection()
        if not self._table_exists(conn, table):
            return None
        return conn.execute(f"SELECT count(*) FROM {self._table(table)}").fetchone()[0]

    def preview_rows(self, table: str, offset: int, limit: int, search: str = "") -> tuple[list, list, int]:
        if self._conn is None and not Path(self.settings["path"]).exists():
            return [], [], 0
        conn = self._connection()
        if not self._table_exists(conn, table):
            return [], [], 0
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
                "ORDER BY column_index",
                [self.schema, table],
            ).fetchall()
        ]
        where, params = "", []
        if search:
            text = ", ".join(f"CAST({quote(name)} AS VARCHAR)" for name in columns)
            where, params = f" WHERE concat_ws(' ', {text}) ILIKE ? ESCAPE '\\'", [like_pattern(search)]
        target = self._table(table)
        total = conn.execute(f"SELECT count(*) FROM {target}{where}", params).fetchone()[0]
        rows = conn.execute(
            f"SELECT {', '.join(quote(name) for name in columns)} FROM {target}{where} "
            "ORDER BY rowid LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
        return columns, rows, total

    def apply_batch(self, pipeline_key: str, batch, soft_delete: bool = False) -> ApplyResult:
        notes = []
        while True:
            try:
                result = self._apply_batch(pipeline_key, batch, soft_delete)
            except _ValuesDoNotFit as unfit:  # rolled back: make room for them, then again
                notes += self._make_room(unfit.changes, unfit.error)
                continue
            result.notes[:0] = notes
            return result

    def _apply_batch(self, pipeline_key: str, batch, soft_delete: bool) -> ApplyResult:
        result = ApplyResult()
        if batch.is_empty:
            return result
        conn = self._connection()
        conn.execute("BEGIN TRANSACTION")
        try:
            self._ensure_checkpoint_table(conn)
            rows = conn.execute(
                f"SELECT lsn FROM {self._table(CHECKPOINTS)} WHERE pipeline_key = ?", [pipeline_key]
            ).fetchall()
            if rows and batch.end_lsn <= rows[0][0]:
                conn.execute("ROLLBACK")
                result.notes.append(
                    f"Changes up to {format_lsn(batch.end_lsn)} were already applied "
                    f"(checkpoint {format_lsn(rows[0][0])}): nothing to do."
                )
                return result
            for key in sorted(batch.tables):
                changes = batch.tables[key]
                try:
                    self._apply_table(conn, changes, soft_delete, result)
                except duckdb.ConversionException as error:
                    raise _ValuesDoNotFit(changes, error) from None
            conn.execute(
                f"INSERT INTO {self._table(CHECKPOINTS)} (pipeline_key, lsn, updated_at, state) "
                "VALUES (?, ?, now(), ?) ON CONFLICT (pipeline_key) DO UPDATE SET lsn = excluded.lsn, "
                "updated_at = excluded.updated_at, state = excluded.state",
                [pipeline_key, batch.end_lsn, dump_state(batch.checkpoint_state)],
            )
            if batch.rejects:
                self._write_rejects(conn, pipeline_key, batch.rejects)
            if self.before_commit_hook:
                self.before_commit_hook()
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        return result

    def _make_room(self, changes, error) -> list[str]:
        """After a batch failed on values a column's type cannot hold: find each such
        column and turn it into its exact form (a transaction of its own), with a note
        per column. A value no column can be made to hold raises UnstorableValue
        naming the table, the column and the value."""
        relation = changes.relation
        where = f"{self.schema}.{changes.target_table}"
        conn = self._connection()
        notes = []
        conn.execute("BEGIN TRANSACTION")
        try:
            if not self._table_exists(conn, changes.target_table):
                self._ensure_table(conn, relation, changes.target_table, notes)
            duck_types = self._column_types(conn, changes.target_table)
            unfit = self._unfit_values(conn, changes, duck_types)
            if not unfit:
                raise unstorable_value(error, relation, duck_types, where)
            for name, value in unfit.items():
                if not is_narrow(duck_types[name]):
                    raise UnstorableValue(
                        f"{relation.schema}.{relation.name}: column {name} ({duck_types[name]}) has the value "
                        f"{value!r}, which DuckDB cannot store in {where}. See the README's type table: "
                        "store such values in a column of another type on the source (text keeps any "
                        "value), then refresh the table."
                    )
                # keep the source column the destination column holds now (a relation's
                # newer number would hide a column dropped and added again from the next run)
                (comment,) = conn.execute(
                    "SELECT comment FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
                    "AND column_name = ?",
                    [self.schema, changes.target_table, name],
                ).fetchone()
                self._to_exact_form(
                    conn,
                    self._table(changes.target_table),
                    name,
                    duck_types[name],
                    number=schema_changes.source_number(comment),
                )
                notes.append(
                    f"Column {name} of {where} now holds {exact_form(duck_types[name])}: "
                    f"{relation.schema}.{relation.name} sent {value!r}, which DuckDB's "
                    f"{duck_types[name]} cannot hold; its other values were converted exactly."
                )
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        finally:
            self._verified.pop(changes.target_table, None)
        return notes

    def _column_types(self, conn, table: str) -> dict:
        return dict(
            conn.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? AND table_name = ?",
                [self.schema, table],
            ).fetchall()
        )

    def _unfit_values(self, conn, changes, duck_types: dict) -> dict:
        """{column: a value of the batch its DuckDB column cannot hold}, for the batch's
        values of one table (as _stage would cast them)."""
        relation = changes.relation
        rows = [row for row, _ in changes.upserts.values()]
        rows += [dict(zip(relation.key_columns, key, strict=True)) for key in changes.deletes]
        unfit = {}
        for column in relation.columns:
            if column.name not in duck_types:
                continue
            values = [row[column.name] for row in rows if row.get(column.name, UNCHANGED) is not UNCHANGED]
            values = [value for value in values if value is not None]
            if not values:
                continue
            if changes.text_values:
                array, expression = arrow_text_column(values, duck_types[column.name], column.type_oid)
            else:
                array, expression = arrow_column(values, duck_types[column.name])
            probe = pa.Table.from_arrays([array, pa.array(range(len(values)))], names=["c0", "i"])
            conn.register("_rosetta_probe", probe)
            found = conn.execute(
                f"SELECT i FROM _rosetta_probe WHERE TRY({expression.format('c0')}) IS NULL LIMIT 1"
            ).fetchall()
            conn.unregister("_rosetta_probe")
            if found:
                unfit[column.name] = _text(values[found[0][0]])
        return unfit

    def _rollback(self, conn) -> None:
        self._verified.clear()  # DDL of the failed transaction is gone
        with contextlib.suppress(duckdb.Error):  # no transaction left to roll back
            conn.execute("ROLLBACK")

    def load_snapshot(self, relation, target_table: str, chunks, snapshot_lsn: int) -> int:
        """The COPY stream is parsed piece by piece (pgcsv) into a new table, which
        replaces the old one in the same transaction: readers see the old copy until
        the commit, and memory holds a piece or two whatever the table's size."""
        conn = self._connection()
        names = relation.column_names
        duck_types = [types.duckdb_type(c.type_oid, c.type_modifier) for c in relation.columns]
        new_table = self._table(f"_rosetta_new_{target_table}")
        target = self._table(target_table)
        conn.execute(
            "SET memory_limit = ?", [self.settings.get("snapshot_memory_limit") or SNAPSHOT_MEMORY_LIMIT]
        )
        conn.execute("BEGIN TRANSACTION")
        # A narrow column's values go in through TRY(cast), the text of those that do
        # not fit into an unfit column beside it; if any, the column takes the exact form.
        narrow = [position for position, duck_type in enumerate(duck_types) if is_narrow(duck_type)]
        keys = _recorded_key(relation)
        narrow_keys = [names[position] for position in narrow if names[position] in keys]
        try:
            self._ensure_schema(conn)
            conn.execute(
                f"CREATE OR REPLACE TABLE {new_table} "
                f"({self._column_definitions(names, duck_types, [k for k in keys if k not in narrow_keys])})"
            )
            for position in narrow:
                conn.execute(f"ALTER TABLE {new_table} ADD COLUMN _rosetta_unfit_{position} VARCHAR")
            casts = [
                from_text(quote(f"c{position}"), duck_type, csv=True)
                for position, duck_type in enumerate(duck_types)
            ]
            unfit = "".join(
                f", CASE WHEN c{p} IS NOT NULL AND TRY({casts[p]}) IS NULL THEN c{p} END" for p in narrow
            )
            for position in narrow:
                casts[position] = f"TRY({casts[position]})"
            selected = f"{', '.join(casts)}, {int(snapshot_lsn)}, now(), NULL{unfit}"
            failures, oversized = [], []
            pieces = pgcsv.pieces(chunks, CSV_PIECE_BYTES)
            snapshot_limit = self.settings.get("snapshot_memory_limit") or SNAPSHOT_MEMORY_LIMIT
            limit_mb = 0
            while True:
                # One INSERT streams the pieces until one holds a row far larger than a
                # piece; that one goes in alone, under a memory cap that fits it.
                reader = pgcsv.record_batches(pieces, len(names), failures, oversized, CSV_PIECE_BYTES * 4)
                self._insert_snapshot(
                    conn,
                    reader,
                    new_table,
                    selected,
                    failures,
                    relation,
                    target_table,
                    duck_types,
                )
                if not oversized:
                    break
                piece = oversized.pop()
                # raised for the rest of the load: the commit pins that row's blocks too
                limit_mb = max(limit_mb, _megabytes(snapshot_limit), 4 * len(piece) >> 20)
                conn.execute("SET memory_limit = ?", [f"{limit_mb}MB"])
                table = pgcsv.read_table(piece, len(names))
                del piece
                self._insert_snapshot(
                    conn,
                    table,
                    new_table,
                    selected,
                    failures,
                    relation,
                    target_table,
                    duck_types,
                )
                del table
            if narrow:
                self._keep_unfit_values(conn, new_table, names, duck_types, narrow)
            for name in narrow_keys:  # after the load: a key's unfit value is NULL until then
                conn.execute(f"ALTER TABLE {new_table} ALTER COLUMN {quote(name)} SET NOT NULL")
            rows = conn.execute(f"SELECT count(*) FROM {new_table}").fetchall()[0][0]
            conn.execute(f"DROP TABLE IF EXISTS {target}")
            conn.execute(f"ALTER TABLE {new_table} RENAME TO {quote(target_table)}")
            self._record_source_columns(conn, target_table, relation)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        finally:
            self._verified.pop(target_table, None)
            conn.execute("SET memory_limit = ?", [self._memory_limit])
        return rows

    def _keep_unfit_values(self, conn, new_table, names, duck_types, narrow) -> None:
        """Turn each narrow column that met a value it cannot hold into its exact form,
        then drop the unfit columns the load filled."""
        unfit = [f"_rosetta_unfit_{position}" for position in narrow]
        counts = conn.execute(f"SELECT {', '.join(f'count({c})' for c in unfit)} FROM {new_table}").fetchone()
        for position, column, count in zip(narrow, unfit, counts, strict=True):
            if count:
                self._to_exact_form(conn, new_table, names[position], duck_types[position], column)
        for column in unfit:
            conn.execute(f"ALTER TABLE {new_table} DROP COLUMN {column}")

    def _to_exact_form(
        self, conn, table: str, name: str, duck_type: str, unfit: str | None = None, number: int | None = None
    ) -> None:
        """Column `name` of `table` becomes its exact form, its values converted
        (`unfit`: a column with the text of values the column could not hold)."""
        form = exact_form(duck_type)
        converted = exact_form_of(quote(name), duck_type)
        if unfit:
            converted = f"COALESCE(CAST({unfit} AS {form}), {converted})"
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN {quote(name)} TYPE {form} USING {converted}")
        comment = EXACT_FORM_COMMENT.format(type=duck_type)
        if number:  # the column's source-column mark stays (see _record_source_column)
            comment = f"{schema_changes.source_column_comment(number)} {comment}"
        conn.execute(f"COMMENT ON COLUMN {table}.{quote(name)} IS '{comment}'")

    def _insert_snapshot(
        self, conn, rows, new_table, selected, failures, relation, target_table, duck_types
    ) -> None:
        conn.register("_rosetta_snapshot", rows)
        try:
            conn.execute(f"INSERT INTO {new_table} SELECT {selected} FROM _rosetta_snapshot")
        except duckdb.Error as error:
            if failures:  # the source's stream failed (DuckDB read it): raise that error
                raise failures[0] from None
            if isinstance(error, duckdb.ConversionException):
                names = relation.column_names
                where = f"{self.schema}.{target_table}"
                raise unstorable_value(
                    error, relation, dict(zip(names, duck_types, strict=True)), where
                ) from None
            raise
        conn.unregister("_rosetta_snapshot")  # on error, the next register replaces it

    # -- applying one table's changes -----------------------------------------------

    def _apply_table(self, conn, changes, soft_delete: bool, result: ApplyResult) -> None:
        relation = changes.relation
        target = self._table(changes.target_table)
        duck_types, recopy = self._ensure_table(
            conn, relation, changes.target_table, result.notes, changes.column_fills
        )
        if recopy:
            result.recopy[(relation.schema, relation.name)] = recopy
        schema_changes.require_key(relation)
        if changes.truncated:
            if soft_delete:
                conn.execute(
                    f"UPDATE {target} SET {DELETED_AT} = now(), {SYNCED_AT} = now() WHERE {DELETED_AT} IS NULL"
                )
            else:
                conn.execute(f"DELETE FROM {target}")
            result.notes.append(
                truncated_note(relation, f"{self.schema}.{changes.target_table}", soft_delete)
            )
        text_oids = {c.name: c.type_oid for c in relation.columns} if changes.text_values else None
        if changes.deletes:
            result.deleted += self._delete(
                conn, relation, target, changes.deletes, duck_types, soft_delete, text_oids
            )
        if changes.upserts:
            prepared, changes.prepared = changes.prepared, None  # not kept with the part once used
            self._upsert(
                conn, relation, changes.target_table, changes.upserts, duck_types, result, text_oids, prepared
            )

    def prepare_batch(self, batch) -> None:
        """Each table's Arrow columns of text, made in the run's reading thread while the part
        before is merged: for the rows without unchanged columns (the common case), one string
        array per column whose source type is not an array (arrow_text_column's arrays depend
        on the target's type; the others' do not)."""
        for changes in batch.tables.values():
            if not changes.text_values or not changes.upserts:
                continue
            groups = group_by_unchanged(changes.upserts)
            rows = groups.get(frozenset())
            if rows is None:
                continue
            columns = changes.relation.column_names
            texts = [
                column.name for column in changes.relation.columns if not types.is_array(column.type_oid)
            ]
            made = dict(zip(texts, string_arrays(rows, texts), strict=True))
            arrays = [made.get(name) for name in columns]
            changes.prepared = _PreparedGroup(
                columns, rows, arrays, pa.array([lsn for _, lsn in rows], pa.int64())
            )

    def _stage(
        self,
        conn,
        columns: list[str],
        duck_types: dict,
        column_values: list[list] | None,
        lsns,
        text_oids: dict | None = None,
        prepared: "_PreparedGroup | None" = None,
    ) -> str:
        """Register the batch rows as an Arrow table; returns a SELECT over it that
        yields the target's column types. `text_oids` ({column: source type OID})
        when the values are PostgreSQL's text form; `prepared`: their string arrays made
        by prepare_batch (column_values is then None), used where the target's type takes
        them as arrow_text_column would make them."""
        arrays, expressions = [], []
        for position, name in enumerate(columns):
            duck_type = duck_types[name]
            if text_oids is None:
                array, expression = arrow_column(column_values[position], duck_type)
            elif prepared and prepared.arrays[position] is not None and not duck_type.endswith("[]"):
                array, expression = prepared.arrays[position], from_text("{}", duck_type, csv=True)
            else:
                values = column_values[position] if prepared is None else prepared.values(position)
                array, expression = arrow_text_column(values, duck_type, text_oids[name])
            arrays.append(array)
            expressions.append(f"{expression.format(quote(f'c{position}'))} AS {quote(name)}")
        arrays.append(lsns if isinstance(lsns, pa.Array) else pa.array(lsns, pa.int64()))
        expressions.append(f"{quote('lsn')} AS {LSN}")
        table = pa.Table.from_arrays(arrays, names=[*(f"c{p}" for p in range(len(columns))), "lsn"])
        conn.register("_rosetta_stage", table)
        return f"(SELECT {', '.join(expressions)} FROM _rosetta_stage)"

    def _delete(
        self, conn, relation, target: str, deletes: dict, duck_types: dict, soft_delete: bool, text_oids
    ) -> int:
        keys = relation.key_columns
        key_values = [list(values) for values in zip(*deletes.keys(), strict=True)]
        stage = self._stage(conn, keys, duck_types, key_values, list(deletes.values()), text_oids)
        match = " AND ".join(f"t.{quote(name)} = s.{quote(name)}" for name in keys)
        if soft_delete:
            statement = (
                f"UPDATE {target} AS t SET {DELETED_AT} = now(), {SYNCED_AT} = now(), {LSN} = s.{LSN} "
                f"FROM {stage} AS s WHERE {match} AND t.{DELETED_AT} IS NULL"
            )
        else:
            statement = f"DELETE FROM {target} AS t USING {stage} AS s WHERE {match}"
        count = conn.execute(statement).fetchall()[0][0]
        conn.unregister("_rosetta_stage")  # on error, the next register replaces it
        return count

    def _upsert(
        self,
        conn,
        relation,
        target_table: str,
        upserts: dict,
        duck_types: dict,
        result,
        text_oids,
        prepared=None,
    ) -> None:
        """One MERGE per group of rows that share the same unchanged (TOASTed)
        columns, so each group updates only the columns it has values for. `prepared`:
        prepare_batch's arrays of the group without unchanged columns."""
        if not (isinstance(prepared, _PreparedGroup) and prepared.columns == relation.column_names):
            prepared = None
        groups = group_by_unchanged(upserts) if prepared is None else None
        if prepared is not None:
            groups = {frozenset(): prepared.rows}
            if len(prepared.rows) != len(upserts):
                groups.update(
                    (unchanged, rows) for unchanged, rows in group_by_unchanged(upserts).items() if unchanged
                )
        target = self._table(target_table)
        keys = relation.key_columns
        match = " AND ".join(f"t.{quote(name)} = s.{quote(name)}" for name in keys)
        for unchanged, rows in groups.items():
            columns = [name for name in relation.column_names if name not in unchanged]
            if prepared is not None and not unchanged:
                stage = self._stage(conn, columns, duck_types, None, prepared.lsns, text_oids, prepared)
            else:
                stage = self._stage(
                    conn,
                    columns,
                    duck_types,
                    column_lists(rows, columns),
                    [lsn for _, lsn in rows],
                    text_oids,
                )
            updates = [f"{quote(name)} = s.{quote(name)}" for name in columns if name not in keys]
            updates += [f"{LSN} = s.{LSN}", f"{SYNCED_AT} = now()", f"{DELETED_AT} = NULL"]
            insert_columns = ", ".join(quote(name) for name in [*columns, LSN])
            insert_values = ", ".join(f"s.{quote(name)}" for name in [*columns, LSN])
            # sql(), not execute(): it runs the MERGE once and hands the RETURNING rows to Arrow as is
            actions = conn.sql(
                f"MERGE INTO {target} AS t USING {stage} AS s ON {match} "
                f"WHEN MATCHED THEN UPDATE SET {', '.join(updates)} "
                f"WHEN NOT MATCHED THEN INSERT ({insert_columns}, {SYNCED_AT}) "
                f"VALUES ({insert_values}, now()) RETURNING merge_action"
            ).to_arrow_table()
            conn.unregister("_rosetta_stage")
            inserted = pc.sum(pc.equal(actions.column(0).cast(pa.string()), "INSERT")).as_py() or 0
            result.inserted += inserted
            result.updated += actions.num_rows - inserted
            if unchanged and inserted:
                result.notes.append(
                    unchanged_columns_stored_as_null(
                        inserted,
                        f"{relation.schema}.{relation.name}",
                        ", ".join(sorted(unchanged)),
                        f"{self.schema}.{target_table}",
                    )
                )

    # -- target tables ------------------------------------------------------------

    def _table_exists(self, conn, name: str) -> bool:
        return bool(
            conn.execute(
                "SELECT 1 FROM duckdb_tables() WHERE schema_name = ? AND table_name = ? AND NOT temporary",
                [self.schema, name],
            ).fetchall()
        )

    def _ensure_schema(self, conn) -> None:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.schema)}")

    def _ensure_checkpoint_table(self, conn) -> None:
        if CHECKPOINTS in self._verified:
            return
        self._ensure_schema(conn)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self._table(CHECKPOINTS)} (pipeline_key VARCHAR PRIMARY KEY, "
            "lsn BIGINT NOT NULL, updated_at TIMESTAMP WITH TIME ZONE NOT NULL, state VARCHAR)"
        )
        # a checkpoint table from before batch sources
        conn.execute(f"ALTER TABLE {self._table(CHECKPOINTS)} ADD COLUMN IF NOT EXISTS state VARCHAR")
        self._verified[CHECKPOINTS] = True

    @staticmethod
    def _column_definitions(names: list[str], duck_types: list[str], keys: list[str]) -> str:
        # duck_types come from types.duckdb_type, never from user input. Key columns are
        # NOT NULL (a cheap check, unlike a PRIMARY KEY): that is how the table records its key.
        columns = [
            f"{quote(name)} {duck_type}" + (" NOT NULL" if name in keys else "")
            for name, duck_type in zip(names, duck_types, strict=True)
        ]
        columns += [f"{name} {duck_type}" for name, duck_type in META_COLUMNS.items()]
        return ", ".join(columns)

    def align_table(self, relation, target_table: str, fills=None, not_sent=frozenset()) -> SchemaAlignment:
        conn = self._connection()
        alignment = SchemaAlignment()
        conn.execute("BEGIN TRANSACTION")
        try:
            alignment.recopy = self._ensure_table(
                conn,
                relation,
                target_table,
                alignment.notes,
                fills,
                not_sent,
                create=False,
                replaced=alignment.replaced,
            )[1]
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        finally:
            self._verified.pop(target_table, None)
        return alignment

    def _ensure_table(
        self,
        conn,
        relation,
        target_table: str,
        notes: list[str],
        fills=None,
        not_sent=frozenset(),
        create: bool = True,
        replaced: list[str] | None = None,
    ) -> tuple[dict, str | None]:
        """Create the target table, or bring it in line with the relation as the
        schema-change planner says (engine/writers/schema_changes.py).
        Returns ({column: DuckDB type} of the relation's columns, why the table must
        be copied again or None)."""
        signature = (relation.schema, relation.name, tuple(relation.columns))
        verified = self._verified.get(target_table)
        if verified and verified[0] == signature:
            return verified[1], None
        target = self._table(target_table)
        existing = conn.execute(
            "SELECT column_name, data_type, is_nullable, comment FROM duckdb_columns() "
            "WHERE schema_name = ? AND table_name = ? ORDER BY column_index",
            [self.schema, target_table],
        ).fetchall()
        exact = frozenset(name for name, _, _, comment in existing if _exact_form_mark(comment))
        comments = {name: comment for name, _, _, comment in existing}
        dialect = DuckDBDialect(exact) if exact else DIALECT
        wanted = {c.name: dialect.column_type(c) for c in relation.columns}
        if not existing:
            if not create:  # align_table: a table not there yet is left to its snapshot
                return wanted, None
            self._ensure_schema(conn)
            definitions = self._column_definitions(
                list(wanted), list(wanted.values()), _recorded_key(relation)
            )
            conn.execute(f"CREATE TABLE {target} ({definitions})")
            self._record_source_columns(conn, target_table, relation)
            self._verified[target_table] = (signature, wanted)
            return wanted, None

        columns = [
            schema_changes.DestinationColumn(
                name, data_type, nullable, comment == DROPPED_COMMENT, schema_changes.source_number(comment)
            )
            for name, data_type, nullable, comment in existing
        ]
        plan = schema_changes.plan(
            relation,
            columns,
            dialect,
            where=f"{self.schema}.{target_table}",
            existing_key=[c.name for c in columns if not c.nullable and c.name not in META_COLUMNS],
            fills=fills,
            not_sent=not_sent,
            meta_columns=META_COLUMNS,
        )
        source_columns = {c.name: c for c in relation.columns}
        for action in plan.actions:
            self._render(conn, target, action, wanted | META_COLUMNS, source_columns, dialect, comments)
        notes += plan.notes
        if replaced is not None:
            replaced += plan.replaced
        self._verified[target_table] = (signature, wanted)
        return wanted, plan.recopy

    def _render(
        self,
        conn,
        target: str,
        action,
        duck_types: dict,
        source_columns: dict,
        dialect=DIALECT,
        comments=None,
    ) -> None:
        """One planned schema change, in DuckDB's SQL (`comments`: the columns' comments now)."""
        if isinstance(action, schema_changes.RecordSourceColumn):
            self._record_source_column(
                conn, target, action.name, action.number, (comments or {}).get(action.name)
            )
            return
        for statement in schema_changes.schema_change_ddl(
            action, target, quote(action.name), duck_types.get(action.name)
        ):
            conn.execute(statement)
        if schema_changes.fills_values(action):
            self._fill(conn, target, source_columns[action.name], action.fill, dialect)

    def _record_source_columns(self, conn, target_table: str, relation) -> None:
        """Each column's comment names the source column it holds (schema_changes.py)."""
        comments = dict(
            conn.execute(
                "SELECT column_name, comment FROM duckdb_columns() WHERE schema_name = ? AND table_name = ?",
                [self.schema, target_table],
            ).fetchall()
        )
        target = self._table(target_table)
        for column in relation.columns:
            if column.number:
                self._record_source_column(
                    conn, target, column.name, column.number, comments.get(column.name)
                )

    def _record_source_column(self, conn, target: str, name: str, number: int, comment: str | None) -> None:
        """Both marks in a column's comment are Rosetta's: the source column it holds, then
        (if it has one) that it holds the values' exact form; setting one keeps the other."""
        text = schema_changes.source_column_comment(number)
        exact = _exact_form_mark(comment)
        if exact:
            text = f"{text} {exact}"
        conn.execute(f"COMMENT ON COLUMN {target}.{quote(name)} IS '{text}'")

    def _fill(self, conn, target: str, column, text: str | None, dialect=DIALECT) -> None:
        """Every row's `column` := the value whose PostgreSQL text form is `text` (cast as CDC values are)."""
        name = column.name
        if text is None:
            conn.execute(f"UPDATE {target} SET {quote(name)} = NULL")
            return
        array, expression = arrow_text_column([text], dialect.column_type(column), column.type_oid)
        conn.register("_rosetta_fill", pa.Table.from_arrays([array], names=["c0"]))
        conn.execute(
            f"UPDATE {target} SET {quote(name)} = (SELECT {expression.format(quote('c0'))} FROM _rosetta_fill)"
        )
        conn.unregister("_rosetta_fill")
