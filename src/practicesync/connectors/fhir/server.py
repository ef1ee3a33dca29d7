"""Pulling Patients, DiagnosticReports or Appointments from a FHIR R4 server base URL,
incrementally.

`pull(base, "Patient", since)` searches `[base]/Patient?_lastUpdated=gt<since>&_count=100
&_sort=_lastUpdated` (DiagnosticReport also `_include`s its results and subject, Appointment
its patients), follows the Bundles' `next` links and returns the pages as (name, Bundle)
documents, which the feeds read like files, and the new position: the latest
`meta.lastUpdated` of the searched type seen (included resources do not move it). A server
that cannot be read as a whole is refused whole (SourceError): HTTP errors, timeouts, a page
that is not JSON or not a Bundle, a next link to another scheme, host or port than the base's
(never followed), more than MAX_PAGES pages.

The cursor (results.models.PmsCursor, source = the base URL, position {"Patient": ts,
"DiagnosticReport": ts, "Appointment": ts}) is read with `cursor_position` and moved with
`advance_cursor`, which the caller runs in the same transaction as the import. See
docs/adr/0009-fhir-import.md.
"""

import datetime as dt
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from practicesync.connectors.csvfile.source import SourceError

PAGE_SIZE = 100
MAX_PAGES = 1000
MAX_PAGE_BYTES = 50 * 1024 * 1024
MAX_BASE_LENGTH = 1000  # PmsCursor.source
TIMEOUT = 60  # seconds per request
INCLUDES = {"DiagnosticReport": ("DiagnosticReport:result", "DiagnosticReport:subject"),
            "Appointment": ("Appointment:patient",)}


def is_url(source) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def base_url(source: str) -> str:
    """The cursor's key: the same server however the base was written (no trailing slash)."""
    return source.strip().rstrip("/")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError as e:
        raise SourceError(f"{url}: not a usable URL ({e})") from e
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _instant(value) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass
class Pull:
    """The Bundle pages of one search, as (name, Bundle) for the feeds, and the position to
    store once they are imported (the previous one when nothing newer was seen)."""

    resource_type: str
    documents: list[tuple[str, dict]] = field(default_factory=list)
    position: str | None = None
    urls: list[str] = field(default_factory=list)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, origin):
        self.origin = origin

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if _origin(newurl) != self.origin:
            raise SourceError(f"{req.full_url}: redirected to another server ({newurl}); "
                              f"not followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def search_url(base: str, resource_type: str, since: str | None, count: int = PAGE_SIZE) -> str:
    params = ([("_lastUpdated", f"gt{since}")] if since else []) + [
        ("_count", str(count)), ("_sort", "_lastUpdated")]
    params += [("_include", i) for i in INCLUDES.get(resource_type, ())]
    return f"{base_url(base)}/{resource_type}?{urllib.parse.urlencode(params)}"


def _get(opener, url: str, timeout: float) -> dict:
    request = urllib.request.Request(url, headers={"Accept": "application/fhir+json"})
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_PAGE_BYTES + 1)
    except urllib.error.HTTPError as e:
        raise SourceError(f"{url}: the FHIR server answered HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise SourceError(f"{url}: the FHIR server cannot be reached ({reason})") from e
    if len(body) > MAX_PAGE_BYTES:
        raise SourceError(f"{url}: a page over {MAX_PAGE_BYTES // 2**20} MB; refused")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SourceError(f"{url}: not JSON ({str(e)[:80]})") from e
    kind = data.get("resourceType") if isinstance(data, dict) else None
    if kind != "Bundle":
        raise SourceError(f"{url}: not a FHIR Bundle ({kind or 'no resourceType'})")
    return data


def pull(base: str, resource_type: str, since: str | None, *, timeout: float = TIMEOUT,
         max_pages: int = MAX_PAGES, page_size: int = PAGE_SIZE) -> Pull:
    """Every page of the search for `resource_type` updated after `since`; raises
    SourceError when any page cannot be had (then nothing of the pull may be applied)."""
    if not is_url(base):
        raise SourceError(f"{base}: not an http(s) URL")
    if len(base_url(base)) > MAX_BASE_LENGTH:
        raise SourceError(f"{base[:80]}...: a base URL over {MAX_BASE_LENGTH} characters")
    origin = _origin(base_url(base))
    opener = urllib.request.build_opener(_SameOriginRedirects(origin))
    result = Pull(resource_type, position=since)
    latest = _instant(since)
    url = search_url(base, resource_type, since, page_size)
    while url:
        if len(result.urls) >= max_pages:
            raise SourceError(f"{base_url(base)}: more than {max_pages} pages of "
                              f"{resource_type}; refused")
        if url in result.urls:
            raise SourceError(f"{url}: the server's next link goes back to a page already read")
        result.urls.append(url)
        page = _get(opener, url, timeout)
        result.documents.append((f"{resource_type} page {len(result.urls)}", page))
        for entry in page.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
                continue
            meta = resource.get("meta")
            stamp = meta.get("lastUpdated") if isinstance(meta, dict) else None
            when = _instant(stamp)
            if when is not None and (latest is None or when > latest):
                latest, result.position = when, stamp
        url = _next_link(page, url, origin)
    return result


def _next_link(page: dict, url: str, origin) -> str | None:
    links = page.get("link") or []
    found = next((link.get("url") for link in links if isinstance(link, dict)
                  and link.get("relation") == "next"), None) if isinstance(links, list) else None
    if not found:
        return None
    if not isinstance(found, str):
        raise SourceError(f"{url}: the next link is not a URL")
    found = urllib.parse.urljoin(url, found)
    if _origin(found) != origin:
        raise SourceError(f"{url}: the next link {found} is on another server than the base; "
                          f"not followed")
    return found


def cursor_position(practice, base: str, resource_type: str) -> str | None:
    """Where the last pull of this practice from this server got to, if anywhere."""
    from practicesync.results.models import PmsCursor

    cursor = PmsCursor.objects.filter(practice=practice, source=base_url(base)).first()
    return (cursor.position or {}).get(resource_type) if cursor else None


def advance_cursor(practice, base: str, pulled: Pull) -> None:
    """Store the pull's position; run it inside the import's transaction. Never moves back
    (a slower concurrent pull that started earlier does not undo a later one)."""
    from practicesync.results.models import PmsCursor

    if pulled.position is None:
        return
    cursor, _ = PmsCursor.objects.select_for_update().get_or_create(
        practice=practice, source=base_url(base))
    position = dict(cursor.position or {})
    stored = _instant(position.get(pulled.resource_type))
    new = _instant(pulled.position)
    if stored is None or (new is not None and new > stored):
        position[pulled.resource_type] = pulled.position
        cursor.position = position
        cursor.save()
