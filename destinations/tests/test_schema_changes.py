"""The one schema-change planner of every writer, as a table of cases; each writer's
rendering of the actions is tested with the writer (test_writer_changes.py, test_writer_snowflake.py)."""

import pytest

from engine.batch import Column, ColumnFill, Relation
from engine.writers import types
from engine.writers.base import IncompatibleSchemaChange
from engine.writers.duckdb import DIALECT as DUCKDB
from engine.writers.postgres import DIALECT as POSTGRES
from engine.writers.schema_changes import (
    AddColumn,
    BringBack,
    DestinationColumn,
    DropColumn,
    MarkDropped,
    RecordSourceColumn,
    WidenColumn,
    plan,
    source_column_comment,
    source_number,
    widens,
)
from engine.writers.snowflake import DIALECT as SNOWFLAKE

DIALECTS = {"postgres": POSTGRES, "duckdb": DUCKDB, "snowflake": SNOWFLAKE}


def numeric(precision, scale):
    return types.NUMERIC, ((precision << 16) | scale) + 4


def varchar(length):
    return types.VARCHAR, length + 4


def bpchar(length):
    return types.BPCHAR, length + 4


INT2, INT4, INT8 = (types.INT2, -1), (types.INT4, -1), (types.INT8, -1)
TEXT, JSONB, FLOAT4, FLOAT8 = (types.TEXT, -1), (types.JSONB, -1), (types.FLOAT4, -1), (types.FLOAT8, -1)
TIMESTAMP, TIMESTAMPTZ = (types.TIMESTAMP, -1), (types.TIMESTAMPTZ, -1)
DATE, UUID = (types.DATE, -1), (types.UUID, -1)


@pytest.mark.parametrize(
    ("old", "new", "keeps_every_value"),
    [
        (INT2, INT4, True),
        (INT4, INT8, True),
        (INT2, INT8, True),
        (INT8, INT4, False),
        (INT4, INT2, False),
        (INT4, numeric(12, 2), True),
        (INT4, numeric(10, 0), True),
        (INT4, numeric(9, 0), False),
        (INT8, numeric(12, 2), False),
        (INT8, (types.NUMERIC, -1), True),
        (numeric(10, 2), numeric(12, 2), True),
        (numeric(10, 2), numeric(12, 3), True),
        (numeric(10, 2), numeric(10, 3), False),
        (numeric(12, 2), numeric(10, 2), False),
        (numeric(10, 2), (types.NUMERIC, -1), True),
        ((types.NUMERIC, -1), numeric(38, 10), False),
        (FLOAT4, FLOAT8, True),
        (FLOAT8, FLOAT4, False),
        (INT4, FLOAT8, False),
        (varchar(10), varchar(20), True),
        (varchar(20), varchar(10), False),
        (varchar(10), TEXT, True),
        (varchar(10), (types.VARCHAR, -1), True),
        (TEXT, varchar(10), False),
        (bpchar(3), bpchar(5), True),
        (bpchar(3), varchar(3), True),
        (bpchar(5), bpchar(3), False),
        (JSONB, TEXT, True),
        (INT4, TEXT, True),
        (TEXT, JSONB, False),
        (TEXT, INT4, False),
        (TIMESTAMP, TIMESTAMPTZ, False),
        (TIMESTAMPTZ, TIMESTAMP, False),
        ((types.TIMESTAMP, 3), TIMESTAMP, True),
        (TIMESTAMP, (types.TIMESTAMP, 3), False),
        (DATE, TIMESTAMP, False),
        (UUID, TEXT, True),
        (TEXT, UUID, False),
    ],
)
def test_which_source_type_changes_keep_every_value(old, new, keeps_every_value):
    assert widens(old, new) is keeps_every_value


def relation(*columns: Column) -> Relation:
    return Relation(1, "public", "t", list(columns))


def key(name="id", type_=INT8) -> Column:
    return Column(name, *type_, is_key=True)


def col(name, type_) -> Column:
    return Column(name, *type_)


def destination(dialect, source: Relation, **changed) -> list[DestinationColumn]:
    """The destination table as the writer made it for `source`."""
    return [
        DestinationColumn(c.name, dialect.column_type(c), nullable=not c.is_key, **changed.get(c.name, {}))
        for c in source.columns
    ]


def planned(dialect, before: Relation, after: Relation, fills=None, **changed):
    return plan(
        after,
        destination(dialect, before, **changed),
        dialect,
        where="dst.t",
        existing_key=before.key_columns,
        fills=fills,
    )


@pytest.mark.parametrize(
    ("old", "new", "postgres", "duckdb", "snowflake"),
    [
        # what each destination does when a source column changes type ("": nothing to do)
        (INT4, INT8, "widen", "widen", "widen"),
        (INT2, INT4, "widen", "widen", "widen"),
        (varchar(10), TEXT, "widen", "", ""),
        (varchar(10), varchar(20), "widen", "", ""),
        (numeric(10, 2), numeric(14, 2), "widen", "widen", "widen"),
        (numeric(10, 2), numeric(14, 4), "widen", "widen", "refuse"),  # Snowflake keeps the scale
        (INT4, numeric(12, 2), "widen", "widen", "refuse"),
        (numeric(10, 2), (types.NUMERIC, -1), "widen", "widen", "widen"),  # VARCHAR in Snowflake: rewritten
        (FLOAT4, FLOAT8, "widen", "widen", ""),
        (INT4, TEXT, "widen", "widen", "widen"),  # Snowflake: rewritten as VARCHAR
        (JSONB, TEXT, "widen", "widen", "widen"),  # Snowflake: rewritten as VARCHAR (JSON text)
        (INT8, INT4, "", "", ""),  # narrower: the destination holds every value already
        (TEXT, varchar(10), "", "", ""),
        (numeric(14, 2), numeric(10, 2), "", "", ""),
        (numeric(14, 4), numeric(10, 2), "refuse", "refuse", "refuse"),  # rounds on the source
        (FLOAT8, FLOAT4, "refuse", "refuse", ""),
        (TEXT, JSONB, "refuse", "refuse", "refuse"),
        (TEXT, INT4, "refuse", "refuse", "refuse"),
        (TIMESTAMP, TIMESTAMPTZ, "refuse", "refuse", "refuse"),
        ((types.JSON, -1), JSONB, "refuse", "", ""),
    ],
)
def test_a_type_change_is_widened_in_place_or_refused_the_same_way_by_every_writer(
    old, new, postgres, duckdb, snowflake
):
    before, after = relation(key(), col("v", old)), relation(key(), col("v", new))
    for kind, expected in {"postgres": postgres, "duckdb": duckdb, "snowflake": snowflake}.items():
        dialect = DIALECTS[kind]
        if expected == "refuse":
            with pytest.raises(IncompatibleSchemaChange) as error:
                planned(dialect, before, after)
            message = str(error.value)
            assert "Column v of public.t" in message and "refresh the table public.t" in message, kind
            continue
        actions = planned(dialect, before, after).actions
        if expected == "widen":
            assert actions == [
                WidenColumn("v", dialect.column_type(col("v", old)), dialect.column_type(col("v", new)))
            ], kind
        else:
            assert actions == [], kind


@pytest.mark.parametrize("kind", DIALECTS)
def test_a_new_column_is_added_with_the_value_existing_rows_got(kind):
    dialect = DIALECTS[kind]
    before = relation(key(), col("name", TEXT))
    after = relation(key(), col("name", TEXT), col("score", INT4), col("note", TEXT))
    result = planned(dialect, before, after, fills={"score": ColumnFill("5")})
    assert result.actions == [
        AddColumn("score", dialect.column_type(col("score", INT4)), "5"),
        AddColumn("note", dialect.column_type(col("note", TEXT)), None),
    ]
    assert result.recopy is None
    assert any("score" in note and "set to 5" in note for note in result.notes)


@pytest.mark.parametrize("kind", DIALECTS)
def test_a_column_whose_rows_each_got_their_own_value_asks_for_a_copy(kind):
    dialect = DIALECTS[kind]
    before = relation(key(), col("name", TEXT))
    after = relation(key(), col("name", TEXT), col("created", TIMESTAMPTZ))
    result = planned(dialect, before, after, fills={"created": ColumnFill(per_row=True)})
    assert [type(action) for action in result.actions] == [AddColumn]
    assert "created" in result.recopy and "copied again" in result.recopy


@pytest.mark.parametrize("kind", DIALECTS)
def test_a_dropped_column_is_marked_once_and_brought_back_with_the_new_columns_value(kind):
    dialect = DIALECTS[kind]
    full = relation(key(), col("name", TEXT), col("score", INT4))
    narrower = relation(key(), col("name", TEXT))
    dropped = planned(dialect, full, narrower)
    assert dropped.actions == [MarkDropped("score", drop_not_null=False)]
    assert "no longer in public.t" in dropped.notes[0]

    marked = {"score": {"marked_dropped": True}}
    assert planned(dialect, full, narrower, **marked).actions == []  # noted once
    back = planned(dialect, full, full, fills={"score": ColumnFill("0")}, **marked)
    assert back.actions == [BringBack("score", "0")]
    assert planned(dialect, full, full, **marked).actions == [BringBack("score", None)]
    other_type = relation(key(), col("name", TEXT), col("score", JSONB))
    assert planned(dialect, full, other_type, fills={"score": ColumnFill("{}")}, **marked).actions == [
        DropColumn("score"),
        AddColumn("score", dialect.column_type(col("score", JSONB)), "{}"),
    ]


@pytest.mark.parametrize("kind", DIALECTS)
def test_a_rename_is_seen_as_a_drop_and_an_add(kind):
    dialect = DIALECTS[kind]
    before = relation(key(), col("name", TEXT))
    after = relation(key(), col("title", TEXT))
    assert planned(dialect, before, after).actions == [
        AddColumn("title", dialect.column_type(col("title", TEXT))),
        MarkDropped("name", drop_not_null=False),
    ]


@pytest.mark.parametrize("kind", DIALECTS)
@pytest.mark.parametrize(
    ("old_key", "new_key"),
    [(["id"], ["code"]), (["id"], ["id", "code"]), (["id", "code"], ["id"])],
)
def test_a_key_change_is_refused_by_every_writer_naming_the_fix(kind, old_key, new_key):
    dialect = DIALECTS[kind]

    def shaped(keys):
        return relation(*(Column(n, *INT8, is_key=n in keys) for n in ("id", "code")))

    with pytest.raises(IncompatibleSchemaChange) as error:
        planned(dialect, shaped(old_key), shaped(new_key))
    message = str(error.value)
    assert f"primary key of public.t is now ({', '.join(new_key)})" in message
    assert "refresh the table public.t" in message


@pytest.mark.parametrize("kind", DIALECTS)
def test_the_same_shape_needs_nothing_and_missing_meta_columns_are_added(kind):
    dialect = DIALECTS[kind]
    shape = relation(key(), col("name", varchar(20)), col("at", TIMESTAMPTZ))
    assert planned(dialect, shape, shape).actions == []
    result = plan(
        shape, destination(dialect, shape), dialect, where="dst.t", meta_columns={"_rosetta_lsn": "LSN"}
    )
    assert result.actions == [AddColumn("_rosetta_lsn", "LSN")] and result.notes == []


def test_an_unknown_destination_type_is_only_ever_kept_as_it_is():
    existing = [DestinationColumn("id", "BIGINT", False), DestinationColumn("v", "HUGEINT")]
    with pytest.raises(IncompatibleSchemaChange, match="from HUGEINT to INTEGER"):
        plan(relation(key(), col("v", INT4)), existing, DUCKDB, where="main.t")
    existing = [DestinationColumn("id", "BIGINT", False), DestinationColumn("v", "INTEGER")]
    assert plan(relation(key(), col("v", INT4)), existing, DUCKDB, where="main.t").actions == []


def numbered(*columns: Column) -> Relation:
    """A relation read from the source catalog: each column with its attnum (1, 2, ...)."""
    return relation(
        *(
            Column(c.name, c.type_oid, c.type_modifier, c.is_key, number)
            for number, c in enumerate(columns, 1)
        )
    )


@pytest.mark.parametrize("kind", DIALECTS)
@pytest.mark.parametrize(
    ("recorded", "now", "actions", "replaced"),
    [
        # (source column numbers the destination's comments record, the source's numbers now)
        ({"id": 1, "n": 2}, {"id": 1, "n": 2}, [], []),  # the same columns: nothing to do
        ({"id": 1, "n": 2}, {"id": 1, "n": 3}, [], ["n"]),  # n dropped and added again
        ({"id": 1}, {"id": 1, "n": 2}, [], ["n"]),  # n added, not yet holding the source's values
        ({}, {"id": 1, "n": 2}, [RecordSourceColumn("id", 1), RecordSourceColumn("n", 2)], []),  # older table
        ({}, {"id": 0, "n": 0}, [], []),  # numbers not known (a Relation message, a batch source)
    ],
)
def test_a_column_dropped_and_added_again_under_its_name_is_told_by_its_source_number(
    kind, recorded, now, actions, replaced
):
    dialect = DIALECTS[kind]
    shape = relation(key(), col("n", INT4))
    existing = [
        DestinationColumn(c.name, dialect.column_type(c), not c.is_key, source_number=recorded.get(c.name))
        for c in shape.columns
    ]
    after = relation(
        *(Column(c.name, c.type_oid, c.type_modifier, c.is_key, now[c.name]) for c in shape.columns)
    )
    result = plan(after, existing, dialect, where="dst.t", existing_key=["id"])
    assert result.actions == actions
    assert result.replaced == replaced
    assert (result.recopy is not None) == bool(replaced)
    if recorded.get("n") and replaced:
        assert "Column n of public.t was dropped and added again under its name" in result.recopy


@pytest.mark.parametrize("kind", DIALECTS)
def test_a_column_added_or_brought_back_records_its_source_number_unless_only_a_copy_brings_its_values(kind):
    dialect = DIALECTS[kind]
    before = numbered(key(), col("name", TEXT))
    after = numbered(key(), col("name", TEXT), col("score", INT4), col("made", TIMESTAMPTZ))
    recorded = {"id": {"source_number": 1}, "name": {"source_number": 2}}
    result = planned(dialect, before, after, fills={"made": ColumnFill(per_row=True)}, **recorded)
    assert result.actions == [
        AddColumn("score", dialect.column_type(col("score", INT4))),
        RecordSourceColumn("score", 3),
        AddColumn("made", dialect.column_type(col("made", TIMESTAMPTZ))),  # the copy records it
    ]
    back = planned(
        dialect, after, after, **recorded, score={"marked_dropped": True}, made={"source_number": 4}
    )
    assert back.actions == [BringBack("score"), RecordSourceColumn("score", 3)]


def test_the_source_number_comment_reads_back_and_other_comments_record_none():
    assert source_number(source_column_comment(12)) == 12
    assert source_number(None) is None
    assert source_number("Rosetta: dropped on the source; kept here, no longer updated.") is None
    assert source_number("an analyst's note about column 3") is None


@pytest.mark.parametrize("kind", DIALECTS)
def test_a_column_dropped_and_added_again_with_another_type_takes_it_for_the_copy_and_is_never_refused(kind):
    dialect = DIALECTS[kind]
    before = numbered(key(), col("v", INT8))
    after = numbered(key(), col("w", INT4), col("v", JSONB))  # v: a new column (number 3) of a type
    existing = [  # that cannot be converted in place
        DestinationColumn(c.name, dialect.column_type(c), not c.is_key, source_number=c.number)
        for c in before.columns
    ]
    result = plan(after, existing, dialect, where="dst.t", existing_key=["id"])
    assert result.replaced == ["v"] and "dropped and added again" in result.recopy
    assert result.actions == [
        AddColumn("w", dialect.column_type(col("w", INT4))),
        RecordSourceColumn("w", 2),
        DropColumn("v"),
        AddColumn("v", dialect.column_type(col("v", JSONB))),
    ]
