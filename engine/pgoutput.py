"""A decoder for pgoutput, logical replication protocol version 1.

Each message is one row of pg_logical_slot_peek_binary_changes (or one
XLogData payload of a streaming connection). Layouts are from PostgreSQL's
"Logical Replication Message Formats". Tuple values stay raw here (bytes for
't', None for 'n', UNCHANGED for 'u'; or str with text_values=True, for writers
that load PostgreSQL's text form as it is); the fold converts them with the
relation's column types, so skipped transactions cost no conversion.
"""

import logging
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .batch import UNCHANGED, Column, Relation

log = logging.getLogger(__name__)

POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

_int8 = struct.Struct("!B")
_int16 = struct.Struct("!h")
_int32 = struct.Struct("!i")
_uint32 = struct.Struct("!I")
_int64 = struct.Struct("!q")
_begin = struct.Struct("!QqI")
_commit = struct.Struct("!BQQq")
_relation_column = struct.Struct("!Ii")


class DecodeError(Exception):
    """A message that does not follow the pgoutput layout."""


def pg_timestamp(microseconds: int) -> datetime:
    return POSTGRES_EPOCH + timedelta(microseconds=microseconds)


@dataclass(slots=True)
class Begin:
    final_lsn: int  # LSN of the commit record
    commit_time: datetime
    xid: int


@dataclass(slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # end of the commit record: where the next transaction may start
    commit_time: datetime


@dataclass(slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(slots=True)
class RelationMessage:
    relation: Relation


@dataclass(slots=True)
class TypeMessage:
    oid: int
    schema: str
    name: str


@dataclass(slots=True)
class Insert:
    relation_oid: int
    new: list


@dataclass(slots=True)
class Update:
    relation_oid: int
    old_kind: str | None  # 'K' (replica identity key only), 'O' (whole old row) or None
    old: list | None
    new: list


@dataclass(slots=True)
class Delete:
    relation_oid: int
    old_kind: str
    old: list


@dataclass(slots=True)
class Truncate:
    relation_oids: list[int]
    cascade: bool
    restart_identity: bool


@dataclass(slots=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(slots=True)
class Unknown:
    kind: str
    data: bytes


def _string(data, pos: int) -> tuple[str, int]:
    end = data.index(0, pos)
    return bytes(data[pos:end]).decode("utf-8"), end + 1


def _bytes_tuple(data, pos: int) -> tuple[list, int]:
    """TupleData -> (values, next position). 't' -> bytes, 'n' -> None, 'u' -> UNCHANGED."""
    (count,) = _int16.unpack_from(data, pos)
    pos += 2
    values = []
    append = values.append
    for _ in range(count):
        kind = data[pos]
        pos += 1
        if kind == 116:  # 't'
            (length,) = _int32.unpack_from(data, pos)
            pos += 4
            append(data[pos : pos + length])
            pos += length
        elif kind == 110:  # 'n'
            append(None)
        elif kind == 117:  # 'u'
            append(UNCHANGED)
        else:
            _bad_kind(kind)
    return values, pos


def _bad_kind(kind: int):
    if kind == 98:  # 'b': binary values only exist with the 'binary' option, never requested
        raise DecodeError("binary tuple values are not supported (the 'binary' option is not used)")
    raise DecodeError(f"unknown tuple value kind {chr(kind)!r}")


def text_row(data, pos: int) -> tuple[list, int, bool]:
    """A tuple's values with 't' values decoded to str, and whether a value was UNCHANGED
    ('u'); a separate loop from _bytes_tuple, as this is the hot path. The fold's fast
    path (BatchBuilder with text values) reads Insert/Update/Delete with it directly."""
    (count,) = _int16.unpack_from(data, pos)
    pos += 2
    values = []
    append = values.append
    unpack = _int32.unpack_from
    unchanged = False
    for _ in range(count):
        kind = data[pos]
        if kind == 116:  # 't'
            (length,) = unpack(data, pos + 1)
            pos += 5 + length
            append(data[pos - length : pos].decode())
        elif kind == 110:  # 'n'
            pos += 1
            append(None)
        elif kind == 117:  # 'u'
            pos += 1
            append(UNCHANGED)
            unchanged = True
        else:
            _bad_kind(kind)
    return values, pos, unchanged


def _text_tuple(data, pos: int) -> tuple[list, int]:
    """_bytes_tuple with 't' values decoded to str."""
    values, pos, _ = text_row(data, pos)
    return values, pos


def _relation(data) -> RelationMessage:
    (oid,) = _uint32.unpack_from(data, 1)
    schema, pos = _string(data, 5)
    name, pos = _string(data, pos)
    replica_identity = chr(data[pos])
    (count,) = _int16.unpack_from(data, pos + 1)
    pos += 3
    columns = []
    for _ in range(count):
        flags = data[pos]
        column_name, pos = _string(data, pos + 1)
        type_oid, type_modifier = _relation_column.unpack_from(data, pos)
        pos += 8
        columns.append(Column(column_name, type_oid, type_modifier, is_key=bool(flags & 1)))
    # pgoutput writes "" for pg_catalog; user tables always have a schema.
    return RelationMessage(Relation(oid, schema or "pg_catalog", name, columns, replica_identity))


def decode(data, text_values: bool = False) -> object:
    """One pgoutput message (bytes) -> one of the message classes above.
    text_values: tuple values as str (PostgreSQL's text form) instead of bytes."""
    kind = data[0]
    read_tuple = _text_tuple if text_values else _bytes_tuple
    if kind == 73:  # 'I'
        (oid,) = _uint32.unpack_from(data, 1)
        if data[5] != 78:  # 'N'
            raise DecodeError("Insert without a new tuple")
        values, _ = read_tuple(data, 6)
        return Insert(oid, values)
    if kind == 85:  # 'U'
        (oid,) = _uint32.unpack_from(data, 1)
        marker = data[5]
        old_kind, old, pos = None, None, 5
        if marker in (75, 79):  # 'K' / 'O'
            old_kind = chr(marker)
            old, pos = read_tuple(data, 6)
            marker = data[pos]
        if marker != 78:
            raise DecodeError("Update without a new tuple")
        new, _ = read_tuple(data, pos + 1)
        return Update(oid, old_kind, old, new)
    if kind == 68:  # 'D'
        (oid,) = _uint32.unpack_from(data, 1)
        old_kind = chr(data[5])
        old, _ = read_tuple(data, 6)
        return Delete(oid, old_kind, old)
    if kind == 66:  # 'B'
        final_lsn, timestamp, xid = _begin.unpack_from(data, 1)
        return Begin(final_lsn, pg_timestamp(timestamp), xid)
    if kind == 67:  # 'C'
        flags, commit_lsn, end_lsn, timestamp = _commit.unpack_from(data, 1)
        return Commit(flags, commit_lsn, end_lsn, pg_timestamp(timestamp))
    if kind == 82:  # 'R'
        return _relation(data)
    if kind == 84:  # 'T'
        (count,) = _int32.unpack_from(data, 1)
        options = data[5]
        oids = list(struct.unpack_from(f"!{count}I", data, 6))
        return Truncate(oids, bool(options & 1), bool(options & 2))
    if kind == 89:  # 'Y'
        (oid,) = _uint32.unpack_from(data, 1)
        schema, pos = _string(data, 5)
        name, _ = _string(data, pos)
        return TypeMessage(oid, schema, name)
    if kind == 79:  # 'O'
        (lsn,) = _int64.unpack_from(data, 1)
        name, _ = _string(data, 9)
        return Origin(lsn, name)
    if kind == 77:  # 'M'
        flags = data[1]
        (lsn,) = _int64.unpack_from(data, 2)
        prefix, pos = _string(data, 10)
        (length,) = _int32.unpack_from(data, pos)
        return Message(bool(flags & 1), lsn, prefix, bytes(data[pos + 4 : pos + 4 + length]))
    return Unknown(chr(kind), bytes(data))
