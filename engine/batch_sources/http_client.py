"""A small HTTP GET client for batch sources: timeout, rate limit, retries with back-off.

Standard library only (urllib): one request at a time per source, which is what
a rate-limited API wants anyway. Retries on 429, 5xx, refused connections and
timeouts, waiting what `Retry-After` says (seconds or an HTTP date, capped) or
else backoff_seconds doubled each attempt. Error texts name the status and the
URL without its query string, never a header (headers may hold API keys).
"""

import email.utils
import http.client
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from engine import backoff

RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_WAIT_SECONDS = 300


class HttpProblem(Exception):
    """The server could not be read after the retries; the message says why."""


def display_url(url: str) -> str:
    """The URL without query string or credentials: safe for run notes and errors."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class Response:
    status: int
    headers: dict  # lower-case name -> value
    body: bytes
    url: str


@dataclass
class HttpClient:
    headers: dict = field(default_factory=dict)
    timeout_seconds: float = 30.0
    max_retries: int = 5
    backoff_seconds: float = 1.0
    requests_per_second: float = 0.0  # 0: no limit
    sleep: object = time.sleep
    requests_made: int = 0
    retries_made: int = 0
    _last_request: float = 0.0

    def _pace(self) -> None:
        if self.requests_per_second > 0:
            wait = self._last_request + 1.0 / self.requests_per_second - time.monotonic()
            if wait > 0:
                self.sleep(wait)
        self._last_request = time.monotonic()

    def get(self, url: str, stream_to=None) -> Response:
        """GET url; with `stream_to` (a binary file), the body is copied there instead of kept."""
        attempt = 0
        while True:
            self._pace()
            self.requests_made += 1
            request = urllib.request.Request(url, headers={"User-Agent": "rosetta", **self.headers})
            problem, wait = None, None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as answer:
                    headers = {name.lower(): value for name, value in answer.headers.items()}
                    if stream_to is not None:
                        while chunk := answer.read(1 << 20):
                            stream_to.write(chunk)
                        body = b""
                    else:
                        body = answer.read()
                    return Response(answer.status, headers, body, answer.url)
            except urllib.error.HTTPError as error:
                if error.code not in RETRY_STATUSES:
                    raise HttpProblem(f"HTTP {error.code} {error.reason} from {display_url(url)}") from None
                problem = f"HTTP {error.code} {error.reason} from {display_url(url)}"
                wait = retry_after(error.headers.get("Retry-After"))
            except TimeoutError:
                problem = f"{display_url(url)} did not answer within {self.timeout_seconds:g} s"
            except urllib.error.URLError as error:
                if isinstance(error.reason, (TimeoutError, socket.timeout)):
                    problem = f"{display_url(url)} did not answer within {self.timeout_seconds:g} s"
                else:
                    problem = f"cannot reach {display_url(url)}: {error.reason}"
            except (ConnectionError, http.client.HTTPException) as error:
                problem = f"connection to {display_url(url)} failed: {type(error).__name__}"
            if attempt >= self.max_retries:
                tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                raise HttpProblem(f"{problem} (gave up after {tries}).")
            if stream_to is not None:
                stream_to.seek(0)
                stream_to.truncate()
            self.sleep(
                wait
                if wait is not None
                else backoff.backoff_seconds(attempt + 1, self.backoff_seconds, MAX_WAIT_SECONDS)
            )
            attempt += 1
            self.retries_made += 1


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_WAIT_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), MAX_WAIT_SECONDS))
