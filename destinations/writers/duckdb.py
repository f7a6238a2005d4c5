"""The DuckDB destination: an embedded database file on the workers.

Target tables live in the file's `main` schema (or settings["schema"]) under
the pipeline table's target name, with the types of
destinations.writers.types.duckdb_type (DECIMAL(p,s) up to 38 digits, VARCHAR
for a wider or unconstrained numeric, JSON for json/jsonb, LISTs for arrays,
VARCHAR for user-defined types), and Rosetta's columns:

- `_rosetta_lsn BIGINT`: commit LSN of the row's last change, as a number (the
  snapshot LSN for rows from a snapshot); lsn_to_str() shows it as '16/B374D848'.
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
import io
import json
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from pipelines.engine import pgtypes
from pipelines.engine.batch import UNCHANGED, ApplyResult, lsn_to_str

from . import types
from .base import (
    CHECKPOINTS,
    REJECTS,
    ConnectionProblem,
    IncompatibleSchemaChange,
    Writer,
    dump_state,
    like_pattern,
    load_state,
    unchanged_columns_stored_as_null,
)

LSN, SYNCED_AT, DELETED_AT = "_rosetta_lsn", "_rosetta_synced_at", "_rosetta_deleted_at"
META_COLUMNS = {LSN: "BIGINT", SYNCED_AT: "TIMESTAMP WITH TIME ZONE", DELETED_AT: "TIMESTAMP WITH TIME ZONE"}
DROPPED_COMMENT = "Rosetta: dropped on the source; kept here, no longer updated."
LOCK_WAIT_SECONDS = 30
# DuckDB's buffer cap for merges (a big batch's updates live in memory until commit)
# and, lower, for snapshot loads, where the cache would otherwise grow with the table.
# settings["memory_limit"] / settings["snapshot_memory_limit"] override them.
MEMORY_LIMIT = "1GB"
SNAPSHOT_MEMORY_LIMIT = "64MB"
CSV_BLOCK_SIZE = 1 << 20

_INTEGER_RANK = {"SMALLINT": 1, "INTEGER": 2, "BIGINT": 3}
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


def can_widen(old: str, new: str) -> bool:
    """True if ALTER COLUMN ... TYPE new keeps every value the column holds."""
    if new == "VARCHAR":
        return True
    if old in _INTEGER_RANK and new in _INTEGER_RANK:
        return _INTEGER_RANK[new] >= _INTEGER_RANK[old]
    if old == "FLOAT" and new == "DOUBLE":
        return True
    new_ps = decimal_precision_scale(new)
    old_ps = (_INTEGER_DIGITS[old], 0) if old in _INTEGER_DIGITS else decimal_precision_scale(old)
    if new_ps and old_ps:
        return new_ps[0] - new_ps[1] >= old_ps[0] - old_ps[1] and new_ps[1] >= old_ps[1]
    return False


def from_text(expression: str, duck_type: str, csv: bool = False) -> str:
    """SQL turning PostgreSQL's text form of a value into `duck_type`.

    Intervals lose the '+' PostgreSQL writes before a positive time part after
    a negative day count, which DuckDB does not read; arrays arrive as JSON
    (Writer.snapshot_columns asks the source for array_to_json); bytea in a COPY
    is hex ('\\x0102').
    """
    if duck_type == "VARCHAR":
        return expression
    if duck_type == "INTERVAL":
        return f"CAST(replace({expression}, '+', '') AS INTERVAL)"
    if duck_type.endswith("[]"):
        return f"CAST(CAST({expression} AS JSON) AS {duck_type})"
    if duck_type == "BLOB" and csv:
        return f"unhex(substr({expression}, 3))"
    return f"CAST({expression} AS {duck_type})"


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
    cannot read) are converted to Python lists first."""
    if duck_type.endswith("[]"):
        convert = pgtypes.converter(type_oid)
        return arrow_column([None if v is None else convert(v.encode()) for v in values], duck_type)
    return pa.array(values, pa.string()), from_text("{}", duck_type, csv=True)


class _ChunkFile(io.RawIOBase):
    """A read-only file over an iterator of byte chunks, so Arrow's CSV reader can
    pull the COPY stream block by block without it ever being held whole."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        filled, size = 0, len(buffer)
        while filled < size:
            if not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._pending = memoryview(chunk).cast("B")
                continue
            count = min(size - filled, len(self._pending))
            buffer[filled : filled + count] = self._pending[:count]
            self._pending = self._pending[count:]
            filled += count
        return filled


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
        """Arrays as JSON, which DuckDB casts to LISTs (PostgreSQL's '{...}' it cannot read)."""
        from psycopg import sql

        expressions = super().snapshot_columns(relation)
        for position, column in enumerate(relation.columns):
            if types.duckdb_type(column.type_oid, column.type_modifier).endswith("[]"):
                expressions[position] = sql.SQL("array_to_json({})").format(sql.Identifier(column.name))
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
                    f"Changes up to {lsn_to_str(batch.end_lsn)} were already applied "
                    f"(checkpoint {lsn_to_str(rows[0][0])}): nothing to do."
                )
                return result
            for key in sorted(batch.tables):
                self._apply_table(conn, batch.tables[key], soft_delete, result)
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

    def _rollback(self, conn) -> None:
        self._verified.clear()  # DDL of the failed transaction is gone
        with contextlib.suppress(duckdb.Error):  # no transaction left to roll back
            conn.execute("ROLLBACK")

    def load_snapshot(self, relation, target_table: str, chunks, snapshot_lsn: int) -> int:
        """Arrow's CSV reader parses the COPY stream block by block into a new table,
        which replaces the old one in the same transaction: readers see the old copy
        until the commit, and memory holds a few blocks whatever the table's size."""
        conn = self._connection()
        names = relation.column_names
        duck_types = [types.duckdb_type(c.type_oid, c.type_modifier) for c in relation.columns]
        new_table = self._table(f"_rosetta_new_{target_table}")
        target = self._table(target_table)
        stream = io.BufferedReader(_ChunkFile(chunks), buffer_size=CSV_BLOCK_SIZE)
        conn.execute(
            "SET memory_limit = ?", [self.settings.get("snapshot_memory_limit") or SNAPSHOT_MEMORY_LIMIT]
        )
        conn.execute("BEGIN TRANSACTION")
        try:
            self._ensure_schema(conn)
            conn.execute(
                f"CREATE OR REPLACE TABLE {new_table} ({self._column_definitions(names, duck_types)})"
            )
            if stream.peek(1):
                positional = [f"c{position}" for position in range(len(names))]
                reader = pa_csv.open_csv(
                    stream,
                    # one block parsed at a time, in DuckDB's scan: no read-ahead to hold in memory
                    read_options=pa_csv.ReadOptions(
                        column_names=positional, block_size=CSV_BLOCK_SIZE, use_threads=False
                    ),
                    parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                    convert_options=pa_csv.ConvertOptions(
                        column_types={name: pa.string() for name in positional},
                        null_values=[""],
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=False,
                    ),
                )
                conn.register("_rosetta_snapshot", reader)
                selected = ", ".join(
                    from_text(quote(column), duck_type, csv=True)
                    for column, duck_type in zip(positional, duck_types, strict=True)
                )
                conn.execute(
                    f"INSERT INTO {new_table} SELECT {selected}, {int(snapshot_lsn)}, now(), NULL "
                    "FROM _rosetta_snapshot"
                )
                conn.unregister("_rosetta_snapshot")  # on error, the next register replaces it
            rows = conn.execute(f"SELECT count(*) FROM {new_table}").fetchall()[0][0]
            conn.execute(f"DROP TABLE IF EXISTS {target}")
            conn.execute(f"ALTER TABLE {new_table} RENAME TO {quote(target_table)}")
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        finally:
            self._verified.pop(target_table, None)
            conn.execute("SET memory_limit = ?", [self._memory_limit])
        return rows

    # -- applying one table's changes -----------------------------------------------

    def _apply_table(self, conn, changes, soft_delete: bool, result: ApplyResult) -> None:
        relation = changes.relation
        target = self._table(changes.target_table)
        duck_types = self._ensure_table(conn, relation, changes.target_table, result.notes)
        if not relation.key_columns:
            raise IncompatibleSchemaChange(
                f"Table {relation.schema}.{relation.name} has no primary key (nor replica identity) "
                "on the source, so its changes cannot be matched to destination rows: add a primary "
                "key on the source, then refresh the table."
            )
        if changes.truncated:
            if soft_delete:
                conn.execute(
                    f"UPDATE {target} SET {DELETED_AT} = now(), {SYNCED_AT} = now() WHERE {DELETED_AT} IS NULL"
                )
            else:
                conn.execute(f"DELETE FROM {target}")
            result.notes.append(
                f"{relation.schema}.{relation.name} was truncated on the source: "
                f"{self.schema}.{changes.target_table} emptied"
                + (" (rows kept as soft-deleted)." if soft_delete else ".")
            )
        text_oids = {c.name: c.type_oid for c in relation.columns} if changes.text_values else None
        if changes.deletes:
            result.deleted += self._delete(
                conn, relation, target, changes.deletes, duck_types, soft_delete, text_oids
            )
        if changes.upserts:
            self._upsert(conn, relation, changes.target_table, changes.upserts, duck_types, result, text_oids)

    def _stage(
        self,
        conn,
        columns: list[str],
        duck_types: dict,
        column_values: list[list],
        lsns: list[int],
        text_oids: dict | None = None,
    ) -> str:
        """Register the batch rows as an Arrow table; returns a SELECT over it that
        yields the target's column types. `text_oids` ({column: source type OID})
        when the values are PostgreSQL's text form."""
        arrays, expressions = [], []
        for position, name in enumerate(columns):
            if text_oids is None:
                array, expression = arrow_column(column_values[position], duck_types[name])
            else:
                array, expression = arrow_text_column(
                    column_values[position], duck_types[name], text_oids[name]
                )
            arrays.append(array)
            expressions.append(f"{expression.format(quote(f'c{position}'))} AS {quote(name)}")
        arrays.append(pa.array(lsns, pa.int64()))
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
        self, conn, relation, target_table: str, upserts: dict, duck_types: dict, result, text_oids
    ) -> None:
        """One MERGE per group of rows that share the same unchanged (TOASTed)
        columns, so each group updates only the columns it has values for."""
        groups: dict[frozenset, list] = {}
        no_unchanged = frozenset()
        for row, lsn in upserts.values():
            if UNCHANGED in row.values():
                unchanged = frozenset(name for name, value in row.items() if value is UNCHANGED)
            else:
                unchanged = no_unchanged
            groups.setdefault(unchanged, []).append((row, lsn))
        target = self._table(target_table)
        keys = relation.key_columns
        match = " AND ".join(f"t.{quote(name)} = s.{quote(name)}" for name in keys)
        for unchanged, rows in groups.items():
            columns = [name for name in relation.column_names if name not in unchanged]
            column_values = [[row.get(name) for row, _ in rows] for name in columns]
            stage = self._stage(conn, columns, duck_types, column_values, [lsn for _, lsn in rows], text_oids)
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
    def _column_definitions(names: list[str], duck_types: list[str]) -> str:
        # duck_types come from types.duckdb_type, never from user input
        columns = [f"{quote(name)} {duck_type}" for name, duck_type in zip(names, duck_types, strict=True)]
        columns += [f"{name} {duck_type}" for name, duck_type in META_COLUMNS.items()]
        return ", ".join(columns)

    def _ensure_table(self, conn, relation, target_table: str, notes: list[str]) -> dict:
        """Create the target table, or bring it in line with the relation: add new
        columns, widen types where every value still fits, mark columns the source
        dropped; refuse anything else with a message saying what to do. Returns
        {column: DuckDB type} of the relation's columns."""
        wanted = {c.name: types.duckdb_type(c.type_oid, c.type_modifier) for c in relation.columns}
        signature = (relation.schema, relation.name, tuple(relation.columns))
        if self._verified.get(target_table) == signature:
            return wanted
        target = self._table(target_table)
        existing = conn.execute(
            "SELECT column_name, data_type, is_nullable, comment FROM duckdb_columns() "
            "WHERE schema_name = ? AND table_name = ? ORDER BY column_index",
            [self.schema, target_table],
        ).fetchall()
        if not existing:
            self._ensure_schema(conn)
            conn.execute(
                f"CREATE TABLE {target} ({self._column_definitions(list(wanted), list(wanted.values()))})"
            )
            self._verified[target_table] = signature
            return wanted

        where = f"{self.schema}.{target_table}"
        current = {name: (data_type, nullable, comment) for name, data_type, nullable, comment in existing}
        for name, duck_type in wanted.items():
            if name not in current:
                conn.execute(f"ALTER TABLE {target} ADD COLUMN {quote(name)} {duck_type}")
                notes.append(f"Column {name} ({duck_type}) added to {where}.")
                continue
            old_type = current[name][0]
            if old_type == duck_type:
                continue
            if not can_widen(old_type, duck_type):
                raise IncompatibleSchemaChange(
                    f"Column {name} of {relation.schema}.{relation.name} changed type on the source, so "
                    f"that it would now be {duck_type} in DuckDB, but the destination table {where} holds "
                    f"{old_type} and cannot be converted without losing values: refresh the table "
                    f"{relation.schema}.{relation.name} in the pipeline so that it is copied again with "
                    "the new type."
                )
            conn.execute(f"ALTER TABLE {target} ALTER COLUMN {quote(name)} TYPE {duck_type}")
            notes.append(f"Column {name} of {where} widened from {old_type} to {duck_type}.")
        for name, meta_type in META_COLUMNS.items():
            if name not in current:
                conn.execute(f"ALTER TABLE {target} ADD COLUMN {name} {meta_type}")
        for name, (_, nullable, comment) in current.items():
            if name in META_COLUMNS:
                continue
            column = f"{target}.{quote(name)}"
            if name in wanted:
                if comment == DROPPED_COMMENT:  # the column is back on the source
                    conn.execute(f"COMMENT ON COLUMN {column} IS NULL")
                continue
            if comment == DROPPED_COMMENT:
                continue  # reported when it was first seen
            if not nullable:
                conn.execute(f"ALTER TABLE {target} ALTER COLUMN {quote(name)} DROP NOT NULL")
            conn.execute(f"COMMENT ON COLUMN {column} IS '{DROPPED_COMMENT}'")
            notes.append(
                f"Column {name} is no longer in {relation.schema}.{relation.name}: it stays in {where} "
                "(nullable) with its old values and is no longer updated; new rows have NULL there."
            )
        self._verified[target_table] = signature
        return wanted
