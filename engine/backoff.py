"""How long to wait before trying again after failures in a row: one rule for the
pipelines' retries and the alerts' notification retries."""


def backoff_seconds(failures: int, first: float, cap: float) -> float:
    """`first` after the first failure, doubling with each further one, never more than `cap`:
    with first=10 and cap=900, 10 s, 20 s, 40 s ... 15 minutes."""
    doublings = max(0, failures - 1)
    if doublings >= 64:  # long past any cap; spares computing 2**doublings
        return cap
    return min(first * 2**doublings, cap)
