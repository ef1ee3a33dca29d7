"""Medical Director (AU). Patient lists arrive as canonical CSV, HL7 v2 ADT or FHIR."""

from . import Profile

PROFILE = Profile(name="medicaldirector", label="Medical Director", country="AU")
