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

Delivery guarantees. Every delivery is claimed in the delivery log before it is sent and
marked right after (`activities/notifications_delivery_log.py`), so an activity retry never
sends again what was recorded as delivered.

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

Daytime. A message that is not urgent (`events.daytime.NOT_URGENT`: reminders, agenda,
review and feedback requests, nudges) waits while its recipient's local time is outside their
relationship's delivery window (`activities/notifications_daytime.py`), never past the moment
it is about (a meeting's start). Everything else in the batch goes at once; then the
activity fails with `NotificationsHeld`, which Temporal retries when the first window opens.

Failures. A channel that is down (refused connection, timeout, SMTP 4xx, HTTP 408, 425,
429 or 5xx, a bad SMTP login) fails only its own deliveries: everything else in the batch
is still delivered, then the activity raises a retryable `ApplicationError`, and
Temporal's backoff retries the batch; what went out is not sent again. When the mail server
throttles (421/450/451/452), the retry comes at that backoff spread at random, so that a
burst throttled together does not come back together (`_throttle_delay`). Deliveries to the
same destination keep their order: after a failure the rest for that destination wait
for the retry. A destination that refuses a message for good (SMTP 5xx for the
recipient or the message, HTTP 4xx, an unusable address) is recorded as `rejected`,
logged, and not retried: retrying forever would only hold up the relationship's closure.
Error messages name channels and participant ids, never addresses (webhook URLs often
carry secrets).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import ssl
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol

import aiosmtplib
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.notifications_channels import (
    Delivery,
    DeliveryChannel,
    DeliveryRejected,
    LogDeliveryChannel,
    NotificationChannel,
)
from activities.notifications_daytime import Clock, DeliveryWindows, LinkLifetimes, activity_clock
from activities.notifications_delivery_log import DeliveryKey, DeliveryLog
from activities.notifications_email import EmailChannel, SmtpConfig
from activities.notifications_webhook import WebhookChannel, WebhookUnavailable
from activities.templates import RenderedMessage, render
from events.daytime import NOT_URGENT, deadline_of, deliver_at
from events.notifications import Notification
from events.people import ChannelKind, Participant
from mentorflow.action_links import LinkMaker, link_scope, links_for, mute_link_for
from mentorflow.metrics import count_notifications

if TYPE_CHECKING:
    from mentorflow.config import Settings

log = logging.getLogger("mentorflow.notifications")

# The longest one message may take to go out, whatever the channel's own timeouts: below
# the workflow's start-to-close timeouts for send_notifications (30 s as a local activity),
# so a slow server fails one delivery rather than the attempt, and well inside a claim's
# lease (activities/notifications_delivery_log.py), so a live lease means a live attempt.
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


# -- the activity ------------------------------------------------------------------------

Outcome = Literal["sent", "settled", "rejected", "failed", "busy", "waiting", "held"]

# The shortest wait for a window to open: a retry due in less goes on the backoff's own clock.
MIN_HOLD = timedelta(seconds=1)


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
    # Held for the recipient's daytime: when their delivery window opens.
    held_until: datetime | None = None
    # It failed because the mail server throttles (SMTP 421/450/451/452): see _throttle_delay.
    throttled: bool = False
    # How long the email's links work: its relationship's `link_lifetime_days`.
    link_lifetime: timedelta | None = None

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
        windows: DeliveryWindows | None = None,
        clock: Clock | None = None,
        links: LinkMaker | None = None,
        lifetimes: LinkLifetimes | None = None,
    ):
        """`windows`: each relationship's delivery window (daytime delivery); None delivers
        everything at once. `clock`: when an attempt runs (tests set the test server's).
        `lifetimes`: how long each relationship's links work; None: the link maker's own."""
        self._deliveries = deliveries
        # Signed action links in emails (docs/people.md); None: emails carry no links.
        self._links = links
        self._lifetimes = lifetimes
        self._windows = windows
        self._clock = clock or activity_clock
        self._contacts = contacts
        self._channels: dict[str, DeliveryChannel] = {channel.kind: channel for channel in channels}
        self._log_channel: DeliveryChannel = self._channels.get("log") or LogDeliveryChannel()
        self._taps = list(taps)

    @activity.defn(name="send_notifications")
    async def send_notifications(self, notifications: list[Notification]) -> int:
        """Deliver what can be delivered; raise a retryable error if anything is left to send.

        Returns how many messages this attempt sent. A message that waits for its recipient's
        daytime is not sent: the error then asks Temporal to try again when the first such
        window opens (see `_held`).
        """
        people = await self._people(notifications)
        jobs = self._plan(notifications, people)
        now = await self._clock()
        await self._hold_for_daytime(jobs, now)
        await self._link_lifetimes(jobs)
        token = str(uuid.uuid4())
        groups: dict[tuple[str, str], list[_Job]] = {}
        for job in jobs:
            if job.outcome != "held":
                groups.setdefault((job.channel, job.destination), []).append(job)
        await asyncio.gather(*(self._run_in_order(group, token, people) for group in groups.values()))
        count_notifications((job.channel, job.notification.template, job.outcome) for job in jobs)

        left = [job for job in jobs if job.outcome in ("failed", "busy", "waiting")]
        held = [job for job in jobs if job.outcome == "held"]
        sent = sum(1 for job in jobs if job.outcome == "sent")
        if left:
            problems = "; ".join(f"{job.describe()}: {job.problem or job.outcome}" for job in left[:10])
            waiting = f"; {len(held)} more wait for their recipients' daytime" if held else ""
            raise ApplicationError(
                f"{len(left)} of {len(jobs)} deliveries are still to be sent and will be retried "
                f"({sent} sent in this attempt{waiting}): {problems}",
                type="NotificationsPending",
                next_retry_delay=_throttle_delay(left),
            )
        if held:
            raise _held(held, len(jobs), sent, now)
        return sent

    async def _hold_for_daytime(self, jobs: Sequence[_Job], now: datetime) -> None:
        """Mark `held` each delivery of a non-urgent message whose recipient's local time is
        outside their relationship's delivery window (events/daytime.py). Taps see every
        notification at once: they are not a person."""
        waiting = [job for job in jobs if job.recipient is not None and job.notification.template in NOT_URGENT]
        if self._windows is None or not waiting:
            return
        windows = await self._windows.windows(sorted({job.notification.relationship_id for job in waiting}))
        for job in waiting:
            assert job.recipient is not None
            notification = job.notification
            at = deliver_at(
                now,
                job.recipient.timezone,
                windows.get(notification.relationship_id),
                template=notification.template,
                deliver_by=deadline_of(notification.data),
            )
            if at > now:
                job.outcome, job.held_until = "held", at
                job.problem = f"waits for the recipient's daytime, until {at.isoformat()}"

    async def _link_lifetimes(self, jobs: Sequence[_Job]) -> None:
        """Each email's links live as long as its relationship's settings say (`link_lifetime_days`)."""
        emails = [job for job in jobs if job.meant_for == "email" and job.outcome != "held"]
        if self._links is None or self._lifetimes is None or not emails:
            return
        found = await self._lifetimes.link_lifetimes(sorted({job.notification.relationship_id for job in emails}))
        for job in emails:
            job.link_lifetime = found.get(job.notification.relationship_id)

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
                            message=self._with_links(job, render(job.notification, job.recipient, people)),
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
            job.outcome, job.problem, job.throttled = "failed", _short(error), _throttled(error)
            log.warning("delivery %s failed and will be retried: %s", job.describe(), _short(error))
            await self._deliveries.failed(key, token, _short(error), permanent=False)
            return
        job.outcome = "sent"
        await self._deliveries.delivered(key)

    def _with_links(self, job: _Job, message: RenderedMessage) -> RenderedMessage:
        """An email with its signed action links (mentorflow/action_links.py `links_for`) and the
        link to stop that kind of message (`mute_link_for`), for `link_scope`'s programme and
        relationship, living as long as the relationship's settings say."""
        notification = job.notification
        mute = mute_link_for(notification.template)
        specs = (*links_for(notification.template, notification.data), *([mute] if mute else []))
        if self._links is None or job.meant_for != "email" or not specs or not activity.in_activity():
            return message
        scope = link_scope(notification.relationship_id, activity.info().workflow_id or "")
        if scope is None:
            return message
        now = datetime.now(UTC)
        for paragraph in self._links.paragraphs(notification.recipient_id, *scope, specs, now=now,
                                                lifetime=job.link_lifetime):  # fmt: skip
            message = message.with_note(paragraph)
        return message


def _held(held: Sequence[_Job], total: int, sent: int, now: datetime) -> ApplicationError:
    """The error that brings the held deliveries back when the first window opens.

    A regular activity is retried after `next_retry_delay`, whatever the retry policy's
    backoff and maximum interval (tests/notifications/test_daytime_delivery.py); the delivery log keeps
    what this attempt sent from going out again. A local activity (the workflow's quick
    first try) does not wait: its failure hands the notifications straight to the retrying
    regular activity (workflows/outbox.py `Deliveries`)."""
    opens = min(job.held_until or now for job in held)
    first = ", ".join(f"{job.describe()} until {job.held_until.isoformat() if job.held_until else '?'}" for job in held[:5])
    message = (
        f"{len(held)} of {total} deliveries wait for their recipients' daytime ({sent} sent in this attempt); "
        f"the first window opens at {opens.isoformat()}: {first}"
    )
    if activity.in_activity() and activity.info().is_local:
        return ApplicationError(message, type="NotificationsHeld", non_retryable=True)
    return ApplicationError(message, type="NotificationsHeld", next_retry_delay=max(opens - now, MIN_HOLD))


# SMTP answers that say "too much at once, try later" (RFC 5321 4.2.5, 4.5.3.1.10): providers
# throttle with them.
THROTTLED_CODES = frozenset({421, 450, 451, 452})


def _throttled(error: BaseException) -> bool:
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return any(refused.code in THROTTLED_CODES for refused in error.recipients)
    return isinstance(error, aiosmtplib.SMTPResponseException) and error.code in THROTTLED_CODES


def _throttle_delay(left: Sequence[_Job]) -> timedelta | None:
    """When the mail server throttled: the retry policy's backoff for this attempt, spread at
    random over half to one and a half times it. Without the spread, every delivery throttled
    in the same second comes back in the same second (Temporal adds no jitter), the server
    takes its rate's worth and throttles the rest again, and a burst (a whole programme's
    Monday reminders) drains in ever longer waves with the server idle in between
    (bench/storm.py, bench/README.md). The backoff is the one this activity runs under
    (`activity.info().retry_policy`: workflows/calls.py NOTIFY_RETRY). None otherwise: the
    retry policy's own backoff, as when the server did not send the policy. A local first
    try does not wait (it hands over to the retrying activity)."""
    info = activity.info() if any(job.throttled for job in left) and activity.in_activity() else None
    if info is None or info.is_local or (policy := info.retry_policy) is None:
        return None
    first = policy.initial_interval.total_seconds()  # Temporal's default maximum: 100 times it
    longest = policy.maximum_interval.total_seconds() if policy.maximum_interval else 100 * first
    base = min(first * policy.backoff_coefficient ** (max(1, info.attempt) - 1), longest)
    return timedelta(seconds=base * random.uniform(0.5, 1.5))


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
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
        # A temporary refusal at RCPT (450, 452: throttling, a full mailbox): its code, not the address.
        return f"{type(error).__name__} {error.recipients[0].code}"
    if code is not None:
        return f"{type(error).__name__} {code}"
    return type(error).__name__
