"""Table names as operators type them: one parser for the API, the admin and the engine.

`schema.table`, `table` (meaning public.table), with either part in double
quotes as in SQL: `"public"."t"` is public.t, `"my schema"."a.b"` is a table
named a.b in schema `my schema`, and `""` inside quotes is one `"`. An
unquoted part is taken as it is written, case included (Rosetta does not fold
case: `Orders` is the table `\\dt` shows as Orders); it may not hold a dot or a
quote, and spaces around it are dropped. PostgreSQL identifiers are at most
63 bytes and never hold a NUL.
"""

MAX_IDENTIFIER_BYTES = 63
DEFAULT_SCHEMA = "public"


class TableNameError(ValueError):
    """A table name that cannot be read; the message says why."""


def parse_identifier(text: str) -> str:
    """One identifier, quoted or not, -> its name (`"a ""b"" c"` -> `a "b" c`)."""
    name, rest = _read_identifier(text.strip(), 0, text)
    if rest != len(text.strip()):
        raise TableNameError(f'{text!r} is not one name: quote it ("...") if it holds a dot or a quote.')
    return name


def parse_table_name(text: str) -> tuple[str, str]:
    """`schema.table` or `table` (public) -> (schema, table), quotes removed."""
    if not isinstance(text, str):
        raise TableNameError(f"{text!r} is not a table name of the form schema.table.")
    stripped = text.strip()
    parts = []
    position = 0
    while True:
        name, position = _read_identifier(stripped, position, text)
        parts.append(name)
        while position < len(stripped) and stripped[position] == " ":
            position += 1
        if position == len(stripped):
            break
        if stripped[position] != "." or len(parts) == 2:
            raise TableNameError(
                f"{text!r} is not a table name of the form schema.table "
                '(quote a name that holds a dot or a quote: "my.schema"."my table").'
            )
        position += 1
    if len(parts) == 1:
        return DEFAULT_SCHEMA, parts[0]
    return parts[0], parts[1]


def format_identifier(name: str) -> str:
    """The name as parse_identifier reads it back: quoted only when it must be."""
    if name and name == name.strip() and "." not in name and '"' not in name:
        return name
    return '"' + name.replace('"', '""') + '"'


def format_table_name(schema: str, table: str) -> str:
    """(schema, table) -> `schema.table`, quoting a part that needs it, so that
    parse_table_name(format_table_name(s, t)) == (s, t)."""
    return f"{format_identifier(schema)}.{format_identifier(table)}"


def _read_identifier(text: str, position: int, original: str) -> tuple[str, int]:
    """Read one identifier of `text` from `position`; returns (name, next position)."""
    while position < len(text) and text[position] == " ":
        position += 1
    if position < len(text) and text[position] == '"':
        chars = []
        position += 1
        while True:
            end = text.find('"', position)
            if end < 0:
                raise TableNameError(f"{original!r} has a quote that is not closed.")
            chars.append(text[position:end])
            if text.startswith('""', end):
                chars.append('"')
                position = end + 2
                continue
            position = end + 1
            break
        name = "".join(chars)
    else:
        end = position
        while end < len(text) and text[end] not in '."':
            end += 1
        if end < len(text) and text[end] == '"':
            raise TableNameError(f'{original!r}: a quote may only enclose a whole name ("...").')
        name = text[position:end].strip()
        position = end
    _check(name, original)
    return name, position


def _check(name: str, original: str) -> None:
    if not name:
        raise TableNameError(f"{original!r} is not a table name of the form schema.table (a name is empty).")
    if "\x00" in name:
        raise TableNameError(f"{original!r}: a name may not hold a NUL character.")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise TableNameError(f"{name!r} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes for a name.")
