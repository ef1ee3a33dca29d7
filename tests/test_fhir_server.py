"""Pulling from a FHIR server: a real HTTP server process on loopback (a small stdlib server
started here) serves searchset Bundles from a folder of resources the tests write, with paging
through next links and `_lastUpdated=gt...` honoured. Resources are synthetic."""

import json
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from practicesync.connectors.csvfile.source import SourceError
from practicesync.connectors.fhir.mapping import NHS_SYSTEM
from practicesync.connectors.fhir.server import pull, search_url
from practicesync.patients.models import Patient, SyncRun
from practicesync.results.models import PmsCursor, Result
from tests.cli import run, run_json
from tests.factories import NHS, make_practice
from tests.test_fhir import PHONES, bundle, ident, patient, report, write

SERVER = r'''
import json, sys, urllib.parse
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT, PAGE = Path(sys.argv[1]), int(sys.argv[2])


def stamp(resource):
    return datetime.fromisoformat(resource["meta"]["lastUpdated"].replace("Z", "+00:00"))


def resources(kind):
    folder = ROOT / kind
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return {r["id"]: r for r in found}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status, data):
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with open(ROOT / "_requests.log", "a") as log:
            log.write(self.path + "\n")
        if (ROOT / "_status").exists():
            status = int((ROOT / "_status").read_text())
            return self.send(status, {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "exception"}]})
        parts = urllib.parse.urlsplit(self.path)
        kind = parts.path.strip("/")
        query = urllib.parse.parse_qs(parts.query)
        base = f"http://127.0.0.1:{self.server.server_port}"
        matches = sorted(resources(kind).values(), key=lambda r: (stamp(r), r["id"]))
        for value in query.get("_lastUpdated", []):
            assert value.startswith("gt"), value
            since = datetime.fromisoformat(value[2:].replace("Z", "+00:00"))
            matches = [r for r in matches if stamp(r) > since]
        offset = int(query.get("_offset", ["0"])[0])
        size = min(int(query.get("_count", ["100"])[0]), PAGE)
        page = matches[offset:offset + size]
        entries = [{"fullUrl": f"{base}/{kind}/{r['id']}", "resource": r,
                    "search": {"mode": "match"}} for r in page]
        included = {}
        for include in query.get("_include", []):
            element = include.split(":")[1]
            for r in page:
                refs = r.get(element)
                for ref in refs if isinstance(refs, list) else [refs] if refs else []:
                    target_kind, target_id = ref["reference"].split("/")
                    target = resources(target_kind).get(target_id)
                    if target:
                        included[ref["reference"]] = target
        entries += [{"fullUrl": f"{base}/{ref}", "resource": r, "search": {"mode": "include"}}
                    for ref, r in included.items()]
        links = [{"relation": "self", "url": base + self.path}]
        if offset + size < len(matches):
            params = [(k, v) for k, vs in query.items() if k != "_offset" for v in vs]
            params.append(("_offset", str(offset + size)))
            next_base = (ROOT / "_next_base").read_text() if (ROOT / "_next_base").exists() else base
            links.append({"relation": "next",
                          "url": f"{next_base}/{kind}?{urllib.parse.urlencode(params)}"})
        self.send(200, {"resourceType": "Bundle", "type": "searchset", "total": len(matches),
                        "link": links, "entry": entries})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_port, flush=True)
server.serve_forever()
'''


class FhirServer:
    def __init__(self, root: Path, url: str):
        self.root, self.url = root, url

    def put(self, resource: dict, updated: str) -> None:
        resource = {**resource, "meta": {"lastUpdated": updated}}
        write(self.root / resource["resourceType"], f"{resource['id']}.json", resource)

    def requests(self) -> list[str]:
        log = self.root / "_requests.log"
        lines = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return lines

    def control(self, name: str, value: str | None) -> None:
        path = self.root / name
        if value is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(value)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    script = tmp_path / "fhir_server.py"
    script.write_text(SERVER)
    proc = subprocess.Popen([sys.executable, "-u", str(script), str(root), "2"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield FhirServer(root, f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def sync(kind, practice, source, *extra):
    return run_json(kind, "sync", "--practice", practice.slug, "--source", source,
                    "--format", "fhir", *extra)


def cursor(practice, base):
    found = PmsCursor.objects.filter(practice=practice, source=base).first()
    return found.position if found else None


def gb_patient(n: int, family: str = "Lee") -> dict:
    return patient(f"p{n}", [ident("urn:pms", f"P{n}", "PI"), ident(NHS_SYSTEM, NHS[n])],
                   family=family, given=(f"Ann{n}",))


T = "2026-11-20T09:00:0{}+00:00"


def test_patients_pages_cursor_and_updates(practice, server):
    for n in range(5):
        server.put(gb_patient(n), T.format(n))

    code, data = sync("patients", practice, server.url)

    assert code == 0, data
    assert data["created"] == 5 and data["left_practice"] == 0
    pages = server.requests()
    assert len(pages) == 3 and all(p.startswith("/Patient?") for p in pages)
    assert pages[0] == "/Patient?_count=100&_sort=_lastUpdated"
    assert cursor(practice, server.url) == {"Patient": T.format(4)}
    assert SyncRun.objects.get(id=data["run_id"]).kind == "patients_partial"

    code, data = sync("patients", practice, server.url)     # nothing changed on the server

    assert code == 0 and data["created"] == data["updated"] == 0
    [page] = server.requests()
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(page).query)["_lastUpdated"] == [
        "gt" + T.format(4)]

    server.put(gb_patient(2, family="Hall"), "2026-11-21T10:00:00+00:00")
    code, data = sync("patients", practice, server.url + "/")   # the same base, however written

    assert code == 0 and data["updated"] == 1 and data["created"] == 0
    assert Patient.objects.get(practice=practice, pms_id="P2").family_name == "Hall"
    assert cursor(practice, server.url) == {"Patient": "2026-11-21T10:00:00+00:00"}

    code, data = sync("patients", practice, server.url, "--dry-run")
    assert code == 0 and cursor(practice, server.url) == {"Patient": "2026-11-21T10:00:00+00:00"}


def test_results_pages_with_included_patients_and_observations(practice, server):
    for n in range(3):
        server.put(gb_patient(n), T.format(n))
        server.put({"resourceType": "Observation", "id": f"o{n}", "status": "final",
                    "code": {"text": "Hb"}, "subject": {"reference": f"Patient/p{n}"},
                    "effectiveDateTime": "2024-03-01T09:00:00+00:00"}, T.format(n))
        server.put(report(f"r{n}", f"Patient/p{n}", result=[{"reference": f"Observation/o{n}"}]),
                   T.format(n + 5))
    assert sync("patients", practice, server.url)[0] == 0
    server.requests()

    code, data = sync("results", practice, server.url)

    assert code == 0, data
    assert data["created"] == 3 and data["unmatched"] == 0
    pages = server.requests()
    assert len(pages) == 2 and all(p.startswith("/DiagnosticReport?") for p in pages)
    assert "_include=DiagnosticReport%3Aresult" in pages[0]
    stored = {r.result_id: r for r in Result.objects.filter(practice=practice)}
    assert {r.pms_id for r in stored.values()} == {"P0", "P1", "P2"}
    assert {str(r.performed_on) for r in stored.values()} == {"2024-03-01"}   # from the Observation
    # The patients' cursor and the reports' are separate positions of the same server.
    assert cursor(practice, server.url) == {"Patient": T.format(2),
                                            "DiagnosticReport": T.format(7)}

    code, data = sync("results", practice, server.url)
    assert code == 0 and data["created"] == data["updated"] == data["unchanged"] == 0

    server.put(report("r1", "Patient/p1", code={"text": "Ferritin"},
                      result=[{"reference": "Observation/o1"}]), "2026-11-22T08:00:00Z")
    code, data = sync("results", practice, server.url)
    assert code == 0 and data["updated"] == 1 and data["created"] == 0
    assert Result.objects.get(result_id="DiagnosticReport/r1").test_name == "Ferritin"
    assert cursor(practice, server.url)["DiagnosticReport"] == "2026-11-22T08:00:00Z"


def test_a_server_error_fails_the_run_and_changes_nothing(practice, server):
    server.put(gb_patient(0), T.format(0))
    server.put(report("r0", "Patient/p0", effectiveDateTime="2024-03-01"), T.format(1))
    assert sync("patients", practice, server.url)[0] == 0
    assert sync("results", practice, server.url)[0] == 0
    before = cursor(practice, server.url)
    server.put(gb_patient(0, family="Hall"), T.format(8))
    server.put(report("r0", "Patient/p0", effectiveDateTime="2024-03-02"), T.format(9))
    server.control("_status", "500")

    code, data = sync("patients", practice, server.url)

    assert code == 1 and data["status"] == "failed"
    assert "HTTP 500" in data["failure"]
    assert SyncRun.objects.get(id=data["run_id"]).status == SyncRun.Status.FAILED
    code, out = run("results", "sync", "--practice", practice.slug, "--source", server.url,
                    "--format", "fhir")
    assert code == 1 and "HTTP 500" in out
    assert Patient.objects.get(pms_id="P0").family_name == "Lee"
    assert str(Result.objects.get(result_id="DiagnosticReport/r0").performed_on) == "2024-03-01"
    assert cursor(practice, server.url) == before

    server.control("_status", None)     # back up: the changes are picked up, none skipped
    assert sync("patients", practice, server.url)[1]["updated"] == 1
    assert sync("results", practice, server.url)[1]["updated"] == 1


def test_a_next_link_to_another_host_is_refused(practice, server):
    for n in range(3):
        server.put(gb_patient(n), T.format(n))
    server.control("_next_base", "http://127.0.0.2:9")

    code, data = sync("patients", practice, server.url)

    assert code == 1 and "on another server than the base; not followed" in data["failure"]
    assert len(server.requests()) == 1      # the other host was never asked
    assert not Patient.objects.exists() and cursor(practice, server.url) is None


def test_bad_pages_and_too_many_pages_are_refused(server):
    for n in range(5):
        server.put(gb_patient(n), T.format(n))
    with pytest.raises(SourceError, match="more than 2 pages of Patient"):
        pull(server.url, "Patient", None, max_pages=2)
    server.control("_status", "404")
    with pytest.raises(SourceError, match="HTTP 404"):
        pull(server.url, "Patient", None)
    with pytest.raises(SourceError, match="not a usable URL"):
        pull("http://127.0.0.1:port/fhir", "Patient", None)
    with pytest.raises(SourceError, match="not an http"):
        pull("ftp://127.0.0.1/fhir", "Patient", None)
    with pytest.raises(SourceError, match="cannot be reached"):
        pull("http://127.0.0.1:9", "Patient", None, timeout=5)
    assert search_url("http://h/fhir/", "Patient", "2026-01-01T00:00:00+10:00") == (
        "http://h/fhir/Patient?_lastUpdated=gt2026-01-01T00%3A00%3A00%2B10%3A00&_count=100"
        "&_sort=_lastUpdated")


def test_the_same_patients_and_results_from_the_server_as_from_files(tmp_path, db, server):
    make_practice(slug="by-files")
    by_server = make_practice(slug="by-server")
    resources = [
        patient("a", [ident("urn:pms", "P1", "PI"), ident(NHS_SYSTEM, NHS[0])], "O'Brien",
                ("Zoë",), "1980-02-01", gender="female", telecom=PHONES[:2],
                address=[{"use": "home", "line": ["2 High St"], "city": "Leeds",
                          "postalCode": "LS1 1AA"}]),
        patient("b", [ident("urn:pms", "P2", "PI"), ident(NHS_SYSTEM, NHS[1])], "Hall", ("Sam",),
                "1940-05-06", gender="male", deceasedDateTime="2024-01-02"),
        patient("P3", [], "Ward", ("Kim",), "2001-12-31", gender="other"),
        report("r1", "Patient/a", effectiveDateTime="2024-03-01T14:00:00+00:00"),
        report("r2", "Patient/P3", effectiveDateTime="2024-03-04"),
    ]
    write(tmp_path / "files", "all.json", bundle(*resources))
    for n, resource in enumerate(resources):
        server.put(resource, T.format(n))

    assert run_json("patients", "sync", "--practice", "by-files", "--source",
                    tmp_path / "files", "--format", "fhir")[0] == 0
    assert run_json("results", "sync", "--practice", "by-files", "--source",
                    tmp_path / "files", "--format", "fhir")[0] == 0
    assert sync("patients", by_server, server.url)[0] == 0
    assert sync("results", by_server, server.url)[0] == 0

    def exported(slug):
        export = json.loads(run("export", "--practice", slug)[1])
        return ([{k: v for k, v in p.items() if k != "id"} for p in export["patients"]],
                [{k: v for k, v in r.items() if k not in ("id", "patient_id")}
                 for r in export["results"]])

    assert exported("by-files") == exported("by-server")
    assert len(exported("by-server")[0]) == 3 and len(exported("by-server")[1]) == 2
