"""Best Practice (AU). Patient lists arrive as canonical CSV, HL7 v2 ADT or FHIR."""

from . import Profile

PROFILE = Profile(name="bestpractice", label="Best Practice", country="AU")
