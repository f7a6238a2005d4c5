"""One back-off rule for pipeline retries and alert notification retries."""

from engine.backoff import backoff_seconds


def test_the_wait_doubles_from_the_first_and_stops_at_the_cap():
    waits = [backoff_seconds(failures, 10, 900) for failures in range(1, 10)]
    assert waits == [10, 20, 40, 80, 160, 320, 640, 900, 900]


def test_a_pipeline_failing_for_weeks_still_waits_the_cap():
    assert backoff_seconds(100_000, 10, 900) == 900


def test_no_failure_yet_waits_the_first_delay():
    assert backoff_seconds(0, 60, 3600) == 60
