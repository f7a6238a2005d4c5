"""Log lines that say which pipeline and run they belong to, as JSON when LOG_FORMAT=json.

services.run_pipeline() wraps a run in log_context(pipeline=..., run=...); every line
logged inside it (by the engine, the writers, psycopg) carries both, in any thread of
the run, since contextvars follow the call.
"""

import contextvars
import json
import logging
from contextlib import contextmanager

_context: contextvars.ContextVar[tuple] = contextvars.ContextVar("rosetta_log_context", default=())


@contextmanager
def log_context(**fields):
    token = _context.set(tuple({**dict(_context.get()), **fields}.items()))
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current log context onto each record (and a " pipeline=x run=7" suffix
    for the plain format)."""

    def filter(self, record):
        fields = _context.get()
        for name, value in fields:
            setattr(record, name, value)
        record.context = "".join(f" {name}={value}" for name, value in fields)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context, the traceback."""

    def format(self, record):
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context_of(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


JsonFormatter.converter = __import__("time").gmtime


def _context_of(record) -> dict:
    return {name: getattr(record, name) for name in ("pipeline", "run") if hasattr(record, name)}
