"""The writers' compiled helpers (engine/_fastfold.pyx) against the Python they stand in
for: the same groups, the same column lists, and COPY text that loads exactly the values
psycopg's write_row loads."""

import random

import pyarrow as pa
import pytest

from engine.batch import UNCHANGED
from engine.fold import _fastfold
from engine.writers import duckdb as duckdb_writer
from engine.writers.base import group_by_unchanged, python_group_by_unchanged
from engine.writers.postgres import _row_values

pytestmark = pytest.mark.skipif(
    _fastfold is None, reason="engine/_fastfold is not built (scripts/build_fastfold.sh builds it)"
)

COLUMNS = ["id", "note", "doc"]
TEXTS = [
    "plain",
    "",  # not NULL
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash",
    "\\N",  # the text, not NULL
    "ends with a backslash\\",
    "é, 漢字, 🙂",
    "x" * 100_000,
    None,
]


def rows():
    docs = ['{"a": [1, "t\\tq", "back\\\\slash"]}', '"é\\n"', None]
    result = [({"id": str(n), "note": text, "doc": docs[n % 3]}, 1000 + n) for n, text in enumerate(TEXTS)]
    result.append(({"id": "99"}, 2000))  # columns it lacks are NULL
    return result


def test_copy_text_loads_the_same_values_as_psycopgs_write_row(pg_reader):
    pg_reader.execute(
        "CREATE TABLE by_copy_text (id int, note text, doc jsonb, lsn bigint, tail timestamptz)"
    )
    pg_reader.execute("CREATE TABLE by_write_row (LIKE by_copy_text)")
    (now,) = pg_reader.execute("SELECT now()::text").fetchone()
    columns = "id, note, doc, lsn, tail"
    with pg_reader.cursor().copy(f"COPY by_copy_text ({columns}) FROM STDIN") as copy:
        copy.write(_fastfold.copy_text(rows(), tuple(COLUMNS), "\t" + now))
    with pg_reader.cursor().copy(f"COPY by_write_row ({columns}) FROM STDIN") as copy:
        for values in _row_values(rows(), COLUMNS):
            copy.write_row([*values, now])
    loaded = pg_reader.execute("SELECT * FROM by_copy_text ORDER BY lsn").fetchall()
    assert loaded == pg_reader.execute("SELECT * FROM by_write_row ORDER BY lsn").fetchall()
    assert [note for _, note, *_ in loaded] == [*TEXTS, None]


def test_copy_text_leaves_rows_with_other_values_to_write_row():
    assert _fastfold.copy_text([({"id": 1}, 5)], ("id",), "") is None
    assert _fastfold.copy_text([({"id": UNCHANGED}, 5)], ("id",), "") is None


def test_compiled_grouping_and_column_lists_match_the_python_ones():
    random.seed(7)
    for _ in range(50):
        upserts = {}
        for n in range(40):
            row = {
                "id": str(n),
                "a": random.choice(["x", None, UNCHANGED]),
                "b": random.choice(["y", UNCHANGED]),
            }
            if n % 7 == 0:
                del row["b"]
            upserts[(str(n),)] = (row, n)
        groups = group_by_unchanged(upserts)
        reference = python_group_by_unchanged(upserts)
        assert list(groups.items()) == list(reference.items())  # the same order too
        changes = list(upserts.values())
        # in the rows' order, in another, and with equal names that are other objects
        # (the compiled one walks a row in step with the columns while its keys match)
        for columns in [
            ["id", "a", "b"],
            ["id", "b", "missing"],
            ["b", "id"],
            ["".join("id"), "".join(["a"])],
        ]:
            assert duckdb_writer.column_lists(changes, columns) == [
                [row.get(name) for row, _ in changes] for name in columns
            ]


def test_split_fresh_splits_as_the_comprehensions_do():
    """The PostgreSQL writer's split of a part's upserts into rows under fresh keys (in the
    upserts' order) and the rest, compiled, against the comprehensions it replaces."""
    rnd = random.Random(7)
    for _ in range(50):
        upserts = {(str(rnd.randrange(1000)), "k"): ({"v": str(n)}, n) for n in range(rnd.randrange(200))}
        fresh = {key for key in upserts if rnd.random() < 0.6} | {("gone", "k")}  # a deleted key too
        rows, rest = _fastfold.split_fresh(upserts, fresh)
        assert rows == [change for key, change in upserts.items() if key in fresh]
        assert list(rest.items()) == [(key, change) for key, change in upserts.items() if key not in fresh]


def test_string_arrays_made_from_buffers_equal_pyarrows_own():
    """The DuckDB writer's Arrow string arrays, their buffers made by the compiled module,
    against pyarrow.array over each column's values: nulls (None, a missing column), empty
    and non-ASCII text, and a column holding something other than text (pyarrow's own path)."""
    rnd = random.Random(11)
    texts = ["", "x", "é, 漢字, 🙂", "tab\there", "a" * 300]
    for size in [0, 1, 7, 8, 9, 200]:
        changes = []
        for n in range(size):
            row = {"id": str(n), "t": rnd.choice([*texts, None]), "u": rnd.choice(texts)}
            if rnd.random() < 0.2:
                del row["u"]
            if rnd.random() < 0.1:
                row = {"u": row.get("u"), "id": row["id"]}  # keys in another order, "t" missing
            changes.append((row, n))
        columns = ["id", "t", "u", "".join("missing")]
        arrays = duckdb_writer.string_arrays(changes, columns)
        for name, array in zip(columns, arrays, strict=True):
            expected = pa.array([row.get(name) for row, _ in changes], pa.string())
            array.validate(full=True)
            assert array.equals(expected), (size, name)
    other = [({"id": "1", "v": 5}, 1), ({"id": "2", "v": None}, 2)]
    assert _fastfold.text_columns(other, ["id", "v"])[1] is None
    with pytest.raises(pa.ArrowTypeError):
        duckdb_writer.string_arrays(other, ["id", "v"])  # as pyarrow.array refuses an int
