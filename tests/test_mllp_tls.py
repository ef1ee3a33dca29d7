"""MLLP over TLS: the listener with a self-signed certificate made here, spoken to by an `ssl`
client socket on 127.0.0.1; a plain-TCP client on the TLS port must not hurt it. The listener
runs in-process (its own event loop in a thread) with the FakeInbox of test_mllp; the CLI options
are checked in test_mllp (`test_mllp_tls_options_go_together`)."""

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from practicesync.connectors.hl7v2.mllp import Listener, frame, tls_context
from tests.test_mllp import CR, FS, FakeInbox, oru, segments


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (and its key), PEM files in `folder`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "practicesync test listener")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "listener.pem", folder / "listener.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Serving:
    """A Listener on a free 127.0.0.1 port, in its own event loop and thread."""

    def __init__(self, listener: Listener):
        self.listener = listener
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(listener.serve("127.0.0.1", 0, ready=self._ready),),
                                       daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "the listener did not start"

    def _ready(self, addresses):
        self.port = addresses[0][1]
        self.ready.set()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.listener.stopping.set)
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()
        self.loop.close()


def tls_send(port: int, cafile: Path, message: str) -> str:
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        sock.sendall(frame(message))
        pending = b""
        while FS + CR not in pending:
            chunk = sock.recv(65536)
            assert chunk, "closed before an ACK"
            pending += chunk
        return pending.split(FS + CR, 1)[0][1:].decode("utf-8")


@pytest.fixture
def tls_listener(tmp_path):
    cert, key = self_signed(tmp_path)
    serving = Serving(Listener(FakeInbox(), threads=2, process_here=False,
                               tls=tls_context(str(cert), str(key))))
    try:
        yield serving, cert
    finally:
        serving.stop()


def test_a_tls_client_gets_its_ack(tls_listener):
    serving, cert = tls_listener
    assert segments(tls_send(serving.port, cert, oru("TLS-1")))["MSA"][1:3] == ["AA", "TLS-1"]


def test_a_plain_tcp_client_on_the_tls_port_gets_nothing_and_hurts_nobody(tls_listener):
    serving, cert = tls_listener
    with socket.create_connection(("127.0.0.1", serving.port), timeout=10) as plain:
        plain.sendall(frame(oru("PLAIN-1")))
        try:
            answer = plain.recv(65536)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    # No MLLP in the clear: at most a TLS alert record (content type 21), never an ACK.
    assert b"MSA" not in answer and (not answer or answer[0] == 21)
    assert segments(tls_send(serving.port, cert, oru("TLS-2")))["MSA"][1:3] == ["AA", "TLS-2"]
    assert serving.thread.is_alive()


def test_the_server_context_refuses_anything_older_than_tls_1_2(tmp_path):
    cert, key = self_signed(tmp_path)
    assert tls_context(str(cert), str(key)).minimum_version == ssl.TLSVersion.TLSv1_2
