"""The peers notifications go to, for tests: a real SMTP server (aiosmtpd) and a minimal
HTTP/1.1 webhook receiver, both on loopback, plus Standard Webhooks signature checking
written from the spec rather than from the sender's code.

Both record exactly what arrived (the email as the bytes the server received, the
request as its method, path, headers and body) and can refuse on purpose, to make the
sender retry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import hashlib
import hmac
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, LoginPassword, Session


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- a real SMTP server ------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: tuple[str, str] | None
    # The message exactly as the server received it (after DATA).
    raw: bytes = b""


@dataclass
class Inbox:
    messages: list[Received] = field(default_factory=list)
    # Mailboxes refused for good (550).
    refuse: set[str] = field(default_factory=set)
    # Asked of every message the server read in full: True answers "451 try again later"
    # (a temporary refusal: the sender should retry) and does not keep the message.
    defer: Callable[[EmailMessage], bool] | None = None
    deferred: list[EmailMessage] = field(default_factory=list)
    # Throttling, as real providers do: at most `rate_limit` messages accepted in any one
    # second; a message beyond that is answered in turn "451 4.7.1" (try again later) or
    # "421 4.7.0" (and the server hangs up), and not kept. None: no limit.
    rate_limit: float | None = None
    # How many messages were throttled, by the code they were answered with.
    throttled: dict[int, int] = field(default_factory=dict)
    _accepted_at: deque[float] = field(default_factory=deque)

    def _throttle(self) -> str | None:
        """The answer to a message over the rate limit, or None when it may be accepted."""
        if self.rate_limit is None:
            return None
        now = time.monotonic()
        while self._accepted_at and now - self._accepted_at[0] >= 1.0:
            self._accepted_at.popleft()
        if len(self._accepted_at) < self.rate_limit:
            self._accepted_at.append(now)
            return None
        code = 451 if sum(self.throttled.values()) % 2 == 0 else 421
        self.throttled[code] = self.throttled.get(code, 0) + 1
        return "451 4.7.1 rate limited, try again later" if code == 451 else "421 4.7.0 too many messages, closing"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if self.defer is not None and self.defer(message):
            self.deferred.append(message)
            return "451 4.3.0 try again later"
        if (throttled := self._throttle()) is not None:
            return throttled
        login = session.auth_data
        self.messages.append(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
                tls=session.ssl is not None,
                login=(login.login.decode(), login.password.decode()) if isinstance(login, LoginPassword) else None,
                raw=content,
            )
        )
        return "250 OK"


class SmtpServer:
    """aiosmtpd on 127.0.0.1:`port` (0: any free port, known once started)."""

    def __init__(self, port: int = 0, **options: Any):
        self.port, self.inbox, self._options = port, Inbox(), options
        self._server: asyncio.Server | None = None
        self._ssl: ssl.SSLContext | None = options.pop("implicit_tls", None)

    async def start(self) -> SmtpServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self.inbox, hostname="localhost", loop=loop, **self._options),
            "127.0.0.1",
            self.port,
            ssl=self._ssl,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


# -- a real HTTP receiver ----------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # The status the receiver answered with (0 until it has answered).
    status: int = 0


class WebhookReceiver:
    """A minimal HTTP/1.1 server: records each request, answers with the next queued status
    (or what `respond` says for the request, when set; 200 otherwise)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.statuses: list[int] = []
        self.respond: Callable[[Request], int | None] | None = None
        # Read the request in full, record it, and never answer: every request (True) or
        # those the predicate picks (a sender killed while it waits for the answer).
        self.hang: bool | Callable[[Request], bool] = False
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return self.url_for("/hooks/mentoring?token=abc")

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def accepted(self) -> list[Request]:
        """The requests answered with a 2xx: the webhooks the receiver took."""
        return [request for request in self.requests if 200 <= request.status < 300]

    async def start(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, path, _ = (await reader.readline()).decode().split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        request = Request(method, path, headers, body)
        self.requests.append(request)
        if self.hang is True or (callable(self.hang) and self.hang(request)):
            await self._released.wait()
        chosen = self.respond(request) if self.respond is not None else None
        status = chosen if chosen is not None else self.statuses.pop(0) if self.statuses else 200
        request.status = status
        # The sender may be gone by now (it hung up, or was killed): nobody to answer then.
        with contextlib.suppress(ConnectionError):
            writer.write(f"HTTP/1.1 {status} Status\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
            await writer.drain()
            writer.close()
            await writer.wait_closed()


def verify_signature(secret: str, request: Request) -> None:
    """Standard Webhooks verification, written from the spec rather than from the sender's code."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    versions = [s.split(",", 1) for s in request.headers["webhook-signature"].split(" ")]
    assert any(v == "v1" and hmac.compare_digest(sig, expected) for v, sig in versions), "bad signature"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60


async def eventually(probe: Callable[[], Any], what: str, *, timeout: float = 30.0) -> Any:
    """Poll `probe` until it returns something truthy, and return that; fail after `timeout`
    seconds naming `what`. Notifications are delivered in the background, after the update
    that caused them has returned, so tests wait for them to arrive (boundedly)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := probe()):
        if loop.time() > deadline:
            raise AssertionError(f"nothing arrived within {timeout:g} s: {what}")
        await asyncio.sleep(0.02)
    return found
