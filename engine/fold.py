"""Folding decoded pgoutput into a Batch: per table and primary key, in commit order.

Transactions whose commit LSN lies below the destination's checkpoint were
applied by an earlier run (the slot was not advanced before a crash): they are
skipped, which makes a replay a no-op.
"""

import json
import logging
from dataclasses import dataclass, field, replace
from operator import itemgetter

from . import pgoutput
from .batch import UNCHANGED, Batch, Column, Relation, TableChanges
from .pgtypes import converter, fast_converter

log = logging.getLogger(__name__)

_ROW_CHANGES = frozenset(b"IUD")
_oid = pgoutput._uint32.unpack_from
text_row = pgoutput.text_row

# What engine/_fastfold.pyx's INTERFACE must say: a module built from an older source (a
# pull without scripts/setup.sh, a build that failed and left the old one) lacks functions
# that the fold, the stream and the writers call, so it is not used at all.
FASTFOLD_INTERFACE = 7


def usable_fastfold(module) -> bool:
    return getattr(module, "INTERFACE", None) == FASTFOLD_INTERFACE


try:  # the compiled paths (engine/_fastfold.pyx, built by scripts/setup.sh)
    from . import _fastfold
except ImportError:  # not built: the pure-Python paths do the same, slower
    _fastfold = None
if _fastfold is not None and not usable_fastfold(_fastfold):
    log.warning(
        "engine/_fastfold was built from another version of engine/_fastfold.pyx: the Python "
        "paths are used instead (scripts/build_fastfold.sh builds it again)"
    )
    _fastfold = None


@dataclass
class TableSpec:
    """A source table the pipeline copies, as the engine needs it."""

    schema: str
    table: str
    target_table: str
    # The columns rows are matched by (engine.preflight.table_identity). None:
    # use the replica identity columns that the Relation message flags.
    primary_key: list[str] | None = None
    # Set when the table is copied (Engine.snapshot_table), and kept by the caller until
    # a run has confirmed past copied_below_lsn (a run may end before reading that far):
    # the copy's shape (relation_shape()) and the WAL position of its snapshot. A change
    # committed below that position under another shape predates a schema change
    # the copy already holds (ALTER TABLE waited for it to commit): it is skipped,
    # as its values may no longer fit (a type or key that changed).
    copied_shape: tuple | None = None
    copied_below_lsn: int = 0
    # Columns dropped and added again under their name that the copy holds anew: a
    # change below copied_below_lsn keeps the copy's value there (Engine._keep_copied_values).
    copied_replaced: frozenset[str] = frozenset()
    # Generated (STORED) columns: pgoutput does not send them (PostgreSQL < 18),
    # so the runner reads their values from the source (Engine._fill_generated).
    generated: list[Column] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.schema, self.table)


def relation_shape(relation: Relation) -> tuple:
    """What a schema change alters: each column's name, type and modifier."""
    return tuple((c.name, c.type_oid, c.type_modifier) for c in relation.columns)


class _RelationState:
    __slots__ = (
        "relation",
        "spec",
        "names",
        "converters",
        "fast_converters",
        "key_names",
        "key_getter",
        "predates_copy",
        "generated",
        "key_of_values",
        "key_positions",
        "row_template",
        "table_key",
        "fast",
    )

    def __init__(self, relation: Relation, spec: TableSpec):
        # The columns the source sends as the replica identity: a change made before a
        # key change carries the old key's only.
        sent_key = {c.name for c in relation.columns if c.is_key}
        columns = relation.columns
        if spec.primary_key:
            columns = [replace(c, is_key=c.name in spec.primary_key) for c in columns]
        sent = {c.name for c in columns}
        self.generated = [c.name for c in spec.generated if c.name not in sent]
        columns = columns + [c for c in spec.generated if c.name not in sent]
        # A partition's changes (a publication that does not publish via the root)
        # are the parent's rows.
        relation = replace(relation, schema=spec.schema, name=spec.table, columns=columns)
        self.relation = relation
        self.spec = spec
        self.names = relation.column_names
        self.converters = [converter(c.type_oid) for c in relation.columns]
        self.fast_converters = [fast_converter(c.type_oid) for c in relation.columns]
        self.key_names = relation.key_columns
        # row dict -> key tuple (text values are hashable as they are)
        getter = itemgetter(*self.key_names) if self.key_names else None
        self.key_getter = (lambda row: (getter(row),)) if len(self.key_names) == 1 else getter
        # The fast path (BatchBuilder._fast_change, text values): the key straight from a
        # tuple's value list, by the key columns' positions, without a row dict.
        positions = [i for i, column in enumerate(relation.columns) if column.is_key]
        self.fast = bool(positions) and not self.generated
        # for the compiled fast path: the key by position, each row a copy of this
        # template (one dict copy instead of a zip and a fresh dict), the batch's table key
        self.key_positions = tuple(positions)
        self.row_template = dict.fromkeys(self.names)
        self.table_key = spec.key
        if not positions:
            self.key_of_values = None
        elif len(positions) == 1:
            (position,) = positions
            self.key_of_values = lambda values: (values[position],)
        else:
            self.key_of_values = itemgetter(*positions)
        # a shape older than the table's copy: see TableSpec.copied_shape
        # (or one whose replica identity lacks a column of the key the copy was made with)
        self.predates_copy = spec.copied_shape is not None and (
            relation_shape(relation) != spec.copied_shape
            or not sent_key >= set(spec.primary_key or relation.key_columns)
        )


def _hashable(value):
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


@dataclass
class BatchBuilder:
    """Feed pgoutput messages (bytes) in the order the slot returned them; then finish()."""

    checkpoint: int
    tables: dict[tuple[str, str], TableSpec]
    batch: Batch = field(default_factory=Batch)
    messages: int = 0
    skipped_transactions: int = 0
    skipped_end_lsn: int = 0  # end LSN of the last transaction skipped as already applied
    # The furthest WAL position the slot's decoder certainly read past: the end of
    # the last commit or non-transactional logical message returned.
    read_position: int = 0
    # (schema, table) -> keys whose row still has UNCHANGED values after a primary
    # key change (the old row is in the destination under another key), or that
    # lack their generated columns: the runner reads these values from the source
    # (see Engine._fill_moved_rows).
    moved_keys: dict[tuple[str, str], set] = field(default_factory=dict)
    # Keep values in PostgreSQL's text form (str) instead of converting them, for
    # writers that load text as it is (Writer.accepts_text_values): conversion
    # is most of the decoding time. See TableChanges.text_values.
    text_values: bool = False
    # Relation messages seen so far, by OID. A streaming connection sends each
    # relation once per connection, so the runner keeps this across its batches.
    relations: dict = field(default_factory=dict)
    # (schema, partition) -> the parent's TableSpec, for changes published under a
    # partition's name (a publication without publish_via_partition_root).
    partitions: dict[tuple[str, str], TableSpec] = field(default_factory=dict)

    # Keep the rows of the compiled fast path as pgoutput's bytes (engine/_fastfold.pyx
    # WireRow) instead of dicts, for a writer that reads them so (Writer.reads_wire_rows);
    # see TableChanges.materialize.
    wire_rows: bool = False

    # How Insert/Update/Delete with text values are read: "compiled" (engine/_fastfold.pyx,
    # when built; else "python"), "python" (_fast_change), or "none" (every message through
    # pgoutput.decode: the reference the fast paths are tested against).
    fast_path: str = "compiled"

    def __post_init__(self):
        if self.fast_path not in ("compiled", "python", "none"):
            raise ValueError(f"fast_path: {self.fast_path!r} is not compiled, python or none")
        self._fast = self.text_values and self.fast_path != "none"
        if self._fast and self.fast_path == "compiled" and _fastfold is not None:
            # The class, not a bound method kept on the instance: that would be a reference
            # cycle, and the runner folds with the garbage collector off, so every part
            # would stay in memory until the end of the run.
            self.__class__ = _CompiledBatchBuilder
            self._fold_state = _fastfold.FoldState()
        self._relations: dict[int, _RelationState | None] = self.relations
        self._in_transaction = False
        self._skip = False
        self._lsn = 0
        self._commit_time = None
        self._unknown_kinds: set[str] = set()

    # -- messages -------------------------------------------------------------

    def feed(self, data) -> None:
        """One message. The compiled module's feed (the same steps) replaces this one
        when it is built."""
        self.messages += 1
        self.batch.bytes_read += len(data)
        if self._fast and data[0] in _ROW_CHANGES and self._fast_change(data):
            return
        self._feed_message(data)

    def _feed_message(self, data) -> None:
        """Every message, every case: decoded to its message object, then folded."""
        message = pgoutput.decode(data, self.text_values)
        kind = type(message)
        if kind is pgoutput.Insert:
            self._insert(message)
        elif kind is pgoutput.Update:
            self._update(message)
        elif kind is pgoutput.Delete:
            self._delete(message)
        elif kind is pgoutput.Begin:
            self._in_transaction = True
            self._skip = message.final_lsn < self.checkpoint
            self._lsn = message.final_lsn
        elif kind is pgoutput.Commit:
            self._commit(message)
        elif kind is pgoutput.RelationMessage:
            self._relation(message.relation)
        elif kind is pgoutput.Truncate:
            self._truncate(message)
        elif kind is pgoutput.Message:
            if not message.transactional:
                self.read_position = max(self.read_position, message.lsn)
        elif kind is pgoutput.Unknown and message.kind not in self._unknown_kinds:
            self._unknown_kinds.add(message.kind)
            log.warning("Skipping pgoutput message of unknown type %r (%d bytes)", message.kind, len(data))
        # Origin, Type and logical messages carry nothing to apply.

    def finish(self) -> Batch:
        if self._in_transaction:
            raise pgoutput.DecodeError("the slot's changes ended inside a transaction")
        for key in list(self.moved_keys):
            table = self.batch.tables.get(key)
            still = {k for k in self.moved_keys[key] if table and k in table.upserts}
            if still:
                self.moved_keys[key] = still
            else:
                del self.moved_keys[key]
        return self.batch

    @property
    def unknown_kinds(self) -> set[str]:
        return set(self._unknown_kinds)

    # -- helpers --------------------------------------------------------------

    def _relation(self, relation: Relation) -> None:
        key = (relation.schema, relation.name)
        spec = self.tables.get(key) or self.partitions.get(key)
        state = _RelationState(relation, spec) if spec else None
        self._relations[relation.oid] = state
        if state and spec.key in self.batch.tables:
            changes = self.batch.tables[spec.key]
            if relation_shape(changes.relation) != relation_shape(state.relation):
                changes.reshaped = True
            changes.relation = state.relation

    def _state(self, oid: int) -> _RelationState | None:
        if self._skip:
            return None
        if not self._in_transaction:
            raise pgoutput.DecodeError("a change outside a transaction")
        try:
            state = self._relations[oid]
        except KeyError:
            raise pgoutput.DecodeError(f"a change for relation {oid} before its Relation message") from None
        if state is not None and state.predates_copy and self._lsn < state.spec.copied_below_lsn:
            return None
        return state

    def _changes(self, state: _RelationState) -> TableChanges:
        tables = self.batch.tables
        key = state.spec.key
        changes = tables.get(key)
        if changes is None:
            changes = tables[key] = TableChanges(
                state.relation, state.spec.target_table, text_values=self.text_values
            )
        self.batch.changes += 1
        return changes

    def _row(self, state: _RelationState, values: list) -> dict:
        if self.text_values:
            return dict(zip(state.names, values, strict=False))
        try:
            return {
                name: value if value is None or value is UNCHANGED else convert(value)
                for name, convert, value in zip(state.names, state.fast_converters, values, strict=False)
            }
        except Exception:  # a value Python cannot hold (timestamp 'infinity'...): that one stays text
            return {
                name: value if value is None or value is UNCHANGED else convert(value)
                for name, convert, value in zip(state.names, state.converters, values, strict=False)
            }

    def _with_generated(self, state: _RelationState, row: dict, key: tuple) -> None:
        """Generated columns were not sent: the runner reads them from the source."""
        if state.generated:
            for name in state.generated:
                row[name] = UNCHANGED
            self.moved_keys.setdefault(state.spec.key, set()).add(key)

    def _key(self, state: _RelationState, row: dict) -> tuple:
        try:
            if self.text_values:
                key = state.key_getter(row) if state.key_getter else ()
            else:
                key = tuple(_hashable(row[name]) for name in state.key_names)
        except KeyError:
            key = ()
        if not key or None in key or UNCHANGED in key:
            relation = state.relation
            raise pgoutput.DecodeError(
                f"A change to {relation.schema}.{relation.name} does not carry its primary key "
                f"({', '.join(state.key_names) or 'none'}): give the table a primary key, or set "
                "REPLICA IDENTITY FULL (or USING INDEX on the key)."
            )
        return key

    # -- changes --------------------------------------------------------------

    def _fast_change(self, data) -> bool:
        """Insert, Update or Delete with text values, read from the wire in one go: no
        message object, the key taken from the value list, no row dict for a delete or
        an update's old key. The common case only (a primary key, nothing unchanged
        or generated, no REPLICA IDENTITY FULL old row); False hands the message to
        the general path, which does the same with every case covered."""
        if self._skip or not self._in_transaction or len(data) < 6:  # short: the general path says why
            return False
        state = self._relations.get(_oid(data, 1)[0])
        if (
            state is None
            or not state.fast
            or (state.predates_copy and self._lsn < state.spec.copied_below_lsn)
        ):
            return False
        kind = data[0]
        if kind == 68:  # 'D'
            if data[5] != 75:  # 'K': only the key; 'O' goes the general way
                return False
            values, _, unchanged = text_row(data, 6)
            if len(values) != len(state.names):
                return False  # not the relation's columns: the general path reports it
            key = state.key_of_values(values)
            if unchanged or None in key:
                return False
            changes = self._changes(state)
            changes.upserts.pop(key, None)
            changes.deletes[key] = self._lsn
            changes.deleted += 1
            return True
        if kind == 85:  # 'U'
            if data[5] != 78:  # an old key or row: the general path
                return False
            values, _, unchanged = text_row(data, 6)
        else:  # 'I'
            if data[5] != 78:
                return False
            values, _, unchanged = text_row(data, 6)
        if len(values) != len(state.names):
            return False  # a tuple of other columns than the relation's: the general path
        key = state.key_of_values(values)
        if unchanged or None in key:
            return False
        changes = self._changes(state)
        if kind == 73 and key not in changes.upserts and key not in changes.deletes:
            changes.fresh.add(key)
        changes.deletes.pop(key, None)
        changes.upserts[key] = (dict(zip(state.names, values, strict=False)), self._lsn)
        if kind == 73:
            changes.inserted += 1
        else:
            changes.updated += 1
        return True

    def _insert(self, message: pgoutput.Insert) -> None:
        state = self._state(message.relation_oid)
        if state is None:
            return
        changes = self._changes(state)
        row = self._row(state, message.new)
        key = self._key(state, row)
        self._with_generated(state, row, key)
        if not state.generated and key not in changes.upserts and key not in changes.deletes:
            changes.fresh.add(key)
        changes.deletes.pop(key, None)
        changes.upserts[key] = (row, self._lsn)
        changes.inserted += 1

    def _update(self, message: pgoutput.Update) -> None:
        state = self._state(message.relation_oid)
        if state is None:
            return
        changes = self._changes(state)
        new = self._row(state, message.new)
        new_key = self._key(state, new)
        self._with_generated(state, new, new_key)
        old_key = new_key
        old = None
        if message.old is not None:
            old = self._row(state, message.old)
            old_key = self._key(state, old)
        if any(value is UNCHANGED for value in new.values()):
            if message.old_kind == "O":
                # REPLICA IDENTITY FULL: the old row holds the whole value.
                for name, value in new.items():
                    if value is UNCHANGED and old.get(name, UNCHANGED) is not UNCHANGED:
                        new[name] = old[name]
            previous = changes.upserts.get(old_key)
            if previous is not None:
                # Changed earlier in this batch: that row has the value the
                # destination does not have yet.
                previous_row = previous[0]
                if type(previous_row) is not dict:  # kept as pgoutput's bytes (wire_rows)
                    previous_row = previous_row.as_dict()
                for name, value in new.items():
                    if value is UNCHANGED and previous_row.get(name, UNCHANGED) is not UNCHANGED:
                        new[name] = previous_row[name]
            if any(value is UNCHANGED for value in new.values()):
                changes.fresh.discard(new_key)  # the destination's value is needed after all
        if old_key != new_key:
            changes.upserts.pop(old_key, None)
            changes.deletes[old_key] = self._lsn
            if any(value is UNCHANGED for value in new.values()):
                self.moved_keys.setdefault(state.spec.key, set()).add(new_key)
        changes.deletes.pop(new_key, None)
        changes.upserts[new_key] = (new, self._lsn)
        changes.updated += 1

    def _delete(self, message: pgoutput.Delete) -> None:
        state = self._state(message.relation_oid)
        if state is None:
            return
        changes = self._changes(state)
        key = self._key(state, self._row(state, message.old))
        changes.upserts.pop(key, None)
        changes.deletes[key] = self._lsn
        changes.deleted += 1

    def _truncate(self, message: pgoutput.Truncate) -> None:
        for oid in message.relation_oids:
            state = self._state(oid)
            if state is None:
                continue
            changes = self._changes(state)
            changes.truncated = True
            changes.upserts.clear()
            changes.deletes.clear()
            changes.fresh.clear()
            self.moved_keys.pop(state.spec.key, None)

    def _commit(self, message: pgoutput.Commit) -> None:
        self.read_position = max(self.read_position, message.end_lsn)
        if self._skip:
            self.skipped_transactions += 1
            self.skipped_end_lsn = max(self.skipped_end_lsn, message.end_lsn)
        else:
            batch = self.batch
            batch.transactions += 1
            if not batch.start_lsn:
                batch.start_lsn = message.commit_lsn
            batch.end_lsn = message.end_lsn
            batch.last_commit_time = message.commit_time
        self._in_transaction = False
        self._skip = False


class _CompiledBatchBuilder(BatchBuilder):
    """BatchBuilder whose feed is the compiled one (engine/_fastfold.pyx): same steps."""

    if _fastfold is not None:
        feed = _fastfold.feed
