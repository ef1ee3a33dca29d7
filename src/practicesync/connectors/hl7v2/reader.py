"""HL7 v2 messages from a file or a folder of files (a lab's or a PMS's drop folder)."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from practicesync.connectors.csvfile.source import source_files

from .parse import Message, MessageError, parse_payload

SUFFIXES = (".hl7", ".txt", ".msg")


@dataclass(frozen=True)
class SourceItem:
    """One message of the source, parsed, or why it was not; or a problem of a whole file."""

    number: int                 # 1-based across the whole source; 0: a file as a whole
    ref: str                    # "results/a.hl7:message 2", or the file alone
    message: Message | None = None
    error: MessageError | None = None


def read_hl7_source(source: str | Path) -> Iterator[SourceItem]:
    """Every message of the file or folder in order. A bad message or an unreadable file is
    reported (by file, message and segment) and the rest is read. Raises SourceError only
    when the source itself does not exist."""
    base, files = source_files(source, SUFFIXES)
    number = 0
    for path in files:
        name = path.relative_to(base).as_posix()
        try:
            payload = path.read_bytes()
        except OSError as e:
            yield SourceItem(0, name, error=MessageError(0, "", "", f"cannot be read "
                                                                   f"({e.strerror})",
                                                         "unreadable"))
            continue
        last = 0
        for item in parse_payload(payload):
            index = item.message_index if isinstance(item, MessageError) else item.index
            if index == 0:
                yield SourceItem(0, name, error=item)
                continue
            last = max(last, index)
            ref = f"{name}:message {index}"
            if isinstance(item, MessageError):
                yield SourceItem(number + index, ref, error=item)
            else:
                yield SourceItem(number + index, ref, message=item)
        number += last
