"""The `email` channel: SMTP (aiosmtplib), plain text, with an iCalendar invite when the
notification describes a meeting."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Literal

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

    One connection per message: notifications are few, and it keeps a broken connection
    from affecting the next message.
    """

    kind: ChannelKind = "email"

    def __init__(self, config: SmtpConfig):
        # The TLS context once, not per message: left to aiosmtplib, every connection built
        # its own and read the system's trust store again, which cost 8 times the rest of
        # sending an email (bench/README.md, `bench.mail`). The same trust and checks.
        if config.tls_context is None and config.security != "none":
            config = replace(config, tls_context=ssl.create_default_context(ssl.Purpose.SERVER_AUTH))
        self._config = config
        name, address = parseaddr(config.sender)
        if "@" not in address:
            raise ValueError("the SMTP sender needs an email address")
        self._sender_name, self._sender_address = name, address

    def message(self, delivery: Delivery) -> EmailMessage:
        """The email for `delivery`, exactly as it is sent."""
        rendered, recipient = delivery.message, delivery.recipient
        email = EmailMessage()
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

    async def deliver(self, delivery: Delivery) -> None:
        config = self._config
        try:
            await aiosmtplib.send(
                self.message(delivery),
                sender=self._sender_address,
                recipients=[delivery.address],
                hostname=config.host,
                port=config.port,
                username=config.username,
                password=config.password,
                use_tls=config.security == "tls",
                start_tls=config.security == "starttls",
                tls_context=config.tls_context,
                timeout=config.timeout,
            )
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
