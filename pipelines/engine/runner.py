"""One pipeline's data path: ensure publication and slot, snapshot, and batch CDC.

Plain Python: the caller (pipelines.services) holds the pipeline's lock, loads
the configuration and records the outcome. The order of steps is the batch
CDC protocol of DESIGN.md; a crash between any two of them loses nothing and
duplicates nothing:

    checkpoint = writer.read_checkpoint()      # what the destination has
    peek (not get) the slot                    # the slot still holds everything
    fold, skipping commits below the checkpoint
    writer.apply_batch()                       # ONE destination transaction
    advance the slot                           # only after that commit
"""

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .batch import UNCHANGED, ApplyResult, Batch
from .fold import BatchBuilder, TableSpec
from .source import SlotState, SourceDatabase, SourceProblem

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    batch: Batch
    result: ApplyResult | None  # None when nothing needed applying
    messages: int  # pgoutput messages the peek returned
    skipped_transactions: int  # already applied by an earlier run (replay)
    caught_up: bool  # the peek read everything the source had flushed
    advanced_to: int  # the slot's new confirmed position (0: not moved)
    slot: SlotState | None
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went

    @property
    def applied(self) -> bool:
        return self.result is not None


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
        batch_size: int,
        soft_delete: bool = False,
        after_apply: Callable[[Batch], None] | None = None,
        read_path: str = "stream",
    ):
        self.source = source
        self.writer = writer
        self.pipeline_key = pipeline_key
        self.slot = slot
        self.publication = publication
        self.tables = {spec.key: spec for spec in tables}
        self.batch_size = batch_size
        self.soft_delete = soft_delete
        # Fault injection for tests: runs after the destination commit, before
        # the slot advance.
        self.after_apply = after_apply
        # "stream": a walsender connection, kept open across batches (stream.py);
        # "peek": pg_logical_slot_peek_binary_changes, one SQL call per batch.
        if read_path not in ("stream", "peek"):
            raise ValueError(f"unknown read path {read_path!r}")
        self.read_path = read_path
        self._relations = {}  # Relation messages of the open stream (BatchBuilder.relations)

    def prepare(self) -> tuple[list[str], bool]:
        """Make sure the publication holds exactly our tables and the slot exists.
        Returns (what changed, in words; whether the slot is new, which means
        every table must be snapshotted again)."""
        missing = self.source.missing_tables(sorted(self.tables))
        if missing:
            raise SourceProblem(
                f"Table{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"{'do' if len(missing) > 1 else 'does'} not exist on the source (or the user cannot see "
                "it): create it, or take it out of the pipeline."
            )
        notes = self.source.ensure_publication(self.publication, sorted(self.tables))
        slot_reason = self.source.ensure_slot(self.slot)
        if slot_reason:
            notes.append(slot_reason)
        for spec in self.tables.values():
            spec.primary_key = self.source.primary_key(spec.schema, spec.table) or None
        return notes, slot_reason is not None

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
                chunks = _counting(chunks, self.writer.snapshot_format, estimate, progress)
            return self.writer.load_snapshot(relation, spec.target_table, chunks, snapshot_lsn)

    def run_batch(self) -> BatchOutcome:
        """Read one batch from the slot, apply it, then advance the slot."""
        try:
            return self._run_batch()
        except BaseException:
            # An open stream has moved past this batch, the slot has not: the
            # next read must start over from the slot, or the batch would be lost.
            self.source.close_stream()
            raise

    def _run_batch(self) -> BatchOutcome:
        seconds = {}
        started = time.perf_counter()
        checkpoint = self.writer.read_checkpoint(self.pipeline_key)
        text_values = getattr(self.writer, "accepts_text_values", False)
        if self.read_path != "stream" or not self.source.streaming(self.slot):
            self._relations = {}  # a new decoding session sends every relation again
        builder = BatchBuilder(checkpoint, self.tables, text_values=text_values, relations=self._relations)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a batch is many young objects that all live on: scanning them is waste
        try:
            if self.read_path == "stream":
                # Decoded as they arrive, while the server decodes the next ones.
                messages, caught_up = self.source.stream(
                    self.slot, self.publication, self.batch_size, builder.feed
                )
                stage = "read + decode"
            else:
                peek = self.source.peek(self.slot, self.publication, self.batch_size)
                seconds["read"] = time.perf_counter() - started
                started = time.perf_counter()
                stage = "decode"
                for message in peek.messages:
                    builder.feed(message)
                messages = len(peek.messages)
                caught_up = messages < self.batch_size
                del peek
            batch = builder.finish()
        finally:
            if gc_was_enabled:
                gc.enable()
        self._fill_moved_rows(batch, builder.moved_keys, text_values)
        seconds[stage] = time.perf_counter() - started

        result = None
        started = time.perf_counter()
        if batch.transactions:
            result = self.writer.apply_batch(self.pipeline_key, batch, soft_delete=self.soft_delete)
            if self.after_apply:
                self.after_apply(batch)
        seconds["apply"] = time.perf_counter() - started

        # Everything the peek returned is now in the destination (applied now or
        # by an earlier run), so the slot may move past all of it.
        started = time.perf_counter()
        target = max(batch.end_lsn, builder.read_position, builder.skipped_end_lsn)
        advanced = target if target and self.source.advance(self.slot, target) else 0
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

    def _fill_moved_rows(self, batch: Batch, moved_keys: dict, text_values: bool) -> None:
        """A primary-key change that left a TOASTed column unchanged: the value sits
        in the destination under the old key, which this batch deletes. Read it from
        the source instead; should the row have changed since, the later change is
        further on in the WAL and will be applied too, so the result converges."""
        for table_key, keys in moved_keys.items():
            changes = batch.tables[table_key]
            relation = changes.relation
            key_columns = relation.key_columns
            missing = sorted(
                {name for key in keys for name, v in changes.upserts[key][0].items() if v is UNCHANGED}
            )
            found = self.source.fetch_rows(
                relation, key_columns, sorted(keys, key=repr), missing, text_values=text_values
            )
            for key in keys:
                row = changes.upserts[key][0]
                values = found.get(key, {})
                for name in missing:
                    if row.get(name) is UNCHANGED:
                        row[name] = values.get(name)


def _counting(chunks, copy_format: str, estimate: int, progress: Callable[[int, int], None]):
    """Pass chunks through, reporting (rows so far, estimated total). Rows are
    counted as lines in CSV (close enough for a progress bar)."""
    rows = 0
    for chunk in chunks:
        if copy_format == "csv":
            rows += chunk.count(b"\n")
        progress(rows, estimate)
        yield chunk
