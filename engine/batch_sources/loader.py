"""One run of a batch source into a destination writer, in parts.

Each part is one destination transaction holding its rows, its rejects and the
new checkpoint state (reader position + table schema), written by the writer's
apply_batch next to the CDC checkpoints (`_rosetta_checkpoints`). A run that
dies anywhere leaves the destination at the end of a part; the next run reads
that state and goes on from there, so nothing is lost and nothing doubled.

Rows merge on the declared primary key, or, without one, on `_rosetta_row_id`
(file and line, or page URL and position): a record read again after a crash
lands on its own row instead of a copy.
"""

import time
from dataclasses import dataclass, field

from pipelines.engine.batch import ApplyResult, Batch, Column, Relation, TableChanges

from .records import RESUME, Record, Reject
from .schema import (
    ROW_ID,
    TYPE_OIDS,
    TableSchema,
    as_text,
    classify_json,
    classify_text,
    convert,
    merge_types,
    widen,
)

PART_ROWS = 50_000


class TooManyRejects(Exception):
    """More records were rejected than the pipeline allows; the message gives the figures."""


@dataclass
class LoadOutcome:
    records: int = 0  # records applied (after the reject check)
    rejects: int = 0
    parts: int = 0
    result: ApplyResult = field(default_factory=ApplyResult)
    notes: list[str] = field(default_factory=list)
    mapping: dict = field(default_factory=dict)  # original field -> column
    column_types: dict = field(default_factory=dict)
    first_part: int = 0  # sequence numbers of the parts (the checkpoint's lsn column)
    last_part: int = 0
    seconds: float = 0.0


class BatchLoader:
    def __init__(
        self,
        reader,
        writer,
        *,
        pipeline_key: str,
        source_name: str,
        target_table: str,
        primary_key: list[str] | None = None,
        json_values: bool = False,
        part_rows: int = PART_ROWS,
        max_reject_share: float = 1.0,
    ):
        self.reader = reader
        self.writer = writer
        self.pipeline_key = pipeline_key
        self.source_name = source_name
        self.target_table = target_table
        self.primary_key = list(primary_key or [])
        self.classify = classify_json if json_values else classify_text
        self.part_rows = part_rows
        self.max_reject_share = max_reject_share

    def run(self) -> LoadOutcome:
        started = time.perf_counter()
        # Kept on the loader, so that a run that fails halfway still reports the parts it applied.
        outcome = self.outcome = LoadOutcome()
        sequence, state = self.writer.read_checkpoint_state(self.pipeline_key)
        state = state or {}
        self.schema = TableSchema.from_state(state.get("schema"))
        stored_reader_state = state.get("reader") or {}
        pending: list[Record] = []
        rejects: list[Reject] = []
        resumable = False
        for item in self.reader.read(stored_reader_state):
            if item is RESUME:
                resumable = True
                if len(pending) + len(rejects) >= self.part_rows:
                    sequence = self._apply(sequence, pending, rejects, outcome)
                    pending, rejects, resumable = [], [], False
            elif type(item) is Record:
                pending.append(item)
            else:
                rejects.append(item)
        final_state = self.reader.state()
        if pending or rejects or (resumable and final_state != stored_reader_state):
            self._apply(sequence, pending, rejects, outcome)
        outcome.mapping = dict(self.schema.mapping)
        outcome.column_types = dict(self.schema.types)
        outcome.seconds = time.perf_counter() - started
        return outcome

    # -- one part ---------------------------------------------------------------------

    def _apply(self, sequence: int, records: list[Record], rejects: list[Reject], outcome: LoadOutcome) -> int:
        sequence += 1
        changes, part_rejects = self._changes(records, sequence, outcome.notes)
        rejects = rejects + part_rejects
        total_rejects = outcome.rejects + len(rejects)
        total = outcome.records + len(records) - len(part_rejects) + total_rejects
        if total and total_rejects / total > self.max_reject_share:
            last = rejects[-1]
            raise TooManyRejects(
                f"{total_rejects} of {total} records were rejected ({total_rejects / total:.0%}), more than "
                f"the pipeline allows ({self.max_reject_share:.0%}); the last: {last.origin} line {last.line}: "
                f"{last.reason}. The {outcome.records} records before this part are loaded; fix the data "
                "(or raise the pipeline's reject share) and run again."
            )
        batch = Batch(
            start_lsn=sequence,
            end_lsn=sequence,
            transactions=1,
            changes=len(records),
        )
        if changes is not None:
            batch.tables[("source", self.target_table)] = changes
        batch.checkpoint_state = {"reader": self.reader.state(), "schema": self.schema.to_state()}
        batch.rejects = [(r.origin, r.line, r.reason, r.raw) for r in rejects]
        result = self.writer.apply_batch(self.pipeline_key, batch)
        outcome.parts += 1
        outcome.first_part = outcome.first_part or sequence
        outcome.last_part = sequence
        outcome.records += len(records) - len(part_rejects)
        outcome.rejects += len(rejects)
        outcome.result.inserted += result.inserted
        outcome.result.updated += result.updated
        outcome.notes += result.notes
        return sequence

    def _changes(self, records: list[Record], sequence: int, notes: list[str]):
        """The part's rows as the writers' TableChanges (typed values, one row per key),
        and the records that cannot be keyed (rejected)."""
        schema = self.schema
        classify = self.classify
        key_columns = [schema.column_for(name) for name in self.primary_key] or [ROW_ID]
        kinds: dict[str, dict] = {}  # column -> {type: (first record, raw value) of that type}
        rows, rejected = [], []
        for record in records:
            cells = {}
            for original, raw in record.fields.items():
                column = schema.mapping.get(original) or schema.column_for(original)
                kind, value = classify(raw)
                cells[column] = (kind, value, raw)
                if kind is not None:
                    seen = kinds.setdefault(column, {})
                    if kind not in seen:
                        seen[kind] = (record, raw)
            if self.primary_key:
                missing = [
                    name
                    for name, column in zip(self.primary_key, key_columns, strict=True)
                    if cells.get(column, (None,))[0] is None
                ]
                if missing:
                    reason = f"no value for the key field {', '.join(missing)}"
                    rejected.append(Reject(record.origin, record.line, reason, _raw(record)))
                    continue
            else:
                cells[ROW_ID] = ("text", f"{record.origin}:{record.line}", None)
            rows.append(cells)
        if not rows:
            return None, rejected
        for column, seen in kinds.items():
            part_type = None
            for kind in seen:
                part_type = merge_types(part_type, kind)
            established = schema.types.get(column)
            new = widen(established, part_type)
            if established is not None and new != established:
                odd = [kind for kind in seen if widen(established, kind) != established]
                record, raw = seen[odd[0]]
                notes.append(
                    f"Column {column} of {self.target_table} widened from {established} to {new}: "
                    f"{record.origin} line {record.line} has {as_text(raw, raw)[:40]!r} there."
                )
            schema.types[column] = new
        columns = list(schema.types)
        for key in key_columns:
            if key not in columns:
                columns.append(key)
        types = {c: schema.types.get(c) or "text" for c in columns}
        types[ROW_ID] = "text"
        # A column of NULLs only is created as text in the destination: it stays text.
        for column in schema.types:
            schema.types[column] = types[column]
        relation = Relation(
            oid=0,
            schema="source",
            name=self.source_name,
            columns=[Column(c, TYPE_OIDS[types[c]], -1, c in key_columns) for c in columns],
        )
        changes = TableChanges(relation, self.target_table)
        upserts = changes.upserts
        for cells in rows:
            row = {}
            for column in columns:
                cell = cells.get(column)
                row[column] = None if cell is None else convert(cell[0], cell[1], cell[2], types[column])
            key = tuple(row[c] for c in key_columns)
            upserts[key] = (row, sequence)
        changes.inserted = len(rows)
        return changes, rejected


def _raw(record: Record) -> str:
    import json

    return json.dumps(record.fields, ensure_ascii=False, default=str)[:10_000]
