"""One pipeline's data path: ensure publication and slot, snapshot, and batch CDC.

Plain Python: the caller (pipelines.services) holds the pipeline's lock, loads
the configuration and records the outcome. The order of steps is the batch
CDC protocol of docs/architecture.md; a crash between any two of them loses nothing and
duplicates nothing:

    checkpoint = writer.read_checkpoint()      # what the destination has
    peek (not get) the slot                    # the slot still holds everything
    fold, skipping commits below the checkpoint
    writer.apply_batch()                       # ONE destination transaction
    advance the slot                           # only after that commit

The streaming read path (the default) follows the same order per part: a run
keeps one walsender stream and one destination writer open and applies part
after part, each at most `max_changes_per_transaction` changes in one
destination transaction cut between source transactions and carrying its own
checkpoint, each acknowledged only after its commit. A run ends when it has
caught up and (with a deadline) no change has arrived for QUIET_SECONDS, or when
its deadline passes; without a deadline, as soon as it has caught up.
"""

import contextlib
import gc
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from engine.writers.base import IncompatibleSchemaChange

from .batch import UNCHANGED, ApplyResult, Batch, TableChanges
from .fold import BatchBuilder, TableSpec, relation_shape
from .pgtypes import converter
from .source import SlotState, SourceDatabase, SourceProblem, TableShape

log = logging.getLogger(__name__)

# The streaming path applies what it reads in parts of at most
# max_changes_per_transaction changes, each its own destination transaction (cut
# between source transactions, with its checkpoint, acknowledged after its commit),
# one part applied while the next is read and decoded: memory holds two parts.
# With a deadline, a run that has applied changes stays on, caught up, until none has
# arrived for this long, polling this often while the source is quiet; a run that finds
# nothing at all ends at its first read.
QUIET_SECONDS = 1.0
QUIET_POLL_SECONDS = 0.05
# A pipeline's max_changes_per_transaction unless set: chosen by measurement (bench/README.md,
# "Choosing max_changes_per_transaction").
DEFAULT_MAX_CHANGES_PER_TRANSACTION = 20_000
# While a stream run's applier thread overlaps the read: how often the interpreter hands
# the GIL to a waiting thread. The applier mostly waits for the destination's answers,
# and at Python's default (5 ms) each answer then waited for the reader's slice to end:
# a tenth of a 1 M-change catch-up into PostgreSQL (bench/README.md, "Letting messages gather").
APPLY_SWITCH_INTERVAL_SECONDS = 0.0002
# Keys per source query when reading values pgoutput did not send (bind parameters
# are limited to 65,535 per statement).
FETCH_KEYS_PER_QUERY = 2_000


@dataclass
class BatchOutcome:
    batch: Batch
    result: ApplyResult | None  # None when nothing needed applying
    messages: int  # pgoutput messages the peek returned
    skipped_transactions: int  # already applied by an earlier run (replay)
    caught_up: bool  # the peek read everything the source had flushed
    advanced_to: int  # the slot's new confirmed position (0: not moved)
    slot: SlotState | None
    deadline_reached: bool = False  # stopped by its deadline, not because the source went quiet
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went

    @property
    def applied(self) -> bool:
        return self.result is not None

    @property
    def recopy(self) -> dict[tuple[str, str], str]:
        """Tables to copy again (a column added whose existing rows each got their own value)."""
        return self.result.recopy if self.result is not None else {}


@dataclass
class SchemaCheck:
    """What Engine.align_schemas found and did."""

    notes: list[str] = field(default_factory=list)
    recopy: dict[tuple[str, str], str] = field(default_factory=dict)  # (schema, table) -> why


class Engine:
    """The data path of one pipeline for one run."""

    def __init__(
        self,
        source: SourceDatabase,
        writer,
        *,
        pipeline_key: str,
        slot: str,
        publication: str,
        tables: list[TableSpec],
        max_changes_per_transaction: int,
        soft_delete: bool = False,
        after_apply: Callable[[Batch], None] | None = None,
        before_apply: Callable[[Batch], None] | None = None,
        after_part: Callable[[Batch], None] | None = None,
        read_path: str = "stream",
        recopy_incompatible: bool = False,
    ):
        self.source = source
        self.writer = writer
        self.pipeline_key = pipeline_key
        self.slot = slot
        self.publication = publication
        self.tables = {spec.key: spec for spec in tables}
        self.max_changes_per_transaction = max_changes_per_transaction
        self.soft_delete = soft_delete
        # Fault injection for tests: runs after the destination commit, before
        # the slot advance (in the applier thread).
        self.after_apply = after_apply
        # In the caller's thread: before a part with transactions is handed to the
        # writer (the caller records that the run does work), and after a part is
        # committed and acknowledged (the caller stores the progress).
        self.before_apply = before_apply
        self.after_part = after_part
        # "stream": a walsender connection, kept open across parts and batches (stream.py);
        # "peek": pg_logical_slot_peek_binary_changes, one SQL call per part (per run_batch call).
        if read_path not in ("stream", "peek"):
            raise ValueError(f"unknown read path {read_path!r}")
        self.read_path = read_path
        self._relations = {}  # Relation messages of the open stream (BatchBuilder.relations)
        # A schema change the destination cannot apply in place: copy the table again
        # (True) or fail the run with what to do (False).
        self.recopy_incompatible = recopy_incompatible
        self._shapes: dict[tuple[str, str], TableShape] = {}  # source catalog, read this run
        self._shapes_seen: set[tuple] = set()  # (table, change shape) the catalog was read again for
        self.partition_of: dict[tuple[str, str], TableSpec] = {}  # partition -> its parent's spec
        # Columns align_schemas found dropped and added again under their name (the table is
        # copied again): snapshot_table hands them to the spec (TableSpec.copied_replaced).
        self._replaced: dict[tuple[str, str], frozenset[str]] = {}

    def prepare(
        self,
        before_new_slot: Callable[[bool], None] | None = None,
        at_step: Callable[[str], None] | None = None,
    ) -> tuple[list[str], bool]:
        """Make sure the publication holds exactly our tables and the slot exists.
        Returns (what changed, in words; whether the slot is new).

        Invariant: a table marked done in the destination holds every change up to
        the slot's confirmed position. A new slot starts at "now", so before any
        slot is created (or a lost one dropped) `before_new_slot(lost)` must have
        durably marked every table for re-copy; it may also refuse by raising.
        A run killed at any step after it is followed by one that re-copies.
        `at_step` (crash injection for tests) is called after each step."""
        step = at_step or (lambda name: None)
        missing = self.source.missing_tables(sorted(self.tables))
        if missing:
            raise SourceProblem(
                f"Table{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"{'do' if len(missing) > 1 else 'does'} not exist on the source (or the user cannot see "
                "it): create it, or take it out of the pipeline."
            )
        # Refuse before anything is written: a table without a usable replica identity
        # must never enter a publication (the application's UPDATEs and DELETEs on it
        # would fail from then on).
        identities = {key: self.source.identity(*key) for key in sorted(self.tables)}
        problems = [identity.problem for identity in identities.values() if identity.problem]
        if problems:
            raise SourceProblem(" ".join(problems))
        notes = self.source.ensure_publication(self.publication, sorted(self.tables))
        state = self.source.slot_state(self.slot)
        slot_is_new = state is None or state.wal_status == "lost"
        if slot_is_new:
            lost = state is not None
            if before_new_slot:
                before_new_slot(lost)
            step("tables_marked_for_recopy")
            if lost:
                self.source.drop_slot(self.slot)
                step("lost_slot_dropped")
                notes.append(f"replication slot {self.slot} was lost (WAL removed); re-created it")
            else:
                notes.append(f"created replication slot {self.slot}")
            self.source.create_slot(self.slot)
            step("slot_created")
        via_root = self.source.publishes_via_root(self.publication)
        self.partition_of = {}
        for key, spec in self.tables.items():
            spec.primary_key = identities[key].key_columns
            spec.generated = self.source.generated_columns(spec.schema, spec.table)
            if identities[key].is_partitioned and not via_root:
                # Someone else's publication sends a partition's changes under the
                # partition's name: they are the parent's rows.
                for partition in self.source.partitions(spec.schema, spec.table):
                    self.partition_of[partition] = spec
        return notes, slot_is_new

    def align_schemas(self, keys: list[tuple[str, str]]) -> SchemaCheck:
        """Once per run, before reading changes: compare each table's source catalog
        with its destination table and apply the difference (schema_changes.py), so a
        column added to a table that then gets no change still appears, with the value
        the existing rows got. Tables whose existing rows cannot be filled in place
        (or, with recopy_incompatible, whose change the destination cannot apply) are
        returned to be copied again."""
        check = SchemaCheck()
        for key in keys:
            spec = self.tables[key]
            shape = self._shapes[key] = self.source.table_shape(spec.schema, spec.table)
            try:
                alignment = self.writer.align_table(
                    shape.relation, spec.target_table, shape.fills, shape.not_sent
                )
            except IncompatibleSchemaChange as error:
                if not self.recopy_incompatible:
                    raise
                check.recopy[key] = f"{error} The pipeline copies the table again."
                continue
            check.notes += alignment.notes
            if alignment.recopy:
                check.recopy[key] = alignment.recopy
            if alignment.replaced:
                self._replaced[key] = frozenset(alignment.replaced)
        return check

    def snapshot_table(self, spec: TableSpec, progress: Callable[[int, int], None] | None = None) -> int:
        """Copy one table into the destination; the old copy stays visible until
        the new one is complete. Returns the rows loaded."""
        relation = self.source.describe_table(spec.schema, spec.table)
        state = self.source.slot_state(self.slot)
        # Every change the snapshot misses commits after the slot's confirmed
        # position; changes it already holds may be replayed and converge.
        snapshot_lsn = state.confirmed_flush_lsn if state else 0
        estimate = self.source.estimated_rows(spec.schema, spec.table)
        select_list = self.writer.snapshot_columns(relation)
        with self.source.snapshot(relation, self.writer.snapshot_format, select_list) as chunks:
            if progress:
                rows_sent = self.source.snapshot_rows_sent
                chunks = _counting(chunks, self.writer.snapshot_format, estimate, progress, rows_sent)
            rows = self.writer.load_snapshot(relation, spec.target_table, chunks, snapshot_lsn)
        shape = self._shapes[spec.key] = self.source.table_shape(spec.schema, spec.table)
        spec.copied_shape = relation_shape(shape.relation)
        spec.copied_below_lsn = self.source.last_snapshot_position
        spec.copied_replaced = self._replaced.pop(spec.key, frozenset())
        return rows

    def run_batch(self, until: float | None = None, max_changes: int | None = None) -> BatchOutcome:
        """Read from the slot, apply, then advance the slot, part after part.

        Without `until`: until caught up (everything the source had flushed when
        a part's read began is applied). With `until` (a time.monotonic() deadline):
        on past catching up, applying changes as they arrive, until none has arrived
        for QUIET_SECONDS (at once if none came at all) or the deadline passes. `max_changes` stops earlier (tests).
        The peek path reads one part per call."""
        try:
            return self._run_batch(until, max_changes)
        except BaseException:
            # An open stream has moved past this batch, the slot has not: the
            # next read must start over from the slot, or the batch would be lost.
            self.source.close_stream()
            raise

    def _run_batch(self, until: float | None, max_changes: int | None) -> BatchOutcome:
        if self.read_path == "stream":
            return self._run_stream_batch(until, max_changes)
        seconds = {}
        started = time.perf_counter()
        checkpoint = self.writer.read_checkpoint(self.pipeline_key)
        text_values = getattr(self.writer, "accepts_text_values", False)
        builder = BatchBuilder(checkpoint, self.tables, text_values=text_values, partitions=self.partition_of)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a batch is many young objects that all live on: scanning them is waste
        try:
            limit = self.max_changes_per_transaction
            peek = self.source.peek(self.slot, self.publication, limit)
            seconds["read"] = time.perf_counter() - started
            started = time.perf_counter()
            for message in peek.messages:
                builder.feed(message)
            messages = len(peek.messages)
            caught_up = messages < limit
            del peek
            batch = builder.finish()
        finally:
            if gc_was_enabled:
                gc.enable()
        self._fill_moved_rows(batch, builder.moved_keys, text_values)
        self._fit_current_shape(batch)
        seconds["decode"] = time.perf_counter() - started

        result = None
        started = time.perf_counter()
        if batch.transactions:
            if self.before_apply:
                self.before_apply(batch)
            result = self.writer.apply_batch(self.pipeline_key, batch, soft_delete=self.soft_delete)
            if self.after_apply:
                self.after_apply(batch)
        seconds["apply"] = time.perf_counter() - started

        # Everything the peek returned is now in the destination (applied now or
        # by an earlier run), so the slot may move past all of it.
        started = time.perf_counter()
        target = max(batch.end_lsn, builder.read_position, builder.skipped_end_lsn)
        advanced = target if target and self.source.advance(self.slot, target) else 0
        if self.after_part:
            self.after_part(batch)
        if caught_up:
            # Leave a marker that the next peek returns: the slot can then move past
            # the WAL written meanwhile for other tables and databases, so that an
            # idle pipeline does not pin WAL (see SourceDatabase.emit_heartbeat).
            self.source.emit_heartbeat()
        slot = self.source.slot_state(self.slot)
        seconds["advance"] = time.perf_counter() - started
        return BatchOutcome(
            batch=batch,
            result=result,
            messages=messages,
            skipped_transactions=builder.skipped_transactions,
            caught_up=caught_up,
            advanced_to=advanced,
            slot=slot,
            seconds=seconds,
        )

    def _run_stream_batch(self, until: float | None, max_changes: int | None) -> BatchOutcome:
        """run_batch over the stream: a thread applies part n (its own destination
        transaction with its checkpoint) while this one reads and decodes part n + 1;
        part n is acknowledged once its commit is done. Source transactions are never
        cut, so a part may exceed max_changes_per_transaction."""
        seconds = {
            "read + decode": 0.0,
            "payloads": 0.0,
            "apply": 0.0,
            "waiting for apply": 0.0,
            "advance": 0.0,
        }
        checkpoint = self.writer.read_checkpoint(self.pipeline_key)
        text_values = getattr(self.writer, "accepts_text_values", False)
        # rows kept as pgoutput's bytes pay only where prepare_batch makes their payloads
        wire_rows = getattr(self.writer, "reads_wire_rows", False)
        if not self.source.streaming(self.slot):
            self._relations = {}  # a new stream sends every relation again
        part_size = self.max_changes_per_transaction
        total = _Totals()
        messages = 0
        caught_up = False
        deadline_reached = False
        last_change = None  # when a part last brought transactions (none: a quiet run ends at once)
        pending = None  # (future, part, builder) being applied
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a part is many young objects that all live on: scanning them is waste
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(APPLY_SWITCH_INTERVAL_SECONDS)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="rosetta-apply") as applier:
                while True:
                    started = time.perf_counter()
                    builder = BatchBuilder(
                        checkpoint,
                        self.tables,
                        text_values=text_values,
                        relations=self._relations,
                        partitions=self.partition_of,
                        wire_rows=wire_rows,
                    )
                    want = part_size if max_changes is None else min(part_size, max_changes - messages)
                    try:
                        read, caught_up = self.source.stream(self.slot, self.publication, want, builder.feed)
                        messages += read
                        part = builder.finish()
                        self._fill_moved_rows(part, builder.moved_keys, text_values)
                        self._fit_current_shape(part)
                        seconds["read + decode"] += time.perf_counter() - started
                        started = time.perf_counter()
                        self.writer.prepare_batch(part)  # while part n is still being applied
                        seconds["payloads"] += time.perf_counter() - started
                    except BaseException:
                        if pending:  # part n may commit meanwhile: waited for, confirmed, counted
                            self._settle(pending, total, seconds)
                        raise
                    pending = self._hand_over(applier, pending, part, builder, total, seconds)
                    now = time.monotonic()
                    if part.transactions or builder.skipped_transactions:
                        last_change = now
                    if max_changes is not None and messages >= max_changes:
                        break
                    if until is None:
                        if caught_up:
                            break
                        continue
                    if caught_up and (last_change is None or now - last_change >= QUIET_SECONDS):
                        break  # quiet: nothing arrived for a while (or at all: an idle pipeline)
                    if now >= until:
                        deadline_reached = True
                        break
                    if caught_up and not part.transactions:
                        time.sleep(QUIET_POLL_SECONDS)  # reads outpace commits: wait for the next
                if pending:
                    self._finish_part(pending, total, seconds)
        finally:
            sys.setswitchinterval(switch_interval)
            if gc_was_enabled:
                gc.enable()
        started = time.perf_counter()
        if caught_up:
            self.source.emit_heartbeat()  # see _run_batch
        slot = self.source.slot_state(self.slot)
        seconds["advance"] += time.perf_counter() - started
        return BatchOutcome(
            batch=total.batch,
            result=total.result,
            messages=messages,
            skipped_transactions=total.skipped_transactions,
            caught_up=caught_up,
            advanced_to=total.advanced_to,
            slot=slot,
            seconds=seconds,
            deadline_reached=deadline_reached,
        )

    def _apply_part(self, part: Batch) -> tuple[ApplyResult | None, float]:
        """In the applier thread: the writer's connection is used by this thread only
        while a part is applied; the source's connections never are."""
        started = time.perf_counter()
        result = None
        if part.transactions:
            result = self.writer.apply_batch(self.pipeline_key, part, soft_delete=self.soft_delete)
            if self.after_apply:
                self.after_apply(part)
        return result, time.perf_counter() - started

    def _hand_over(self, applier, pending, part: Batch, builder, total: "_Totals", seconds: dict):
        """Wait for part n's commit, give part n + 1 to the applier, then move the slot past
        part n: the slot's confirmation (a round trip to the source and a wait until the slot
        shows it) is not between the destination's two transactions. Returns the new pending."""
        result = self._wait_for_part(pending, seconds) if pending else None
        try:
            if part.transactions and self.before_apply:
                self.before_apply(part)
            submitted = (applier.submit(self._apply_part, part), part, builder)
        except BaseException:
            if pending:  # part n is committed
                self._settle(pending, total, seconds, result)
            raise
        if pending:
            try:
                self._confirm_part(pending, result, total, seconds)
            except BaseException:
                self._settle(submitted, total, seconds)  # part n + 1 may commit meanwhile
                raise
        return submitted

    def _finish_part(self, pending, total: "_Totals", seconds: dict) -> None:
        """Wait for a part's commit, then move the slot past it."""
        self._confirm_part(pending, self._wait_for_part(pending, seconds), total, seconds)

    @staticmethod
    def _wait_for_part(pending, seconds: dict):
        future, _, _ = pending
        started = time.perf_counter()
        result, applying = future.result()
        seconds["waiting for apply"] += time.perf_counter() - started
        seconds["apply"] += applying
        return result

    def _confirm_part(self, pending, result, total: "_Totals", seconds: dict) -> None:
        """Move the slot past a committed part and count it (counted even if the slot could
        not be moved: the destination has it)."""
        _, part, builder = pending
        started = time.perf_counter()
        target = max(part.end_lsn, builder.read_position, builder.skipped_end_lsn)
        try:
            if target and self.source.advance(self.slot, target):
                total.advanced_to = target
        finally:
            seconds["advance"] += time.perf_counter() - started
            total.add(part, result, builder.skipped_transactions)
            if self.after_part and part.transactions:
                self.after_part(part)

    _NOT_WAITED = object()

    def _settle(self, pending, total: "_Totals", seconds: dict, result=_NOT_WAITED) -> None:
        """While failing: a part already handed over is waited for and, if it committed
        (the destination has it), confirmed if the source still answers and counted. The
        run's own error is the one reported, not one met here."""
        try:
            if result is self._NOT_WAITED:
                result = self._wait_for_part(pending, seconds)
        except BaseException:
            return  # it failed too: nothing committed to count
        with contextlib.suppress(Exception):
            self._confirm_part(pending, result, total, seconds)  # counts it even if the slot stays

    def _fill_moved_rows(self, batch: Batch, moved_keys: dict, text_values: bool) -> None:
        """A primary-key change that left a TOASTed column unchanged (the value sits
        in the destination under the old key, which this batch deletes), or a row
        whose generated columns pgoutput did not send: read the values from the
        source; should the row have changed since, the later change is further on
        in the WAL and will be applied too, so the result converges."""
        for table_key, keys in moved_keys.items():
            changes = batch.tables[table_key]
            changes.materialize()
            relation = changes.relation
            key_columns = relation.key_columns
            missing = sorted(
                {name for key in keys for name, v in changes.upserts[key][0].items() if v is UNCHANGED}
            )
            ordered = sorted(keys, key=repr)
            found = {}
            for start in range(0, len(ordered), FETCH_KEYS_PER_QUERY):
                found.update(
                    self.source.fetch_rows(
                        relation,
                        key_columns,
                        ordered[start : start + FETCH_KEYS_PER_QUERY],
                        missing,
                        text_values=text_values,
                    )
                )
            for key in keys:
                values = found.get(key)
                if values is None:
                    continue  # deleted on the source since: that delete follows in the WAL
                row = changes.upserts[key][0]
                for name in missing:
                    if row.get(name) is UNCHANGED:
                        row[name] = values.get(name)

    def _fit_current_shape(self, batch: Batch) -> None:
        """Apply each table's changes with its newest shape, the source catalog's: changes
        read from before a schema change (that align_schemas already applied) carry an
        older one, and must neither undo nor repeat it. A change made before a column
        was added lacks it; the row gets what the rows existing then got
        (TableShape.fills): a constant default's value, or per row (then the destination
        keeps what its copy of the table has, like an unchanged TOASTed value). The
        writer also gets the fills, for the existing rows of a column it adds."""
        for key, changes in batch.tables.items():
            self._keep_copied_values(key, changes)
            shape = self._current_shape(key, changes.relation)
            # Rows can lack a column only if they were read with an older shape.
            older_rows = changes.reshaped or relation_shape(changes.relation) != relation_shape(
                shape.relation
            )
            relation = changes.relation = shape.relation
            fills = {name: shape.fills[name] for name in relation.column_names if name in shape.fills}
            changes.column_fills = fills
            if not older_rows:
                continue
            values = {}
            for column in relation.columns:
                fill = fills.get(column.name)
                if fill is None:
                    continue
                if fill.per_row:
                    values[column.name] = UNCHANGED
                elif fill.value is not None:
                    values[column.name] = (
                        fill.value if changes.text_values else converter(column.type_oid)(fill.value.encode())
                    )
            if not values:
                continue
            changes.materialize()
            for key, (row, _) in changes.upserts.items():
                for name, value in values.items():
                    if name not in row:
                        row[name] = value
                        if value is UNCHANGED:
                            changes.fresh.discard(key)

    def _keep_copied_values(self, key: tuple[str, str], changes: TableChanges) -> None:
        """A column dropped and added again under its name looks the same in the changes
        from before the drop, which carry the old column's values: in a table copied
        again, changes from before the copy keep the copy's value there."""
        replaced = self.tables[key].copied_replaced
        copied_below = self.tables[key].copied_below_lsn
        if not replaced or not copied_below:
            return
        changes.materialize()
        for key, (row, lsn) in changes.upserts.items():
            if lsn < copied_below:
                for name in replaced:
                    if name in row:
                        row[name] = UNCHANGED
                        changes.fresh.discard(key)

    def _current_shape(self, key: tuple[str, str], relation) -> TableShape:
        """The table's shape from the catalog, read again (once per shape) when a change
        arrives with a shape it has not seen: a schema change made during the run."""
        shape = self._shapes.get(key)
        seen = (key, relation_shape(relation))
        if shape is None or (
            relation_shape(relation) != relation_shape(shape.relation) and seen not in self._shapes_seen
        ):
            spec = self.tables[key]
            shape = self._shapes[key] = self.source.table_shape(spec.schema, spec.table)
            self._shapes_seen.add(seen)
        return shape


class _Totals:
    """The parts of a streamed batch, summed up for the run's record."""

    def __init__(self):
        self.batch = Batch()
        self.result: ApplyResult | None = None
        self.skipped_transactions = 0
        self.advanced_to = 0

    def add(self, part: Batch, result: ApplyResult | None, skipped: int) -> None:
        batch = self.batch
        for key, changes in part.tables.items():
            mine = batch.tables.get(key)
            if mine is None:
                mine = batch.tables[key] = TableChanges(
                    changes.relation, changes.target_table, text_values=changes.text_values
                )
            mine.relation = changes.relation
            mine.truncated = mine.truncated or changes.truncated
            mine.inserted += changes.inserted
            mine.updated += changes.updated
            mine.deleted += changes.deleted
        if part.transactions:
            batch.start_lsn = batch.start_lsn or part.start_lsn
            batch.end_lsn = part.end_lsn
            batch.last_commit_time = part.last_commit_time
        batch.transactions += part.transactions
        batch.changes += part.changes
        batch.bytes_read += part.bytes_read
        batch.notes += part.notes
        self.skipped_transactions += skipped
        if result is not None:
            if self.result is None:
                self.result = ApplyResult()
            self.result.inserted += result.inserted
            self.result.updated += result.updated
            self.result.deleted += result.deleted
            self.result.notes += result.notes
            self.result.recopy.update(result.recopy)


def _counting(
    chunks,
    copy_format: str,
    estimate: int,
    progress: Callable[[int, int], None],
    rows_sent: Callable[[], int],
):
    """Pass chunks through, reporting (rows so far, estimated total). Rows are
    counted as lines in CSV (close enough for a progress bar); a binary copy's are
    the source's own count of rows sent (`rows_sent`, SourceDatabase.snapshot_rows_sent)."""
    rows = 0
    for chunk in chunks:
        if copy_format == "csv":
            rows += chunk.count(b"\n")
        else:
            rows = rows_sent()
        progress(rows, estimate)
        yield chunk
