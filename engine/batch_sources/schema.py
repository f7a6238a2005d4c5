"""Column names and types for records that carry neither: normalized names, inferred types.

Names: lower case, [a-z0-9_] only, at most 63 characters, unique, never one of
Rosetta's own `_rosetta_*` columns; once a field has a name it keeps it (the
mapping is part of the checkpoint state).

Types are one of TYPES. A CSV value is text and is read as the narrowest type
that holds it (bigint, double, boolean, date, timestamp[tz]; "" is NULL; a
number with a leading zero stays text, it is a code, not a quantity). A JSON
value has its own type; a string in ISO 8601 date or timestamp form is read as
one; objects and arrays are json. A column keeps its type while new values fit
it; a value that does not fit widens the column to text (never narrows it).
"""

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime

from destinations.writers import types as pg

ROW_ID = "_rosetta_row_id"  # the key of a table without a declared primary key
MAX_NAME = 63

TYPE_OIDS = {
    "bigint": pg.INT8,
    "double": pg.FLOAT8,
    "boolean": pg.BOOL,
    "date": pg.DATE,
    "timestamp": pg.TIMESTAMP,
    "timestamptz": pg.TIMESTAMPTZ,
    "text": pg.TEXT,
    "json": pg.JSONB,
}
TYPES = tuple(TYPE_OIDS)

_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?\Z")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?\Z"
)
_INT64 = (-(2**63), 2**63 - 1)


def normalize_name(original: str) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", original.strip().lower())
    name = re.sub(r"_+", "_", name).strip("_") or "column"
    if name[0].isdigit():
        name = f"_{name}"
    if name.startswith("rosetta_"):
        name = f"field_{name}"  # never taken for one of Rosetta's _rosetta_* columns
    return name[:MAX_NAME]


def _temporal(text: str):
    """(type, value) for an ISO date or timestamp string, or None."""
    if len(text) == 10 and _DATE.match(text):
        try:
            return "date", date.fromisoformat(text)
        except ValueError:
            return None
    if len(text) >= 16 and _TIMESTAMP.match(text):
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return None
        return ("timestamptz" if value.tzinfo else "timestamp"), value
    return None


def classify_text(text: str):
    """(type, value) of a CSV field; (None, None) for the empty string (NULL)."""
    if text == "":
        return None, None
    if text.isdigit() and text.isascii() and (text[0] != "0" or len(text) == 1) and len(text) < 19:
        return "bigint", int(text)  # the common case, without a regular expression
    first = text[0]
    if first.isdigit() or first in "+-.":
        if _INT.match(text):
            value = int(text)
            if _INT64[0] <= value <= _INT64[1]:
                return "bigint", value
            return "text", text
        if _FLOAT.match(text) and not (text.lstrip("+-").startswith("0") and text.lstrip("+-")[1:2].isdigit()):
            return "double", float(text)
        temporal = _temporal(text)
        if temporal:
            return temporal
        return "text", text
    if len(text) in (4, 5):
        lowered = text.lower()
        if lowered == "true":
            return "boolean", True
        if lowered == "false":
            return "boolean", False
    return "text", text


def classify_json(value):
    """(type, value) of a JSON value; (None, None) for null."""
    if value is None:
        return None, None
    if value is True or value is False:
        return "boolean", value
    if isinstance(value, int):
        return ("bigint", value) if _INT64[0] <= value <= _INT64[1] else ("text", str(value))
    if isinstance(value, float):
        return "double", value
    if isinstance(value, str):
        return _temporal(value) or ("text", value)
    return "json", value


def merge_types(a: str | None, b: str | None) -> str | None:
    """The type of a column holding values of types a and b (within one part)."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    if {a, b} == {"bigint", "double"}:
        return "double"
    if "json" in (a, b):
        return "json"
    return "text"


def widen(established: str | None, new: str | None) -> str | None:
    """The column's type once a part whose values are `new` is added. Existing
    destination columns only ever widen: to text, or bigint values into double."""
    if established is None or established == new or new is None:
        return established or new
    if established == "double" and new == "bigint":
        return "double"
    if established in ("json", "text"):
        return established
    return "text"


def as_text(value, original):
    """The text form of a value for a text column: the CSV field as it was, JSON as JSON."""
    if isinstance(original, str):
        return original
    if original is True or original is False:
        return "true" if original else "false"
    if isinstance(original, (dict, list)):
        return json.dumps(original, ensure_ascii=False, separators=(",", ":"))
    return str(original)


def convert(kind: str | None, value, original, column_type: str):
    """A classified value as the column's type wants it."""
    if kind is None:
        return None
    if kind == column_type:
        return value
    if column_type == "text":
        return as_text(value, original)
    if column_type == "double" and kind == "bigint":
        return float(value)
    if column_type == "json":
        return original  # a JSON scalar in a json column
    return as_text(value, original)


@dataclass
class TableSchema:
    """The fields seen so far: original name -> column name, and each column's type."""

    mapping: dict[str, str] = field(default_factory=dict)
    types: dict[str, str | None] = field(default_factory=dict)  # column -> type (None: only NULLs so far)

    @classmethod
    def from_state(cls, state: dict | None) -> "TableSchema":
        state = state or {}
        return cls(mapping=dict(state.get("mapping", {})), types=dict(state.get("types", {})))

    def to_state(self) -> dict:
        return {"mapping": dict(self.mapping), "types": dict(self.types)}

    def column_for(self, original: str) -> str:
        name = self.mapping.get(original)
        if name is None:
            base = normalize_name(original)
            name, taken, n = base, set(self.mapping.values()) | {ROW_ID}, 2
            while name in taken:
                suffix = f"_{n}"
                name = base[: MAX_NAME - len(suffix)] + suffix
                n += 1
            self.mapping[original] = name
            self.types.setdefault(name, None)
        return name
