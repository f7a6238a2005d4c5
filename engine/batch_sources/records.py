"""What a reader yields: records, rejects, and points where it may resume."""

from dataclasses import dataclass


@dataclass(slots=True)
class Record:
    fields: dict  # original field name -> value (CSV: str; JSON: any JSON value)
    origin: str  # the file or URL it came from
    line: int  # CSV: first line of the record; JSON: its position in the page (1-based)


@dataclass(slots=True)
class Reject:
    origin: str
    line: int
    reason: str
    raw: str  # the record as read, for whoever fixes it


class _Resume:
    """The reader may be resumed from its state() here: every record before it is
    yielded and none after it. The loader only cuts parts at these points."""

    def __repr__(self):
        return "RESUME"


RESUME = _Resume()
