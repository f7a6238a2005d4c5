"""The WAL charts show the data: the y-axis fits it, far thresholds are said in words,
slot names are shown whole."""

import datetime as dt
import re

from monitoring.charts import line_chart

KB, GB = 1024, 1024**3
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
END = START + dt.timedelta(hours=24)
THRESHOLDS = [("warn", 4 * GB, "#ef6c00"), ("critical", 5 * GB, "#c62828")]


def points(*values):
    return [(START + dt.timedelta(hours=i), v) for i, v in enumerate(values)]


def y_labels(svg: str) -> list[str]:
    return re.findall(r'text-anchor="end" fill="#555">([^<]+)</text>', svg)


def test_kilobytes_of_data_under_gigabyte_thresholds_get_a_kilobyte_axis():
    svg = line_chart(
        [("slot s", points(10 * KB, 40 * KB, 80 * KB))], start=START, end=END, thresholds=THRESHOLDS
    )
    labels = y_labels(svg)
    assert labels[-1].endswith("kB"), labels
    assert "GB" not in "".join(labels)
    assert "warn 4 GB and critical 5 GB: far above the data, not drawn" in svg
    assert "stroke-dasharray" not in svg


def test_thresholds_near_the_data_are_drawn_as_lines():
    svg = line_chart([("slot s", points(GB, 3 * GB))], start=START, end=END, thresholds=THRESHOLDS)
    assert svg.count("stroke-dasharray") == 2
    assert "critical 5 GB</text>" in svg
    assert "not drawn" not in svg


def test_the_legend_shows_each_slots_full_name():
    name = "slot rosetta_demo_orders_replication_slot_with_a_long_name"
    svg = line_chart([(name, points(KB, 2 * KB))], start=START, end=END, thresholds=THRESHOLDS)
    assert f"{name} <tspan" in svg


def test_the_chart_grows_in_height_with_the_legend_not_in_width():
    one = line_chart([("a", points(1, 2))], start=START, end=END)
    three = line_chart([("a", points(1, 2)), ("b", points(1, 2)), ("c", points(1, 2))], start=START, end=END)
    assert 'width="760"' in one and 'width="760"' in three
    assert (
        int(re.search(r'height="(\d+)"', three).group(1))
        == int(re.search(r'height="(\d+)"', one).group(1)) + 32
    )
