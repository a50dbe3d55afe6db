"""The `email` channel: SMTP (aiosmtplib), plain text, with an iCalendar invite when the
notification describes a meeting.

What a sent email costs the worker (issue #16, bench/mail.py): the channel keeps a few SMTP
connections open between messages (`SmtpConnections`), reads the system's trust store once
rather than for every connection, and parses each repeated header once (`_RepeatedHeaders`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, parseaddr
from typing import Any, Literal

import aiosmtplib

from activities.notifications_channels import Delivery, DeliveryRejected
from activities.templates import calendar_invite, invite_method, meeting_summary
from events.people import ChannelKind

SmtpSecurity = Literal["starttls", "tls", "none"]


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    sender: str  # the From header, e.g. "Mentoring programme <mentoring@example.org>"
    port: int = 587
    security: SmtpSecurity = "starttls"
    username: str | None = None
    password: str | None = None
    timeout: float = 20.0
    # Trust for the server's certificate; None means the system's default trust store.
    tls_context: ssl.SSLContext | None = None


class EmailChannel:
    """Email over SMTP (aiosmtplib): plain text, plus an .ics invite when there is a meeting.

    Messages go over connections kept open between them (`SmtpConnections`); a connection on
    which anything went wrong is closed, so a broken one never affects the next message.
    """

    kind: ChannelKind = "email"

    def __init__(self, config: SmtpConfig):
        self._config = config
        name, address = parseaddr(config.sender)
        if "@" not in address:
            raise ValueError("the SMTP sender needs an email address")
        self._sender_name, self._sender_address = name, address
        self._connections = SmtpConnections(config)

    def message(self, delivery: Delivery) -> EmailMessage:
        """The email for `delivery`, exactly as it is sent."""
        rendered, recipient = delivery.message, delivery.recipient
        email = EmailMessage(policy=POLICY)
        email["From"] = self._config.sender
        email["To"] = Address(display_name=recipient.display_name, addr_spec=delivery.address)
        email["Subject"] = rendered.subject
        email["Date"] = format_datetime(datetime.now(UTC))
        # The same Message-ID on every attempt lets clients recognise a resend (activities/notifications.py).
        email["Message-ID"] = f"<{delivery.delivery_id}@{self._sender_address.rpartition('@')[2]}>"
        email["Auto-Submitted"] = "auto-generated"
        email["X-Mentorflow-Notification"] = delivery.notification.notification_id
        email["X-Mentorflow-Template"] = delivery.notification.template
        if rendered.meeting is not None:
            cancelled = rendered.meeting.cancelled
            note = "The calendar update is attached." if cancelled else "The calendar invite is attached."
            email.set_content(rendered.with_note(note).body)
        else:
            email.set_content(rendered.body)
        if rendered.meeting is not None:
            invite = calendar_invite(
                rendered.meeting,
                recipient=recipient,
                organizer_email=self._sender_address,
                summary=meeting_summary(delivery.notification, recipient, delivery.people),
                description=rendered.subject,
            )
            email.add_attachment(
                invite,
                maintype="text",
                subtype="calendar",
                filename="invite.ics",
                params={"method": invite_method(rendered.meeting)},
            )
        return email

    async def close(self) -> None:
        """Close the connections kept open (the next message opens another)."""
        await self._connections.close()

    async def deliver(self, delivery: Delivery) -> None:
        try:
            await self._connections.send(self.message(delivery), self._sender_address, delivery.address)
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refused.code for refused in error.recipients]
            if codes and all(code >= 500 for code in codes):
                raise DeliveryRejected(f"SMTP {codes[0]}: recipient refused") from None
            raise
        except aiosmtplib.SMTPDataError as error:
            # The server read the message and refused it (size, content): final if 5xx.
            if error.code >= 500:
                raise DeliveryRejected(f"SMTP {error.code}: message refused") from None
            raise


# -- headers parsed once -----------------------------------------------------------------

# Headers whose value is new in every email: remembering them would only push out the others.
_UNIQUE_HEADERS = frozenset({"to", "message-id", "x-mentorflow-notification"})


class _RepeatedHeaders(HeaderRegistry):
    """The email package's header factory, remembering what it made.

    The stock one builds a new class for every header it parses (`HeaderRegistry.__getitem__`),
    and most of an email's headers repeat from one email to the next: From, the template's
    Subject and X-Mentorflow-Template, the MIME headers, and Date within a second. A header is
    an immutable string with its parse tree, so one parse serves every email that has it."""

    def __init__(self, remember: int = 512) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}
        self._headers: dict[tuple[str, str], BaseHeader] = {}
        self._remember = remember

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._classes.get(key)
        if made is None:
            made = self._classes[key] = super().__getitem__(name)
        return made

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if type(value) is not str or name.lower() in _UNIQUE_HEADERS:
            return self[name](name, value)
        header = self._headers.get((name, value))
        if header is None:
            if len(self._headers) >= self._remember:
                self._headers.clear()
            header = self._headers[(name, value)] = self[name](name, value)
        return header


# The email package's default policy (what `EmailMessage()` uses), with the factory above.
POLICY = default_policy.clone(header_factory=_RepeatedHeaders())


# -- connections kept open ---------------------------------------------------------------

# How long an open connection waits for the next message before it is closed: far below the
# five minutes servers wait (RFC 5321 4.5.3.2.7) and the idle timeouts of load balancers, so a
# connection kept open is one the server still holds.
IDLE_SECONDS = 10.0
# Messages on one connection before it is closed and another opened: providers cap them (often
# at 100 a connection) and answer the next with a temporary error.
MESSAGES_PER_CONNECTION = 50
# Connections kept open between messages; more than that (a burst) are closed when done.
KEEP_OPEN = 16


@dataclass
class _Open:
    client: aiosmtplib.SMTP
    sent: int = 0
    idle_since: float = 0.0


class SmtpConnections:
    """SMTP connections to one server, kept open between messages.

    Opening one costs the worker more than a message (TCP, EHLO, STARTTLS, the login, QUIT:
    bench/mail.py), and a burst (a cohort's proposals, Monday's reminders) sends many. A message
    takes an open connection if one is idle, else opens one: never fewer connections at once
    than messages being sent, so none waits for another. A connection on which anything failed
    is closed as `aiosmtplib.send` closes it, so a broken one never carries the next message;
    one that the server closed while idle is seen as closed and not used. The trust store (no
    `tls_context`: the system's) and the local host name for EHLO are read once, not for every
    connection as aiosmtplib does."""

    def __init__(self, config: SmtpConfig):
        self._config = config
        self._tls_context = config.tls_context
        if self._tls_context is None and config.security != "none":
            # What aiosmtplib builds for each connection when given none (`_build_tls_context`).
            self._tls_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._local_hostname: str | None = None
        self._idle: list[_Open] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def send(self, message: EmailMessage, sender: str, recipient: str) -> None:
        connection = await self._take()
        try:
            await connection.client.send_message(message, sender=sender, recipients=[recipient])
        except BaseException as error:
            # As `aiosmtplib.send` leaves it: QUIT unless the connection broke, then closed.
            await connection.client.__aexit__(type(error), error, error.__traceback__)
            raise
        connection.sent += 1
        self._give_back(connection)

    async def close(self) -> None:
        """Close the idle connections (QUIT); the next message opens a new one."""
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(connection) for connection in idle))
        await asyncio.gather(*self._closing)

    async def _take(self) -> _Open:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Connections belong to the event loop that opened them (tests run several).
            for connection in self._idle:
                with contextlib.suppress(RuntimeError):
                    connection.client.close()
            self._idle, self._loop, self._sweep = [], loop, None
        while self._idle:
            connection = self._idle.pop()  # the one used last
            if connection.client.is_connected and loop.time() - connection.idle_since < IDLE_SECONDS:
                return connection
            self._quit_later(connection)
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        config = self._config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            tls_context=self._tls_context,
            timeout=config.timeout,
            local_hostname=self._local_hostname,
        )
        await client.connect()
        return _Open(client)

    def _give_back(self, connection: _Open) -> None:
        if connection.sent >= MESSAGES_PER_CONNECTION or len(self._idle) >= KEEP_OPEN:
            self._quit_later(connection)
            return
        assert self._loop is not None
        connection.idle_since = self._loop.time()
        self._idle.append(connection)
        if self._sweep is None:
            self._sweep = self._loop.call_later(IDLE_SECONDS, self._close_idle)

    def _close_idle(self) -> None:
        """Close the connections idle for IDLE_SECONDS; look again while some are open."""
        assert self._loop is not None
        self._sweep = None
        now = self._loop.time()
        for connection in [c for c in self._idle if now - c.idle_since >= IDLE_SECONDS]:
            self._idle.remove(connection)
            self._quit_later(connection)
        if self._idle:
            oldest = min(connection.idle_since for connection in self._idle)
            self._sweep = self._loop.call_later(oldest + IDLE_SECONDS - now, self._close_idle)

    def _quit_later(self, connection: _Open) -> None:
        task = asyncio.ensure_future(self._quit(connection))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _quit(connection: _Open) -> None:
        client = connection.client
        try:
            if client.is_connected:
                await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            pass  # it is closed either way
        finally:
            client.close()
