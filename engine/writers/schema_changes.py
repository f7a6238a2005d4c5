"""The one schema-change policy of every writer.

Given what a destination table has and the source table's shape, plan() says
what to do: add a column, widen one, mark one the source dropped, bring one
back; or refuses, naming the column and the fix (refresh that table). Each
writer describes its destination's types through a small Dialect and renders
the actions in its own SQL (DuckDB and Snowflake, whose SQL is text, through
schema_change_ddl); none of them decides anything here.

Whether a type change keeps every value is decided once, on PostgreSQL types
(`widens`): a destination column's type is read back as the source type it
can hold (Dialect.source_type), so `int -> bigint` is the same decision for
PostgreSQL (int4 -> int8), DuckDB (INTEGER -> BIGINT) and Snowflake
(NUMBER(10,0) -> NUMBER(19,0)). A change that maps to the same destination
type (varchar(10) -> text is VARCHAR either way in DuckDB) needs nothing, and
neither does a narrower source type (bigint -> int, or changes read from
before a widening already applied): the destination column holds every value.

A column dropped and added again under the same name between two runs looks
the same by name and type; its number in the source catalog (pg_attribute.attnum)
is new. Each destination column records the number of the source column whose
values it holds, in its comment (written in the same transaction as the column
or the copy), so the difference survives a crash: a destination column whose
number differs, or is not recorded while others are, holds values the source
no longer has, and the table is copied again.
"""

import re
from dataclasses import dataclass, field

from engine.batch import ColumnFill, Relation

from . import types
from .base import IncompatibleSchemaChange

DROPPED_COMMENT = "Rosetta: dropped on the source; kept here, no longer updated."
SOURCE_COLUMN_COMMENT = "Rosetta: source column {}."
_SOURCE_COLUMN = re.compile(r"^Rosetta: source column (\d+)\.")  # other marks may follow


def source_column_comment(number: int) -> str:
    """The destination column's comment naming the source column (its attnum) it holds."""
    return SOURCE_COLUMN_COMMENT.format(int(number))


def source_number(comment: str | None) -> int | None:
    """The source column number a destination column's comment records, or None."""
    match = _SOURCE_COLUMN.match(comment or "")
    return int(match.group(1)) if match else None


_INTEGER_RANK = {types.INT2: 1, types.INT4: 2, types.INT8: 3}
_INTEGER_DIGITS = {types.INT2: 5, types.INT4: 10, types.INT8: 19}
_TEMPORAL = {types.TIME, types.TIMETZ, types.TIMESTAMP, types.TIMESTAMPTZ}


def widens(old: tuple[int, int], new: tuple[int, int]) -> bool:
    """True if every value of PostgreSQL type `old` (OID, modifier) is a value of `new`."""
    (old_oid, old_mod), (new_oid, new_mod) = old, new
    if (old_oid, old_mod) == (new_oid, new_mod):
        return True
    if new_oid == types.TEXT and new_mod == -1:
        return True
    if old_oid in _INTEGER_RANK and new_oid in _INTEGER_RANK:
        return _INTEGER_RANK[new_oid] >= _INTEGER_RANK[old_oid]
    if old_oid == types.FLOAT4 and new_oid == types.FLOAT8:
        return True
    if new_oid == types.NUMERIC and (old_oid in _INTEGER_DIGITS or old_oid == types.NUMERIC):
        new_ps = types.numeric_precision_scale(new_mod)
        if new_ps is None:
            return True
        old_ps = (
            (_INTEGER_DIGITS[old_oid], 0)
            if old_oid in _INTEGER_DIGITS
            else types.numeric_precision_scale(old_mod)
        )
        if old_ps is None:
            return False
        return new_ps[0] - new_ps[1] >= old_ps[0] - old_ps[1] and new_ps[1] >= old_ps[1]
    if old_oid in (types.VARCHAR, types.BPCHAR) and new_oid == types.VARCHAR:
        old_len, new_len = types.character_length(old_mod), types.character_length(new_mod)
        return new_len is None or (old_len is not None and new_len >= old_len)
    if old_oid == new_oid == types.BPCHAR:
        old_len, new_len = types.character_length(old_mod), types.character_length(new_mod)
        return new_len is None if old_len is None else new_len is None or new_len >= old_len
    if old_oid == new_oid and old_oid in _TEMPORAL:
        return new_mod == -1 or (old_mod != -1 and new_mod >= old_mod)
    return False


class Dialect:
    """What the planner needs to know about a destination's types. A type is any
    hashable value the writer reads from its catalog and compares (PostgreSQL:
    (OID, modifier); DuckDB and Snowflake: their own spelling)."""

    def column_type(self, column):
        """The destination type for a source column."""
        raise NotImplementedError

    def source_type(self, destination_type) -> tuple[int, int] | None:
        """The narrowest source type (OID, modifier) whose values a destination column of
        this type may hold; None when unknown (then any change of it is refused)."""
        raise NotImplementedError

    def converts_in_place(self, old, new) -> bool:
        """True if the destination can change a column from `old` to `new` in place
        (every value already fitting `new`)."""
        return True

    def type_name(self, destination_type) -> str:
        return str(destination_type)


@dataclass(frozen=True)
class DestinationColumn:
    name: str
    type: object
    nullable: bool = True
    marked_dropped: bool = False  # an earlier run noted that the source dropped it
    source_number: int | None = None  # the source column it holds (its comment); None: not recorded


@dataclass(frozen=True)
class AddColumn:
    name: str
    type: object
    fill: str | None = None  # the value (PostgreSQL text form) of every existing row; None: NULL


@dataclass(frozen=True)
class WidenColumn:
    name: str
    old_type: object
    new_type: object


@dataclass(frozen=True)
class MarkDropped:
    name: str
    drop_not_null: bool


@dataclass(frozen=True)
class BringBack:
    """The source has a column of this name again, a new one: every existing row
    takes its value for the rows that existed when it was added (`fill`)."""

    name: str
    fill: str | None = None


@dataclass(frozen=True)
class DropColumn:
    """Only for a column marked dropped whose name comes back with another type."""

    name: str


@dataclass(frozen=True)
class RecordSourceColumn:
    """Record in the column's comment which source column (attnum) it now holds."""

    name: str
    number: int


@dataclass
class SchemaPlan:
    actions: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Why the table must be copied again (a column whose existing rows each got their
    # own value: a volatile default, an identity); None if the actions are enough.
    recopy: str | None = None
    # Columns whose destination values belong to another source column of the same
    # name (dropped and added again) or are not known to be the source's: the copy
    # brings them, and changes read from before it keep the copy's value there.
    replaced: list[str] = field(default_factory=list)


def require_key(relation: Relation) -> list[str]:
    """The key columns changes are matched to destination rows by, or IncompatibleSchemaChange."""
    if not relation.key_columns:
        raise IncompatibleSchemaChange(
            f"Table {relation.schema}.{relation.name} has no primary key (nor replica identity) "
            "on the source, so its changes cannot be matched to destination rows: add a primary "
            "key on the source, then refresh the table."
        )
    return relation.key_columns


def plan(
    relation: Relation,
    existing: list[DestinationColumn],
    dialect: Dialect,
    *,
    where: str,
    existing_key: list[str] | None = None,
    fills: dict[str, ColumnFill] | None = None,
    meta_columns: dict[str, object] | None = None,
    not_sent: frozenset[str] = frozenset(),
) -> SchemaPlan:
    """The actions that bring a destination table (`existing`, in `where`) in line
    with `relation`, or IncompatibleSchemaChange.

    `existing_key`: the destination's key columns, if it records them ([] or None:
    not known, not checked). `fills`: what existing source rows hold in columns
    added to the source (from its catalog; a column absent here held NULL).
    `meta_columns`: Rosetta's own columns, added when missing, never marked dropped.
    `not_sent`: columns the source table has but its changes do not carry (generated
    columns, which PostgreSQL 15 does not send): left as they are.
    """
    fills = fills or {}
    meta_columns = meta_columns or {}
    source = f"{relation.schema}.{relation.name}"
    current = {column.name: column for column in existing}
    result = SchemaPlan()
    # The table records source column numbers (any column does): one not recorded is
    # not known to hold the source's values. A table from before numbers were recorded
    # takes the current ones.
    numbered = any(column.source_number is not None for column in existing)

    if existing_key and sorted(existing_key) != sorted(relation.key_columns):
        raise IncompatibleSchemaChange(
            f"The primary key of {source} is now ({', '.join(relation.key_columns) or 'none'}) but the "
            f"destination table {where} has ({', '.join(existing_key)}): refresh the table {source} so "
            "that it is copied again with the new key."
        )

    def fill_of(name: str) -> str | None:
        fill = fills.get(name)
        if fill is not None and fill.per_row and result.recopy is None:
            result.recopy = (
                f"Column {name} was added to {source} and every existing row got its own value "
                f"(a volatile default, an identity or a generated column): {where} is copied again."
            )
        return fill.value if fill is not None else None

    def record(column) -> None:
        """After the column holds the source's values: unless only a copy brings them
        (then the copy records it, and a crash before it leaves this undone)."""
        fill = fills.get(column.name)
        if column.number and not (fill is not None and fill.per_row):
            result.actions.append(RecordSourceColumn(column.name, column.number))

    for column in relation.columns:
        wanted = dialect.column_type(column)
        have = current.get(column.name)
        if have is None:
            fill = fill_of(column.name)
            result.actions.append(AddColumn(column.name, wanted, fill))
            record(column)
            shown = f" ({dialect.type_name(wanted)})"
            result.notes.append(
                f"Column {column.name}{shown} added to {where}"
                + (f", existing rows set to {fill}." if fill is not None else ".")
            )
            continue
        if have.marked_dropped:
            # A new column of an old name: its values replace the old ones, whatever its type.
            fill = fill_of(column.name)
            if have.type == wanted:
                result.actions.append(BringBack(column.name, fill))
            else:
                result.actions += [DropColumn(column.name), AddColumn(column.name, wanted, fill)]
            record(column)
            result.notes.append(
                f"Column {column.name} is back in {source}: {where} uses it again, its old values "
                f"replaced by {fill if fill is not None else 'NULL'} as on the source."
            )
            continue
        if column.number and have.source_number != column.number:
            if have.source_number is None and not numbered:
                result.actions.append(RecordSourceColumn(column.name, column.number))
            else:
                result.replaced.append(column.name)
                if result.recopy is None:
                    result.recopy = (
                        f"Column {column.name} of {source} was dropped and added again under its name: "
                        f"{where} still holds the old column's values, so it is copied again."
                        if have.source_number is not None
                        else f"Column {column.name} of {where} does not hold {source}'s values yet (a column "
                        f"whose existing rows each got their own value): {where} is copied again."
                    )
                if have.type != wanted:  # a new column of another type: the copy brings its values
                    result.actions += [DropColumn(column.name), AddColumn(column.name, wanted)]
                continue
        if have.type != wanted and not _holds(dialect, have.type, column):
            result.actions.append(_widen(relation, column, have, wanted, dialect, where))
            result.notes.append(
                f"Column {column.name} of {where} widened from {dialect.type_name(have.type)} "
                f"to {dialect.type_name(wanted)}."
            )

    for name, meta_type in meta_columns.items():
        if name not in current:
            result.actions.append(AddColumn(name, meta_type))

    wanted_names = set(relation.column_names)
    for column in existing:
        if column.name in wanted_names or column.name in meta_columns or column.name in not_sent:
            continue
        if column.marked_dropped:
            continue
        result.actions.append(MarkDropped(column.name, drop_not_null=not column.nullable))
        result.notes.append(
            f"Column {column.name} is no longer in {source}: it stays in {where} (nullable) with its "
            "old values and is no longer updated; new rows have NULL there."
        )
    return result


def _source_type(column) -> tuple[int, int]:
    if types.is_builtin(column.type_oid):
        return column.type_oid, column.type_modifier
    return types.TEXT, -1


def _holds(dialect: Dialect, destination_type, column) -> bool:
    """True if the destination column already holds every value of the source column's
    type: a source type narrowed, or changes from before a widening the destination
    already made. The column keeps its type."""
    held = dialect.source_type(destination_type)
    new = _source_type(column)
    return held is not None and widens(new, held) and _same_values_when_narrowed(held, new)


def _same_values_when_narrowed(old: tuple[int, int], new: tuple[int, int]) -> bool:
    """True if PostgreSQL converting a column from `old` to the narrower `new` leaves every
    value as it was (or fails): integers, numerics of one scale, text to varchar(n).
    Rounding (a smaller scale, float4, a timestamp precision) and reparsing (text to
    jsonb or int) change values, which only a new copy brings."""
    (old_oid, old_mod), (new_oid, new_mod) = old, new
    if old_oid in _INTEGER_RANK and new_oid in _INTEGER_RANK:
        return True
    if old_oid == new_oid == types.NUMERIC:
        old_ps, new_ps = types.numeric_precision_scale(old_mod), types.numeric_precision_scale(new_mod)
        return old_ps is not None and new_ps is not None and old_ps[1] == new_ps[1]
    return old_oid in (types.TEXT, types.VARCHAR) and new_oid == types.VARCHAR


def _widen(relation, column, have: DestinationColumn, wanted, dialect: Dialect, where: str) -> WidenColumn:
    """The in-place type change of a column, or IncompatibleSchemaChange."""
    source = f"{relation.schema}.{relation.name}"
    old_source_type = dialect.source_type(have.type)
    new_source_type = _source_type(column)
    if (
        old_source_type is None
        or not widens(old_source_type, new_source_type)
        or not dialect.converts_in_place(have.type, wanted)
    ):
        raise IncompatibleSchemaChange(
            f"Column {column.name} of {source} changed type on the source, from "
            f"{dialect.type_name(have.type)} to {dialect.type_name(wanted)} in the destination, and "
            f"the destination table {where} cannot take the new type in place with every value kept: "
            f"refresh the table {source} in the pipeline so that it is copied again with the new "
            "type (or let the pipeline re-copy such tables on its own)."
        )
    return WidenColumn(column.name, have.type, wanted)


def schema_change_ddl(
    action,
    table: str,
    column: str,
    column_type: str | None,
    *,
    set_type: str = "TYPE",
    no_comment: str = "NULL",
) -> list[str]:
    """The DDL of one planned schema change (see plan()) for a destination whose SQL
    is text (DuckDB, Snowflake): `table` and `column` quoted, `column_type` the column's
    destination type (for an added or widened column). The two spellings that differ:
    `set_type` ("ALTER COLUMN c TYPE t" or "SET DATA TYPE t") and `no_comment` (what
    removes a column comment). Filling the column's values follows (see fills_values)."""
    if isinstance(action, AddColumn):
        return [f"ALTER TABLE {table} ADD COLUMN {column} {column_type}"]
    if isinstance(action, WidenColumn):
        return [f"ALTER TABLE {table} ALTER COLUMN {column} {set_type} {column_type}"]
    if isinstance(action, MarkDropped):
        statements = (
            [f"ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL"] if action.drop_not_null else []
        )
        return [*statements, f"COMMENT ON COLUMN {table}.{column} IS '{DROPPED_COMMENT}'"]
    if isinstance(action, BringBack):
        return [f"COMMENT ON COLUMN {table}.{column} IS {no_comment}"]
    if isinstance(action, DropColumn):
        return [f"ALTER TABLE {table} DROP COLUMN {column}"]
    if isinstance(action, RecordSourceColumn):
        return [f"COMMENT ON COLUMN {table}.{column} IS '{source_column_comment(action.number)}'"]
    raise TypeError(f"unknown schema change {action!r}")


def fills_values(action) -> bool:
    """After its DDL, the action sets every existing row's value: an added column with a
    value for existing rows, or a column brought back (its old values replaced)."""
    return isinstance(action, BringBack) or (isinstance(action, AddColumn) and action.fill is not None)
