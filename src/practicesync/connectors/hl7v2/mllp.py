"""An asyncio MLLP listener (HL7 v2 minimal lower layer protocol: VT message FS CR).

On the hot path only the MSH segment is read (`read_msh`). Then, per frame:
- practice permission off: AR, nothing kept;
- MSH unreadable, or a message type this product does not take: AR with an ERR segment naming
  the problem; the raw bytes kept as a dead letter;
- otherwise the raw frame and its MSH key are committed to the inbox and then (commit mode) AA
  is sent, the message being applied right after by a background task (and by `worker`); in
  original mode the inbox is processed first and the answer is AA, or AE with the reason.
  Group commit: the frames that arrive (on any connection) while one commit is in flight are
  stored together in the next transaction, each then answered as if it had been alone;
- a duplicate MSH key (MSH-3, MSH-4, MSH-10) is answered as before without storing it again.
MSA-2 always echoes the message's MSH-10. Bytes outside frames are discarded; a frame larger
than `MAX_FRAME` is answered AR and skipped. SIGTERM: stop accepting, finish the frames in
hand (ACK them), stop. With `tls` (an ssl.SSLContext, see `tls_context`) MLLP runs over TLS.
"""

import asyncio
import datetime as dt
import logging
import re
import ssl
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from .mapping import MERGE_TRIGGERS, PATIENT_TRIGGERS, SIU_TRIGGERS
from .parse import _CONTROL, _msh_separators, decode

log = logging.getLogger(__name__)

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
MAX_FRAME = 1024 * 1024
ACCEPTED_TYPES = {"ADT": PATIENT_TRIGGERS + MERGE_TRIGGERS, "ORU": ("R01",),
                  "SIU": tuple(SIU_TRIGGERS)}
SUPPORTED = "ADT^A04/A08/A28/A31/A40, ORU^R01 and SIU^S12/S13/S14/S15/S26"
# HL7 table 0357 (message error condition codes) used here.
ERROR_NAMES = {"100": "Segment sequence error", "101": "Required field missing",
               "102": "Data type error", "200": "Unsupported message type",
               "201": "Unsupported event code", "207": "Application internal error"}
MAX_KEY = {"MSH-3": 227, "MSH-4": 227, "MSH-10": 199}


# --- framing ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Oversize:
    """A frame that grew past the size limit: answered AR, the rest of it skipped."""

    size: int


class FrameDecoder:
    """Bytes of a stream in, complete frames out. Bytes outside a frame are discarded; a new
    start block inside a frame abandons the partial one (the sender started over)."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self.max_frame = max_frame
        self.buffer = bytearray()
        self.in_frame = False
        self.skipping = False

    def feed(self, data: bytes) -> list[bytes | Oversize]:
        out: list[bytes | Oversize] = []
        i, n = 0, len(data)
        while i < n:
            if self.skipping:
                end = data.find(FS, i)
                if end < 0:
                    break
                self.skipping, i = False, end + 1
            elif not self.in_frame:
                start = data.find(VT, i)
                if start < 0:
                    break
                self.in_frame, i = True, start + 1
                self.buffer.clear()
            else:
                end, restart = data.find(FS, i), data.find(VT, i)
                if restart >= 0 and (end < 0 or restart < end):
                    self.buffer.clear()
                    i = restart + 1
                    continue
                stop = end if end >= 0 else n
                self.buffer += data[i:stop]
                if len(self.buffer) > self.max_frame:
                    out.append(Oversize(len(self.buffer)))
                    self.buffer.clear()
                    self.in_frame, self.skipping = False, end < 0
                    i = stop + 1
                    continue
                if end < 0:
                    break
                out.append(bytes(self.buffer))
                self.buffer.clear()
                self.in_frame, i = False, end + 1
        return out


def frame(message: bytes | str) -> bytes:
    if isinstance(message, str):
        message = message.encode("utf-8")
    return VT + message + FS + CR


# --- MSH only --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Header:
    """What the hot path reads: MSH, and nothing else."""

    field_sep: str = "|"
    encoding: str = "^~\\&"
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_code: str = ""
    trigger: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""

    @property
    def message_type(self) -> str:
        return f"{self.message_code}^{self.trigger}" if self.trigger else self.message_code

    @property
    def component(self) -> str:
        return self.encoding[0]

    @property
    def escape(self) -> str:
        return self.encoding[2] if len(self.encoding) > 2 else "\\"


@dataclass(frozen=True)
class Rejection:
    code: str          # HL7 table 0357
    field: str         # "MSH-10", or "" for the message as a whole
    reason: str


_FIRST_LINE = re.compile(rb"[\r\n]")


def read_msh(frame_bytes: bytes) -> tuple[Header, Rejection | None]:
    """The MSH of one frame (the first segment), and why the frame is refused, if it is. Never
    raises; the rest of the message is not looked at."""
    body = frame_bytes.lstrip(b" \t\r\n")
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:].lstrip(b" \t\r\n")
    found = _FIRST_LINE.search(body)
    line = decode(body[:found.start()] if found else body).strip(" \t").lstrip("\ufeff")
    if not line:
        return Header(), Rejection("100", "", "the frame holds no message (empty)")
    if not line.startswith("MSH"):
        return Header(), Rejection("100", "", "the frame does not start with an MSH segment")
    seps, error = _msh_separators(0, line)
    if error:
        return Header(), Rejection("102", error.field, error.reason)
    if not (seps.field + line[4:].split(seps.field, 1)[0]).isascii():
        # The ACK is written in the message's delimiters; a non-ASCII one would not survive
        # its UTF-8 encoding, and HL7 delimiters are ASCII anyway.
        return Header(), Rejection("102", "MSH-2", "MSH-1/MSH-2 delimiters must be ASCII")
    if control := _CONTROL.search(line):
        return Header(), Rejection("102", "", f"MSH holds control character "
                                              f"0x{ord(control.group()):02x}")
    fields = line.split(seps.field)

    def get(number: int) -> str:
        return fields[number - 1] if number - 1 < len(fields) else ""

    msh9 = get(9).split(seps.component)
    header = Header(field_sep=seps.field, encoding=fields[1],
                    sending_application=get(3), sending_facility=get(4),
                    receiving_application=get(5), receiving_facility=get(6),
                    message_code=msh9[0].strip().upper(),
                    trigger=msh9[1].strip().upper() if len(msh9) > 1 else "",
                    control_id=get(10), processing_id=get(11), version=get(12))
    for name, value in (("MSH-3", header.sending_application),
                        ("MSH-4", header.sending_facility), ("MSH-10", header.control_id)):
        if len(value) > MAX_KEY[name]:
            return replace(header, control_id=header.control_id[:MAX_KEY["MSH-10"]]), Rejection(
                "102", name, f"{name} is longer than {MAX_KEY[name]} characters")
    if not header.message_code:
        return header, Rejection("101", "MSH-9", "MSH-9 (message type) is missing")
    if not header.control_id.strip():
        return header, Rejection("101", "MSH-10", "MSH-10 (message control id) is missing: a "
                                                  "resent copy could not be told apart")
    triggers = ACCEPTED_TYPES.get(header.message_code)
    if triggers is None:
        return header, Rejection("200", "MSH-9", f"message type {header.message_type} is not "
                                                 f"taken here (only {SUPPORTED})")
    if header.trigger not in triggers:
        return header, Rejection("201", "MSH-9", f"event {header.message_type} is not taken "
                                                 f"here (only {SUPPORTED})")
    return header, None


# --- ACK -------------------------------------------------------------------------------------

def escape_text(text: str, header: Header) -> str:
    """Free text safe inside one field of the ACK (HL7 escape sequences)."""
    esc = header.escape
    out = text.replace(esc, f"{esc}E{esc}")
    for char, code in ((header.field_sep, "F"), (header.component, "S"),
                       (header.encoding[1] if len(header.encoding) > 1 else "~", "R"),
                       (header.encoding[3] if len(header.encoding) > 3 else "&", "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return "".join(" " if _CONTROL.match(c) or c == "\r" else c for c in out)


def build_ack(header: Header, code: str, *, error: Rejection | None = None,
              now: dt.datetime | None = None, control_id: str | None = None) -> bytes:
    """The ACK of a message, MLLP-framed: MSH with sender and receiver swapped, MSH-9
    ACK^<trigger>^ACK, MSA-1 `code` (AA, AE, AR), MSA-2 the message's MSH-10, and for an error
    an ERR segment (v2.5: location, HL7 code, severity, text) and MSA-3 with the reason."""
    fs, comp = header.field_sep, header.component
    now = now or dt.datetime.now(dt.UTC)
    msh9 = comp.join(["ACK", header.trigger, "ACK"]) if header.trigger else "ACK"
    segments = [fs.join([
        "MSH", header.encoding, header.receiving_application, header.receiving_facility,
        header.sending_application, header.sending_facility, now.strftime("%Y%m%d%H%M%S"), "",
        msh9, control_id or f"ACK{uuid.uuid4().hex[:16].upper()}", header.processing_id or "P",
        header.version or "2.5"])]
    msa = ["MSA", code, header.control_id]
    if error is not None:
        msa.append(escape_text(error.reason, header)[:80])
    segments.append(fs.join(msa))
    if error is not None:
        location = ""
        if re.fullmatch(r"[A-Z][A-Z0-9]{2}-\d+", error.field):
            segment, number = error.field.split("-")
            location = comp.join([segment, "1", number])
        name = ERROR_NAMES.get(error.code, "")
        segments.append(fs.join(["ERR", "", location, comp.join([error.code, name, "HL70357"]),
                                 "E", "", "", "", escape_text(error.reason, header)]))
    return frame("\r".join(segments) + "\r")


# --- the listener ----------------------------------------------------------------------------

class Inbox:
    """Where the listener keeps frames (the database, `inbox`); blocking calls, run in
    threads. Tests give the listener a fake one."""

    def __init__(self, practice_id: int):
        from . import inbox

        self.practice_id = practice_id
        self._inbox = inbox

    def permitted(self) -> bool:
        return self._inbox.permitted(self.practice_id)

    def accept(self, header: Header, raw: bytes):
        return self._inbox.accept(self.practice_id, header, raw)

    def accept_many(self, items: list[tuple[Header, bytes]]) -> list:
        return self._inbox.accept_many(self.practice_id, items)

    def reject(self, header: Header, raw: bytes, reason: str) -> None:
        self._inbox.reject(self.practice_id, header, raw, reason)

    def process(self) -> int:
        return self._inbox.process_inbox(self.practice_id)

    def outcome(self, row_id: int) -> tuple[str, str]:
        return self._inbox.outcome(row_id)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context: TLS 1.2 or later, the library's default (secure) ciphers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    busy: bool = False


@dataclass(eq=False)
class Listener:
    inbox: object
    mode: str = "commit"                  # commit | original
    max_frame: int = MAX_FRAME
    threads: int = 8
    permission_ttl: float = 5.0           # seconds a permission check is trusted
    original_timeout: float = 60.0        # original mode: longest wait for processing
    # Apply accepted messages in this process as well as in `practicesync worker`; off, the
    # listener only stores and acknowledges (the fastest ACK path).
    process_here: bool = True
    tls: ssl.SSLContext | None = None
    group_max: int = 500                  # frames stored in one transaction at most
    # Transactions in flight at once. Two: while one waits for its fsync the next group is
    # already on its way (PostgreSQL flushes concurrent commits together), instead of one
    # connection's round trips and fsync setting the pace alone.
    committers: int = 2
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _connections: set = field(default_factory=set)
    _tasks: set = field(default_factory=set)

    def __post_init__(self):
        self._executor = ThreadPoolExecutor(max_workers=self.threads,
                                            thread_name_prefix="mllp-db")
        self._work = asyncio.Event()
        self._process_lock = asyncio.Lock()
        self._permitted_at: float | None = None
        self._permitted = False
        self._group: list[tuple[Header, bytes, asyncio.Future]] = []
        self._committing: set[asyncio.Task] = set()

    async def _call(self, fn: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _is_permitted(self) -> bool:
        now = asyncio.get_running_loop().time()
        if self._permitted_at is None or now - self._permitted_at > self.permission_ttl:
            self._permitted = await self._call(self.inbox.permitted)
            self._permitted_at = now
        return self._permitted

    async def handle_frame(self, item: bytes | Oversize) -> bytes:
        """The ACK for one frame. Never raises: a failure to store is AE (nothing kept, the
        sender should send again)."""
        header = Header()
        try:
            if isinstance(item, Oversize):
                return build_ack(header, "AR", error=Rejection(
                    "102", "", f"frame larger than {self.max_frame} bytes"))
            header, rejection = read_msh(item)
            if not await self._is_permitted():
                return build_ack(header, "AR", error=Rejection(
                    "207", "", "Patient Sync is not permitted for this practice: nothing kept"))
            if rejection is not None:
                await self._call(self.inbox.reject, header, item,
                                 f"{rejection.field}: {rejection.reason}" if rejection.field
                                 else rejection.reason)
                return build_ack(header, "AR", error=rejection)
            stored = await self._store(header, item)
            if stored.conflict:
                rejection = Rejection("205", "MSH-10", "control id already used for a different "
                                                        "message: not a resend; send it with a "
                                                        "new MSH-10")
                await self._call(self.inbox.reject, header, item, rejection.reason)
                return build_ack(header, "AR", error=rejection)
            if self.mode != "original":
                if not stored.duplicate:
                    self._work.set()
                return build_ack(header, "AA")
            state, error = await self._processed(stored)
            if state == "processed":
                return build_ack(header, "AA")
            if state == "dead":
                return build_ack(header, "AE", error=Rejection("207", "", error or "not used"))
            return build_ack(header, "AE", error=Rejection(
                "207", "", "stored but not processed in time; it will be processed later"))
        except Exception:  # noqa: BLE001 - a sender must always get an answer
            log.exception("MLLP frame could not be handled")
            return build_ack(header, "AE", error=Rejection(
                "207", "", "could not be stored: not accepted, send it again"))

    async def _store(self, header: Header, raw: bytes):
        """Group commit: queue the frame; a committer stores whatever has queued up (from
        every connection) while the transactions in flight were busy, in one transaction. A
        lone frame waits for nobody; under load one fsync covers many ACKs."""
        future = asyncio.get_running_loop().create_future()
        self._group.append((header, raw, future))
        if len(self._committing) < self.committers:
            self._committing.add(asyncio.create_task(self._commit_groups()))
        return await future

    async def _commit_groups(self) -> None:
        try:
            while self._group:
                group = self._group[:self.group_max]
                del self._group[:self.group_max]
                outcomes = await self._commit(group)
                for (_, _, future), outcome in zip(group, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            # Right when the queue is seen empty (no await in between): a frame queued after
            # this point starts a new committer instead of waiting for this finished one.
            self._committing.discard(asyncio.current_task())

    async def _commit(self, group: list) -> list:
        """What the inbox says of each frame of the group; an exception stands for AE."""
        try:
            outcomes = await self._call(self.inbox.accept_many,
                                        [(header, raw) for header, raw, _ in group])
        except Exception as e:  # noqa: BLE001 - each frame gets AE from its handler
            return [e] * len(group)
        if len(outcomes) != len(group):
            return [RuntimeError("the inbox answered for the wrong number of frames")] * len(group)
        return outcomes

    async def _processed(self, stored) -> tuple[str, str]:
        """Original mode: process the inbox (in arrival order) until this row is done."""
        state, error = stored.state, stored.error
        deadline = asyncio.get_running_loop().time() + self.original_timeout
        while state in ("accepted", "processing"):
            async with self._process_lock:
                await self._call(self.inbox.process)
            state, error = await self._call(self.inbox.outcome, stored.row_id)
            if state not in ("accepted", "processing"):
                break
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        return state, error

    async def serve_connection(self, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writer)
        self._connections.add(connection)
        task = asyncio.current_task()
        self._tasks.add(task)
        decoder = FrameDecoder(self.max_frame)
        try:
            while not self.stopping.is_set():
                data = await reader.read(65536)
                if not data:
                    break
                for item in decoder.feed(data):
                    if self.stopping.is_set():
                        break    # not acknowledged: the sender sends it again
                    connection.busy = True
                    writer.write(await self.handle_frame(item))
                    await writer.drain()
                    connection.busy = False
        except (ConnectionError, OSError):
            pass    # the client went away; what it sent completely is stored and ACKed
        finally:
            connection.busy = False
            self._connections.discard(connection)
            self._tasks.discard(task)
            writer.close()

    async def process_loop(self, sweep: float = 5.0) -> None:
        """Apply accepted messages right after they arrive (and every `sweep` seconds)."""
        while True:
            try:
                await asyncio.wait_for(self._work.wait(), timeout=sweep)
            except TimeoutError:
                pass
            self._work.clear()
            try:
                while True:     # on stopping too: a last drain of what was accepted
                    async with self._process_lock:
                        done = await self._call(self.inbox.process)
                    if not done:
                        break
            except Exception:  # noqa: BLE001 - the worker sweeps what is left
                log.exception("processing the HL7 inbox failed")
            if self.stopping.is_set():
                return

    async def serve(self, host: str, port: int, ready: Callable | None = None,
                    grace: float = 8.0) -> None:
        """Listen until `stopping` is set, then finish the frames in hand and return."""
        # With TLS, a client that does not complete the handshake (plain TCP, a port scanner)
        # is dropped by asyncio before serve_connection runs; the listener carries on.
        server = await asyncio.start_server(self.serve_connection, host, port,
                                            limit=self.max_frame + 65536, ssl=self.tls,
                                            ssl_handshake_timeout=30 if self.tls else None)
        processor = asyncio.create_task(self.process_loop() if self.process_here
                                        else self.stopping.wait())
        if ready:
            ready([s.getsockname() for s in server.sockets])
        await self.stopping.wait()
        server.close()
        for connection in list(self._connections):
            if not connection.busy:
                connection.writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        self._work.set()
        try:
            await asyncio.wait_for(processor, timeout=grace)
        except TimeoutError:
            pass
        self._executor.shutdown(wait=False, cancel_futures=True)
