"""Notifications that really go out: email over SMTP, signed webhooks, and the development log.

`NotificationActivities.send_notifications` takes the notifications an event caused. For
each one it looks the recipient up in the contact book (the directory), skips templates
the recipient muted, renders the message in their words and time zone
(`activities/templates.py`) and hands it to each of the recipient's channels: `email`
(SMTP, with an `.ics` invite when the notification describes a meeting), `webhook`
(Standard Webhooks: HMAC-SHA256 signed, `webhook-id` stable across retries) and `log`.
A recipient the directory does not know is logged and skipped, as is one who has left.
A channel kind this worker has no configuration for (no SMTP host, no webhook secret)
is written to the log instead, so development needs no mail server.

Delivery guarantees. Every delivery is recorded in the delivery log
(`notification_deliveries`, migrations/0003_deliveries.sql) under
(notification id, channel, destination), where the destination is a digest of the
address (so a participant with two webhooks gets both, and an address changed between
two attempts gets what the old one did not). A delivery is claimed before it is sent
and marked delivered right after, so an activity retry never sends again what was
recorded as delivered. A claim is a lease: a retry that finds a live claim of an
attempt that may still be running leaves it alone and asks Temporal to retry later.

**The one window that cannot be closed (SMTP, and webhooks alike):** if the worker
crashes, or loses the database, after the SMTP server accepted a message (or the webhook
receiver answered 2xx) but before the delivery was marked, the retry finds a claim
whose lease has run out, cannot know whether the message went out, and sends it again:
that message arrives twice. SMTP has no idempotency key to prevent it. It is at most
once more per crash, and it is recognisable: the resent email has the same
`Message-ID` (mail clients that deduplicate by it show it once), the resent webhook the
same `webhook-id` (which the Standard Webhooks spec asks receivers to deduplicate on).
The same holds when the connection breaks while waiting for the server's answer to a
message it received in full. The warning "was interrupted while sending" in the log
marks every such resend.

Failures. A channel that is down (refused connection, timeout, SMTP 4xx, HTTP 408, 425,
429 or 5xx, a bad SMTP login) fails only its own deliveries: everything else in the batch
is still delivered, then the activity raises a retryable `ApplicationError`, and
Temporal's backoff retries the batch; what went out is not sent again. Deliveries to the
same destination keep their order: after a failure the rest for that destination wait
for the retry. A destination that refuses a message for good (SMTP 5xx for the
recipient or the message, HTTP 4xx, an unusable address) is recorded as `rejected`,
logged, and not retried: retrying forever would only hold up the relationship's closure.
Error messages name channels and participant ids, never addresses (webhook URLs often
carry secrets).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import ssl
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import TYPE_CHECKING, Literal, Protocol

import aiosmtplib
import asyncpg
import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.templates import RenderedMessage, calendar_invite, invite_method, meeting_summary, render
from events.notifications import Notification
from events.people import ChannelKind, Participant
from mentorflow.metrics import count_notifications

if TYPE_CHECKING:
    from mentorflow.config import Settings

log = logging.getLogger("mentorflow.notifications")

SmtpSecurity = Literal["starttls", "tls", "none"]

# The longest one message may take to go out, whatever the channel's own timeouts: below
# the workflow's start-to-close timeouts for send_notifications (30 s as a local activity),
# so a slow server fails one delivery rather than the attempt, and well inside a claim's
# lease (PostgresDeliveryLog), so a live lease means a live attempt.
SEND_TIMEOUT = timedelta(seconds=25)


# -- who the recipients are --------------------------------------------------------------


class ContactBook(Protocol):
    """Where the activity finds participants; `activities.directory.Directory` is one."""

    async def contacts(self, ids: Sequence[str]) -> dict[str, Participant]:
        """The participants among `ids` that are known, by id; unknown ids are simply absent."""
        ...


class ParticipantLookup(Protocol):
    async def get_participants(self, participant_ids: Sequence[str]) -> list[Participant]: ...


class DirectoryContacts:
    """The contact book of anything that looks participants up by id (the directory)."""

    def __init__(self, directory: ParticipantLookup):
        self._directory = directory

    async def contacts(self, ids: Sequence[str]) -> dict[str, Participant]:
        return {p.participant_id: p for p in await self._directory.get_participants(ids)}


class StaticContacts:
    """A fixed set of participants (tests, and workers without a directory)."""

    def __init__(self, participants: Iterable[Participant] = ()):
        self._participants = {p.participant_id: p for p in participants}

    async def contacts(self, ids: Sequence[str]) -> dict[str, Participant]:
        return {i: self._participants[i] for i in ids if i in self._participants}


# -- channels ----------------------------------------------------------------------------


class DeliveryRejected(Exception):
    """The destination refused this message for good; sending it again cannot help."""


@dataclass(frozen=True)
class Delivery:
    """One message for one recipient on one channel, ready to go."""

    notification: Notification
    recipient: Participant
    # The email address or the webhook URL; empty for the log.
    address: str
    message: RenderedMessage
    # Stable across retries: the webhook-id, and the local part of the email's Message-ID.
    delivery_id: str
    # When this delivery was first attempted (from the delivery log): stable across retries.
    first_attempt_at: datetime
    # Other participants the notification names, for the texts.
    people: Mapping[str, Participant] = field(default_factory=dict)
    # The recipient's channel this message is for: the log delivers it in place of a channel
    # this worker has not configured ("email", "webhook"), and says so.
    meant_for: str = "log"


class DeliveryChannel(Protocol):
    """Delivers rendered messages to the participants' addresses of one kind.

    `deliver` returns once the destination has accepted the message, raises
    `DeliveryRejected` when it never will, and anything else when it may later.
    """

    kind: ChannelKind

    async def deliver(self, delivery: Delivery) -> None: ...


class NotificationChannel(Protocol):
    """Sees every notification as it is, whoever it is for: the development log, test recorders."""

    name: str

    async def send(self, notification: Notification) -> None: ...


# Template parameters that hold confidential text (security issue #12): the two parties see
# them in their messages, logs never do. events/notifications.py fills them from the state.
CONFIDENTIAL_PARAMETERS = frozenset({"explanation", "goal_title"})
REDACTED = "[confidential]"


def redacted(notification: Notification) -> Notification:
    """The notification with its confidential parameters replaced by REDACTED, for logs."""
    hidden = {key: REDACTED for key, value in notification.data.items() if key in CONFIDENTIAL_PARAMETERS and value}
    return notification.model_copy(update={"data": {**notification.data, **hidden}}) if hidden else notification


class LogChannel:
    """Writes each notification as one structured line (ids and parameters, confidential ones redacted)."""

    name = "log"

    async def send(self, notification: Notification) -> None:
        log.info("notification %s", json.dumps(redacted(notification).model_dump(mode="json"), sort_keys=True))


class LogDeliveryChannel:
    """The `log` channel: writes the rendered message to the log, for development. In place
    of a channel the worker has not configured it names that channel, so a message to someone
    with both email and a webhook reads as two deliveries, not as one sent twice."""

    kind: ChannelKind = "log"

    async def deliver(self, delivery: Delivery) -> None:
        notification = delivery.notification
        via = "log" if delivery.meant_for == "log" else f"{delivery.meant_for} (not configured: logged)"
        # Rendered again without the confidential parameters: a log is not the recipient.
        hidden = redacted(notification)
        message = delivery.message if hidden is notification else render(hidden, delivery.recipient, delivery.people)
        log.info(
            "message %s to %s via %s (%s): %s\n%s",
            notification.notification_id,
            notification.recipient_id,
            via,
            notification.template,
            message.subject,
            message.body,
        )


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
        # The same Message-ID on every attempt lets clients recognise a resend (see the module doc).
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


class WebhookChannel:
    """Webhooks signed per the Standard Webhooks spec (https://www.standardwebhooks.com/).

    POSTs a JSON body with `webhook-id` (the same on every retry), `webhook-timestamp`
    (Unix seconds of this attempt) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of
    "{id}.{timestamp}.{body}">` under each signing secret (several while rotating).
    """

    kind: ChannelKind = "webhook"

    def __init__(self, secrets: Sequence[str], *, timeout: float = 10.0):
        if not secrets:
            raise ValueError("a webhook channel needs at least one signing secret")
        self._keys = [webhook_key(secret) for secret in secrets]
        self._timeout = timeout

    def body(self, delivery: Delivery) -> bytes:
        notification, rendered = delivery.notification, delivery.message
        payload = {
            "type": f"mentoring.{notification.template}",
            "timestamp": delivery.first_attempt_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": {
                "notification_id": notification.notification_id,
                "relationship_id": notification.relationship_id,
                "recipient_id": notification.recipient_id,
                "template": notification.template,
                "parameters": notification.data,
                "subject": rendered.subject,
                "text": rendered.body,
            },
        }
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

    def headers(self, delivery_id: str, body: bytes, timestamp: int) -> dict[str, str]:
        signed = f"{delivery_id}.{timestamp}.".encode() + body
        signatures = " ".join(
            "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in self._keys
        )
        return {
            "content-type": "application/json",
            "user-agent": "mentorflow-webhooks",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures,
        }

    async def deliver(self, delivery: Delivery) -> None:
        if not delivery.address.startswith(("https://", "http://")):
            raise DeliveryRejected("the webhook address is not an http(s) URL")
        body = self.body(delivery)
        headers = self.headers(delivery.delivery_id, body, int(time.time()))
        try:
            async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
                response = await client.post(delivery.address, content=body, headers=headers)
        except httpx.InvalidURL:
            raise DeliveryRejected("the webhook address is not a valid URL") from None
        except httpx.UnsupportedProtocol:
            raise DeliveryRejected("the webhook address is not an http(s) URL") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in (408, 425, 429) or status >= 500:
            raise WebhookUnavailable(status)
        raise DeliveryRejected(f"HTTP {status}")


class WebhookUnavailable(Exception):
    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` signing secret."""
    encoded = secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if len(key) < 16:
        raise ValueError("a webhook secret needs at least 16 bytes (24 to 64 recommended)")
    return key


def channels_from_settings(settings: Settings) -> list[DeliveryChannel]:
    """The channels this worker's configuration enables; the log channel always."""
    channels: list[DeliveryChannel] = [LogDeliveryChannel()]
    if settings.smtp_host and settings.smtp_from:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        tls_context = ssl.create_default_context(cafile=settings.smtp_ca_file) if settings.smtp_ca_file else None
        smtp = SmtpConfig(
            host=settings.smtp_host,
            sender=settings.smtp_from,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=password,
            timeout=settings.smtp_timeout,
            tls_context=tls_context,
        )
        channels.append(EmailChannel(smtp))
    else:
        log.info("email is not configured (MENTORFLOW_SMTP_HOST): email notifications go to the log")
    if settings.webhook_secret is not None:
        secrets = settings.webhook_secret.get_secret_value().split()
        channels.append(WebhookChannel(secrets, timeout=settings.webhook_timeout))
    else:
        log.info("webhooks are not configured (MENTORFLOW_WEBHOOK_SECRET): webhook notifications go to the log")
    return channels


# -- the delivery log --------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryKey:
    notification_id: str
    channel: str
    destination: str  # a digest of the address, so the log holds no addresses


@dataclass(frozen=True)
class Claim:
    # claimed: ours to send. delivered/rejected: settled earlier. busy: another attempt
    # holds a live claim.
    state: Literal["claimed", "delivered", "rejected", "busy"]
    first_attempt_at: datetime | None = None
    attempts: int = 0
    # An earlier attempt claimed it and never reported back: it may have gone out.
    interrupted: bool = False


class DeliveryLog(Protocol):
    async def claim(self, key: DeliveryKey, notification: Notification, token: str) -> Claim: ...

    async def delivered(self, key: DeliveryKey) -> None: ...

    async def failed(self, key: DeliveryKey, token: str, error: str, *, permanent: bool) -> None: ...


class PostgresDeliveryLog:
    """The delivery log in `notification_deliveries`; see migrations/0003_deliveries.sql."""

    def __init__(self, pool: asyncpg.Pool, *, lease: timedelta = timedelta(minutes=2)):
        # Longer than one send can take (SEND_TIMEOUT), so a live claim means a live attempt.
        self._pool = pool
        self._lease = lease

    async def claim(self, key: DeliveryKey, notification: Notification, token: str) -> Claim:
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                """SELECT status, claimed_until > clock_timestamp() AS leased, first_attempt_at, attempts
                     FROM notification_deliveries
                    WHERE notification_id = $1 AND channel = $2 AND destination = $3
                      FOR UPDATE""",
                key.notification_id,
                key.channel,
                key.destination,
            )
            if row is None:
                first = await connection.fetchval(
                    """INSERT INTO notification_deliveries
                           (notification_id, channel, destination, relationship_id, recipient_id, template,
                            status, claim_token, claimed_until)
                       VALUES ($1, $2, $3, $4, $5, $6, 'sending', $7, clock_timestamp() + $8::interval)
                       ON CONFLICT DO NOTHING
                       RETURNING first_attempt_at""",
                    key.notification_id,
                    key.channel,
                    key.destination,
                    notification.relationship_id,
                    notification.recipient_id,
                    notification.template,
                    uuid.UUID(token),
                    self._lease,
                )
                # Nothing inserted: another attempt claimed it between our read and our insert.
                return Claim("claimed", first, 1) if first is not None else Claim("busy")
            if row["status"] in ("delivered", "rejected"):
                return Claim(row["status"], row["first_attempt_at"], row["attempts"])
            if row["status"] == "sending" and row["leased"]:
                return Claim("busy", row["first_attempt_at"], row["attempts"])
            await connection.execute(
                """UPDATE notification_deliveries
                      SET status = 'sending', claim_token = $4, claimed_until = clock_timestamp() + $5::interval,
                          attempts = attempts + 1, last_attempt_at = clock_timestamp()
                    WHERE notification_id = $1 AND channel = $2 AND destination = $3""",
                key.notification_id,
                key.channel,
                key.destination,
                uuid.UUID(token),
                self._lease,
            )
            return Claim("claimed", row["first_attempt_at"], row["attempts"] + 1, row["status"] == "sending")

    async def delivered(self, key: DeliveryKey) -> None:
        # Whoever holds the claim now: the message went out, that is what counts.
        await self._pool.execute(
            """UPDATE notification_deliveries
                  SET status = 'delivered', delivered_at = clock_timestamp(), claim_token = NULL,
                      claimed_until = NULL, last_error = NULL
                WHERE notification_id = $1 AND channel = $2 AND destination = $3""",
            key.notification_id,
            key.channel,
            key.destination,
        )

    async def failed(self, key: DeliveryKey, token: str, error: str, *, permanent: bool) -> None:
        await self._pool.execute(
            """UPDATE notification_deliveries
                  SET status = $5, claim_token = NULL, claimed_until = NULL, last_error = $6
                WHERE notification_id = $1 AND channel = $2 AND destination = $3 AND claim_token = $4
                  AND status = 'sending'""",
            key.notification_id,
            key.channel,
            key.destination,
            uuid.UUID(token),
            "rejected" if permanent else "failed",
            error[:500],
        )


# -- the activity ------------------------------------------------------------------------

Outcome = Literal["sent", "settled", "rejected", "failed", "busy", "waiting"]


@dataclass
class _Job:
    notification: Notification
    channel: str  # the name recorded in the delivery log
    tap: NotificationChannel | None = None
    sender: DeliveryChannel | None = None
    recipient: Participant | None = None
    address: str = ""
    destination: str = ""
    meant_for: str = "log"  # the recipient's channel kind (the log may stand in for it)
    outcome: Outcome = "waiting"
    problem: str = ""

    def key(self) -> DeliveryKey:
        return DeliveryKey(self.notification.notification_id, self.channel, self.destination)

    def describe(self) -> str:
        return f"{self.channel} to {self.notification.recipient_id} ({self.notification.template})"


class NotificationActivities:
    """Sends notifications through the recipients' channels, once each (see the module doc)."""

    def __init__(
        self,
        *,
        deliveries: DeliveryLog,
        contacts: ContactBook | None,
        channels: Sequence[DeliveryChannel] = (LogDeliveryChannel(),),
        taps: Sequence[NotificationChannel] = (),
    ):
        self._deliveries = deliveries
        self._contacts = contacts
        self._channels: dict[str, DeliveryChannel] = {channel.kind: channel for channel in channels}
        self._log_channel: DeliveryChannel = self._channels.get("log") or LogDeliveryChannel()
        self._taps = list(taps)

    @activity.defn(name="send_notifications")
    async def send_notifications(self, notifications: list[Notification]) -> int:
        """Deliver what can be delivered; raise a retryable error if anything is left to send.

        Returns how many messages this attempt sent.
        """
        people = await self._people(notifications)
        jobs = self._plan(notifications, people)
        token = str(uuid.uuid4())
        groups: dict[tuple[str, str], list[_Job]] = {}
        for job in jobs:
            groups.setdefault((job.channel, job.destination), []).append(job)
        await asyncio.gather(*(self._run_in_order(group, token, people) for group in groups.values()))
        count_notifications((job.channel, job.notification.template, job.outcome) for job in jobs)

        left = [job for job in jobs if job.outcome in ("failed", "busy", "waiting")]
        sent = sum(1 for job in jobs if job.outcome == "sent")
        if left:
            problems = "; ".join(f"{job.describe()}: {job.problem or job.outcome}" for job in left[:10])
            raise ApplicationError(
                f"{len(left)} of {len(jobs)} deliveries are still to be sent and will be retried "
                f"({sent} sent in this attempt): {problems}",
                type="NotificationsPending",
            )
        return sent

    async def _people(self, notifications: Sequence[Notification]) -> dict[str, Participant]:
        if self._contacts is None or not notifications:
            return {}
        # Recipients, and everyone the texts name (mentor_id → the mentor's name).
        ids = {n.recipient_id for n in notifications}
        ids.update(value for n in notifications for key, value in n.data.items() if key.endswith("_id"))
        return await self._contacts.contacts(sorted(ids))

    def _plan(self, notifications: Sequence[Notification], people: Mapping[str, Participant]) -> list[_Job]:
        jobs: list[_Job] = []
        for notification in notifications:
            jobs.extend(_Job(notification, tap.name, tap=tap) for tap in self._taps)
            if self._contacts is None:
                continue
            recipient = people.get(notification.recipient_id)
            if recipient is None:
                log.info(
                    "notification %s: recipient %s is not in the directory; skipped",
                    notification.notification_id,
                    notification.recipient_id,
                )
                continue
            if recipient.status == "left":
                log.info(
                    "notification %s: %s has left; skipped", notification.notification_id, recipient.participant_id
                )
                continue
            if notification.template in recipient.muted_templates:
                log.info(
                    "notification %s: %s muted %s; skipped",
                    notification.notification_id,
                    recipient.participant_id,
                    notification.template,
                )
                continue
            seen: set[tuple[str, str]] = set()
            for address in recipient.channels:
                job = self._job(notification, recipient, address.kind, address.address)
                if job is not None and (job.channel, job.destination) not in seen:
                    seen.add((job.channel, job.destination))
                    jobs.append(job)
        return jobs

    def _job(
        self, notification: Notification, recipient: Participant, kind: ChannelKind, address: str | None
    ) -> _Job | None:
        if kind == "email":
            address = address or recipient.email
        elif kind == "webhook" and not address:
            log.warning("participant %s has a webhook channel without a URL; skipped", recipient.participant_id)
            return None
        address = address or ""
        channel = self._channels.get(kind)
        if channel is None:
            # Not configured on this worker: show it in the log rather than lose it silently.
            channel, recorded_as = self._log_channel, "log"
            destination = _digest(f"{kind}:{address}")
        else:
            recorded_as, destination = kind, _digest(address) if address else ""
        return _Job(
            notification, recorded_as, sender=channel, recipient=recipient, address=address, destination=destination,
            meant_for=kind,
        )

    async def _run_in_order(self, group: list[_Job], token: str, people: Mapping[str, Participant]) -> None:
        # One destination's messages go in order; after a failure the rest wait for the retry.
        for index, job in enumerate(group):
            try:
                await self._run(job, token, people)
            except Exception as error:  # the delivery log itself failed
                job.outcome, job.problem = "failed", type(error).__name__
                log.warning("delivery %s could not be recorded: %s", job.describe(), type(error).__name__)
            if job.outcome in ("failed", "busy"):
                for later in group[index + 1 :]:
                    later.problem = "waits for an earlier message to the same destination"
                return

    async def _run(self, job: _Job, token: str, people: Mapping[str, Participant]) -> None:
        key = job.key()
        claim = await self._deliveries.claim(key, job.notification, token)
        if claim.state in ("delivered", "rejected"):
            job.outcome = "settled"
            return
        if claim.state == "busy":
            job.outcome, job.problem = "busy", "another attempt is sending it"
            return
        if claim.interrupted:
            log.warning(
                "delivery %s was interrupted while sending (attempt %d); sending again, it may arrive twice",
                job.describe(),
                claim.attempts - 1,
            )
        try:
            if job.tap is not None:
                await job.tap.send(job.notification)
            else:
                assert job.sender is not None and job.recipient is not None
                async with asyncio.timeout(SEND_TIMEOUT.total_seconds()):
                    await job.sender.deliver(
                        Delivery(
                            notification=job.notification,
                            recipient=job.recipient,
                            address=job.address,
                            message=render(job.notification, job.recipient, people),
                            delivery_id=_delivery_id(key),
                            first_attempt_at=claim.first_attempt_at or datetime.now(UTC),
                            people=people,
                            meant_for=job.meant_for,
                        )
                    )
        except DeliveryRejected as error:
            job.outcome, job.problem = "rejected", str(error)
            log.warning("delivery %s was refused for good and will not be retried: %s", job.describe(), error)
            await self._deliveries.failed(key, token, str(error), permanent=True)
            return
        except Exception as error:
            job.outcome, job.problem = "failed", _short(error)
            log.warning("delivery %s failed and will be retried: %s", job.describe(), _short(error))
            await self._deliveries.failed(key, token, _short(error), permanent=False)
            return
        job.outcome = "sent"
        await self._deliveries.delivered(key)


def _digest(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()[:32]


def _delivery_id(key: DeliveryKey) -> str:
    seed = f"{key.notification_id}\x00{key.channel}\x00{key.destination}"
    return "msg_" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def _short(error: BaseException) -> str:
    """An error for logs and Temporal: its type and, for SMTP and HTTP, the status code only."""
    code = getattr(error, "code", None) if isinstance(error, aiosmtplib.SMTPResponseException) else None
    if isinstance(error, WebhookUnavailable):
        return f"HTTP {error.status}"
    if code is not None:
        return f"{type(error).__name__} {code}"
    return type(error).__name__
