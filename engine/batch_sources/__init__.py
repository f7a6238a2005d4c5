"""Batch sources beside PostgreSQL CDC: CSV files and HTTP JSON APIs.

A reader (csv.CsvReader, http_json.HttpJsonReader) yields records, rejects and
resume points from a stored reader state; loader.BatchLoader turns them into
the writers' Batch (types inferred, names normalized, merged on a key) and
applies them in parts, each part one destination transaction that also holds
the new checkpoint state and the part's rejects.
"""


class SettingsError(ValueError):
    """A source setting that cannot work; `field` names it (e.g. "pagination.style")."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
