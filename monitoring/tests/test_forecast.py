"""The forecast an operator reads: when retained WAL reaches critical, when safe_wal_size runs out."""

import datetime as dt
import re

import pytest

from engine.forecast import forecast_slot, growth_rate, human_bytes, human_duration

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
MB = 1024 * 1024


def points(per_minute: float, minutes: int = 10, start: float = 0):
    return [(NOW - dt.timedelta(minutes=minutes - i), start + per_minute * i) for i in range(minutes + 1)]


def test_growth_rate_is_the_trend_in_bytes_per_second():
    assert growth_rate(points(60 * MB)) == pytest.approx(MB)
    assert growth_rate(points(0)) == 0
    assert growth_rate(points(MB)[:1]) is None


def test_a_growing_slot_reaches_critical_at_the_current_rate():
    forecast = forecast_slot(points(60 * MB, start=100 * MB), 700 * MB, 1000 * MB, None, NOW)
    assert forecast.seconds_to_critical == pytest.approx(300)
    assert forecast.critical_at == NOW + dt.timedelta(seconds=300)
    assert forecast.seconds_to_lost is None
    assert forecast.summary == "Growing 1 MB/s. Reaches the critical threshold (1000 MB) in 5 min."


def test_safe_wal_size_running_out_comes_first_when_it_is_smaller():
    forecast = forecast_slot(points(60 * MB), 100 * MB, 10 * 1024 * MB, 120 * MB, NOW)
    assert forecast.seconds_to_lost == pytest.approx(120)
    assert forecast.seconds_to_trouble == pytest.approx(120)
    assert "safe_wal_size (120 MB) runs out in 2 min: then the slot is lost." in forecast.summary


def test_a_slot_that_is_not_growing_or_already_over_says_so():
    flat = forecast_slot(points(0, start=10 * MB), 10 * MB, 100 * MB, None, NOW)
    assert flat.seconds_to_trouble is None and flat.summary == "Retained WAL is not growing."
    over = forecast_slot(points(MB, start=200 * MB), 210 * MB, 100 * MB, None, NOW)
    assert over.seconds_to_critical == 0
    assert over.summary.startswith("Already over the critical threshold (100 MB).")


def test_sizes_and_durations_read_like_postgresql_and_people_write_them():
    assert [human_bytes(v) for v in (0, 1536, 5 * 1024**3, None)] == ["0 B", "1.5 kB", "5 GB", "n/a"]
    assert [human_duration(s) for s in (45, 3725, 90061)] == ["45 s", "1 h 2 min", "1 d 1 h"]


def test_a_slot_growing_a_few_bytes_a_second_is_forecast_not_within_a_year_instead_of_in_thousands_of_days():
    # 5 bytes a second, 4.8 GB to go: 32 years away.
    forecast = forecast_slot(points(300, start=200 * MB), 200 * MB, 5 * 1024 * MB, 4 * 1024 * MB, NOW)
    assert forecast.summary == (
        "Growing 5 B/s. Reaches the critical threshold (5 GB) not within a year. "
        "safe_wal_size (4 GB) does not run out within a year."
    )
    assert not re.search(r"\d d\b", forecast.summary)
    soon = forecast_slot(points(60 * MB, start=100 * MB), 700 * MB, 1000 * MB, None, NOW)
    assert "in 5 min" in soon.summary
