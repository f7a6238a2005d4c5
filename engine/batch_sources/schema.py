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

from engine.writers import types as pg

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
        if _FLOAT.match(text) and not (
            text.lstrip("+-").startswith("0") and text.lstrip("+-")[1:2].isdigit()
        ):
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


# -- a whole CSV column at once (Arrow), falling back to classify_text per value -------

_ARROW_PATTERNS = {
    "bigint": r"^[+-]?(0|[1-9][0-9]{0,17})$",
    "double": r"^[+-]?([1-9][0-9]*|0)?(\.[0-9]*)?([eE][+-]?[0-9]+)?$",
    "boolean": r"^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$",
    "date": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    "timestamptz": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})$",
    "timestamp": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?$",
}
# A value that might be anything but text: a number, a date, a boolean.
_MAYBE_TYPED = r"^([+.0-9-]|[Tt][Rr][Uu][Ee]$|[Ff][Aa][Ll][Ss][Ee]$)"
_NULL = (None, None)


def classify_text_column(values: list) -> list[tuple]:
    """classify_text of every value (None: a missing field), computed by Arrow for a column
    whose values are all of one type, else value by value. The column's type and values come
    out the same either way (Arrow calls a whole number in a column of decimals a double at
    once, where classify_text says bigint and the merge says double)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = pa.array(values, pa.string())
    present = pc.and_kleene(pc.is_valid(array), pc.not_equal(array, ""))
    given = array.filter(present)
    if len(given) == 0:
        return [_NULL] * len(values)
    maybe_typed = pc.match_substring_regex(given, _MAYBE_TYPED)
    if not pc.any(maybe_typed).as_py():
        return [_NULL if v is None or v == "" else ("text", v) for v in values]
    nulled = pc.if_else(present, array, pa.scalar(None, pa.string()))
    for kind, pattern in _ARROW_PATTERNS.items():
        if not pc.all(pc.match_substring_regex(given, pattern)).as_py():
            continue
        try:
            if kind == "bigint":
                parsed = pc.cast(nulled, pa.int64())
            elif kind == "double":
                if pc.any(pc.match_substring_regex(given, r"^[+-]?(\.|$|[.eE])|^[+-]?[0-9]{19,}$")).as_py():
                    break  # "+", ".5", integers beyond bigint (text): let classify_text decide
                parsed = pc.cast(nulled, pa.float64())
            elif kind == "boolean":
                parsed = pc.equal(pc.utf8_lower(nulled), "true")
            elif kind == "date":
                parsed = pc.cast(nulled, pa.date32())
            elif kind == "timestamptz":
                parsed = pc.cast(
                    pc.replace_substring_regex(nulled, "Z$", "+00:00"), pa.timestamp("us", "UTC")
                )
            else:
                parsed = pc.cast(nulled, pa.timestamp("us"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            break
        return [_NULL if v is None else (kind, v) for v in parsed.to_pylist()]
    return [_NULL if v is None else classify_text(v) for v in values]
