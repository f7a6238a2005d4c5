"""Name normalization and type inference of batch sources."""

from datetime import UTC, date, datetime

import pytest

from engine.batch_sources.http_client import retry_after
from engine.batch_sources.schema import TableSchema, classify_json, classify_text, normalize_name, widen


@pytest.mark.parametrize(
    "original, name",
    [
        ("Order ID", "order_id"),
        ("  Price (EUR) ", "price_eur"),
        ("2024 total", "_2024_total"),
        ("rosetta_lsn", "field_rosetta_lsn"),
        ("Ünïcode", "n_code"),
        ("", "column"),
        ("x" * 80, "x" * 63),
    ],
)
def test_names_are_normalized_predictably(original, name):
    assert normalize_name(original) == name


def test_two_fields_that_normalize_alike_get_distinct_columns_and_keep_them():
    schema = TableSchema()
    assert [schema.column_for(n) for n in ("Name", "name", "NAME", "Name")] == [
        "name",
        "name_2",
        "name_3",
        "name",
    ]
    assert TableSchema.from_state(schema.to_state()).column_for("NAME") == "name_3"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("42", ("bigint", 42)),
        ("-7", ("bigint", -7)),
        ("007", ("text", "007")),
        ("99999999999999999999", ("text", "99999999999999999999")),
        ("1.5", ("double", 1.5)),
        ("1e3", ("double", 1000.0)),
        ("TRUE", ("boolean", True)),
        ("2024-02-29", ("date", date(2024, 2, 29))),
        ("2024-02-30", ("text", "2024-02-30")),
        ("2024-01-02T03:04:05Z", ("timestamptz", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))),
        ("2024-01-02 03:04", ("timestamp", datetime(2024, 1, 2, 3, 4))),
        ("", (None, None)),
        ("n/a", ("text", "n/a")),
    ],
)
def test_csv_values_are_read_as_the_narrowest_type_that_holds_them(text, expected):
    assert classify_text(text) == expected


def test_json_values_keep_their_type_and_nested_values_are_json():
    assert classify_json({"a": 1}) == ("json", {"a": 1})
    assert classify_json([1]) == ("json", [1])
    assert classify_json(True) == ("boolean", True)
    assert classify_json(3) == ("bigint", 3)
    assert classify_json("2024-01-01") == ("date", date(2024, 1, 1))


def test_columns_only_widen():
    assert widen("bigint", "double") == "text"  # an existing integer column takes no fractions
    assert widen("double", "bigint") == "double"
    assert widen("json", "text") == "json"
    assert widen("date", "timestamptz") == "text"
    assert widen(None, "bigint") == "bigint"


def test_retry_after_reads_seconds_and_http_dates_and_caps_them():
    assert retry_after("3") == 3.0
    assert retry_after("100000") == 300
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after("soon") is None


@pytest.mark.parametrize(
    "column",
    [
        ["1", "2", "", "-3", None],
        ["1.5", "2", "3e2", ""],
        ["007", "1"],
        ["true", "FALSE", ""],
        ["2024-01-01", "2024-02-29"],
        ["2024-02-30", "2024-01-01"],
        ["2024-01-02T03:04:05Z", "2024-01-02 03:04:05.5+02:00"],
        ["2024-01-02T03:04", "2024-01-02 03:04:05"],
        ["a", "b", None],
        ["1", "a"],
        ["99999999999999999999"],
        ["1.5", "99999999999999999999"],
        ["+", "."],
        [".5", "-1."],
        ["0", "0.0"],
        ["+5", "-0"],
        ["2024-01-02T03:04:05+0200"],
        [None, ""],
    ],
)
def test_a_column_classified_at_once_gets_the_same_type_and_values_as_value_by_value(column):
    from engine.batch_sources.schema import classify_text_column, convert, merge_types

    def typed(cells):
        kind = None
        for cell_kind, _ in cells:
            kind = merge_types(kind, cell_kind)
        values = [
            None if k is None else convert(k, v, raw, kind) for (k, v), raw in zip(cells, column, strict=True)
        ]
        return kind, values

    one_by_one = [(None, None) if v is None else classify_text(v) for v in column]
    assert typed(classify_text_column(column)) == typed(one_by_one)
