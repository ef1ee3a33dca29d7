"""FHIR JSON from a file or a folder of files: each resource of interest validated, or why not.

A file holds a Bundle (its entries are read, entries of other types skipped) or one resource
of a type read here; Bundles already in memory (a server's pages) are read the same way.
Nothing here raises for bad input except a source that does not exist.
"""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from practicesync.connectors.csvfile.source import source_files

READ_TYPES = ("Patient", "DiagnosticReport", "Observation")
SUFFIXES = (".json",)
MAX_PROBLEMS = 3


@dataclass(frozen=True)
class FhirError:
    """Why a file or resource was not used: `where` is a FHIR path ("Patient.birthDate"),
    `ref` names the file and resource, `code` is a short reason for tests and counts."""

    row: int
    ref: str
    where: str
    reason: str
    code: str
    pms_id: str | None = None

    def as_dict(self) -> dict:
        return {"row": self.row, "pms_id": self.pms_id, "field": self.where,
                "message": f"{self.ref}: {self.reason}"}


@dataclass(frozen=True)
class Item:
    """One resource of the source: `number` is 1-based across the whole source (0 for a file
    as a whole), `ref` "lab/a.json:entry[2] DiagnosticReport/r1", `full_url` the Bundle
    entry's fullUrl (what references inside a Bundle may point at)."""

    number: int
    ref: str
    resource_type: str = ""
    resource: object | None = None
    full_url: str = ""
    error: FhirError | None = None


def fhir_path(resource_type: str, loc: tuple) -> str:
    out = resource_type
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _validation_error(number, ref, resource_type, e: ValidationError, pms_id=None) -> FhirError:
    problems = e.errors()
    paths = [fhir_path(resource_type, tuple(p.get("loc", ()))) for p in problems]
    said = "; ".join(f"{path}: {p.get('msg', '')}" for path, p in
                     zip(paths[:MAX_PROBLEMS], problems[:MAX_PROBLEMS], strict=True))
    more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
    return FhirError(number, ref, paths[0] if paths else resource_type,
                     f"not a valid FHIR R4 {resource_type}: {said}{more}", "invalid", pms_id)


def validate(number: int, ref: str, raw: dict, full_url: str = "") -> Item:
    resource_type = raw.get("resourceType")
    label = f"{ref} {resource_type}/{raw.get('id')}" if raw.get("id") else f"{ref} {resource_type}"
    try:
        model = get_fhir_model_class(resource_type).model_validate(raw)
    except ValidationError as e:
        return Item(number, label, resource_type,
                    error=_validation_error(number, label, resource_type, e))
    except Exception as e:  # noqa: BLE001 - a model that trips on odd input never stops the rest
        return Item(number, label, resource_type, error=FhirError(
            number, label, resource_type, f"could not be validated ({type(e).__name__})",
            "invalid"))
    return Item(number, label, resource_type, model, full_url)


def _bundle_items(data: dict, name: str, number: int, types: tuple[str, ...] = READ_TYPES
                  ) -> Iterator[Item]:
    entries = data.get("entry") or []
    if not isinstance(entries, list):
        yield Item(0, name, "Bundle", error=FhirError(0, name, "Bundle.entry",
                                                      "Bundle.entry is not a list", "invalid"))
        return
    shell = {**data, "entry": [{k: v for k, v in e.items() if k != "resource"}
                               if isinstance(e, dict) else e for e in entries]}
    if not shell["entry"]:
        shell.pop("entry")
    try:
        get_fhir_model_class("Bundle").model_validate(shell)
    except ValidationError as e:
        yield Item(0, name, "Bundle", error=_validation_error(0, name, "Bundle", e))
        return
    for index, entry in enumerate(entries):
        raw = entry.get("resource")
        if not isinstance(raw, dict) or raw.get("resourceType") not in types:
            continue  # a Bundle carries all sorts: only what is read here is looked at
        if (entry.get("request") or {}).get("method") == "DELETE":
            continue
        number += 1
        yield validate(number, f"{name}:entry[{index}]", raw, entry.get("fullUrl") or "")


def _file_documents(source: str | Path) -> Iterator[tuple[str, object]]:
    """(name, parsed JSON) of each file, or (name, Item) saying why a file is not JSON."""
    base, files = source_files(source, SUFFIXES)
    for path in files:
        name = path.relative_to(base).as_posix()
        try:
            yield name, json.loads(path.read_bytes())
        except OSError as e:
            yield name, _problem(name, f"cannot be read ({e.strerror})", "unreadable")
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            yield name, _problem(name, f"is not JSON ({str(e)[:80]})", "not_json")


def _problem(name: str, reason: str, code: str, where: str = "") -> Item:
    return Item(0, name, error=FhirError(0, name, where, reason, code))


def read_fhir_documents(documents: Iterable[tuple[str, object]],
                        types: tuple[str, ...] = READ_TYPES) -> Iterator[Item]:
    """Every Patient, DiagnosticReport and Observation (or resource of `types`) of already
    parsed JSON documents (name, data), e.g. the Bundle pages a FHIR server returned,
    numbered across them all."""
    number = 0
    for name, data in documents:
        if isinstance(data, Item):
            yield data
            continue
        kind = data.get("resourceType") if isinstance(data, dict) else None
        if not isinstance(kind, str) or not kind:
            yield _problem(name, "is not a FHIR resource (no resourceType)", "not_fhir")
        elif kind == "Bundle":
            for item in _bundle_items(data, name, number, types):
                number = max(number, item.number)
                yield item
        elif kind in types:
            number += 1
            yield validate(number, name, data)
        else:
            yield _problem(name, f"{kind} is not read here (only Bundle, "
                                 f"{', '.join(types)})", "unsupported_type", kind)


def read_fhir_source(source, types: tuple[str, ...] = READ_TYPES) -> Iterator[Item]:
    """Every Patient, DiagnosticReport and Observation of the file or folder, in order, or the
    reason a file or resource could not be read. Raises SourceError only when the source does
    not exist. `source` may also be a list of (name, parsed JSON) documents (a server pull)."""
    if isinstance(source, list | tuple):
        yield from read_fhir_documents(source, types)
    else:
        yield from read_fhir_documents(_file_documents(source), types)
