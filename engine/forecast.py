"""When will a slot's retained WAL hurt? Plain Python: points in, a Forecast out.

Also the one way sizes and durations are written for operators (human_bytes, human_duration).
"""

import datetime as dt
from dataclasses import dataclass

UNITS = ["B", "kB", "MB", "GB", "TB", "PB"]


def human_bytes(value: float | None) -> str:
    """1536 -> '1.5 kB' (powers of 1024, PostgreSQL's unit names)."""
    if value is None:
        return "n/a"
    size, unit = float(value), 0
    sign = "-" if size < 0 else ""
    size = abs(size)
    while size >= 1024 and unit < len(UNITS) - 1:
        size /= 1024
        unit += 1
    if unit == 0 or size == int(size):
        return f"{sign}{size:.0f} {UNITS[unit]}"
    return f"{sign}{size:.1f} {UNITS[unit]}"


def human_duration(seconds: float | None) -> str:
    """3725 -> '1 h 2 min'; the two largest units are enough for an operator."""
    if seconds is None:
        return "n/a"
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    shown = [f"{value} {unit}" for value, unit in parts if value][:2]
    return " ".join(shown) or "0 s"


YEAR_SECONDS = 365 * 86400


def human_time_left(seconds: float) -> str:
    """'in 3 h 20 min', or 'not within a year' when the slot grows so slowly that a date
    would only be noise ("in 11115 d")."""
    if seconds > YEAR_SECONDS:
        return "not within a year"
    return f"in {human_duration(seconds)}"


def growth_rate(points: list[tuple[dt.datetime, float]]) -> float | None:
    """Least-squares slope in bytes per second; None with fewer than two distinct times."""
    if len(points) < 2:
        return None
    origin = points[0][0]
    xs = [(at - origin).total_seconds() for at, _ in points]
    ys = [float(value) for _, value in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


@dataclass
class Forecast:
    growth_bytes_per_s: float | None
    seconds_to_critical: float | None
    seconds_to_lost: float | None
    critical_at: dt.datetime | None
    lost_at: dt.datetime | None
    summary: str

    @property
    def seconds_to_trouble(self) -> float | None:
        known = [s for s in (self.seconds_to_critical, self.seconds_to_lost) if s is not None]
        return min(known) if known else None

    def as_dict(self) -> dict:
        return {
            "growth_bytes_per_s": self.growth_bytes_per_s,
            "seconds_to_critical": self.seconds_to_critical,
            "critical_at": self.critical_at.isoformat() if self.critical_at else None,
            "seconds_to_lost": self.seconds_to_lost,
            "lost_at": self.lost_at.isoformat() if self.lost_at else None,
            "summary": self.summary,
        }


def lost_forecast(lost_at: dt.datetime) -> Forecast:
    """A lost slot has nothing left to forecast: its pipeline must copy its tables again."""
    return Forecast(
        growth_bytes_per_s=None,
        seconds_to_critical=None,
        seconds_to_lost=0.0,
        critical_at=None,
        lost_at=lost_at,
        summary=f"lost at {lost_at:%Y-%m-%d %H:%M:%S %Z}: re-copy needed",
    )


def forecast_slot(
    points: list[tuple[dt.datetime, float]],
    retained_bytes: int | None,
    critical_bytes: int,
    safe_wal_size: int | None,
    now: dt.datetime,
) -> Forecast:
    """At the slot's recent growth rate, when retained WAL reaches the critical threshold,
    and when safe_wal_size (what is left before max_slot_wal_keep_size drops the slot) runs out."""
    rate = growth_rate(points)
    to_critical = to_lost = None
    parts = []
    if retained_bytes is not None and retained_bytes >= critical_bytes:
        to_critical = 0.0
        parts.append(f"Already over the critical threshold ({human_bytes(critical_bytes)}).")
    if rate is None:
        parts.append("Not enough history for a growth rate yet.")
    elif rate <= 0:
        parts.append("Retained WAL is not growing.")
    else:
        parts.append(f"Growing {human_bytes(rate)}/s.")
        if retained_bytes is not None and retained_bytes < critical_bytes:
            to_critical = (critical_bytes - retained_bytes) / rate
            parts.append(
                f"Reaches the critical threshold ({human_bytes(critical_bytes)}) {human_time_left(to_critical)}."
            )
        if safe_wal_size is not None:
            to_lost = max(0.0, safe_wal_size / rate)
            if to_lost > YEAR_SECONDS:
                parts.append(f"safe_wal_size ({human_bytes(safe_wal_size)}) does not run out within a year.")
            else:
                parts.append(
                    f"safe_wal_size ({human_bytes(safe_wal_size)}) runs out in {human_duration(to_lost)}: "
                    "then the slot is lost."
                )
    return Forecast(
        growth_bytes_per_s=rate,
        seconds_to_critical=to_critical,
        seconds_to_lost=to_lost,
        critical_at=now + dt.timedelta(seconds=to_critical) if to_critical is not None else None,
        lost_at=now + dt.timedelta(seconds=to_lost) if to_lost is not None else None,
        summary=" ".join(parts),
    )
