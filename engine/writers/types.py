"""PostgreSQL type OIDs and type modifiers, mapped to what the destinations store.

pgoutput Relation messages (and the catalog, `pg_attribute.atttypid/atttypmod`)
describe each source column by type OID and type modifier. The writers need a
target type for each and the source's snapshot query needs to know which
columns to cast, so the facts live here, with no database access:

- `BUILTIN_TYPE_NAMES`: OID -> PostgreSQL's internal type name (`pg_type.typname`)
  for the built-in types Rosetta knows; arrays are `_name` as in the catalog.
- `is_builtin(oid)`: OIDs below 16384 are built into every PostgreSQL server
  (same OID everywhere); anything above is user-defined (enums, domains,
  composites, extension types such as citext or hstore). The source converts
  those to text, and the writers store them as text.
- `LIST_ELEMENT_TYPES`: arrays of these arrive as Python lists, others as text.
- `numeric_precision_scale(typmod)`, `decimal38_precision_scale(typmod)`, `character_length(typmod)`: decode modifiers.
- `duckdb_type(oid, typmod)`: the DuckDB column type (also a reasonable start for
  other warehouses: JSON for json/jsonb, DECIMAL(p,s) up to 38 digits, LIST for
  arrays, VARCHAR for anything else).
"""

FIRST_USER_OID = 16384  # FirstNormalObjectId: every OID below is fixed by PostgreSQL itself

BOOL = 16
BYTEA = 17
CHAR = 18
NAME = 19
INT8 = 20
INT2 = 21
INT4 = 23
TEXT = 25
OID = 26
JSON = 114
FLOAT4 = 700
FLOAT8 = 701
BPCHAR = 1042
VARCHAR = 1043
DATE = 1082
TIME = 1083
TIMESTAMP = 1114
TIMESTAMPTZ = 1184
INTERVAL = 1186
TIMETZ = 1266
NUMERIC = 1700
UUID = 2950
JSONB = 3802

BUILTIN_TYPE_NAMES = {
    BOOL: "bool",
    BYTEA: "bytea",
    CHAR: "char",
    NAME: "name",
    INT8: "int8",
    INT2: "int2",
    INT4: "int4",
    TEXT: "text",
    OID: "oid",
    JSON: "json",
    FLOAT4: "float4",
    FLOAT8: "float8",
    BPCHAR: "bpchar",
    VARCHAR: "varchar",
    DATE: "date",
    TIME: "time",
    TIMESTAMP: "timestamp",
    TIMESTAMPTZ: "timestamptz",
    INTERVAL: "interval",
    TIMETZ: "timetz",
    NUMERIC: "numeric",
    UUID: "uuid",
    JSONB: "jsonb",
}

# array type OID -> element type OID (pg_type.typelem), for the element types above
ARRAY_ELEMENT = {
    1000: BOOL,
    1001: BYTEA,
    1002: CHAR,
    1003: NAME,
    1016: INT8,
    1005: INT2,
    1007: INT4,
    1009: TEXT,
    1028: OID,
    199: JSON,
    1021: FLOAT4,
    1022: FLOAT8,
    1014: BPCHAR,
    1015: VARCHAR,
    1182: DATE,
    1183: TIME,
    1115: TIMESTAMP,
    1185: TIMESTAMPTZ,
    1187: INTERVAL,
    1270: TIMETZ,
    1231: NUMERIC,
    2951: UUID,
    3807: JSONB,
}
BUILTIN_TYPE_NAMES.update(
    {array: "_" + BUILTIN_TYPE_NAMES[element] for array, element in ARRAY_ELEMENT.items()}
)

# Element types whose arrays the source hands over as Python lists (see
# engine/batch.py); an array of any other type arrives as PostgreSQL's
# text form ('{...}'), so a destination without PostgreSQL arrays stores it as text.
LIST_ELEMENT_TYPES = {
    BOOL,
    BYTEA,
    INT8,
    INT2,
    INT4,
    OID,
    TEXT,
    VARCHAR,
    BPCHAR,
    NAME,
    JSON,
    JSONB,
    FLOAT4,
    FLOAT8,
    NUMERIC,
    UUID,
    DATE,
    TIMESTAMP,
    TIMESTAMPTZ,
}

JSON_TYPES = {JSON, JSONB}
INTEGER_TYPES = {INT2, INT4, INT8, OID}
TEXT_TYPES = {TEXT, VARCHAR, BPCHAR, NAME, CHAR}


def is_builtin(oid: int) -> bool:
    """True for types every PostgreSQL server has under the same OID."""
    return 0 < oid < FIRST_USER_OID


def is_array(oid: int) -> bool:
    return oid in ARRAY_ELEMENT


def numeric_precision_scale(typmod: int) -> tuple[int, int] | None:
    """numeric(p,s) -> (p, s); None for an unconstrained numeric.

    The modifier is ((p << 16) | (s & 0x7ff)) + 4; since PostgreSQL 15 the scale
    may be negative or larger than the precision, so it is sign-extended from 11 bits.
    """
    if typmod < 4:
        return None
    value = typmod - 4
    precision = (value >> 16) & 0xFFFF
    scale = ((value & 0x7FF) ^ 1024) - 1024
    return precision, scale


def decimal38_precision_scale(typmod: int) -> tuple[int, int] | None:
    """(p, s) when numeric(p,s) fits a 38-digit decimal type (DuckDB DECIMAL,
    Snowflake NUMBER); None when it does not, and the exact text must be kept."""
    precision_scale = numeric_precision_scale(typmod)
    if precision_scale is None:
        return None
    precision, scale = precision_scale
    return precision_scale if 1 <= precision <= 38 and 0 <= scale <= precision else None


def type_name(oid: int, typmod: int = -1) -> str:
    """A readable name for a PostgreSQL type, for messages: int4, varchar(10), numeric(12,2), int4[]."""
    if oid in ARRAY_ELEMENT:
        return type_name(ARRAY_ELEMENT[oid], typmod) + "[]"
    name = BUILTIN_TYPE_NAMES.get(oid, f"type {oid}")
    if typmod < 0:
        return name
    if oid == NUMERIC:
        precision_scale = numeric_precision_scale(typmod)
        return f"{name}({precision_scale[0]},{precision_scale[1]})" if precision_scale else name
    if oid in (VARCHAR, BPCHAR):
        return f"{name}({typmod - 4})"
    if oid in (TIME, TIMETZ, TIMESTAMP, TIMESTAMPTZ):
        return f"{name}({typmod})"
    return name


def character_length(typmod: int) -> int | None:
    """varchar(n)/char(n) -> n; None when unbounded."""
    return typmod - 4 if typmod >= 4 else None


_DUCKDB_SCALAR = {
    BOOL: "BOOLEAN",
    BYTEA: "BLOB",
    INT8: "BIGINT",
    INT2: "SMALLINT",
    INT4: "INTEGER",
    OID: "BIGINT",
    JSON: "JSON",
    JSONB: "JSON",
    FLOAT4: "FLOAT",
    FLOAT8: "DOUBLE",
    DATE: "DATE",
    TIME: "TIME",
    TIMESTAMP: "TIMESTAMP",
    TIMESTAMPTZ: "TIMESTAMP WITH TIME ZONE",
    INTERVAL: "INTERVAL",
    TIMETZ: "TIME WITH TIME ZONE",
    UUID: "UUID",
}


def duckdb_type(oid: int, typmod: int = -1) -> str:
    """The DuckDB column type for a PostgreSQL column, spelled as duckdb_columns() shows it.

    numeric(p,s) with 1 <= p <= 38 and 0 <= s <= p becomes DECIMAL(p,s); an
    unconstrained or wider numeric becomes VARCHAR, because DuckDB has no exact
    type for it and a DOUBLE would silently round. Arrays of LIST_ELEMENT_TYPES
    become LISTs. Types Rosetta does not know (user-defined ones included, and
    other arrays) become VARCHAR holding PostgreSQL's text form.
    """
    if oid in ARRAY_ELEMENT:
        if ARRAY_ELEMENT[oid] in LIST_ELEMENT_TYPES:
            return duckdb_type(ARRAY_ELEMENT[oid], typmod) + "[]"
        return "VARCHAR"
    if oid == NUMERIC:
        precision_scale = decimal38_precision_scale(typmod)
        if precision_scale is None:
            return "VARCHAR"
        precision, scale = precision_scale
        return f"DECIMAL({precision},{scale})"
    return _DUCKDB_SCALAR.get(oid, "VARCHAR")
