"""The source side: publication, slot, snapshot, reading the slot (stream or peek) and
confirming it (psycopg 3, no Django).

Identifiers always go through psycopg.sql; the slot and publication names are
also passed as values where PostgreSQL takes them as text.
"""

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import psycopg
from psycopg import sql

from engine.preflight import TableIdentity, describe_connection_error, table_identity

from .batch import Column, ColumnFill, Relation
from .heartbeat import emit_heartbeat
from .lsn import format_lsn, parse_lsn
from .pgtypes import SESSION_SETTINGS, converter
from .stream import ReplicationStream, StreamError

log = logging.getLogger(__name__)

# The snapshot's COPY reaches the writer in chunks of about this size. Reading a chunk and
# writing it alternate in one thread; the sockets between keep both servers busy meanwhile
# if the chunk is small: 1 MB rather than 4 MB took a 1 M-row PostgreSQL snapshot from
# 2.26 s to 2.14 s (DuckDB 2.60 -> 2.53 s; bench/README.md, issue 14).
SNAPSHOT_CHUNK_BYTES = 1024 * 1024
# A walsender drops a client that has not answered for wal_sender_timeout (60 s by
# default); a stream left alone longer than this (a long apply) is reopened.
STREAM_IDLE_REOPEN_SECONDS = 20
STREAM_IDLE_SECONDS = 10  # no message for this long outside a transaction: caught up
CONFIRM_WAIT_SECONDS = 10
SLOT_CREATE_TIMEOUT_MS = 5 * 60 * 1000
COPY_PROGRESS_EVERY_SECONDS = 1.0
COPY_PROGRESS_TIMEOUT_MS = 2000


class SourceProblem(Exception):
    """Something about the source database an operator must fix; the message says what."""


@dataclass
class SlotState:
    confirmed_flush_lsn: int
    restart_lsn: int
    current_lsn: int
    wal_status: str | None

    @property
    def lag_bytes(self) -> int:
        return max(0, self.current_lsn - self.confirmed_flush_lsn)


@dataclass
class TableShape:
    relation: Relation  # as pgoutput describes the table
    fills: dict[str, ColumnFill]  # see SourceDatabase.table_shape
    not_sent: frozenset[str] = frozenset()  # columns the table has but its changes do not carry


@dataclass
class PeekResult:
    messages: list  # raw pgoutput messages (bytes), in slot order
    read_up_to: int  # the source's flush LSN before the peek: the peek decoded at least this far


def _options(statement_timeout_ms: int) -> str:
    settings = {**SESSION_SETTINGS, "statement_timeout": str(int(statement_timeout_ms))}
    # Values are our own constants; spaces escaped as libpq requires.
    return " ".join(f"-c {key}={value.replace(' ', chr(92) + ' ')}" for key, value in settings.items())


class CopyProgress:
    """Rows a COPY TO backend has sent so far, as PostgreSQL 14+ reports them in
    pg_stat_progress_copy: a binary COPY cannot be counted as it passes without parsing
    every field. Read over a short side connection, opened on the first read, at most once
    a second; a read that fails keeps the last figure and stops asking, so progress never
    fails (or stalls) the copy."""

    def __init__(self, source: "SourceDatabase", backend_pid: int):
        self.source, self.backend_pid = source, backend_pid
        self.rows, self.read_at, self.failed = 0, None, False
        self._conn: psycopg.Connection | None = None

    def __call__(self) -> int:
        now = time.monotonic()
        if self.failed or (self.read_at is not None and now - self.read_at < COPY_PROGRESS_EVERY_SECONDS):
            return self.rows
        self.read_at = now
        try:
            if self._conn is None:
                self._conn = self.source.connect(COPY_PROGRESS_TIMEOUT_MS, autocommit=True, connect_timeout=5)
            row = self._conn.execute(
                "SELECT tuples_processed FROM pg_stat_progress_copy WHERE pid = %s", [self.backend_pid]
            ).fetchone()
        except Exception as error:  # whatever went wrong, the copy goes on without a count
            log.info("Snapshot progress not readable (rows copied not shown): %s", error)
            self.failed = True
            self.close()
            return self.rows
        if row:
            self.rows = max(self.rows, row[0])
        return self.rows

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with suppress(psycopg.Error):
                conn.close()


class SourceDatabase:
    """A connection to the source PostgreSQL, for one run."""

    def __init__(self, connect_kwargs: dict, statement_timeout_ms: int = 30 * 60 * 1000):
        self.connect_kwargs = dict(connect_kwargs)
        self.statement_timeout_ms = statement_timeout_ms
        self._conn: psycopg.Connection | None = None
        self._stream: ReplicationStream | None = None
        self.last_snapshot_position = 0  # see snapshot()
        self._copy_progress: CopyProgress | None = None  # while snapshot() copies

    # -- connections ----------------------------------------------------------

    def connect(self, statement_timeout_ms: int | None = None, **extra) -> psycopg.Connection:
        timeout = self.statement_timeout_ms if statement_timeout_ms is None else statement_timeout_ms
        kwargs = {**self.connect_kwargs, **extra}
        kwargs["options"] = _options(timeout)
        try:
            return psycopg.connect(**kwargs)
        except psycopg.OperationalError as error:
            raise SourceProblem(
                "Source: " + describe_connection_error(error, kwargs.get("host"), kwargs.get("port"))
            ) from None

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect(autocommit=True)
        return self._conn

    def close(self) -> None:
        self.close_stream()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- catalog --------------------------------------------------------------

    def describe_table(self, schema: str, table: str) -> Relation:
        """The table's shape from the catalog; key columns = the ones table_identity()
        matches rows by (the primary key, or the USING INDEX columns)."""
        row = self.conn.execute(
            """
            SELECT c.oid, c.relreplident
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
            """,
            [schema, table],
        ).fetchone()
        if row is None:
            raise SourceProblem(
                f"Table {schema}.{table} does not exist on the source (or the user cannot see it)."
            )
        oid, replica_identity = row
        key_columns = set(self.identity(schema, table).key_columns)
        columns = [
            Column(name, type_oid, type_modifier, is_key=name in key_columns, number=number)
            for name, type_oid, type_modifier, number in self.conn.execute(
                """
                SELECT attname, atttypid, atttypmod, attnum FROM pg_attribute
                WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped
                ORDER BY attnum
                """,
                [oid],
            )
        ]
        return Relation(oid, schema, table, columns, replica_identity)

    def identity(self, schema: str, table: str) -> TableIdentity:
        """How the table's rows are told apart, or why they cannot be (engine.preflight)."""
        return table_identity(self.conn, schema, table)

    def generated_columns(self, schema: str, table: str) -> list[Column]:
        """The table's generated (STORED) columns, which pgoutput (PostgreSQL < 18) never sends."""
        return [
            Column(name, type_oid, type_modifier)
            for name, type_oid, type_modifier in self.conn.execute(
                """
                SELECT a.attname, a.atttypid, a.atttypmod FROM pg_attribute a
                JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
                  AND a.attgenerated <> ''
                ORDER BY a.attnum
                """,
                [schema, table],
            )
        ]

    def partitions(self, schema: str, table: str) -> list[tuple[str, str]]:
        """Every partition (at any depth) of a partitioned table: a publication that
        does not publish via the root sends their changes under their own names."""
        return [
            (part_schema, part_table)
            for part_schema, part_table in self.conn.execute(
                """
                SELECT n.nspname::text, c.relname::text
                FROM pg_partition_tree(%s::regclass) t
                JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE t.level > 0
                """,
                [sql.Identifier(schema, table).as_string(self.conn)],
            )
        ]

    def missing_tables(self, tables: list[tuple[str, str]]) -> list[str]:
        """Of these tables, those the source does not have (or the user cannot see)."""
        found = {
            (schema, table)
            for schema, table in self.conn.execute(
                """
                SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p') AND (n.nspname, c.relname) IN (
                    SELECT * FROM unnest(%s::text[], %s::text[]))
                """,
                [[t[0] for t in tables], [t[1] for t in tables]],
            )
        }
        return [f"{schema}.{table}" for schema, table in tables if (schema, table) not in found]

    def primary_key(self, schema: str, table: str) -> list[str]:
        rows = self.conn.execute(
            """
            SELECT a.attname
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) ON true
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
            WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary
            ORDER BY k.position
            """,
            [schema, table],
        ).fetchall()
        return [name for (name,) in rows]

    def _replica_identity_columns(self, oid: int, replica_identity: str) -> list[str]:
        if replica_identity == "f":
            query = "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped"
        else:
            query = """
                SELECT a.attname FROM pg_index i
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                WHERE i.indrelid = %s AND i.indisreplident
            """
        return [name for (name,) in self.conn.execute(query, [oid])]

    def table_shape(self, schema: str, table: str) -> "TableShape":
        """The table as its changes describe it (one catalog query for the columns):
        the relation (generated columns included: PostgreSQL 15 does not send them, the
        runner reads them from the source), and for each column what the rows that existed when it was
        added hold in it, since PostgreSQL writes no WAL for them: a constant
        default's value (pg_attribute.attmissingval), or per row (a volatile default
        or an identity: the table was rewritten, so only a copy brings the values)."""
        relation = self.describe_table(schema, table)
        rows = self.conn.execute(
            """
            SELECT attname, attgenerated <> '', atthasmissing, (attmissingval::text::text[])[1],
                   atthasdef OR attidentity <> ''
            FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped
            """,
            [relation.oid],
        ).fetchall()
        generated = {name for name, is_generated, *_ in rows if is_generated}
        fills = {}
        for name, is_generated, has_missing, missing, has_default in rows:
            if is_generated:
                # computed for every existing row when it was added: only a copy brings those
                fills[name] = ColumnFill(per_row=True)
            elif has_missing:
                fills[name] = ColumnFill(value=missing)
            elif has_default:
                fills[name] = ColumnFill(per_row=True)
        # Generated columns stay in the relation: the runner reads their values from the
        # source (pgoutput does not send them), so they are written like any other column.
        return TableShape(relation, fills, frozenset(generated))

    # -- publication and slot -------------------------------------------------

    def ensure_publication(self, name: str, tables: list[tuple[str, str]]) -> list[str]:
        """Create the publication FOR TABLE these tables (publishing partitioned tables'
        changes under the parent's name), or add the ones it lacks. Rosetta never
        removes a table from a publication: it cannot know that no one else (another
        source with the same publication name, another tool) reads that table through
        it. Returns what changed, in words."""
        conn = self.conn
        row = conn.execute(
            "SELECT oid, puballtables, pubviaroot FROM pg_publication WHERE pubname = %s", [name]
        ).fetchone()
        wanted = sorted({tuple(t) for t in tables})
        if row is None:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} {} WITH (publish_via_partition_root = true)").format(
                    sql.Identifier(name),
                    sql.SQL("FOR TABLE {}").format(sql.SQL(", ").join(sql.Identifier(*t) for t in wanted))
                    if wanted
                    else sql.SQL(""),
                )
            )
            return [f"created publication {name}"]
        oid, all_tables, _via_root = row
        if all_tables:
            return []  # FOR ALL TABLES: publishes everything already
        # Members as added (pg_publication_rel), not as published (pg_publication_tables,
        # which lists a partitioned table's partitions unless it publishes via the root).
        current = {
            (schema, table)
            for schema, table in conn.execute(
                """
                SELECT n.nspname::text, c.relname::text FROM pg_publication_rel r
                JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE r.prpubid = %s
                UNION
                SELECT n.nspname::text, c.relname::text FROM pg_publication_namespace pn
                JOIN pg_class c ON c.relnamespace = pn.pnnspid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE pn.pnpubid = %s AND c.relkind IN ('r', 'p')
                """,
                [oid, oid],
            )
        }
        added = [t for t in wanted if t not in current]
        if not added:
            return []
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                sql.Identifier(name), sql.SQL(", ").join(sql.Identifier(*t) for t in added)
            )
        )
        return ["added " + ", ".join(".".join(t) for t in added) + f" to publication {name}"]

    def publishes_via_root(self, name: str) -> bool:
        row = self.conn.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = %s", [name]).fetchone()
        return bool(row and row[0])

    def slot_state(self, slot: str) -> SlotState | None:
        row = self.conn.execute(
            """
            SELECT confirmed_flush_lsn::text, restart_lsn::text, wal_status, database, plugin,
                   CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                        ELSE pg_current_wal_lsn() END::text
            FROM pg_replication_slots WHERE slot_name = %s
            """,
            [slot],
        ).fetchone()
        if row is None:
            return None
        confirmed, restart, wal_status, database, plugin, current = row
        if database != self.conn.info.dbname or plugin != "pgoutput":
            raise SourceProblem(
                f"Replication slot {slot} already exists for database {database} with plugin {plugin}: "
                "give the source another slot name."
            )
        return SlotState(
            parse_lsn(confirmed) or 0,
            parse_lsn(restart) or 0,
            parse_lsn(current),
            wal_status,
        )

    def create_slot(self, slot: str) -> None:
        """Create the logical slot (pgoutput). The caller decides when (Engine.prepare)."""
        # Creating a slot waits until every transaction open on the server (in any
        # database) has ended: bound the wait and say so.
        timeout_s = SLOT_CREATE_TIMEOUT_MS // 1000
        self.conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(SLOT_CREATE_TIMEOUT_MS)))
        try:
            self.conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [slot])
        except psycopg.errors.QueryCanceled:
            raise SourceProblem(
                f"Creating replication slot {slot} waited {timeout_s} s for the transactions open on the "
                "source server (in any database) to end; it is retried on the next run. Look for "
                "long-running or idle-in-transaction sessions in pg_stat_activity."
            ) from None
        finally:
            self.conn.execute(
                sql.SQL("SET statement_timeout = {}").format(sql.Literal(self.statement_timeout_ms))
            )

    def drop_slot(self, slot: str) -> bool:
        """Drop the slot if it exists. Refuses (SourceProblem) while a reader holds it."""
        self.close_stream()
        try:
            dropped = self.conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                [slot],
            ).fetchall()
        except psycopg.errors.ObjectInUse:
            raise SourceProblem(
                f"Replication slot {slot} is in use right now; try again in a moment."
            ) from None
        return bool(dropped)

    # -- snapshot -------------------------------------------------------------

    @contextmanager
    def snapshot(
        self,
        relation: Relation,
        copy_format: str,
        select_list: list[sql.Composable] | None = None,
        chunk_bytes: int = SNAPSHOT_CHUNK_BYTES,
    ):
        """Yield the table's rows as COPY chunks of about chunk_bytes, read in one
        repeatable-read transaction; memory stays flat whatever the table size.
        `select_list`: one expression per relation column (the writer's
        snapshot_columns); the plain columns by default."""
        if select_list is None:
            select_list = [sql.Identifier(c.name) for c in relation.columns]
        if copy_format not in ("csv", "binary"):
            raise ValueError(f"unknown COPY format {copy_format!r}")
        with self.connect(statement_timeout_ms=0) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            # The first statement takes the snapshot: every transaction it sees committed
            # below this position; one committed at or above it is not in the copy.
            (position,) = conn.execute(
                "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                "ELSE pg_current_wal_insert_lsn() END::text"
            ).fetchone()
            self.last_snapshot_position = parse_lsn(position)
            query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT WITH (FORMAT {})").format(
                sql.SQL(", ").join(select_list),
                sql.Identifier(relation.schema, relation.name),
                sql.SQL(copy_format),
            )
            self._copy_progress = CopyProgress(self, conn.info.backend_pid)
            try:
                with conn.cursor() as cursor, cursor.copy(query) as copy:

                    def chunks() -> Iterator[bytes]:
                        buffer = bytearray()
                        for block in copy:
                            buffer += block
                            if len(buffer) >= chunk_bytes:
                                yield bytes(buffer)
                                buffer.clear()
                        if buffer:
                            yield bytes(buffer)

                    yield chunks()
            finally:
                progress, self._copy_progress = self._copy_progress, None
                progress.close()
            conn.rollback()

    def snapshot_rows_sent(self) -> int:
        """Rows the running snapshot's COPY has sent so far, as the source reports them
        (CopyProgress: at most one read a second); 0 outside a snapshot or if unknown."""
        return self._copy_progress() if self._copy_progress is not None else 0

    def estimated_rows(self, schema: str, table: str) -> int:
        row = self.conn.execute(
            """
            SELECT greatest(c.reltuples, 0)::bigint FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s
            """,
            [schema, table],
        ).fetchone()
        return row[0] if row else 0

    def fetch_rows(
        self,
        relation: Relation,
        key_columns: list[str],
        keys: list[tuple],
        columns: list[str],
        text_values: bool = False,
    ):
        """Current values of `columns` for these keys: {key: {column: value}} (text
        values converted like pgoutput's, or left as text with text_values). Used
        for rows whose primary key changed while a TOASTed column stayed unchanged."""
        types = {c.name: c.type_oid for c in relation.columns}
        selected = key_columns + columns
        query = sql.SQL("SELECT {} FROM {} WHERE ({}) IN ({})").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in selected),
            sql.Identifier(relation.schema, relation.name),
            sql.SQL(", ").join(sql.Identifier(c) for c in key_columns),
            sql.SQL(", ").join(
                sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() for _ in key_columns))
                for _ in keys
            ),
        )
        params = [value for key in keys for value in key]
        found = {}
        if text_values:
            convert_key = [bytes.decode] * len(key_columns)
            convert_value = [bytes.decode] * len(columns)
        else:
            convert_key = [converter(types[c]) for c in key_columns]
            convert_value = [converter(types[c]) for c in columns]
        for row in self.conn.execute(query, params):
            key = tuple(f(v.encode()) for f, v in zip(convert_key, row[: len(key_columns)], strict=True))
            found[key] = {
                name: None if v is None else f(v.encode())
                for name, f, v in zip(columns, convert_value, row[len(key_columns) :], strict=True)
            }
        return found

    # -- changes --------------------------------------------------------------

    def peek(self, slot: str, publication: str, upto_changes: int) -> PeekResult:
        """Read up to `upto_changes` messages (whole transactions: the server
        never cuts one) without consuming them."""
        conn = self.conn
        (flush,) = conn.execute(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
            "ELSE pg_current_wal_flush_lsn() END::text"
        ).fetchone()
        publication_names = sql.Identifier(publication).as_string(conn)
        with conn.cursor(binary=True) as cursor:
            cursor.execute(
                "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s, "
                "'proto_version', '1', 'publication_names', %s, 'messages', 'true')",
                [slot, upto_changes, publication_names],
            )
            messages = [data for (data,) in cursor]
        return PeekResult(messages, parse_lsn(flush))

    def flush_lsn(self) -> int:
        """The source's WAL flush position (replay position on a standby)."""
        (flush,) = self.conn.execute(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
            "ELSE pg_current_wal_flush_lsn() END::text"
        ).fetchone()
        return parse_lsn(flush)

    def streaming(self, slot: str) -> bool:
        """True while a stream of this slot is open (its relation messages still count)."""
        return self._stream is not None and self._stream.slot == slot

    def stream(self, slot: str, publication: str, upto_changes: int, feed: Callable[[bytes], None]):
        """Like peek(), over a streaming replication connection that stays open for
        the next call (see stream.py), handing each message to `feed` as it
        arrives. Returns (messages, caught up): caught up when every transaction
        committed before the call has been read."""
        flush = self.flush_lsn()
        stream = self._stream
        if stream is not None and (
            (stream.slot, stream.publication) != (slot, publication)
            or time.monotonic() - stream.last_activity > STREAM_IDLE_REOPEN_SECONDS
        ):
            self.close_stream()
            stream = None
        try:
            if stream is None:
                stream = self._stream = ReplicationStream(
                    self.connect_kwargs, _options(0), slot, publication
                ).open()
            return stream.read(upto_changes, flush, STREAM_IDLE_SECONDS, feed)
        except StreamError as error:
            self._stream = None
            raise SourceProblem(str(error)) from None
        except BaseException:
            self.close_stream()  # mid-transaction: the next read starts over from the slot
            raise

    def emit_heartbeat(self) -> int:
        """Write the heartbeat (engine/heartbeat.py): the next read returns it with its
        LSN, so an idle slot can be advanced there. Returns that LSN."""
        return emit_heartbeat(self.conn)

    def advance(self, slot: str, lsn: int) -> bool:
        """Move the slot's confirmed position to `lsn` (never backwards), releasing WAL.
        While a stream holds the slot, through the stream (then wait until the
        slot shows it, so that whoever looks next sees the new position)."""
        stream = self._stream
        if stream is not None and stream.slot == slot:
            state = self.slot_state(slot)
            if state is None or state.confirmed_flush_lsn >= lsn:
                return False
            try:
                stream.acknowledge(lsn)
            except (StreamError, psycopg.Error) as error:
                reason = stream.ended() or str(error).strip()
                self.close_stream()
                raise SourceProblem(
                    f"Source: could not confirm position {format_lsn(lsn)} on slot {slot}: {reason}"
                ) from None
            deadline = time.monotonic() + CONFIRM_WAIT_SECONDS
            while (state := self.slot_state(slot)) is not None and state.confirmed_flush_lsn < lsn:
                reason = stream.ended()
                if reason:  # a dead connection confirms nothing: say so now, not after the wait
                    self.close_stream()
                    raise SourceProblem(
                        f"Source: the replication connection of slot {slot} ended before confirming "
                        f"position {format_lsn(lsn)}: {reason}"
                    )
                if time.monotonic() > deadline:
                    raise SourceProblem(
                        f"Source: the walsender did not confirm position {format_lsn(lsn)} on slot {slot} "
                        f"within {CONFIRM_WAIT_SECONDS} s; the next run applies nothing twice."
                    )
                time.sleep(0.005)
            return True
        row = self.conn.execute(
            """
            SELECT pg_replication_slot_advance(slot_name, %s::pg_lsn)
            FROM pg_replication_slots WHERE slot_name = %s AND confirmed_flush_lsn < %s::pg_lsn
            """,
            [format_lsn(lsn), slot, format_lsn(lsn)],
        ).fetchone()
        return row is not None
