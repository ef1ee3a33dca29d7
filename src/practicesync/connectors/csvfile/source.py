"""Reading CSV sources (file path or http(s) URL) safely: every connector's first step.

A CSV that cannot be read as a whole is refused whole (`SourceError`): applying part of it
would make the rest look missing (patients "left", results never seen).
"""

import csv
import io
import urllib.request
from collections.abc import Iterator
from pathlib import Path


class SourceError(Exception):
    """The source could not be read at all; nothing from it may be applied."""


def open_source(source: str) -> str:
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=60) as response:  # noqa: S310
                return response.read().decode("utf-8-sig")
        return Path(source).read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise SourceError(f"{source}: no such file") from e
    except UnicodeDecodeError as e:
        raise SourceError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise SourceError(f"{source}: cannot be read ({e})") from e


class CsvSource:
    """The header of a CSV source, and its rows as (line number, dict) on iteration."""

    def __init__(self, source: str):
        self.source = source
        self._reader = csv.DictReader(io.StringIO(open_source(source), newline=""))
        try:
            self.header = list(self._reader.fieldnames or [])
        except csv.Error as e:
            raise SourceError(f"{source}: line 1: {e}") from e

    def require(self, columns, read=()) -> None:
        """Refuse the source unless it has each of `columns` once; `read` names the optional
        columns it is read for, which must not appear twice either (which copy holds the
        value?)."""
        if missing := [c for c in columns if c not in self.header]:
            raise SourceError(f"{self.source}: missing column(s) {', '.join(missing)}")
        if twice := [c for c in dict.fromkeys((*columns, *read)) if self.header.count(c) > 1]:
            raise SourceError(f"{self.source}: column(s) {', '.join(twice)} appear more than "
                              f"once in the header; which one to read is unclear")

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        reader = self._reader
        try:
            for raw in reader:
                if any("\n" in v or "\r" in v for v in raw.values() if isinstance(v, str)):
                    # No field of ours spans lines; one that does is an unterminated quote
                    # that has swallowed the rows after it.
                    raise SourceError(f"{self.source}: a quoted field starting before line "
                                      f"{reader.line_num} runs over several lines "
                                      f"(unterminated quote?); nothing from it was applied")
                if nul := next((k for k, v in raw.items() if isinstance(v, str) and "\x00" in v),
                               None):
                    # Never text (a UTF-16 or binary file?), and PostgreSQL cannot store it.
                    raise SourceError(f"{self.source}: line {reader.line_num}, column {nul}: "
                                      f"holds a NUL character (0x00); nothing from it was "
                                      f"applied")
                yield reader.line_num, raw
        except csv.Error as e:
            # The reader counts the lines of the records it finished: the failing one is next.
            raise SourceError(f"{self.source}: line {reader.line_num + 1}: {e}") from e


def source_files(source: str | Path, suffixes: tuple[str, ...]) -> tuple[Path, list[Path]]:
    """(folder the references are relative to, files in the order they are read): a file on
    its own, or every file with one of `suffixes` directly in a folder, sorted by name."""
    path = Path(source)
    if path.is_dir():
        return path, sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in suffixes)
    if path.is_file():
        return path.parent, [path]
    raise SourceError(f"{source}: no such file or folder")
