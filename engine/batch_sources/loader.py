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

from engine.batch import ApplyResult, Batch, Column, Relation, TableChanges

from .records import RESUME, Record, Reject
from .schema import (
    ROW_ID,
    TYPE_OIDS,
    TableSchema,
    as_text,
    classify_json,
    classify_text,
    classify_text_column,
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
        self.json_values = json_values
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

    def _apply(
        self, sequence: int, records: list[Record], rejects: list[Reject], outcome: LoadOutcome
    ) -> int:
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
        and the records that cannot be keyed (rejected). Column by column: a part's
        values of one field share their classification and conversion loop."""
        schema = self.schema
        classify = self.classify
        key_columns = [schema.column_for(name) for name in self.primary_key] or [ROW_ID]
        count = len(records)
        raw_columns: dict[str, list] = {}
        mapping = schema.mapping
        for position, record in enumerate(records):
            for original, raw in record.fields.items():
                column = mapping.get(original) or schema.column_for(original)
                values = raw_columns.get(column)
                if values is None:
                    values = raw_columns[column] = [None] * count
                values[position] = raw
        if self.json_values:
            classified = {
                column: [_NULL if raw is None else classify(raw) for raw in values]
                for column, values in raw_columns.items()
            }
        else:
            classified = {column: classify_text_column(values) for column, values in raw_columns.items()}
        rejected_positions = set()
        rejected = []
        if self.primary_key:
            for position, record in enumerate(records):
                missing = [
                    name
                    for name, column in zip(self.primary_key, key_columns, strict=True)
                    if column not in classified or classified[column][position][0] is None
                ]
                if missing:
                    rejected_positions.add(position)
                    reason = f"no value for the key field {', '.join(missing)}"
                    rejected.append(Reject(record.origin, record.line, reason, _raw(record)))
        kept = [position for position in range(count) if position not in rejected_positions]
        if not kept:
            return None, rejected
        for column, cells in classified.items():
            seen = {}  # type -> first position with a value of that type
            for position in kept:
                kind = cells[position][0]
                if kind is not None and kind not in seen:
                    seen[kind] = position
            part_type = None
            for kind in seen:
                part_type = merge_types(part_type, kind)
            established = schema.types.get(column)
            new = widen(established, part_type)
            if established is not None and new != established:
                odd = [kind for kind in seen if widen(established, kind) != established]
                record, raw = records[seen[odd[0]]], raw_columns[column][seen[odd[0]]]
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
        value_columns = []
        for column in columns:
            if column == ROW_ID:
                value_columns.append([f"{r.origin}:{r.line}" for r in (records[p] for p in kept)])
                continue
            cells = classified.get(column)
            if cells is None:
                value_columns.append([None] * len(kept))
                continue
            wanted = types[column]
            raws = raw_columns[column]
            value_columns.append(
                [
                    cell[1]
                    if cell[0] == wanted or cell[0] is None
                    else convert(cell[0], cell[1], raws[p], wanted)
                    for p, cell in ((p, cells[p]) for p in kept)
                ]
            )
        changes = TableChanges(relation, self.target_table)
        upserts = changes.upserts
        key_positions = [columns.index(key) for key in key_columns]
        for values in zip(*value_columns, strict=True):
            key = tuple(values[i] for i in key_positions)
            upserts[key] = (dict(zip(columns, values, strict=True)), sequence)
        changes.inserted = len(kept)
        return changes, rejected


_NULL = (None, None)


def _raw(record: Record) -> str:
    import json

    return json.dumps(record.fields, ensure_ascii=False, default=str)[:10_000]
