"""HTTP JSON APIs as a batch source: pages of records, incremental by a field.

One run: start from the stored state (the incremental value, or the page to
resume at), fetch pages until the API says there are no more, yield each
page's records followed by a resume point. The incremental value sent next
time is the largest value of `incremental.field` among the records loaded;
records the API sends again (a `>=` filter) merge on the key.

Pagination styles:
- page: ?page=N (from start_page), optional ?per_page=size; stops at an empty
  page or one shorter than page_size.
- offset: ?offset=K&limit=L; stops at a page shorter than L.
- cursor: ?cursor=C with C read from the response at cursor_path; stops when
  it is missing or empty.
- link: the next page's URL from the response at next_url_path, or from the
  `Link: <...>; rel="next"` header; stops when there is none.
- none: one request.
"""

import json
import re
import urllib.parse
from dataclasses import dataclass, field

from . import SettingsError
from .csv import _check_key
from .http_client import HttpClient, display_url
from .records import RESUME, Record, Reject

STYLES = {
    "none": {},
    "page": {"page_param": "page", "start_page": 1, "size_param": "", "page_size": 0},
    "offset": {"offset_param": "offset", "limit_param": "limit", "limit": 100},
    "cursor": {"cursor_param": "cursor", "cursor_path": "next_cursor"},
    "link": {"next_url_path": ""},
}
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;[^,]*rel="?next"?', re.IGNORECASE)


@dataclass
class HttpJsonSettings:
    url: str = ""
    headers: dict = field(default_factory=dict)
    records_path: str = ""
    pagination: dict = field(default_factory=lambda: {"style": "none"})
    incremental: dict = field(default_factory=dict)  # {"field", "param", "initial"}
    params: dict = field(default_factory=dict)  # fixed query parameters
    requests_per_second: float = 0.0
    max_retries: int = 5
    backoff_seconds: float = 1.0
    timeout_seconds: float = 30.0
    primary_key: list = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: dict) -> "HttpJsonSettings":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(settings) - known)
        if unknown:
            raise SettingsError(unknown[0], f"not an HTTP JSON setting (known: {', '.join(sorted(known))})")
        values = cls(**settings)
        if not isinstance(values.url, str) or not values.url.startswith(("http://", "https://")):
            raise SettingsError("url", "an http:// or https:// URL is required")
        for name in ("headers", "params"):
            value = getattr(values, name)
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise SettingsError(name, "must be an object of names to text values")
        if not isinstance(values.records_path, str):
            raise SettingsError("records_path", 'must be a dotted path such as "data.items" (or "")')
        pagination = values.pagination
        if not isinstance(pagination, dict) or pagination.get("style", "none") not in STYLES:
            raise SettingsError("pagination.style", f"must be one of {', '.join(STYLES)}")
        style = pagination.get("style", "none")
        extra = sorted(set(pagination) - set(STYLES[style]) - {"style"})
        if extra:
            raise SettingsError(f"pagination.{extra[0]}", f"not a setting of the {style!r} style")
        values.pagination = {"style": style, **STYLES[style], **pagination}
        for name in ("start_page", "page_size", "limit"):
            if name in values.pagination and (
                not isinstance(values.pagination[name], int) or values.pagination[name] < 0
            ):
                raise SettingsError(f"pagination.{name}", "must be a whole number, 0 or more")
        if style == "offset" and values.pagination["limit"] < 1:
            raise SettingsError("pagination.limit", "must be 1 or more")
        incremental = values.incremental
        if incremental:
            if (
                not isinstance(incremental, dict)
                or not incremental.get("field")
                or not incremental.get("param")
            ):
                raise SettingsError(
                    "incremental", 'needs "field" (in each record) and "param" (sent to the API)'
                )
            extra = sorted(set(incremental) - {"field", "param", "initial"})
            if extra:
                raise SettingsError(f"incremental.{extra[0]}", "not an incremental setting")
        for name, low in (("requests_per_second", 0), ("backoff_seconds", 0), ("timeout_seconds", 0.001)):
            value = getattr(values, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low:
                raise SettingsError(name, f"must be a number of at least {low}")
        if not isinstance(values.max_retries, int) or values.max_retries < 0:
            raise SettingsError("max_retries", "must be a whole number, 0 or more")
        _check_key(values.primary_key)
        return values


def dig(document, path: str):
    """The value at a dotted path ("data.items"); the document itself for ""."""
    value = document
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _later(a, b):
    """The larger of two incremental values (numbers as numbers, else as text)."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return max(a, b)
    return max(str(a), str(b))


class HttpJsonReader:
    def __init__(self, settings: HttpJsonSettings, secret_headers: dict | None = None, client=None):
        self.settings = settings
        self.client = client or HttpClient(
            headers={"Accept": "application/json", **settings.headers, **(secret_headers or {})},
            timeout_seconds=settings.timeout_seconds,
            max_retries=settings.max_retries,
            backoff_seconds=settings.backoff_seconds,
            requests_per_second=settings.requests_per_second,
        )
        self._since = None
        self._max_seen = None
        self._next = None

    def state(self) -> dict:
        return {"since": self._since, "max_seen": self._max_seen, "next": self._next}

    def _url(self, request: dict) -> str:
        if "url" in request:
            return request["url"]
        s = self.settings
        params = dict(s.params)
        if s.incremental and self._since not in (None, ""):
            params[s.incremental["param"]] = str(self._since)
        p = s.pagination
        if "page" in request:
            params[p["page_param"]] = str(request["page"])
            if p["size_param"] and p["page_size"]:
                params[p["size_param"]] = str(p["page_size"])
        if "offset" in request:
            params[p["offset_param"]] = str(request["offset"])
            params[p["limit_param"]] = str(p["limit"])
        if request.get("cursor"):
            params[p["cursor_param"]] = str(request["cursor"])
        parts = urllib.parse.urlsplit(s.url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query = [(k, v) for k, v in query if k not in params] + list(params.items())
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def _first_request(self) -> dict:
        p = self.settings.pagination
        return {
            "none": {},
            "page": {"page": p.get("start_page")},
            "offset": {"offset": 0},
            "cursor": {"cursor": None},
            "link": {},
        }[p["style"]]

    def _next_request(self, request: dict, response, body, count: int) -> dict | None:
        p = self.settings.pagination
        style = p["style"]
        if style == "none" or (count == 0 and style in ("page", "offset")):
            return None
        if style == "page":
            if p["page_size"] and count < p["page_size"]:
                return None
            return {"page": request["page"] + 1}
        if style == "offset":
            return None if count < p["limit"] else {"offset": request["offset"] + count}
        if style == "cursor":
            cursor = dig(body, p["cursor_path"])
            return {"cursor": cursor} if cursor not in (None, "") else None
        url = dig(body, p["next_url_path"]) if p["next_url_path"] else None
        if not url:
            match = _LINK_NEXT.search(response.headers.get("link", ""))
            url = match.group(1) if match else None
        return {"url": urllib.parse.urljoin(response.url, url)} if url else None

    def read(self, state: dict):
        s = self.settings
        initial = s.incremental.get("initial") if s.incremental else None
        self._since = state.get("since", initial)
        self._max_seen = state.get("max_seen", self._since)
        request = state.get("next") or self._first_request()
        seen_urls = set()
        while request is not None:
            url = self._url(request)
            if url in seen_urls:
                raise ValueError(
                    f"The API sent the page {display_url(url)} twice: its pagination does not end."
                )
            seen_urls.add(url)
            response = self.client.get(url)
            try:
                body = json.loads(response.body)
            except ValueError:
                raise ValueError(f"{display_url(url)} did not answer with JSON.") from None
            records = dig(body, s.records_path)
            if records is None and s.records_path:
                records = []  # an empty last page often leaves the key out
            if not isinstance(records, list):
                where = f'at "{s.records_path}"' if s.records_path else "at the top level"
                raise ValueError(f"{display_url(url)} has no list of records {where}.")
            origin = display_url(url) + ("?" + urllib.parse.urlsplit(url).query if "?" in url else "")
            for position, item in enumerate(records, 1):
                if not isinstance(item, dict):
                    yield Reject(
                        origin, position, "the record is not a JSON object", json.dumps(item)[:10_000]
                    )
                    continue
                if s.incremental:
                    self._max_seen = _later(self._max_seen, item.get(s.incremental["field"]))
                yield Record(item, origin, position)
            self._next = request = self._next_request(request, response, body, len(records))
            if request is None:
                self._since = self._max_seen
            yield RESUME
