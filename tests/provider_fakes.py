"""Local stand-ins for the real channel providers, on 127.0.0.1 only: Twilio's Messages API,
a Web Push service and an SMTP server. Each checks the request as the real one documents it
and answers as the real one does. Synthetic data only."""

import base64
import datetime as dt
import json
import os
import socketserver
import threading
import time
import uuid
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _HttpFake:
    """An HTTP server in a daemon thread; subclasses give the handler's `handle_post`."""

    def __init__(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                status, headers, payload = fake.handle_post(self.path, self.headers, body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.requests = []
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# --- Twilio ---------------------------------------------------------------------------------

# Twilio's magic test numbers: sending to these gives these errors.
TWILIO_ERRORS = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}


class FakeTwilio(_HttpFake):
    """POST /2010-04-01/Accounts/{AccountSid}/Messages.json as Twilio documents it.
    `fail_next` takes HTTP statuses (429, 500) to answer the next requests with."""

    def __init__(self, account_sid: str, auth_token: str):
        super().__init__()
        self.account_sid, self.auth_token = account_sid, auth_token
        self.fail_next: list[int] = []

    def handle_post(self, path, headers, body):
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        self.requests.append({"path": path, "form": form, "headers": dict(headers)})
        expected_auth = "Basic " + base64.b64encode(
            f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            return self._error(404, 20404, "The requested resource was not found")
        if headers.get("Authorization") != expected_auth:
            return self._error(401, 20003, "Authenticate")
        if not headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return self._error(400, 20001, "Content-Type must be form-encoded")
        if self.fail_next:
            status = self.fail_next.pop(0)
            if status == 429:
                return self._error(429, 20429, "Too Many Requests")
            return self._error(status, 20500, "Internal Server Error")
        if not form.get("To"):
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return self._error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
        if not form.get("Body"):
            return self._error(400, 21602, "Message body is required.")
        if form["To"] in TWILIO_ERRORS:
            return self._error(400, *TWILIO_ERRORS[form["To"]])
        sid = "SM" + uuid.uuid4().hex
        now = format_datetime(dt.datetime.now(dt.UTC), usegmt=True)
        resource = {
            "account_sid": self.account_sid, "api_version": "2010-04-01", "body": form["Body"],
            "date_created": now, "date_sent": None, "date_updated": now,
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": form.get("From"), "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0", "num_segments": "1", "price": None, "price_unit": "USD",
            "sid": sid, "status": "queued", "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"},
            "to": form["To"], "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        return 201, {"Content-Type": "application/json"}, json.dumps(resource).encode()

    def _error(self, status, code, message):
        body = {"code": code, "message": message, "status": status,
                "more_info": f"https://www.twilio.com/docs/errors/{code}"}
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


# --- Web Push -------------------------------------------------------------------------------

class FakePushService(_HttpFake):
    """A push service (RFC 8030) that holds the browser side too: `subscribe()` makes a
    subscription like PushManager.subscribe would, so the fake can decrypt what arrives.
    Endpoints made with `answer=410` or `answer=429` refuse every push with that status."""

    def __init__(self):
        super().__init__()
        self.subscribers = {}  # path -> (private key, auth secret, answer)
        self.received = []  # decrypted payloads, as dicts

    def subscribe(self, answer: int = 201) -> dict:
        private_key = ec.generate_private_key(ec.SECP256R1())
        public = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        auth = os.urandom(16)
        path = f"/push/{uuid.uuid4().hex}"
        self.subscribers[path] = (private_key, auth, answer)
        return {"endpoint": self.url + path, "p256dh": _b64url(public), "auth": _b64url(auth)}

    def handle_post(self, path, headers, body):
        self.requests.append({"path": path, "body": body,
                              "headers": {k.lower(): v for k, v in headers.items()}})
        if path not in self.subscribers:
            return 404, {}, b""
        private_key, auth, answer = self.subscribers[path]
        problem = self._check(headers, body)
        if problem:
            return 400, {"Content-Type": "text/plain"}, problem.encode()
        if answer != 201:
            return answer, {}, b""
        plaintext = http_ece.decrypt(body, private_key=private_key, auth_secret=auth,
                                     version="aes128gcm")
        self.received.append(json.loads(plaintext))
        return 201, {"Location": f"{self.url}/message/{uuid.uuid4().hex}"}, b""

    def _check(self, headers, body) -> str:
        if not headers.get("TTL", "").isdigit():
            return "TTL header missing"
        if headers.get("Content-Encoding") != "aes128gcm":
            return "Content-Encoding must be aes128gcm"
        if not body:
            return "empty body"
        auth = headers.get("Authorization", "")
        scheme, _, params = auth.partition(" ")
        parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        if scheme.lower() != "vapid" or not {"t", "k"} <= parts.keys():
            return "Authorization must be vapid t=..., k=..."
        if not Vapid02.verify(f"vapid t={parts['t']},k={parts['k']}"):
            return "VAPID signature does not verify"
        claims = json.loads(_unb64url(parts["t"].split(".")[1]))
        if claims.get("aud") != self.url:
            return f"aud {claims.get('aud')!r} is not this push service"
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return "sub must be mailto: or https:"
        if not time.time() < claims.get("exp", 0) <= time.time() + 24 * 3600:
            return "exp must be within 24 hours"
        return ""


# --- SMTP -----------------------------------------------------------------------------------

def _address(argument: str) -> str:
    """"FROM:<a@b> SIZE=123" -> "a@b" (ESMTP parameters follow the path)."""
    return argument.partition("<")[2].partition(">")[0]


class FakeSmtp:
    """Just enough SMTP (RFC 5321) for Django's SMTP backend. `replies` maps a command
    ("RCPT", "DATA", "MAIL") to the reply line it gets instead of success, e.g.
    {"RCPT": "550 5.1.1 No such user"} or {"RCPT": "451 4.3.0 Try again later"}."""

    def __init__(self):
        fake = self
        self.messages = []  # {"from", "to", "data"}
        self.replies: dict[str, str] = {}

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.reply("220 fake-smtp.localhost ESMTP ready")
                envelope = {"from": None, "to": []}
                while line := self.rfile.readline():
                    verb = line.decode().strip().split(" ", 1)[0].split(":", 1)[0].upper()
                    argument = line.decode().strip()[len(verb):].strip()
                    if verb == "EHLO":
                        self.reply("250-fake-smtp.localhost\r\n250-8BITMIME\r\n250 SIZE 1000000")
                    elif verb == "HELO":
                        self.reply("250 fake-smtp.localhost")
                    elif verb == "MAIL":
                        envelope = {"from": _address(argument), "to": []}
                        self.reply(fake.replies.get("MAIL", "250 2.1.0 OK"))
                    elif verb == "RCPT":
                        reply = fake.replies.get("RCPT", "250 2.1.5 OK")
                        if reply.startswith("2"):
                            envelope["to"].append(_address(argument))
                        self.reply(reply)
                    elif verb == "DATA":
                        self.data(envelope)
                    elif verb in ("RSET", "NOOP"):
                        self.reply("250 2.0.0 OK")
                    elif verb == "QUIT":
                        self.reply("221 2.0.0 Bye")
                        return
                    else:
                        self.reply("502 5.5.2 Command not recognised")

            def data(self, envelope):
                if not envelope["to"]:
                    self.reply("503 5.5.1 No valid recipients")
                    return
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while (line := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(line[1:] if line.startswith(b"..") else line)  # dot-unstuffing
                reply = fake.replies.get("DATA", "250 2.0.0 OK queued")
                if reply.startswith("2"):
                    fake.messages.append({**envelope, "data": b"".join(lines)})
                self.reply(reply)

            def reply(self, text):
                self.wfile.write(text.encode() + b"\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
