"""The PostgreSQL destination.

Target tables live in the destination's schema (settings["schema"], default
public) under the pipeline table's target name. Columns keep the source's
types (built-in types by OID and modifier, spelled by the destination's own
format_type; user-defined types such as enums, domains or citext as text), the
primary key is the source's key, and Rosetta adds:

- `_rosetta_lsn bigint`: commit LSN of the row's last change, as a number
  (`'0/0'::pg_lsn + _rosetta_lsn` shows it as an LSN); the snapshot LSN for rows
  that came from a snapshot.
- `_rosetta_synced_at timestamptz`: when Rosetta's transaction wrote the row.
- `_rosetta_deleted_at timestamptz`: set instead of deleting the row when the
  pipeline keeps soft deletes; NULL otherwise.

`_rosetta_checkpoints (pipeline_key text PK, lsn bigint, updated_at timestamptz, state text)`
in the same schema holds each pipeline's last applied end LSN (for a batch
source: its part number, and in `state` the reader's position as JSON), written
in the same transaction as the rows. `_rosetta_rejects` keeps the records a
batch source could not load (file or URL, line, reason, raw text), written in
the same transaction too.
"""

import hashlib
import json
import logging
import struct
import time
from dataclasses import dataclass
from functools import partial
from operator import itemgetter

import psycopg
from psycopg import sql
from psycopg.copy import LibpqWriter, QueuedLibpqWriter
from psycopg.pq import TransactionStatus

from engine.batch import ApplyResult, SchemaAlignment
from engine.fold import _fastfold
from engine.lsn import format_lsn
from engine.pgtypes import BINARY_COPY_KINDS
from engine.preflight import describe_connection_error

from . import schema_changes, types
from .base import (
    CHECKPOINTS,
    DELETED_AT,
    LSN,
    REJECTS,
    SYNCED_AT,
    ConnectionProblem,
    Writer,
    dump_state,
    group_by_unchanged,
    like_pattern,
    load_state,
    truncated_note,
    unchanged_columns_stored_as_null,
)

DROPPED_COMMENT = schema_changes.DROPPED_COMMENT
# maintenance_work_mem for building a snapshot's primary key, for that transaction only.
SNAPSHOT_INDEX_MEMORY = "256MB"

log = logging.getLogger(__name__)


def target_type(column) -> tuple[int, int]:
    """(type OID, modifier) of the destination column: the source's for a built-in
    type, text for a user-defined one (the source sends its text form)."""
    if types.is_builtin(column.type_oid):
        return column.type_oid, column.type_modifier
    return types.TEXT, -1


class PostgresDialect(schema_changes.Dialect):
    """Destination types are the source's own (OID, modifier); ALTER ... TYPE converts any widening."""

    def column_type(self, column):
        return target_type(column)

    def source_type(self, destination_type):
        return destination_type

    def type_name(self, destination_type) -> str:
        return types.type_name(*destination_type)


DIALECT = PostgresDialect()
META_TYPES = {LSN: (types.INT8, -1), SYNCED_AT: (types.TIMESTAMPTZ, -1), DELETED_AT: (types.TIMESTAMPTZ, -1)}


class PostgresWriter(Writer):
    kind = "postgres"
    # Binary COPY straight from the source into a table with the same column types:
    # no value is parsed on the way.
    snapshot_format = "binary"
    # CDC values go into a text COPY: PostgreSQL's own text form needs no conversion.
    accepts_text_values = True
    # ... or, where every column's type allows (_binary_kinds), a binary COPY converted from
    # that text by engine/_fastfold.pyx: the destination backend then parses no text (COPY's
    # text parsing was ~40% of its CPU). False sends every CDC COPY as text (the tests
    # compare the two).
    binary_copy = True
    # Below this many upserts in a table's part, text it is: the check of the target's types
    # (in the part's first round trip, or a round trip of its own for a table new to the
    # writer) and its lock from the part's start cost more than the server saves in parsing
    # a few rows.
    binary_copy_min_rows = 1000

    @property
    def reads_wire_rows(self) -> bool:
        """The binary COPY reads rows kept as pgoutput's bytes where they are: no dict and no
        str per value to make, read and free (bench/README.md: the fold of the bench's backlog
        in 0.84-1.18 s of CPU instead of 1.33-1.44 s). A table whose rows go otherwise is
        materialized first (prepare_batch, _apply_table)."""
        return self.binary_copy and _fastfold is not None

    def __init__(self, settings: dict, connect_timeout: int = 10):
        super().__init__(settings, connect_timeout)
        self._conn = None
        self._verified = {}  # target table -> relation signature already checked against it
        # target table -> whether it has a primary key, which refuses a fresh key already
        # there (a table made by hand may have none: then every row takes the merge)
        self._keyed: dict[str, bool] = {}
        # target tables whose schema this writer changed: their CDC COPYs stay text
        self._altered: set[str] = set()
        # target tables where a key the fold saw first inserted was there already (a
        # soft-deleted row inserted again, a row written by hand): every row of theirs takes
        # the merge from then on, so that a part is not applied twice again
        self._merge_only: set[str] = set()
        # Seconds per step of the last load_snapshot (prepare, load, key, swap, commit),
        # for the benchmarks' breakdown of where a snapshot's time goes.
        self.snapshot_seconds: dict[str, float] = {}

    @property
    def schema(self) -> str:
        return self.settings.get("schema") or "public"

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
                # text goes out as UTF-8 (the COPY text of engine/_fastfold.pyx is); the
                # server converts it to the database's encoding
                client_encoding="UTF8",
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

    # -- the CDC contract ---------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            # prepare_threshold None: psycopg would prepare the merge after five parts (a
            # round trip), then deallocate everything at the next staging table's DROP (another)
            self._conn = self.connect(autocommit=True, prepare_threshold=None)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    def read_checkpoint(self, pipeline_key: str) -> int:
        conn = self._connection()
        if not self._table_exists(conn, CHECKPOINTS):
            return 0
        row = conn.execute(
            sql.SQL("SELECT lsn FROM {} WHERE pipeline_key = %s").format(self._table(CHECKPOINTS)),
            [pipeline_key],
        ).fetchone()
        return row[0] if row else 0

    def read_checkpoint_state(self, pipeline_key: str) -> tuple[int, dict | None]:
        conn = self._connection()
        if not self._table_exists(conn, CHECKPOINTS):
            return 0, None
        self._ensure_checkpoint_table(conn)
        row = conn.execute(
            sql.SQL("SELECT lsn, state FROM {} WHERE pipeline_key = %s").format(self._table(CHECKPOINTS)),
            [pipeline_key],
        ).fetchone()
        return (row[0], load_state(row[1])) if row else (0, None)

    def reset_checkpoint(self, pipeline_key: str) -> bool:
        conn = self._connection()
        if not self._table_exists(conn, CHECKPOINTS):
            return False
        deleted = conn.execute(
            sql.SQL("DELETE FROM {} WHERE pipeline_key = %s").format(self._table(CHECKPOINTS)), [pipeline_key]
        ).rowcount
        return bool(deleted)

    def _write_rejects(self, conn, pipeline_key: str, rejects: list[tuple]) -> None:
        table = self._table(REJECTS)
        if REJECTS not in self._verified:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (pipeline_key text NOT NULL, origin text NOT NULL, "
                    "line bigint, reason text NOT NULL, record text, rejected_at timestamptz NOT NULL DEFAULT now())"
                ).format(table)
            )
            self._verified[REJECTS] = True
        with (
            conn.cursor() as cur,
            cur.copy(
                sql.SQL("COPY {} (pipeline_key, origin, line, reason, record) FROM STDIN").format(table)
            ) as copy,
        ):
            for origin, line, reason, raw in rejects:
                copy.write_row([pipeline_key, origin, line, reason, raw])

    def count_rows(self, table: str) -> int | None:
        conn = self._connection()
        if not self._table_exists(conn, table):
            return None
        return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._table(table))).fetchone()[0]

    def preview_rows(self, table: str, offset: int, limit: int, search: str = "") -> tuple[list, list, int]:
        conn = self._connection()
        if not self._table_exists(conn, table):
            return [], [], 0
        where, params = sql.SQL(""), []
        if search:
            where, params = sql.SQL(" WHERE t::text ILIKE %s"), [like_pattern(search)]
        target = self._table(table)
        total = conn.execute(
            sql.SQL("SELECT count(*) FROM {} AS t").format(target) + where, params
        ).fetchone()[0]
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT * FROM {} AS t").format(target)
                + where
                + sql.SQL(" ORDER BY ctid LIMIT %s OFFSET %s"),
                [*params, limit, offset],
            )
            columns = [column.name for column in cur.description]
            rows = cur.fetchall()
        return columns, rows, total

    def apply_batch(self, pipeline_key: str, batch, soft_delete: bool = False) -> ApplyResult:
        if batch.is_empty:
            return ApplyResult()
        while True:
            try:
                return self._apply_batch_once(pipeline_key, batch, soft_delete)
            except _FreshKeyFound as found:
                # the transaction is rolled back; the part again, that table's rows all merged
                log.info(
                    "A row inserted into %s.%s is already in %s.%s: merging instead",
                    found.relation.schema,
                    found.relation.name,
                    self.schema,
                    found.target_table,
                )
                self._merge_only.add(found.target_table)

    def _apply_batch_once(self, pipeline_key: str, batch, soft_delete: bool) -> ApplyResult:
        """One destination transaction: _begin's round trip, the tables' changes, then
        _commit's round trip. Round trips are what a part costs most when the destination
        is across a network."""
        result = ApplyResult()
        conn = self._connection()
        self._ensure_checkpoint_table(conn)  # once per writer, committed on its own
        verified = dict(self._verified)
        try:
            checkpoint, synced, types_read = self._begin(conn, pipeline_key, batch)
            if checkpoint is not None and batch.end_lsn <= checkpoint:
                result.notes.append(
                    f"Changes up to {format_lsn(batch.end_lsn)} were already applied "
                    f"(checkpoint {format_lsn(checkpoint)}): nothing to do."
                )
                conn.rollback()
                return result
            for key in sorted(batch.tables):
                self._apply_table(conn, batch.tables[key], soft_delete, result, synced, types_read)
            if batch.rejects:
                self._write_rejects(conn, pipeline_key, batch.rejects)
            if self.before_commit_hook:
                self.before_commit_hook()
            self._commit(conn, pipeline_key, batch)
        except _FreshKeyFound:
            # retried at once: the DDL of this transaction is rolled back, what it verified is not so
            self._verified.clear()
            self._verified.update(verified)
            self._roll_back(conn)
            raise
        except BaseException:
            self._verified.clear()  # a table changed by hand, say: checked again next time
            self._roll_back(conn)
            raise
        return result

    def _begin(self, conn, pipeline_key: str, batch) -> tuple[int | None, "_SyncedAt", dict]:
        """BEGIN, in one round trip with the checkpoint, locked (None: there is none yet), and
        what the rows' _rosetta_synced_at will be: the transaction's start, in ISO form with
        its offset (it reads back the same whatever DateStyle and TimeZone the session has)
        and in its binary form, microseconds since 2000-01-01 UTC (946684800 s after 1970;
        exact from PostgreSQL 14, where extract gives numeric, and to the microsecond
        before). With them, the lock and column types ({target: [(column, type OID)]}) of
        each table that may take a binary COPY and was checked already (it exists, and its
        shape is the relation's), but not one truncated first: its TRUNCATE takes the stronger
        lock first, as before, rather than upgrading this one under a reader's. Values as
        literals: a query of several statements takes no parameters."""
        ahead = [
            changes.target_table
            for _, changes in sorted(batch.tables.items())
            if self._binary_candidate(changes)
            and self._verified.get(changes.target_table) == _signature(changes.relation)
            and not changes.truncated
        ]
        begun = conn.execute(
            sql.SQL("; ").join(
                [
                    sql.SQL(
                        "BEGIN; SELECT (SELECT lsn FROM {} WHERE pipeline_key = {} FOR UPDATE), "
                        "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00', "
                        "((extract(epoch FROM now()) - 946684800) * 1000000)::int8"
                    ).format(self._table(CHECKPOINTS), sql.Literal(pipeline_key)),
                    *(self._lock_and_read_types(target_table) for target_table in ahead),
                ]
            )
        )
        begun.nextset()
        checkpoint, synced_at, synced_at_binary = begun.fetchone()
        types_read = {}
        for target_table in ahead:
            begun.nextset()  # the LOCK
            begun.nextset()
            types_read[target_table] = [(column.name, column.type_code) for column in begun.description]
        return checkpoint, _SyncedAt(synced_at, struct.pack("!q", synced_at_binary)), types_read

    def _commit(self, conn, pipeline_key: str, batch) -> None:
        """The checkpoint's write and the COMMIT, in one round trip."""
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (pipeline_key, lsn, updated_at, state) VALUES ({}, {}, now(), {}) "
                "ON CONFLICT (pipeline_key) DO UPDATE SET lsn = EXCLUDED.lsn, updated_at = now(), "
                "state = EXCLUDED.state; COMMIT"
            ).format(
                self._table(CHECKPOINTS),
                sql.Literal(pipeline_key),
                sql.Literal(batch.end_lsn),
                sql.Literal(dump_state(batch.checkpoint_state)),
            )
        )

    def _roll_back(self, conn) -> None:
        """End a failed batch transaction. A connection that cannot take the ROLLBACK (gone,
        or busy with what failed) is closed: the next batch connects again."""
        if conn.closed or conn.info.transaction_status == TransactionStatus.IDLE:
            return
        try:
            conn.rollback()
        except psycopg.Error:
            conn.close()
        except BaseException:  # interrupted: not left inside the transaction either
            conn.close()
            raise

    def load_snapshot(self, relation, target_table: str, chunks, snapshot_lsn: int) -> int:
        """Binary COPY into a new table, primary key built after the load, then the
        old table is dropped and the new one renamed, all in one transaction:
        readers see the old copy until the commit."""
        conn = self._connection()
        digest = hashlib.md5(target_table.encode()).hexdigest()[:16]
        new_name, new_key = f"_rosetta_new_{digest}", f"_rosetta_new_{digest}_pkey"
        new_table = self._table(new_name)
        columns = sql.SQL(", ").join(sql.Identifier(name) for name in relation.column_names)
        steps = self.snapshot_seconds = {}
        started = time.perf_counter()

        def step(name: str) -> None:
            nonlocal started
            now = time.perf_counter()
            steps[name] = now - started
            started = now

        try:
            with conn.transaction():
                self._ensure_schema(conn)
                type_names = self._type_names(conn, [target_type(c) for c in relation.columns])
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(new_table))
                # The key columns are NOT NULL from the start (the COPY checks each row):
                # otherwise ADD PRIMARY KEY scans the whole table again to check them.
                conn.execute(
                    sql.SQL("CREATE TABLE {} ({})").format(
                        new_table,
                        self._column_definitions(
                            relation.column_names, type_names, not_null=schema_changes.require_key(relation)
                        ),
                    )
                )
                step("prepare")
                with conn.cursor() as cur:
                    with cur.copy(
                        sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary, FREEZE)").format(new_table, columns)
                    ) as copy:
                        for chunk in chunks:
                            copy.write(chunk)
                    rows = cur.rowcount
                step("load")
                # The bookkeeping columns come after the load, with constant defaults: PostgreSQL
                # keeps such a value once in the catalog for the rows already there, so the COPY
                # neither computes them per row nor stores them in each row and in the WAL.
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} ADD {} bigint DEFAULT {}, ADD {} timestamptz DEFAULT now(), ADD {} timestamptz"
                    ).format(
                        new_table,
                        sql.Identifier(LSN),
                        sql.Literal(snapshot_lsn),
                        sql.Identifier(SYNCED_AT),
                        sql.Identifier(DELETED_AT),
                    )
                )
                # The key's sort in memory (and in parallel workers) rather than on disk.
                conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", [SNAPSHOT_INDEX_MEMORY])
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} ALTER {} DROP DEFAULT, ALTER {} DROP DEFAULT, "
                        "ADD CONSTRAINT {} PRIMARY KEY ({})"
                    ).format(
                        new_table,
                        sql.Identifier(LSN),
                        sql.Identifier(SYNCED_AT),
                        sql.Identifier(new_key),
                        self._key_list(relation),
                    )
                )
                step("key")
                self._swap_in(conn, relation, new_name, new_key, target_table)
                self._record_source_columns(conn, self._table(target_table), relation)
                step("swap")
            step("commit")
        finally:
            self._verified.pop(target_table, None)
        return rows

    def _swap_in(self, conn, relation, new_name: str, new_key: str, target_table: str) -> None:
        target = self._table(target_table)
        if self._table_exists(conn, target_table):
            try:
                with conn.transaction():  # a savepoint: a failed DROP leaves the load intact
                    conn.execute(sql.SQL("DROP TABLE {}").format(target))
            except psycopg.errors.DependentObjectsStillExist:
                # Views (or other objects) use the table: keep it and replace its rows
                # instead. DELETE, not TRUNCATE, so that readers keep the old rows until commit.
                self._ensure_table(conn, relation, target_table, notes=[])
                names = [*relation.column_names, LSN, SYNCED_AT, DELETED_AT]
                column_list = sql.SQL(", ").join(sql.Identifier(name) for name in names)
                conn.execute(sql.SQL("DELETE FROM {}").format(target))
                conn.execute(
                    sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                        target, column_list, column_list, self._table(new_name)
                    )
                )
                conn.execute(sql.SQL("DROP TABLE {}").format(self._table(new_name)))
                return
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(self._table(new_name), sql.Identifier(target_table))
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                target, sql.Identifier(new_key), sql.Identifier(f"{target_table}_pkey")
            )
        )

    # -- applying one table's changes -----------------------------------------------

    def _apply_table(
        self, conn, changes, soft_delete: bool, result: ApplyResult, synced: "_SyncedAt", types_read: dict
    ) -> None:
        relation = changes.relation
        target = self._table(changes.target_table)
        recopy = self._ensure_table(conn, relation, changes.target_table, result.notes, changes.column_fills)
        if recopy:
            result.recopy[(relation.schema, relation.name)] = recopy
        if changes.truncated:
            if soft_delete:
                conn.execute(
                    sql.SQL("UPDATE {} SET {} = now(), {} = now() WHERE {} IS NULL").format(
                        target,
                        sql.Identifier(DELETED_AT),
                        sql.Identifier(SYNCED_AT),
                        sql.Identifier(DELETED_AT),
                    )
                )
            else:
                conn.execute(sql.SQL("TRUNCATE {}").format(target))
            result.notes.append(
                truncated_note(relation, f"{self.schema}.{changes.target_table}", soft_delete)
            )
        # Text values (TableChanges.text_values) go into COPY as they are; typed
        # json values need dumping back to JSON text first.
        json_positions = (lambda columns: []) if changes.text_values else partial(_json_positions, relation)
        if changes.deletes:
            result.deleted += self._delete(
                conn, relation, target, changes.deletes, soft_delete, json_positions
            )
        if changes.upserts:
            upserts = changes.upserts
            kinds = (
                self._binary_kinds(conn, relation, changes.target_table, types_read.get(changes.target_table))
                if self._binary_candidate(changes)
                else {}
            )
            fresh = self._fresh(changes)
            prepared, changes.prepared = changes.prepared, None  # not kept with the part once used
            if not (
                isinstance(prepared, _Prepared)
                and (fresh or not prepared.fresh_rows)  # split as this transaction splits
                and prepared.fits(relation, kinds)
            ):
                prepared = None
            if prepared:
                rows, rest = prepared.fresh_rows, prepared.rest
            else:
                changes.materialize()  # in place: `upserts` is that dict
                rows, rest = _split_fresh(upserts, fresh)
            if rows:
                result.inserted += self._insert_fresh(
                    conn,
                    relation,
                    changes.target_table,
                    rows,
                    json_positions,
                    changes.text_values,
                    kinds,
                    synced,
                    prepared.fresh_payload if prepared else None,
                )
                upserts = rest
            if upserts:
                self._upsert(
                    conn,
                    relation,
                    changes.target_table,
                    upserts,
                    result,
                    json_positions,
                    changes.text_values,
                    kinds,
                    prepared.rest_payload if prepared else None,
                )

    def prepare_batch(self, batch) -> None:
        """The binary COPYs of each large table's fresh rows and merged rows, made in the
        run's reading thread while the part before is applied: the applier then only checks,
        under its lock, that the target's types are still those the payloads were made for
        (_Prepared.fits) and sends them. Made for the types the source sends; a target
        whose types differ is found then, and its rows are made anew in the transaction."""
        for changes in batch.tables.values():
            if not self._binary_candidate(changes):  # as the applier will decide, bar its type check
                changes.materialize()
                continue
            oids = self._expected_types(changes.relation)
            kinds = {name: BINARY_COPY_KINDS[oid] for name, oid in oids.items() if oid in BINARY_COPY_KINDS}
            columns = changes.relation.column_names
            fresh = self._fresh(changes, keyed_if_unknown=True)
            rows, rest = _split_fresh(changes.upserts, fresh)
            fresh_payload = (
                _copy_binary(rows, columns, kinds, {SYNCED_AT: _SYNCED_AT_PLACEHOLDER}) if rows else None
            )
            groups = group_by_unchanged(rest) if rest else {}
            rest_payload = None
            if list(groups) == [frozenset()]:
                rest_payload = _copy_binary(groups[frozenset()], columns, kinds)
            if (rows and fresh_payload is None) or (rest and rest_payload is None):
                # rows without a payload are made in the transaction, from their dicts
                changes.materialize()
                rows, rest = _split_fresh(changes.upserts, fresh)
            if fresh_payload is None and rest_payload is None:
                continue
            changes.prepared = _Prepared(
                tuple(kinds.get(name) for name in [*columns, LSN, SYNCED_AT]),
                columns,
                rows,
                rest,
                fresh_payload,
                rest_payload,
            )

    def _fresh(self, changes, keyed_if_unknown: bool = False) -> set:
        """The keys whose rows may go straight into the table by COPY: none where no primary
        key would refuse one that is there already (a table made by hand), nor where one was
        found there in this writer's life (_merge_only). `keyed_if_unknown`: prepare_batch,
        ahead of the transaction that checks the table; the applier drops a payload made for
        other keys than its own."""
        keyed = self._keyed.get(changes.target_table, keyed_if_unknown)
        return changes.fresh if keyed and changes.target_table not in self._merge_only else set()

    def _expected_types(self, relation) -> dict[str, int]:
        """{column: type OID} a target made for `relation` has, the metadata columns included."""
        expected = {column.name: target_type(column)[0] for column in relation.columns}
        expected.update({name: oid for name, (oid, _) in META_TYPES.items()})
        return expected

    def _binary_candidate(self, changes) -> bool:
        """Whether a table's upserts in this part may go as binary COPY: enough of them that
        the check of the target's types pays, and a column whose type copy_binary converts.
        Not for a table whose schema this writer changed (conservatively, all text)."""
        return (
            _fastfold is not None
            and self.binary_copy
            and changes.text_values
            and len(changes.upserts) >= self.binary_copy_min_rows
            and changes.target_table not in self._altered
            and any(target_type(column)[0] in BINARY_COPY_KINDS for column in changes.relation.columns)
        )

    def _lock_and_read_types(self, target_table: str) -> sql.Composed:
        """The target's lock, which its COPY and merge take anyway, then its column types as a
        statement sees them under it, as the COPY will: not pg_attribute, which a REPEATABLE
        READ transaction would read as of its snapshot, before a type change committed since
        (its binary int4 1094861636 then stored as the text 'ABCD'). No type change can
        come between this read and the end of the transaction."""
        return sql.SQL("LOCK TABLE {0} IN ROW EXCLUSIVE MODE; SELECT * FROM {0} LIMIT 0").format(
            self._table(target_table)
        )

    def _binary_kinds(self, conn, relation, target_table: str, read: list | None) -> dict[str, str]:
        """{column: copy_binary kind} for the target's columns that a CDC COPY may send in
        binary: the kind converts the text form of the relation's type, and the target
        column has that very type (a column changed by hand may not). `read`: the target's
        (column, type OID) as the transaction's first round trip read them under the lock;
        None: read now."""
        if read is None:
            with conn.cursor() as cur:
                cur.execute(self._lock_and_read_types(target_table))
                cur.nextset()
                read = [(column.name, column.type_code) for column in cur.description]
        expected = self._expected_types(relation)
        return {
            name: BINARY_COPY_KINDS[oid]
            for name, oid in read
            if oid == expected.get(name) and oid in BINARY_COPY_KINDS
        }

    def _stage(
        self,
        conn,
        target,
        columns: list[str],
        rows,
        json_positions: list,
        text: bytes | None = None,
        binary: bytearray | None = None,
    ) -> sql.Identifier:
        """COPY rows into a temporary table shaped like the target's `columns` (the same
        types, so `binary` made for the target fits), in text format unless `binary` is
        given: each value is dumped by its Python type and parsed by the column's type,
        so a value the source kept as text (e.g. 'infinity') lands as well as a typed one."""
        stage = sql.Identifier("_rosetta_stage")
        column_list = sql.SQL(", ").join(sql.Identifier(name) for name in columns)
        conn.execute(  # one round trip: no parameters, so psycopg sends both as one query
            sql.SQL(
                "DROP TABLE IF EXISTS {0}; CREATE TEMP TABLE {0} ON COMMIT DROP AS SELECT {1} FROM {2} WITH NO DATA"
            ).format(stage, column_list, target)
        )
        self._copy_rows(conn, stage, columns, rows, json_positions, text, binary)
        return stage

    @staticmethod
    def _copy_rows(
        conn,
        table,
        columns: list[str],
        rows,
        json_positions: list,
        text: bytes | None = None,
        binary: bytearray | None = None,
    ) -> int:
        """COPY into `table`: `binary` when _copy_binary made it, else in text format:
        `text` when _copy_text made it, else `rows` (lists in `columns` order) formatted by
        psycopg."""
        column_list = sql.SQL(", ").join(sql.Identifier(name) for name in columns)
        options = sql.SQL(" (FORMAT binary)" if binary is not None else "")
        payload = binary if binary is not None else text
        with conn.cursor() as cur:
            # Rows formatted here: a writer thread sends while this one formats, so the server
            # parses in parallel. A payload made already is sent by this thread (no thread to
            # start and hand chunks to), in slices of a memoryview (no chunk copied).
            with cur.copy(
                sql.SQL("COPY {} ({}) FROM STDIN{}").format(table, column_list, options),
                writer=LibpqWriter(cur) if payload is not None else QueuedLibpqWriter(cur),
            ) as copy:
                if payload is not None:
                    copy.write(memoryview(payload))
                else:
                    for values in rows:
                        for position, is_array in json_positions:
                            if values[position] is not None:
                                values[position] = _dump_json(values[position], is_array)
                        copy.write_row(values)
            return cur.rowcount

    def _insert_fresh(
        self,
        conn,
        relation,
        target_table: str,
        rows: list,
        json_positions,
        text_values: bool,
        kinds: dict,
        synced: "_SyncedAt",
        prepared: bytearray | None = None,
    ) -> int:
        """Rows under keys the destination should not hold (TableChanges.fresh) go
        straight into the table by COPY: no staging table and no conflict check, which
        is most of the merge's cost when most changes are inserts. If one is there
        after all (a row written by hand, a soft-deleted row), _FreshKeyFound: the
        transaction is rolled back and apply_batch applies the part again with this
        table's rows merged. No savepoint: it would cost two round trips per part to
        guard against what happens at most once per table and writer."""
        columns = relation.column_names
        if prepared is not None:
            _fastfold.set_last_fields(prepared, synced.binary)
            binary = prepared
        else:
            binary = _copy_binary(rows, columns, kinds, {SYNCED_AT: synced.binary})
        text = _copy_text(rows, columns, "\t" + synced.text) if text_values and binary is None else None
        values = ([*row, synced.text] for row in _row_values(rows, columns))
        try:
            return self._copy_rows(
                conn,
                self._table(target_table),
                [*columns, LSN, SYNCED_AT],
                values,
                json_positions(columns),
                text,
                binary,
            )
        except psycopg.errors.UniqueViolation as error:
            raise _FreshKeyFound(relation, target_table) from error

    def _delete(self, conn, relation, target, deletes: dict, soft_delete: bool, json_positions) -> int:
        keys = relation.key_columns
        rows = ([*key, lsn] for key, lsn in deletes.items())
        stage = self._stage(conn, target, [*keys, LSN], rows, json_positions(keys))
        match = sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(sql.Identifier(name)) for name in keys)
        if soft_delete:
            statement = sql.SQL(
                "UPDATE {} AS t SET {} = now(), {} = now(), {} = s.{} FROM {} AS s WHERE {} AND t.{} IS NULL"
            ).format(
                target,
                sql.Identifier(DELETED_AT),
                sql.Identifier(SYNCED_AT),
                sql.Identifier(LSN),
                sql.Identifier(LSN),
                stage,
                match,
                sql.Identifier(DELETED_AT),
            )
        else:
            statement = sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {}").format(target, stage, match)
        return conn.execute(statement).rowcount

    def _upsert(
        self,
        conn,
        relation,
        target_table: str,
        upserts: dict,
        result: ApplyResult,
        json_positions,
        text_values: bool,
        kinds: dict,
        prepared: bytes | None = None,
    ) -> None:
        """Merge per group of rows that share the same unchanged (TOASTed) columns,
        so each group updates only the columns it has values for. `prepared`: the binary
        COPY of the one group without unchanged columns, made by prepare_batch."""
        # a prepared payload was made for rows without unchanged columns only, in one group
        groups = (
            {frozenset(): list(upserts.values())} if prepared is not None else group_by_unchanged(upserts)
        )
        target = self._table(target_table)
        keys = relation.key_columns
        for unchanged, rows in groups.items():
            columns = [name for name in relation.column_names if name not in unchanged]
            binary = prepared if prepared is not None else _copy_binary(rows, columns, kinds)
            stage = self._stage(
                conn,
                target,
                [*columns, LSN],
                _row_values(rows, columns),
                json_positions(columns),
                _copy_text(rows, columns) if text_values and binary is None else None,
                binary,
            )
            updates = [
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name))
                for name in [*columns, LSN, SYNCED_AT]
                if name not in keys
            ]
            updates.append(sql.SQL("{} = NULL").format(sql.Identifier(DELETED_AT)))
            column_list = sql.SQL(", ").join(sql.Identifier(name) for name in [*columns, LSN])
            inserted, updated = conn.execute(
                sql.SQL(
                    "WITH merged AS (INSERT INTO {} AS t ({}, {}) SELECT {}, now() FROM {} "
                    "ON CONFLICT ({}) DO UPDATE SET {} RETURNING t.xmax = 0 AS inserted) "
                    "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged"
                ).format(
                    target,
                    column_list,
                    sql.Identifier(SYNCED_AT),
                    column_list,
                    stage,
                    self._key_list(relation),
                    sql.SQL(", ").join(updates),
                )
            ).fetchone()
            result.inserted += inserted
            result.updated += updated
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
        return (
            conn.execute(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
                [self.schema, name],
            ).fetchone()
            is not None
        )

    def _ensure_schema(self, conn) -> None:
        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))

    def _ensure_checkpoint_table(self, conn) -> None:
        if CHECKPOINTS in self._verified:
            return
        if not self._table_exists(conn, CHECKPOINTS):
            self._ensure_schema(conn)
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (pipeline_key text PRIMARY KEY, lsn bigint NOT NULL, "
                    "updated_at timestamptz NOT NULL DEFAULT now(), state text)"
                ).format(self._table(CHECKPOINTS))
            )
        else:
            has_state = conn.execute(
                "SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'state' "
                "AND NOT attisdropped",
                [self._table(CHECKPOINTS).as_string(conn)],
            ).fetchone()
            if not has_state:  # a checkpoint table from before batch sources
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS state text").format(
                        self._table(CHECKPOINTS)
                    )
                )
        self._verified[CHECKPOINTS] = True

    def _type_names(self, conn, type_pairs: list[tuple[int, int]]) -> list[str]:
        """The destination's own spelling (format_type) of each (OID, modifier)."""
        if not type_pairs:
            return []
        rows = conn.execute(
            "SELECT format_type(o, m) FROM unnest(%s::oid[], %s::int4[]) WITH ORDINALITY AS u(o, m, i) ORDER BY i",
            [[oid for oid, _ in type_pairs], [mod for _, mod in type_pairs]],
        ).fetchall()
        return [row[0] for row in rows]

    @staticmethod
    def _column_definitions(names: list[str], type_names: list[str], not_null=()) -> sql.Composed:
        # type_names come from format_type() of built-in OIDs, never from user input
        return sql.SQL(", ").join(
            sql.SQL("{} {}{}").format(
                sql.Identifier(name), sql.SQL(type_name), sql.SQL(" NOT NULL" if name in not_null else "")
            )
            for name, type_name in zip(names, type_names, strict=True)
        )

    @staticmethod
    def _key_list(relation) -> sql.Composed:
        keys = schema_changes.require_key(relation)
        return sql.SQL(", ").join(sql.Identifier(name) for name in keys)

    def align_table(self, relation, target_table: str, fills=None, not_sent=frozenset()) -> SchemaAlignment:
        conn = self._connection()
        alignment = SchemaAlignment()
        try:
            with conn.transaction():
                alignment.recopy = self._ensure_table(
                    conn,
                    relation,
                    target_table,
                    alignment.notes,
                    fills,
                    not_sent,
                    create=False,
                    replaced=alignment.replaced,
                )
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
    ) -> str | None:
        """Create the target table, or bring it in line with the relation as the
        schema-change planner says (engine/writers/schema_changes.py).
        Returns why the table must be copied again, or None."""
        signature = _signature(relation)
        if self._verified.get(target_table) == signature:
            return None
        target = self._table(target_table)
        key_list = self._key_list(relation)
        existing = conn.execute(
            """
            SELECT a.attname, a.atttypid::int, a.atttypmod, a.attnotnull,
                   col_description(a.attrelid, a.attnum), coalesce(a.attnum = ANY (i.indkey), false)
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
            WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """,
            [self.schema, target_table],
        ).fetchall()
        if not existing:
            if not create:  # align_table: a table not there yet is left to its snapshot
                return None
            self._ensure_schema(conn)
            type_names = self._type_names(conn, [target_type(c) for c in relation.columns])
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} ({}, {} bigint, {} timestamptz, {} timestamptz, PRIMARY KEY ({}))"
                ).format(
                    target,
                    self._column_definitions(relation.column_names, type_names),
                    sql.Identifier(LSN),
                    sql.Identifier(SYNCED_AT),
                    sql.Identifier(DELETED_AT),
                    key_list,
                )
            )
            self._record_source_columns(conn, target, relation)
            self._verified[target_table] = signature
            self._keyed[target_table] = True
            return None

        columns = [
            schema_changes.DestinationColumn(
                name,
                (oid, mod),
                not not_null,
                comment == DROPPED_COMMENT,
                schema_changes.source_number(comment),
            )
            for name, oid, mod, not_null, comment, _ in existing
        ]
        plan = schema_changes.plan(
            relation,
            columns,
            DIALECT,
            where=f"{self.schema}.{target_table}",
            existing_key=[name for name, *_, in_key in existing if in_key],
            fills=fills,
            not_sent=not_sent,
            meta_columns=META_TYPES,
        )
        for action in plan.actions:
            self._render(conn, target, action)
        if plan.actions:
            self._altered.add(target_table)
        notes += plan.notes
        if replaced is not None:
            replaced += plan.replaced
        self._verified[target_table] = signature
        self._keyed[target_table] = any(in_key for *_, in_key in existing)
        return plan.recopy

    def _render(self, conn, target, action) -> None:
        """One planned schema change, in PostgreSQL's SQL."""
        name = sql.Identifier(action.name)
        if isinstance(action, schema_changes.AddColumn):
            type_name = sql.SQL(self._type_names(conn, [action.type])[0])
            if action.fill is None:
                conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(target, name, type_name))
            else:
                # A constant default fills every existing row without rewriting the table,
                # as on the source; dropped again so that it is not a default for new rows.
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {} DEFAULT {}::{}").format(
                        target, name, type_name, sql.Literal(action.fill), type_name
                    )
                )
                conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT").format(target, name))
        elif isinstance(action, schema_changes.WidenColumn):
            type_name = sql.SQL(self._type_names(conn, [action.new_type])[0])
            conn.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}").format(
                    target, name, type_name, name, type_name
                )
            )
        elif isinstance(action, schema_changes.MarkDropped):
            if action.drop_not_null:
                conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(target, name))
            conn.execute(
                sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(target, name, sql.Literal(DROPPED_COMMENT))
            )
        elif isinstance(action, schema_changes.BringBack):
            conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS NULL").format(target, name))
            conn.execute(sql.SQL("UPDATE {} SET {} = {}").format(target, name, sql.Literal(action.fill)))
        elif isinstance(action, schema_changes.DropColumn):
            conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(target, name))
        elif isinstance(action, schema_changes.RecordSourceColumn):
            comment = schema_changes.source_column_comment(action.number)
            conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(target, name, sql.Literal(comment)))
        else:
            raise TypeError(f"unknown schema change {action!r}")

    def _record_source_columns(self, conn, target, relation) -> None:
        """Each column's comment names the source column it holds (schema_changes.py)."""
        for column in relation.columns:
            if column.number:
                self._render(conn, target, schema_changes.RecordSourceColumn(column.name, column.number))


# a binary timestamptz, overwritten with the transaction's (set_last_fields)
_SYNCED_AT_PLACEHOLDER = bytes(8)


def _signature(relation) -> tuple:
    """What PostgresWriter._verified keeps of a relation checked against its target table."""
    return (relation.schema, relation.name, tuple(relation.columns))


@dataclass(frozen=True)
class _SyncedAt:
    """The _rosetta_synced_at of a part's rows (its transaction's start): as COPY text and as
    a binary timestamptz."""

    text: str
    binary: bytes


class _FreshKeyFound(Exception):
    """A fresh row's key is in the target already: its COPY failed and took the transaction
    with it (PostgresWriter._insert_fresh)."""

    def __init__(self, relation, target_table: str):
        super().__init__(f"a fresh key of {relation.schema}.{relation.name} is in {target_table}")
        self.relation = relation
        self.target_table = target_table


@dataclass
class _Prepared:
    """A table's part as prepare_batch made it: the rows split into fresh and the rest, and
    their binary COPYs (None where a value needs text) for the target types `kinds`. Rows
    may be WireRows only where their payload is there: nothing else reads them."""

    kinds: tuple  # the COPY kind of each of `columns`, LSN and SYNCED_AT
    columns: list[str]
    fresh_rows: list
    rest: dict
    fresh_payload: bytearray | None
    rest_payload: bytearray | None

    def fits(self, relation, kinds: dict) -> bool:
        """Whether the payloads hold `relation`'s columns, and the target's types, as
        _binary_kinds read them in this transaction, are those they were made for."""
        return self.columns == relation.column_names and self.kinds == tuple(
            kinds.get(name) for name in [*self.columns, LSN, SYNCED_AT]
        )


def _json_positions(relation, columns: list[str]) -> list[tuple[int, bool]]:
    """(position, is_array) of the json/jsonb (or json[]/jsonb[]) columns among `columns`."""
    kinds = {}
    for column in relation.columns:
        if column.type_oid in types.JSON_TYPES:
            kinds[column.name] = False
        elif types.ARRAY_ELEMENT.get(column.type_oid) in types.JSON_TYPES:
            kinds[column.name] = True
    return [(position, kinds[name]) for position, name in enumerate(columns) if name in kinds]


_json_encoder = json.JSONEncoder(ensure_ascii=False, default=str)


def _dump_json(value, is_array: bool):
    """json/jsonb values arrive parsed (dict, list, str, number, bool): back to JSON text.
    A json[] column's list holds one parsed JSON value per element."""
    if is_array and isinstance(value, list):
        return [None if item is None else _json_encoder.encode(item) for item in value]
    return _json_encoder.encode(value)


def _copy_text(rows: list, columns: list[str], tail: str = "") -> bytes | None:
    """Rows of text values ({column: text}, lsn) as COPY text, made by the compiled module
    (engine/_fastfold.pyx), about 5x faster than psycopg's write_row per row. None where
    the module is not built or a value is not text: the rows then go through write_row."""
    if _fastfold is None:
        return None
    return _fastfold.copy_text(rows, tuple(columns), tail)


def _copy_binary(rows: list, columns: list[str], kinds: dict, tail: dict | None = None) -> bytearray | None:
    """Rows of text values ({column: text} or a WireRow, lsn) as a binary COPY of `columns`, the LSN and
    `tail` ({column: its binary value}), made by the compiled module. None unless every one
    of these columns has a kind (PostgresWriter._binary_kinds), or if a value is not text or
    not a form its kind's parser takes: the rows then go as text."""
    tail = tail or {}
    if _fastfold is None or not all(name in kinds for name in [*columns, LSN, *tail]):
        return None
    return _fastfold.copy_binary(
        rows, tuple(columns), tuple(kinds[name] for name in columns), tuple(tail.values())
    )


def _split_fresh(upserts: dict, fresh: set) -> tuple[list, dict]:
    """The upserts' changes under fresh keys (in order), and the other upserts."""
    if not fresh:
        return [], upserts
    if _fastfold is not None:
        return _fastfold.split_fresh(upserts, fresh)
    return (
        [change for key, change in upserts.items() if key in fresh],
        {key: change for key, change in upserts.items() if key not in fresh},
    )


def _row_values(rows, columns: list[str]):
    """Each row as a list in `columns` order, plus its LSN; a missing column is NULL."""
    pick = itemgetter(*columns)
    single = len(columns) == 1
    for row, lsn in rows:
        try:
            values = [pick(row)] if single else list(pick(row))
        except KeyError:
            values = [row.get(name) for name in columns]
        values.append(lsn)
        yield values
