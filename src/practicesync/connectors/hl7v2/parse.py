"""HL7 v2 messages from raw bytes: a small adapter around python-hl7.

`parse_payload` takes what arrives (a file's bytes, an MLLP frame, a batch file) and returns,
in order, one `Message` or one `MessageError` per message it holds, plus `MessageError`s with
`message_index` 0 for problems of the payload as a whole (empty, broken batch envelope). It
never raises for bad input: anything it cannot make sense of is a `MessageError` naming the
segment and field, so one bad message never stops the rest.

What it accepts:
- CR, LF, CRLF and mixed segment endings; blank lines; a UTF-8 byte-order mark;
- MLLP framing (VT ... FS CR), one or several frames;
- batch and file envelopes (FHS/BHS ... BTS/FTS), checked but not required;
- any delimiters MSH-1/MSH-2 declare.
Text is UTF-8; bytes that are not UTF-8 are read as ISO 8859-1 (HL7's usual 8859/1).

python-hl7 splits the message into fields, repetitions, components and sub-components. It
does not unescape on plain indexing, and its own `unescape` logs field contents (patient data
must never reach the logs) and raises on some malformed sequences, so values are unescaped
here by `unescape`.
"""

import datetime as dt
import re
from dataclasses import dataclass, field

import hl7

from practicesync.numbers import whole_number

ENVELOPE = ("FHS", "BHS", "BTS", "FTS")
_HEADERS = ("MSH", "FHS", "BHS")
_MLLP = str.maketrans({"\x0b": "\r", "\x1c": "\r", "\ufeff": None})
_LINES = re.compile(r"\r\n|\n|\r")
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
# C0 controls other than tab (CR/LF are segment ends by now) and DEL: never in HL7 text, and a
# NUL cannot even be stored in PostgreSQL.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class MessageError:
    """Why a message (or part of it) was not used. `message_index` counts messages in the
    payload from 1; 0 means the payload as a whole (empty file, broken batch envelope)."""

    message_index: int
    segment: str      # segment id, e.g. "OBR"; "" when there is none
    field: str        # e.g. "OBR-7"; "" when the whole segment or message is at fault
    reason: str
    code: str = "invalid"          # stable name of the reason, for tests and reports
    pms_id: str | None = None

    @property
    def where(self) -> str:
        return self.field or self.segment


@dataclass(frozen=True)
class Separators:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


# --- escapes ---------------------------------------------------------------------------------

_FORMATTING = {".br": "\n", ".sp": "\n", ".ce": "\n", ".fi": "", ".nf": "", ".in": "", ".ti": "",
               ".sk": " "}


def unescape(text: str, seps: Separators = Separators()) -> str:
    """Decode HL7 escape sequences (v2.x chapter 2): \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ give back the
    delimiters, \\Xhh..\\ hex bytes (UTF-8, else ISO 8859-1), \\.br\\ a line break; highlighting
    (\\H\\ \\N\\), character-set switches (\\C..\\ \\M..\\) and local escapes (\\Z..\\) are
    dropped. An unknown or unterminated sequence is kept as written."""
    esc = seps.escape
    if not esc or esc not in text:
        return text
    out, i = [], 0
    while i < len(text):
        start = text.find(esc, i)
        if start < 0:
            out.append(text[i:])
            break
        out.append(text[i:start])
        end = text.find(esc, start + 1)
        if end < 0:
            out.append(text[start:])
            break
        out.append(_escape_value(text[start + 1:end], text[start:end + 1], seps))
        i = end + 1
    return "".join(out)


def _escape_value(seq: str, literal: str, seps: Separators) -> str:
    simple = {"F": seps.field, "S": seps.component, "T": seps.subcomponent,
              "R": seps.repetition, "E": seps.escape, "H": "", "N": "", "": ""}
    if seq in simple:
        return simple[seq]
    if seq[:3] in _FORMATTING:
        count = seq[3:]
        text = _FORMATTING[seq[:3]]
        return text * n if (n := whole_number(count, digits=2)) is not None else text
    if seq[0] == "X":
        digits = seq[1:]
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            return literal
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            decoded = raw.decode("latin-1")
        decoded = decoded.replace("\r\n", "\n").replace("\r", "\n")
        return "".join(c for c in decoded if c in "\n\t" or not _CONTROL.match(c))
    if seq[0] in "CMZ":
        return ""
    return literal


# --- values ----------------------------------------------------------------------------------

class Repetition:
    """One repetition of a field: components of sub-components, unescaped on access."""

    def __init__(self, components: tuple[tuple[str, ...], ...], seps: Separators):
        self._components = components
        self._seps = seps

    def component(self, number: int, sub: int = 1) -> str:
        if number > len(self._components):
            return ""
        subs = self._components[number - 1]
        if sub > len(subs):
            return ""
        return unescape(subs[sub - 1], self._seps).strip()

    def __bool__(self) -> bool:
        return any(s.strip() for c in self._components for s in c)


@dataclass(frozen=True)
class Segment:
    id: str
    position: int                   # 1-based line of the message
    fields: tuple                   # fields[n] is field n: repetitions of components of subs
    seps: Separators = field(repr=False, default=Separators())

    def repetitions(self, number: int) -> list[Repetition]:
        if number >= len(self.fields):
            return []
        return [Repetition(rep, self.seps) for rep in self.fields[number]]

    def get(self, number: int, component: int = 1, sub: int = 1, repetition: int = 1) -> str:
        if number in (1, 2) and self.id in _HEADERS:
            # MSH-1 and MSH-2 are the delimiters themselves: never split or unescaped.
            return self.fields[number][0][0][0] if number < len(self.fields) else ""
        reps = self.repetitions(number)
        if repetition > len(reps):
            return ""
        return reps[repetition - 1].component(component, sub)

    def text(self, number: int) -> str:
        """Field `number` as written: delimiters and escape sequences kept."""
        if number >= len(self.fields):
            return ""
        seps = self.seps
        return seps.repetition.join(seps.component.join(seps.subcomponent.join(subs)
                                                        for subs in rep)
                                    for rep in self.fields[number])

    def name(self, number: int) -> str:
        return f"{self.id}-{number}"


@dataclass
class Message:
    index: int                      # 1-based position in its payload
    text: str                       # the message, segments ended by CR
    segments: list[Segment]
    seps: Separators

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    @property
    def message_code(self) -> str:
        return self.msh.get(9, 1).upper()

    @property
    def trigger(self) -> str:
        return self.msh.get(9, 2).upper()

    @property
    def message_type(self) -> str:
        """MSH-9 as "ORU^R01" (message code and trigger event)."""
        return f"{self.message_code}^{self.trigger}" if self.trigger else self.message_code

    @property
    def control_id(self) -> str:
        return self.msh.text(10)

    @property
    def msh_key(self) -> tuple[str, str, str]:
        """(MSH-3, MSH-4, MSH-10) as written: sending application, sending facility, control
        id; the same key twice is the same message sent again."""
        return self.msh.text(3), self.msh.text(4), self.control_id

    @property
    def version(self) -> str:
        return self.msh.get(12)

    def all(self, segment_id: str) -> list[Segment]:
        return [s for s in self.segments if s.id == segment_id]

    def first(self, segment_id: str) -> Segment | None:
        return next((s for s in self.segments if s.id == segment_id), None)

    def error(self, segment: str, field: str, reason: str, code: str,
              pms_id: str | None = None) -> MessageError:
        return MessageError(self.index, segment, field, reason, code, pms_id)


# --- dates -----------------------------------------------------------------------------------

_TS = re.compile(r"(\d{4})(\d{2})?(\d{2})?(?:(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,4}))?)?"
                 r"(?:([+-])(\d{2})(\d{2}))?\Z")


def parse_ts(text: str) -> dt.date | dt.datetime:
    """An HL7 TS/DTM value (YYYYMMDD[HH[MM[SS[.S]]]][+/-ZZZZ]) as a date when it has no time,
    else a datetime, aware when an offset is given. Raises ValueError saying what is wrong;
    less precise than a day is an error (a day is what every rule here needs)."""
    match = _TS.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an HL7 date/time (YYYYMMDD[HHMM[SS]][+ZZZZ])")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    if day is None:
        raise ValueError(f"{text!r} is not precise to a day")
    try:
        date = dt.date(int(year), int(month), int(day))
        if hour is None:
            return date
        tz = None
        if sign:
            offset = dt.timedelta(hours=int(off_h), minutes=int(off_m))
            tz = dt.timezone(-offset if sign == "-" else offset)
        micro = int((fraction or "0").ljust(6, "0")[:6])
        return dt.datetime(date.year, date.month, date.day, int(hour), int(minute or 0),
                           int(second or 0), micro, tzinfo=tz)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a real date/time ({e})") from None


# --- splitting and parsing -------------------------------------------------------------------

def decode(payload: bytes | str) -> str:
    if isinstance(payload, str):
        return payload
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("latin-1")


@dataclass
class _Pending:
    index: int
    lines: list[str]
    broken: MessageError | None = None


def parse_payload(payload: bytes | str) -> list[Message | MessageError]:
    """Every message of the payload, in order, parsed or rejected; envelope problems as
    errors with message_index 0. Never raises for bad input."""
    try:
        return _Splitter().run(decode(payload))
    except Exception as e:  # noqa: BLE001 - the promise is: bad input never raises
        return [MessageError(0, "", "", f"could not be read as HL7 ({type(e).__name__})",
                             "unparseable")]


class _Splitter:
    """Walks the segment lines: MSH starts a message, envelope segments end one."""

    def __init__(self):
        self.out: list[_Pending | MessageError] = []
        self.current: _Pending | None = None
        self.count = 0
        self.in_file = self.in_batch = False
        self.batch_messages = 0
        self.orphans = 0

    def run(self, text: str) -> list[Message | MessageError]:
        lines = [line.strip(" \t") for line in _LINES.split(text.translate(_MLLP))]
        lines = [line for line in lines if line]
        if not lines:
            return [MessageError(0, "", "", "holds no HL7 message (empty)", "empty")]
        for line in lines:
            head = line[:3]
            if head == "MSH":
                self._finish()
                self.count += 1
                self.batch_messages += 1
                self.current = _Pending(self.count, [line])
            elif head in ENVELOPE and (len(line) == 3 or not line[3].isalnum()):
                self._envelope(head, line)
            elif self.current is not None:
                self.current.lines.append(line)
            else:
                self.orphans += 1
                if self.orphans == 1:
                    self.out.append(MessageError(
                        0, head if _SEGMENT_ID.match(head) else "", "",
                        "segments before any MSH: no message header, so they were not used",
                        "no_msh"))
        self._finish()
        if self.in_batch or self.in_file:
            what = "BHS batch has no BTS" if self.in_batch else "FHS file has no FTS"
            self.out.append(MessageError(0, "BTS" if self.in_batch else "FTS", "",
                                         f"{what} at the end: the file may have been cut short",
                                         "envelope"))
        if self.count == 0 and not any(isinstance(e, MessageError) and e.code == "no_msh"
                                       for e in self.out):
            self.out.append(MessageError(0, "", "", "holds no HL7 message (no MSH segment)",
                                         "no_msh"))
        return [_parse_message(p) if isinstance(p, _Pending) else p for p in self.out]

    def _finish(self) -> None:
        if self.current is not None:
            self.out.append(self.current)
            self.current = None
        self.orphans = 0

    def _envelope(self, head: str, line: str) -> None:
        interrupted = self.current
        self._finish()
        if head in ("FHS", "BHS"):
            nested = self.in_file if head == "FHS" else self.in_batch
            if nested:
                self.out.append(MessageError(0, head, "", f"{head} inside an open "
                                             f"{'file' if head == 'FHS' else 'batch'} "
                                             f"(no {'FTS' if head == 'FHS' else 'BTS'} before it)",
                                             "envelope"))
                if interrupted is not None and interrupted.broken is None:
                    interrupted.broken = MessageError(
                        interrupted.index, head, "", f"message interrupted by a nested {head}: "
                        f"its segments after the {head} are missing", "envelope")
            if head == "FHS":
                self.in_file = True
            else:
                self.in_batch, self.batch_messages = True, 0
        elif head == "BTS":
            if not self.in_batch:
                self.out.append(MessageError(0, "BTS", "", "BTS without a BHS", "envelope"))
            else:
                declared = line[4:].split(line[3], 1)[0].strip() if len(line) > 4 else ""
                count = whole_number(declared, digits=18)
                if count is not None and count != self.batch_messages:
                    self.out.append(MessageError(
                        0, "BTS", "BTS-1", f"BTS-1 says the batch holds {count} "
                        f"message(s) but it holds {self.batch_messages}", "envelope"))
            self.in_batch = False
        else:  # FTS
            if not self.in_file:
                self.out.append(MessageError(0, "FTS", "", "FTS without an FHS", "envelope"))
            self.in_file = False


def _msh_separators(index: int, line: str) -> tuple[Separators | None, MessageError | None]:
    def bad(field_name: str, reason: str):
        return None, MessageError(index, "MSH", field_name, reason, "bad_msh")

    if len(line) < 4:
        return bad("MSH-1", "MSH has no field separator")
    sep = line[3]
    if sep.isalnum() or sep.isspace():
        return bad("MSH-1", "MSH-1 (field separator) must be a punctuation character")
    end = line.find(sep, 4)
    encoding = line[4:] if end < 0 else line[4:end]
    if not encoding:
        return bad("MSH-2", "MSH-2 (encoding characters) is missing")
    if (len(encoding) > 5 or len(set(encoding)) != len(encoding) or sep in encoding
            or any(c.isalnum() or c.isspace() for c in encoding)):
        return bad("MSH-2", "MSH-2 (encoding characters) must be up to five distinct "
                            "punctuation characters other than the field separator")
    # python-hl7's defaults for characters MSH-2 leaves out
    component = encoding[0]
    repetition = encoding[1] if len(encoding) > 1 else "~"
    escape = encoding[2] if len(encoding) > 2 else "\\"
    subcomponent = encoding[3] if len(encoding) > 3 else "&"
    return Separators(sep, component, repetition, escape, subcomponent), None


def _parse_message(pending: _Pending) -> Message | MessageError:
    if pending.broken is not None:
        return pending.broken
    index, lines = pending.index, pending.lines
    seps, error = _msh_separators(index, lines[0])
    if error:
        return error
    for number, line in enumerate(lines, 1):
        head = line[:3]
        if number > 1 and (not _SEGMENT_ID.match(head) or (len(line) > 3 and line[3] != seps.field)):
            return MessageError(index, head if _SEGMENT_ID.match(head) else "", "",
                                f"line {number} of the message is not a segment (a three-"
                                f"character segment id then {seps.field!r}); a line break "
                                f"inside a field?", "bad_segment")
        if control := _CONTROL.search(line):
            return MessageError(index, head if _SEGMENT_ID.match(head) else "", "",
                                f"segment {number} holds control character "
                                f"0x{ord(control.group()):02x}, which HL7 text never contains",
                                "control_character")
    text = "\r".join(lines) + "\r"
    try:
        parsed = hl7.parse(text)
    except Exception as e:  # noqa: BLE001 - whatever python-hl7 trips on is a bad message
        return MessageError(index, "MSH", "", f"python-hl7 could not parse it "
                                              f"({type(e).__name__})", "unparseable")
    segments = [_segment(position, seg, seps) for position, seg in enumerate(parsed, 1)]
    message = Message(index, text, segments, seps)
    if not message.message_code:
        return message.error("MSH", "MSH-9", "MSH-9 (message type) is missing", "no_message_type")
    if not message.control_id:
        return message.error("MSH", "MSH-10", "MSH-10 (message control id) is missing: a "
                                              "resent copy could not be told apart",
                             "no_control_id")
    return message


def _segment(position: int, seg, seps: Separators) -> Segment:
    # A segment with no field separator at all comes back from python-hl7 as bare text.
    seg_id = seg[0] if isinstance(seg[0], str) else str(seg[0][0])
    fields: list[tuple] = [(((seg_id,),),)]
    start = 1
    if seg_id in _HEADERS:
        fields += [(((seps.field,),),), (((str(seg[2][0]) if len(seg) > 2 else "",),),)]
        start = 3
    if not isinstance(seg[0], str):
        fields += [_field(seg[n]) for n in range(start, len(seg))]
    return Segment(seg_id, position, tuple(fields), seps)


def _field(value) -> tuple:
    reps = []
    for rep in value:
        if isinstance(rep, str):
            reps.append(((rep,),))
            continue
        comps = []
        for comp in rep:
            comps.append((comp,) if isinstance(comp, str) else tuple(str(s) for s in comp))
        reps.append(tuple(comps))
    return tuple(reps)

