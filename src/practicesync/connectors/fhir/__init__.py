"""FHIR R4 files (a Bundle, a single resource, or a folder of them) as the canonical rows the
patient and results imports read. Resources are validated with `fhir.resources` (its R4B
models: Patient, DiagnosticReport, Observation and Bundle are the same as in R4). See
docs/adr/0009-fhir-import.md."""

from .feeds import read_patient_feed, read_result_feed
from .reader import FhirError, read_fhir_source

__all__ = ["FhirError", "read_fhir_source", "read_patient_feed", "read_result_feed"]
