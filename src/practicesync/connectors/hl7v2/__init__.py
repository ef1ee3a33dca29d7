"""HL7 v2 connector: parsing (python-hl7 behind `parse`), mapping to the canonical patient-list
and actioned-results rows (`mapping`), and reading files or folders of messages (`reader`,
`feeds`). The MLLP listener builds on the same parser."""

from .parse import Message, MessageError, Segment, parse_payload, parse_ts, unescape
from .reader import SourceItem, read_hl7_source

__all__ = ["Message", "MessageError", "Segment", "SourceItem", "parse_payload", "parse_ts",
           "read_hl7_source", "unescape"]
