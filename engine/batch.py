"""What the source side hands to the destination writers: plain values, no Django.

The reader decodes pgoutput, skips transactions at or below the destination's
checkpoint, and folds the rest per table and primary key in commit order (the
last change of a key wins). A writer applies one Batch in one destination
transaction, together with the new checkpoint.
"""

from dataclasses import dataclass, field
from datetime import datetime


class _Unchanged:
    """An unchanged TOASTed value (pgoutput 'u'): the destination keeps what it has."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "UNCHANGED"

    def __reduce__(self):
        return (_Unchanged, ())


UNCHANGED = _Unchanged()


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int = -1
    is_key: bool = False
    # pg_attribute.attnum, from the source catalog (0: not known, as in a Relation
    # message). A column dropped and added again under its name gets a new number,
    # so it tells the new column from the old one; not part of the shape (no compare).
    number: int = field(default=0, compare=False)


@dataclass(frozen=True)
class ColumnFill:
    """What the rows that existed when a column was added to the source hold in it
    (PostgreSQL writes no WAL for them). `value`: one value for all of them, in
    PostgreSQL's text form (a constant default: pg_attribute.attmissingval);
    `per_row`: each row got its own (a volatile default, an identity), so only a
    copy of the table brings them. A column without a fill held NULL."""

    value: str | None = None
    per_row: bool = False


@dataclass
class Relation:
    """A source table's shape, from a pgoutput Relation message or the catalog."""

    oid: int
    schema: str
    name: str
    columns: list[Column]
    replica_identity: str = "d"  # d(efault), n(othing), f(ull), i(ndex)

    @property
    def key_columns(self) -> list[str]:
        return [column.name for column in self.columns if column.is_key]

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


@dataclass
class TableChanges:
    """One table's changes in a batch, folded per primary key.

    If `truncated`, the destination table is emptied first; `upserts` and
    `deletes` then hold only what happened after the last TRUNCATE.
    A key is in at most one of `upserts` and `deletes`.

    Row values are Python values converted by the source column's type OID
    (engine/pgtypes.py): int (int2/4/8, oid), float (float4/8),
    Decimal (numeric, exact; NaN/Infinity as Decimal too), bool, str (text,
    varchar, bpchar, name), uuid.UUID, date, datetime (naive for timestamp,
    aware in UTC for timestamptz), dict/list/str/int... (json/jsonb, parsed),
    bytes (bytea), and lists (possibly nested, with None) for arrays of those.
    Any other type (and a value these cannot hold, e.g. timestamp 'infinity')
    stays as PostgreSQL's text form, a str.

    With `text_values` (for writers whose accepts_text_values is True), every
    value and key is PostgreSQL's text form as pgoutput sent it (a str, with
    the source session's TimeZone=UTC and DateStyle=ISO), None, or UNCHANGED:
    the writer loads text as it is and lets its database parse it.
    """

    relation: Relation  # the newest shape seen in the batch
    target_table: str
    truncated: bool = False
    # key tuple (values of relation.key_columns) -> (row as {column: value}, commit LSN);
    # the row may be a WireRow instead (wire_rows).
    # A value may be UNCHANGED; a column missing from the dict did not exist yet
    # when the change was made (a column added mid-batch): write NULL.
    upserts: dict[tuple, tuple[dict, int]] = field(default_factory=dict)
    # key tuple -> commit LSN of the delete
    deletes: dict[tuple, int] = field(default_factory=dict)
    # Keys whose first change in the batch was an INSERT: the destination, which holds
    # what was applied up to the checkpoint, had no row under them when the batch began.
    # A writer may insert their rows without a conflict check, falling back to its merge
    # if one is there after all (a row written by hand, a soft-deleted row). Keys in here
    # may since have been deleted: only those also in `upserts` count. Their rows hold
    # no UNCHANGED value (whoever puts one in a row takes its key out of here), so the
    # writer need not look.
    fresh: set = field(default_factory=set)
    text_values: bool = False
    # Some rows in `upserts` are WireRows (engine/_fastfold.pyx), not dicts: the compiled
    # fold kept them as pgoutput's bytes for a writer that reads them so
    # (Writer.reads_wire_rows). Whatever else reads rows calls materialize() first.
    wire_rows: bool = False
    # Columns of `relation` added on the source with a value for the rows that
    # existed then (from the source catalog): the writer gives existing rows that
    # value when it adds the column. See ColumnFill.
    column_fills: dict[str, ColumnFill] = field(default_factory=dict)
    # The table's shape changed within the batch (a Relation message after some of its
    # changes): rows may lack columns that `relation` has.
    reshaped: bool = False
    inserted: int = 0  # counts of source changes, before folding
    updated: int = 0
    deleted: int = 0
    # What the writer's prepare_batch made of these changes ahead of apply_batch.
    prepared: object = None

    def materialize(self) -> None:
        """Make the rows kept as pgoutput's bytes (wire_rows) into the dicts the fold
        would have made, in place. A writer that reads WireRows in its binary COPY keeps
        them only while it does not read them otherwise."""
        if not self.wire_rows:
            return
        upserts = self.upserts
        for key, (row, lsn) in upserts.items():  # a value replaced, no key added: allowed
            if type(row) is not dict:
                upserts[key] = (row.as_dict(), lsn)
        self.wire_rows = False


@dataclass
class Batch:
    """Everything one run applies, in one destination transaction."""

    tables: dict[tuple[str, str], TableChanges] = field(default_factory=dict)
    start_lsn: int = 0  # first commit applied
    end_lsn: int = 0  # the new checkpoint: end LSN of the last commit applied
    transactions: int = 0
    changes: int = 0
    bytes_read: int = 0
    notes: list[str] = field(default_factory=list)  # e.g. "column public.t.c dropped on the source"
    last_commit_time: datetime | None = None  # source commit time of the last transaction applied
    # Batch sources (engine/batch_sources): the reader's position and the table's schema,
    # written with the checkpoint in the same transaction; and the records that could not
    # be loaded, as (file or URL, line, reason, raw text), kept in _rosetta_rejects.
    checkpoint_state: dict | None = None
    rejects: list[tuple] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.tables and self.end_lsn == 0


@dataclass
class ApplyResult:
    inserted: int = 0  # rows the destination inserted / updated / deleted after folding
    updated: int = 0
    deleted: int = 0
    notes: list[str] = field(default_factory=list)
    # (schema, table) -> why the table must be copied again (a column whose existing
    # rows each got their own value); the next run copies it.
    recopy: dict[tuple[str, str], str] = field(default_factory=dict)


@dataclass
class SchemaAlignment:
    """What Writer.align_table did to one destination table."""

    notes: list[str] = field(default_factory=list)
    recopy: str | None = None  # why the table must be copied again; None if aligned in place
    # Columns dropped and added again under their name on the source (schema_changes.plan)
    replaced: list[str] = field(default_factory=list)
