"""CSV files as a batch source: a file, a directory with a glob, or an http(s) URL.

Each file is loaded once, tracked by name and identity (size and modification
time; ETag or Last-Modified and length for a URL); a file whose identity
changed is loaded again from its first line. gzip files (.gz, or gzip's magic
bytes) are read as they are. The reader's state records, per file, its identity,
how many physical lines are loaded and whether it is done, so a run that stops
anywhere resumes at the last committed record.

A record that cannot be read (undecodable bytes, a broken quote, a field count
other than the header's) is a Reject with its file, first line and reason.
"""

import csv
import glob as globbing
import gzip
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import SettingsError
from .http_client import HttpClient, display_url
from .records import RESUME, Record, Reject

csv.field_size_limit(16 * 1024 * 1024)
GZIP_MAGIC = b"\x1f\x8b"
RESUME_EVERY = 1000  # records between resume points (the loader cuts parts only there)


@dataclass
class CsvSettings:
    path: str = ""
    url: str = ""
    glob: str = "*.csv*"
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    header: bool = True
    primary_key: list = field(default_factory=list)
    timeout_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: dict) -> "CsvSettings":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(settings) - known)
        if unknown:
            raise SettingsError(unknown[0], f"not a CSV setting (known: {', '.join(sorted(known))})")
        values = cls(**settings)
        if bool(values.path) == bool(values.url):
            raise SettingsError("path", "give either a path (file, directory or glob) or a url, not both")
        if values.url and not values.url.startswith(("http://", "https://")):
            raise SettingsError("url", "must start with http:// or https://")
        for name in ("delimiter", "quote"):
            value = getattr(values, name)
            if not isinstance(value, str) or len(value) != 1:
                raise SettingsError(name, "must be exactly one character")
        if values.delimiter == values.quote:
            raise SettingsError("quote", "must differ from the delimiter")
        try:
            "".encode(values.encoding)
        except (LookupError, TypeError):
            raise SettingsError("encoding", f"unknown encoding {values.encoding!r}") from None
        if not isinstance(values.header, bool):
            raise SettingsError("header", "must be true or false")
        _check_key(values.primary_key)
        return values


def _check_key(primary_key) -> None:
    if not isinstance(primary_key, list) or not all(isinstance(k, str) and k for k in primary_key):
        raise SettingsError("primary_key", 'must be a list of field names, e.g. ["id"]')


class CsvReader:
    def __init__(self, settings: CsvSettings, client: HttpClient | None = None):
        self.settings = settings
        self.client = client or HttpClient(timeout_seconds=settings.timeout_seconds)
        self._files = {}
        self._current = None  # name of the file being read

    # -- what to read ----------------------------------------------------------

    def list_files(self) -> list[str]:
        path = self.settings.path
        if os.path.isdir(path):
            names = globbing.glob(os.path.join(path, self.settings.glob))
        elif any(ch in path for ch in "*?["):
            names = globbing.glob(path)
        else:
            names = [path]
        return sorted(name for name in names if not os.path.isdir(name))

    def state(self) -> dict:
        return {"files": {name: dict(entry) for name, entry in self._files.items()}}

    def read(self, state: dict):
        """Yield Record / Reject / RESUME for every file not yet loaded."""
        self._files = {name: dict(entry) for name, entry in (state.get("files") or {}).items()}
        if self.settings.url:
            yield from self._read_url(self.settings.url)
            return
        names = self.list_files()
        if (
            not names
            and not any(ch in self.settings.path for ch in "*?[")
            and not os.path.isdir(self.settings.path)
        ):
            raise FileNotFoundError(f"CSV file {self.settings.path} does not exist (or cannot be read).")
        for name in names:
            try:
                stat = os.stat(name)
            except FileNotFoundError:
                continue  # removed since the listing
            identity = [stat.st_size, stat.st_mtime_ns]
            skip = self._lines_done(name, identity)
            if skip is None:
                continue
            with open(name, "rb") as raw:
                yield from self._read_file(name, raw, identity, skip)

    def _lines_done(self, name: str, identity: list) -> int | None:
        """Physical lines of `name` already loaded; None if the whole file is."""
        entry = self._files.get(name)
        if entry is None or entry.get("identity") != identity:
            return 0
        return None if entry.get("done") else entry.get("lines", 0)

    def _read_url(self, url: str):
        with tempfile.TemporaryFile() as body:
            response = self.client.get(url, stream_to=body)
            headers = response.headers
            identity = [
                headers.get("etag") or headers.get("last-modified") or "",
                headers.get("content-length") or str(body.tell()),
            ]
            if not identity[0]:
                identity[0] = f"size:{body.tell()}"
            skip = self._lines_done(display_url(url), identity)
            if skip is None:
                return
            body.seek(0)
            yield from self._read_file(display_url(url), body, identity, skip)

    # -- one file --------------------------------------------------------------

    def _read_file(self, name: str, raw, identity: list, skip: int):
        head = raw.read(2)
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if head == GZIP_MAGIC or name.endswith(".gz") else raw
        entry = self._files[name] = {"identity": identity, "lines": skip, "done": False}
        origin = Path(name).name if not name.startswith(("http://", "https://")) else name
        s = self.settings
        lines = _Lines(stream, s.encoding)
        reader = csv.reader(lines, delimiter=s.delimiter, quotechar=s.quote, strict=True)
        header = None
        if s.header:
            try:
                header = _header_names(next(reader))
            except StopIteration:
                entry.update(done=True)
                yield RESUME
                return
            except (csv.Error, UnicodeDecodeError) as error:
                raise ValueError(f"{origin}: the header line cannot be read: {error}") from None
        lines.skip_to(max(skip, lines.number))
        since_resume = 0
        while True:
            start = lines.number + 1
            lines.raw.clear()
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                yield Reject(origin, start, f"malformed CSV: {error}", lines.raw_text())
                entry["lines"] = lines.number
                continue
            if lines.undecodable:
                line, error = lines.undecodable.pop(0)
                lines.undecodable.clear()
                yield Reject(origin, line, f"cannot be decoded as {s.encoding}: {error}", lines.raw_text())
                entry["lines"] = lines.number
                continue
            entry["lines"] = lines.number
            if not fields or fields == [""]:
                continue  # an empty line
            if header is None:
                header = [f"column_{i + 1}" for i in range(len(fields))]
            if len(fields) != len(header):
                yield Reject(
                    origin,
                    start,
                    f"{len(fields)} fields where the header has {len(header)}",
                    lines.raw_text(),
                )
            else:
                yield Record(dict(zip(header, fields, strict=True)), origin, start)
            since_resume += 1
            if since_resume >= RESUME_EVERY:
                since_resume = 0
                yield RESUME
        entry["done"] = True
        yield RESUME


def _header_names(fields: list[str]) -> list[str]:
    names, seen = [], set()
    for position, name in enumerate(fields, 1):
        name = name.strip().lstrip("\ufeff") or f"column_{position}"
        unique, n = name, 2
        while unique in seen:
            unique, n = f"{name}_{n}", n + 1
        seen.add(unique)
        names.append(unique)
    return names


class _Lines:
    """Decoded physical lines for csv.reader, counted; undecodable lines become
    empty lines and are reported, so one bad byte rejects one record only."""

    def __init__(self, stream, encoding: str):
        self.stream = iter(stream)
        self.encoding = encoding
        self.number = 0
        self.raw: list[bytes] = []
        self.undecodable: list[tuple[int, str]] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self.stream)
        self.number += 1
        self.raw.append(line)
        try:
            text = line.decode(self.encoding)
        except UnicodeDecodeError as error:
            self.undecodable.append((self.number, f"byte {line[error.start]:#04x} at position {error.start}"))
            return ""
        if self.number == 1:
            text = text.lstrip("\ufeff")
        return text

    def skip_to(self, number: int) -> None:
        while self.number < number:
            try:
                next(self.stream)
            except StopIteration:
                return
            self.number += 1

    def raw_text(self) -> str:
        return b"".join(self.raw).decode(self.encoding, errors="replace").rstrip("\r\n")
