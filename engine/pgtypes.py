"""Converting pgoutput's text values to Python values, by the column's type OID.

pgoutput (protocol 1) sends every value in its PostgreSQL text form. The types
below become Python values through psycopg's own (C) text loaders; every other
type, and any value a Python type cannot hold (timestamp 'infinity', a date
before year 1), stays a str, so a destination can still store it as text.
"""

import json
import re
from collections.abc import Callable

import orjson
import psycopg
from psycopg.adapt import AdaptersMap, Transformer
from psycopg.postgres import types as pg_types
from psycopg.pq import Format
from psycopg.types.json import set_json_loads

# Type names whose values (and arrays of them) are converted.
CONVERTED_TYPE_NAMES = [
    "int2",
    "int4",
    "int8",
    "oid",
    "float4",
    "float8",
    "numeric",
    "bool",
    "text",
    "varchar",
    "bpchar",
    "name",
    "uuid",
    "date",
    "timestamp",
    "timestamptz",
    "json",
    "jsonb",
    "bytea",
]

OIDS = {name: pg_types.get(name).oid for name in CONVERTED_TYPE_NAMES}
ARRAY_OIDS = {pg_types.get(name).array_oid: name for name in CONVERTED_TYPE_NAMES}
ELEMENT_OIDS = {pg_types.get(name).array_oid: pg_types.get(name).oid for name in CONVERTED_TYPE_NAMES}
CONVERTED_OIDS = frozenset(OIDS.values()) | frozenset(ARRAY_OIDS)

# Session settings that make the text forms above unambiguous: the snapshot
# (COPY) and the logical decoding session (pgoutput's output functions) use them.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "bytea_output": "hex",
    "extra_float_digits": "3",
}

_long_number = re.compile(rb"\d{19}").search


def json_loads(data):
    """orjson, several times faster than json; json where orjson would round an
    integer beyond 64 bits to a float."""
    if _long_number(data):
        return json.loads(data)
    return orjson.loads(data)


_adapters = AdaptersMap(psycopg.adapters)
set_json_loads(json_loads, _adapters)
_transformer = Transformer(_adapters)


def type_name(oid: int) -> str | None:
    """'int4', 'int4[]', or None for a type that is kept as text."""
    for name, known in OIDS.items():
        if known == oid:
            return name
    if oid in ARRAY_OIDS:
        return ARRAY_OIDS[oid] + "[]"
    return None


def is_array(oid: int) -> bool:
    return oid in ARRAY_OIDS


def _as_text(data) -> str:
    return bytes(data).decode("utf-8")


def fast_converter(oid: int) -> Callable[[bytes], object]:
    """Like converter(), but raises on a value the Python type cannot hold (the
    caller falls back to converter() for that row)."""
    if oid not in CONVERTED_OIDS:
        return _as_text
    return _transformer.get_loader(oid, Format.TEXT).load


def converter(oid: int) -> Callable[[bytes], object]:
    """A function from the text form (bytes) to the Python value for this type."""
    if oid not in CONVERTED_OIDS:
        return _as_text
    load = _transformer.get_loader(oid, Format.TEXT).load

    def convert(data):
        try:
            return load(data)
        except Exception:  # psycopg's DataError for 'infinity' timestamps and the like
            return _as_text(data)

    return convert


# The kind (engine/_fastfold.pyx's copy_binary) that turns each type's text form into its
# binary COPY form; the PostgreSQL writer COPYs columns of other types as text.
BINARY_COPY_KINDS = {
    OIDS["int2"]: "int2",
    OIDS["int4"]: "int4",
    OIDS["int8"]: "int8",
    OIDS["bool"]: "bool",
    OIDS["text"]: "text",
    OIDS["varchar"]: "text",
    OIDS["bpchar"]: "text",
    OIDS["json"]: "json",
    OIDS["jsonb"]: "jsonb",
    OIDS["numeric"]: "numeric",
    OIDS["float4"]: "float4",
    OIDS["float8"]: "float8",
    OIDS["date"]: "date",
    OIDS["timestamp"]: "timestamp",
    OIDS["timestamptz"]: "timestamptz",
    OIDS["uuid"]: "uuid",
}
