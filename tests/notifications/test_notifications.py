"""Notifications against real servers: an SMTP server (aiosmtpd) and an HTTP receiver on
loopback, a real PostgreSQL for the delivery log. The tests read the bytes that arrive."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import icalendar
import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.notifications import DirectoryContacts, NotificationActivities, StaticContacts, channels_from_settings
from activities.notifications_channels import CONFIDENTIAL_PARAMETERS, REDACTED, LogChannel, LogDeliveryChannel
from activities.notifications_delivery_log import Claim, DeliveryKey, PostgresDeliveryLog
from activities.notifications_email import EmailChannel, SmtpConfig
from activities.notifications_webhook import WebhookChannel
from activities.template_texts import TEMPLATES
from activities.templates import render
from events.commands import CloseRelationship
from events.model import ClosureBegun
from events.notifications import Notification
from events.people import ChannelAddress, Participant
from mentorflow.config import ConfigurationError, Settings
from tests.support import relationship_phases as phases
from tests.support.peers import Request, SmtpServer, WebhookReceiver, free_port, verify_signature

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
SENDER = "Mentoring programme <mentoring@example.org>"

ADA = Participant(
    participant_id="emp-1042",
    display_name="Ada Lovelace",
    email="ada@example.org",
    timezone="Europe/Berlin",
)
GRACE = Participant(
    participant_id="emp-311",
    display_name="Grace Hopper",
    email="grace@example.org",
    timezone="America/New_York",
)


def hooked(participant: Participant, url: str, *, email_too: bool = False) -> Participant:
    channels: tuple[ChannelAddress, ...] = (ChannelAddress(kind="webhook", address=url),)
    if email_too:
        channels = (ChannelAddress(kind="email"), *channels)
    return participant.model_copy(update={"channels": channels})


def reminder(
    recipient: Participant, *, event: str | None = None, template: str = "meeting_reminder", **data: str
) -> Notification:
    event_id = event or str(uuid.uuid4())
    return Notification(
        notification_id=f"{event_id}:{recipient.participant_id}",
        relationship_id="rel-42",
        recipient_id=recipient.participant_id,
        template=template,
        data={
            "meeting_number": "4",
            "due_at": "2027-03-03T09:00:00+00:00",
            "mentee_id": ADA.participant_id,
            "mentor_id": GRACE.participant_id,
            "meeting_start": "2027-03-02T10:00:00Z",
            "meeting_end": "2027-03-02T11:00:00Z",
            "meeting_uid": "meeting-4-rel-42@mentorflow",
            "meeting_sequence": "1",
        }
        | data,
    )


def closed(recipient: Participant) -> Notification:
    return Notification(
        notification_id=f"{uuid.uuid4()}:{recipient.participant_id}",
        relationship_id="rel-42",
        recipient_id=recipient.participant_id,
        template="relationship_closed",
        data={"reason": "term_completed"},
    )


# -- a real SMTP server ------------------------------------------------------------------


def email_channel(port: int, **options: Any) -> EmailChannel:
    config: dict[str, Any] = {"host": "127.0.0.1", "port": port, "sender": SENDER, "security": "none", "timeout": 5}
    return EmailChannel(SmtpConfig(**(config | options)))


# -- a real HTTP receiver ----------------------------------------------------------------


# -- running the activity ----------------------------------------------------------------


def activities(
    pool: asyncpg.Pool, people: Sequence[Participant], channels: Sequence[Any], **options: Any
) -> NotificationActivities:
    return NotificationActivities(
        deliveries=options.pop("deliveries", None) or PostgresDeliveryLog(pool),
        contacts=StaticContacts(people),
        channels=channels,
        **options,
    )


async def send(acts: NotificationActivities, notifications: list[Notification]) -> int:
    sent: int = await ActivityEnvironment().run(acts.send_notifications, notifications)
    return sent


async def send_expecting_retry(acts: NotificationActivities, notifications: list[Notification]) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await send(acts, notifications)
    assert not caught.value.non_retryable
    assert caught.value.type == "NotificationsPending"
    return caught.value


async def delivery_rows(pool: asyncpg.Pool) -> list[tuple[str, str, str, int]]:
    rows = await pool.fetch(
        "SELECT recipient_id, channel, status, attempts FROM notification_deliveries ORDER BY recipient_id, channel"
    )
    return [(r["recipient_id"], r["channel"], r["status"], r["attempts"]) for r in rows]


# -- email -------------------------------------------------------------------------------


async def test_an_email_arrives_with_headers_text_in_the_recipients_zone_and_an_invite(
    pool: asyncpg.Pool, smtp_server: SmtpServer
) -> None:
    acts = activities(pool, [ADA, GRACE], [email_channel(smtp_server.port)])
    notification = reminder(ADA)

    assert await send(acts, [notification]) == 1

    [received] = smtp_server.inbox.messages
    assert received.mail_from == "mentoring@example.org" and received.rcpt_tos == ["ada@example.org"]
    message = received.message
    assert message["From"] == SENDER
    assert message["To"] == "Ada Lovelace <ada@example.org>"
    assert message["Subject"] == "Reminder: mentoring meeting 4"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Mentorflow-Notification"] == notification.notification_id
    assert str(message["Message-ID"]).endswith("@example.org>")
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    body = text.get_content().replace("\r\n", "\n")
    assert body.startswith("Hello Ada Lovelace,\n")
    # 09:00 UTC on 3 March is 10:00 in Berlin; the meeting 10–11 UTC is 11–12 there.
    assert "It is due by Wednesday 3 March 2027, 10:00 CET." in body
    assert "When: Tuesday 2 March 2027, 11:00–12:00 CET" in body
    assert body.endswith("The calendar invite is attached.\n\nYour mentoring programme\n(relationship rel-42)\n")

    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_param("method") == "REQUEST"
    assert attachment.get_filename() == "invite.ics"
    calendar = icalendar.Calendar.from_ical(attachment.get_content())
    assert str(calendar["METHOD"]) == "REQUEST"
    [event] = calendar.walk("VEVENT")
    assert event.decoded("DTSTART") == datetime(2027, 3, 2, 10, tzinfo=UTC)
    assert event.decoded("DTEND") == datetime(2027, 3, 2, 11, tzinfo=UTC)
    assert str(event["UID"]) == "meeting-4-rel-42@mentorflow"
    assert event["SEQUENCE"] == 1 and str(event["STATUS"]) == "CONFIRMED"
    assert str(event["SUMMARY"]) == "Mentoring meeting with Grace Hopper"
    assert str(event["ATTENDEE"]) == "mailto:ada@example.org"
    assert str(event["ORGANIZER"]) == "mailto:mentoring@example.org"

    assert await delivery_rows(pool) == [("emp-1042", "email", "delivered", 1)]


async def test_a_cancelled_meeting_sends_a_cancel_and_a_past_one_no_entry(
    pool: asyncpg.Pool, smtp_server: SmtpServer
) -> None:
    acts = activities(pool, [ADA, GRACE], [email_channel(smtp_server.port)])
    cancelled = reminder(ADA, template="meeting_cancelled", cancelled_by="mentor", meeting_sequence="2")
    past = reminder(
        ADA,
        template="meeting_missed_check",
        meeting_start="2020-01-07T10:00:00Z",
        meeting_end="2020-01-07T11:00:00Z",
    )
    await send(acts, [cancelled, past])

    first, second = (m.message for m in smtp_server.inbox.messages)
    assert first["Subject"] == "Mentoring meeting 4 cancelled"
    [attachment] = list(first.iter_attachments())
    assert attachment.get_param("method") == "CANCEL"
    calendar = icalendar.Calendar.from_ical(attachment.get_content())
    [event] = calendar.walk("VEVENT")
    assert str(calendar["METHOD"]) == "CANCEL" and str(event["STATUS"]) == "CANCELLED"
    assert str(event["UID"]) == "meeting-4-rel-42@mentorflow" and event["SEQUENCE"] == 2
    text = first.get_body(preferencelist=("plain",))
    assert text is not None and "cancelled by the mentor" in text.get_content()

    assert second["Subject"] == "Did mentoring meeting 4 take place?"
    assert list(second.iter_attachments()) == []
    assert "When: Tuesday 7 January 2020, 11:00–12:00 CET" in second.get_content()


async def test_a_notification_without_a_meeting_has_no_attachment(pool: asyncpg.Pool, smtp_server: SmtpServer) -> None:
    acts = activities(pool, [GRACE], [email_channel(smtp_server.port)])
    await send(acts, [closed(GRACE)])
    [received] = smtp_server.inbox.messages
    assert received.message["Subject"] == "Mentoring relationship closed"
    assert list(received.message.iter_attachments()) == []
    assert "closed (term completed)" in received.message.get_content()


async def test_a_second_call_after_success_sends_nothing(pool: asyncpg.Pool, smtp_server: SmtpServer) -> None:
    acts = activities(pool, [ADA, GRACE], [email_channel(smtp_server.port)])
    batch = [reminder(ADA, event="e-1"), reminder(GRACE, event="e-1")]

    assert await send(acts, batch) == 2
    assert await send(acts, batch) == 0
    # A fresh activity object (another worker) consults the same log.
    assert await send(activities(pool, [ADA, GRACE], [email_channel(smtp_server.port)]), batch) == 0

    assert sorted(m.rcpt_tos[0] for m in smtp_server.inbox.messages) == ["ada@example.org", "grace@example.org"]


async def test_starttls_and_login_are_used_as_configured(pool: asyncpg.Pool) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    logins: list[tuple[str, str]] = []

    def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=data.password == b"s3cret", handled=False, auth_data=data)

    server = await SmtpServer(
        free_port(),
        tls_context=server_context,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    ).start()
    try:
        config = {"security": "starttls", "username": "mentorflow", "tls_context": client_context}
        acts = activities(pool, [ADA], [email_channel(server.port, **config, password="s3cret")])
        await send(acts, [closed(ADA)])
        [received] = server.inbox.messages
        assert received.tls and received.login == ("mentorflow", "s3cret")
        assert logins == [("mentorflow", "s3cret")]

        # A wrong password is a configuration problem: retried (until fixed), never dropped.
        wrong = activities(pool, [ADA], [email_channel(server.port, **config, password="wrong")])
        error = await send_expecting_retry(wrong, [closed(ADA)])
        assert "SMTPAuthenticationError 535" in str(error)
        assert "wrong" not in str(error) and "ada@" not in str(error)
    finally:
        await server.stop()


async def test_implicit_tls_is_used_when_configured(pool: asyncpg.Pool) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    server = await SmtpServer(free_port(), implicit_tls=server_context).start()
    try:
        acts = activities(pool, [ADA], [email_channel(server.port, security="tls", tls_context=client_context)])
        await send(acts, [closed(ADA)])
        assert len(server.inbox.messages) == 1
        # Without trusting the server's certificate, nothing is sent.
        untrusting = activities(pool, [GRACE], [email_channel(server.port, security="tls")])
        await send_expecting_retry(untrusting, [closed(GRACE)])
        assert len(server.inbox.messages) == 1
    finally:
        await server.stop()


def tls_contexts_built(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every `ssl.create_default_context` call from now on (aiosmtplib and httpx build their
    default contexts with it)."""
    built: list[object] = []
    original = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    return built


async def test_the_system_trust_is_read_once_per_channel_not_per_email(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """STARTTLS with the default trust (no MENTORFLOW_SMTP_CA_FILE): the channel builds its
    TLS context when it is made, and every message reuses it, still checking the server's
    certificate (here trusted through SSL_CERT_FILE, as a system trust store would be)."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    server = await SmtpServer(free_port(), tls_context=server_context, require_starttls=True).start()
    try:
        channel = email_channel(server.port, security="starttls")
        built = tls_contexts_built(monkeypatch)
        acts = activities(pool, [ADA, GRACE], [channel])
        assert await send(acts, [closed(ADA), closed(GRACE), reminder(ADA)]) == 3
        assert [m.tls for m in server.inbox.messages] == [True, True, True]
        assert built == [], f"a TLS context built per message: {len(built)}"

        monkeypatch.delenv("SSL_CERT_FILE")  # a channel made without that trust refuses the server
        untrusting = email_channel(server.port, security="starttls")
        await send_expecting_retry(activities(pool, [GRACE], [untrusting]), [closed(GRACE)])
        assert len(server.inbox.messages) == 3
    finally:
        await server.stop()


async def test_a_refused_mailbox_is_recorded_and_not_retried(pool: asyncpg.Pool, smtp_server: SmtpServer) -> None:
    smtp_server.inbox.refuse.add("grace@example.org")
    acts = activities(pool, [ADA, GRACE], [email_channel(smtp_server.port)])
    batch = [closed(ADA), closed(GRACE)]

    assert await send(acts, batch) == 1
    assert await send(acts, batch) == 0
    assert [m.rcpt_tos for m in smtp_server.inbox.messages] == [["ada@example.org"]]
    assert await delivery_rows(pool) == [("emp-1042", "email", "delivered", 1), ("emp-311", "email", "rejected", 1)]


# -- webhooks ----------------------------------------------------------------------------


async def test_a_webhook_is_signed_per_standard_webhooks(pool: asyncpg.Pool, receiver: WebhookReceiver) -> None:
    ada = hooked(ADA, receiver.url)
    acts = activities(pool, [ada, GRACE], [WebhookChannel([SECRET])])
    notification = reminder(ada)

    assert await send(acts, [notification]) == 1

    [request] = receiver.requests
    assert request.method == "POST" and request.path == "/hooks/mentoring?token=abc"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"].startswith("msg_")
    verify_signature(SECRET, request)
    payload = json.loads(request.body)
    assert payload["type"] == "mentoring.meeting_reminder"
    assert datetime.fromisoformat(payload["timestamp"]).tzinfo is not None
    data = payload["data"]
    assert data["notification_id"] == notification.notification_id
    assert data["recipient_id"] == "emp-1042" and data["relationship_id"] == "rel-42"
    assert data["parameters"] == notification.data
    assert data["subject"] == "Reminder: mentoring meeting 4"
    assert "11:00–12:00 CET" in data["text"]

    # The signature is over these exact bytes: any change breaks it.
    with pytest.raises(AssertionError, match="bad signature"):
        verify_signature(SECRET, Request(request.method, request.path, request.headers, request.body + b" "))


async def test_webhooks_build_their_tls_context_once_per_channel(
    pool: asyncpg.Pool, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = WebhookChannel([SECRET])
    built = tls_contexts_built(monkeypatch)
    people = [hooked(ADA, receiver.url), hooked(GRACE, receiver.url)]
    assert await send(activities(pool, people, [channel]), [reminder(people[0]), closed(people[0]), closed(people[1])]) == 3
    assert len(receiver.requests) == 3
    assert built == [], f"a TLS context built per delivery: {len(built)}"


async def test_every_rotating_secret_signs(pool: asyncpg.Pool, receiver: WebhookReceiver) -> None:
    new_secret = "whsec_" + base64.b64encode(b"N" * 32).decode()
    acts = activities(pool, [hooked(ADA, receiver.url)], [WebhookChannel([SECRET, new_secret])])
    await send(acts, [closed(ADA)])
    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    verify_signature(SECRET, request)
    verify_signature(new_secret, request)


async def test_a_webhook_retry_keeps_its_id_and_body(pool: asyncpg.Pool, receiver: WebhookReceiver) -> None:
    acts = activities(pool, [hooked(ADA, receiver.url)], [WebhookChannel([SECRET])])
    batch = [reminder(ADA)]
    receiver.statuses = [503]

    error = await send_expecting_retry(acts, batch)
    assert "webhook to emp-1042 (meeting_reminder): HTTP 503" in str(error)
    assert "127.0.0.1" not in str(error) and "token" not in str(error)
    assert await send(acts, batch) == 1
    assert await send(acts, batch) == 0

    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    verify_signature(SECRET, first)
    verify_signature(SECRET, second)
    assert await delivery_rows(pool) == [("emp-1042", "webhook", "delivered", 2)]


async def test_a_gone_webhook_is_not_retried(pool: asyncpg.Pool, receiver: WebhookReceiver) -> None:
    acts = activities(pool, [hooked(ADA, receiver.url)], [WebhookChannel([SECRET])])
    batch = [closed(ADA)]
    receiver.statuses = [410]
    assert await send(acts, batch) == 0
    assert await send(acts, batch) == 0
    assert len(receiver.requests) == 1
    assert await delivery_rows(pool) == [("emp-1042", "webhook", "rejected", 1)]


# -- a channel that is down --------------------------------------------------------------


async def test_a_receiver_that_never_answers_times_out_and_is_retried(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    acts = activities(pool, [hooked(ADA, receiver.url)], [WebhookChannel([SECRET], timeout=0.3)])
    receiver.hang = True
    error = await send_expecting_retry(acts, [closed(ADA)])
    assert "ReadTimeout" in str(error)
    assert await delivery_rows(pool) == [("emp-1042", "webhook", "failed", 1)]


async def test_a_down_channel_delays_only_its_own_deliveries(pool: asyncpg.Pool, receiver: WebhookReceiver) -> None:
    port = free_port()  # nothing listens here yet
    ada = ADA  # email only
    grace = hooked(GRACE, receiver.url)
    acts = activities(pool, [ada, grace], [email_channel(port), WebhookChannel([SECRET])])
    batch = [reminder(ada, event="e-7"), reminder(grace, event="e-7"), closed(ada)]

    error = await send_expecting_retry(acts, batch)
    assert "email to emp-1042" in str(error)
    assert len(receiver.requests) == 1  # Grace got hers meanwhile

    server = await SmtpServer(port).start()
    try:
        assert await send(acts, batch) == 2
        assert await send(acts, batch) == 0
        subjects = [m.message["Subject"] for m in server.inbox.messages]
        # In the order they were given, each once.
        assert subjects == ["Reminder: mentoring meeting 4", "Mentoring relationship closed"]
        assert len(receiver.requests) == 1
    finally:
        await server.stop()
    statuses = {(r[0], r[2], r[3]) for r in await delivery_rows(pool)}
    assert statuses == {("emp-1042", "delivered", 2), ("emp-1042", "delivered", 1), ("emp-311", "delivered", 1)}


# -- the crash window --------------------------------------------------------------------


class LosesTheFirstReceipt(PostgresDeliveryLog):
    """A worker that dies right after the server accepted a message, before it is recorded."""

    def __init__(self, pool: asyncpg.Pool, **options: Any):
        super().__init__(pool, **options)
        self.lost = 0

    async def delivered(self, key: DeliveryKey) -> None:
        if not self.lost:
            self.lost += 1
            raise ConnectionResetError("the worker died")
        await super().delivered(key)


async def test_a_crash_after_the_server_accepted_resends_once_after_the_lease(
    pool: asyncpg.Pool, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    channel = email_channel(smtp_server.port)
    batch = [closed(ADA)]
    crashing = LosesTheFirstReceipt(pool)
    await send_expecting_retry(activities(pool, [ADA], [channel], deliveries=crashing), batch)
    assert len(smtp_server.inbox.messages) == 1

    # While the claim's lease runs, a retry cannot tell a crash from a slow attempt: it waits.
    error = await send_expecting_retry(activities(pool, [ADA], [channel]), batch)
    assert "another attempt is sending it" in str(error)
    assert len(smtp_server.inbox.messages) == 1

    # Once the lease has run out, the retry sends again: the documented duplicate, once.
    await pool.execute("UPDATE notification_deliveries SET claimed_until = now() - interval '1 second'")
    with caplog.at_level(logging.WARNING, logger="mentorflow.notifications"):
        assert await send(activities(pool, [ADA], [channel]), batch) == 1
    assert "was interrupted while sending" in caplog.text
    assert await send(activities(pool, [ADA], [channel]), batch) == 0

    first, second = smtp_server.inbox.messages
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert await delivery_rows(pool) == [("emp-1042", "email", "delivered", 2)]


async def test_claims_are_exclusive(pool: asyncpg.Pool) -> None:
    log = PostgresDeliveryLog(pool)
    notification = closed(ADA)
    key = DeliveryKey(notification.notification_id, "email", "d")
    claims = await asyncio.gather(*(log.claim(key, notification, str(uuid.uuid4())) for _ in range(8)))
    assert sorted(c.state for c in claims) == ["busy"] * 7 + ["claimed"]
    await log.delivered(key)
    assert (await log.claim(key, notification, str(uuid.uuid4()))).state == "delivered"
    assert isinstance(claims[0], Claim)


# -- who gets what -----------------------------------------------------------------------


async def test_muted_unknown_and_departed_recipients_are_skipped(
    pool: asyncpg.Pool, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    muted = ADA.model_copy(update={"muted_templates": ("meeting_reminder",)})
    left = GRACE.model_copy(update={"status": "left", "left_at": datetime(2027, 1, 1, tzinfo=UTC)})
    stranger = ADA.model_copy(update={"participant_id": "emp-9"})
    acts = activities(pool, [muted, left], [email_channel(smtp_server.port)])
    batch = [reminder(muted), closed(muted), reminder(left), closed(stranger)]

    with caplog.at_level(logging.INFO, logger="mentorflow.notifications"):
        assert await send(acts, batch) == 1

    assert [m.message["Subject"] for m in smtp_server.inbox.messages] == ["Mentoring relationship closed"]
    assert "emp-9 is not in the directory; skipped" in caplog.text
    assert "emp-1042 muted meeting_reminder; skipped" in caplog.text
    assert "emp-311 has left; skipped" in caplog.text


async def test_every_channel_of_a_recipient_gets_it(
    pool: asyncpg.Pool, smtp_server: SmtpServer, receiver: WebhookReceiver
) -> None:
    ada = hooked(ADA, receiver.url, email_too=True)
    acts = activities(pool, [ada], [email_channel(smtp_server.port), WebhookChannel([SECRET])])
    assert await send(acts, [closed(ada)]) == 2
    assert len(smtp_server.inbox.messages) == 1 and len(receiver.requests) == 1


async def test_an_unconfigured_channel_writes_to_the_log(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    acts = activities(pool, [hooked(ADA, "https://hooks.example.org/x", email_too=True)], [LogDeliveryChannel()])
    with caplog.at_level(logging.INFO, logger="mentorflow.notifications"):
        assert await send(acts, [closed(ADA)]) == 2
    assert caplog.text.count("Mentoring relationship closed") == 2
    # Each line names the channel it stands in for: two deliveries, not one sent twice.
    assert "to emp-1042 via email (not configured: logged) (relationship_closed)" in caplog.text
    assert "to emp-1042 via webhook (not configured: logged) (relationship_closed)" in caplog.text
    assert "hooks.example.org" not in caplog.text
    assert await delivery_rows(pool) == [("emp-1042", "log", "delivered", 1), ("emp-1042", "log", "delivered", 1)]


async def test_logs_never_show_confidential_parameters(
    pool: asyncpg.Pool, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Goal titles and match explanations are confidential (security issue #12): the two parties
    read them in their messages, the log channels show "[confidential]" in their place."""
    secret = "SECRET-goal-5b1e"

    def about(recipient: Participant, template: str, **data: str) -> Notification:
        return Notification(notification_id=f"{uuid.uuid4()}:{recipient.participant_id}", relationship_id="rel-42",
                            recipient_id=recipient.participant_id, template=template, data=data)  # fmt: skip

    batch = [
        about(ADA, "goal_achieved", goal_id="g1", goal_title=f"{secret} title"),
        about(ADA, "match_proposed", mentor_id=GRACE.participant_id, respond_by="2027-03-09T12:00:00+00:00",
              explanation=f"{secret} explanation"),  # fmt: skip
    ]
    assert {key for n in batch for key, value in n.data.items() if secret in value} == CONFIDENTIAL_PARAMETERS
    with caplog.at_level(logging.INFO, logger="mentorflow.notifications"):
        await LogChannel().send(batch[0])
        logged = activities(pool, [ADA.model_copy(update={"channels": (ChannelAddress(kind="log"),)}), GRACE], [LogDeliveryChannel()])
        assert await send(logged, batch) == 2
        emailed = activities(pool, [ADA], [email_channel(smtp_server.port)])
        assert await send(emailed, batch) == 2
    assert secret not in caplog.text
    assert caplog.text.count(REDACTED) == 4 and "Goal achieved: [confidential]" in caplog.text
    assert "Grace Hopper has been proposed" in caplog.text  # the rest of the message is there
    # The recipient gets them.
    bodies = "".join(str(m) for m in smtp_server.inbox.messages)
    assert f"{secret} title" in bodies and f"{secret} explanation" in bodies


async def test_taps_see_every_notification_once(pool: asyncpg.Pool) -> None:
    seen: list[str] = []

    class Tap:
        name = "tap"

        async def send(self, notification: Notification) -> None:
            seen.append(notification.notification_id)

    acts = activities(pool, [], [], taps=[Tap()])
    batch = [closed(ADA), closed(GRACE)]
    assert await send(acts, batch) == 2
    assert await send(acts, batch) == 0
    assert seen == [n.notification_id for n in batch]


async def test_the_directory_is_a_contact_book(pool: asyncpg.Pool, smtp_server: SmtpServer) -> None:
    from activities.directory import Directory

    directory = Directory(pool)
    await directory.upsert_participant(ADA)
    acts = NotificationActivities(
        deliveries=PostgresDeliveryLog(pool),
        contacts=DirectoryContacts(directory),
        channels=[email_channel(smtp_server.port)],
    )
    assert await send(acts, [closed(ADA), closed(GRACE)]) == 1
    assert [m.rcpt_tos for m in smtp_server.inbox.messages] == [["ada@example.org"]]


# -- texts -------------------------------------------------------------------------------


def test_every_template_renders_with_the_data_the_core_sends() -> None:
    data = {
        "mentee_id": ADA.participant_id,
        "mentor_id": GRACE.participant_id,
        "closed_by_id": GRACE.participant_id,
        "respond_by": "2027-03-09T12:00:00+00:00",
        "explanation": "both work on distributed systems",
        "declined_by": "mentor",
        "agreement_due_at": "2027-03-20T12:00:00+00:00",
        "agreement_version": "2",
        "days_left": "3",
        "term_ends_at": "2027-09-01T00:00:00+00:00",
        "meeting_frequency": "biweekly",
        "meeting_number": "3",
        "meeting_start": "2027-04-01T08:00:00+00:00",
        "meeting_end": "2027-04-01T09:00:00+00:00",
        "meeting_uid": "rel-1-meeting-3@mentorflow",
        "meeting_sequence": "0",
        "cancelled_by": "mentee",
        "because": "the relationship is paused",
        "late": "false",
        "goal_id": "g-1",
        "goal_title": "Run a design review",
        "milestone_id": "m-1",
        "revision_id": "r-1",
        "feedback_round": "2",
        "after_meeting": "6",
        "party": "mentee",
        "concern_id": "c-1",
        "raised_by_party": "mentee",
        "until": "2027-05-01T00:00:00+00:00",
        "quiet_since": "2027-02-01T00:00:00+00:00",
        "health": "at_risk",
        "previous": "healthy",
        "reasons": "no_meeting,missed_meetings",
        "kind": "midpoint",
        "outcome": "continue",
        "months": "2",
        "reason": "closed_by_mentee",
        "meetings_held": "8",
        "meetings_missed": "1",
        "goals_achieved": "2",
        "goals_total": "3",
        "duration_days": "182",
        "feedback_trend": "4,3,5",
    }
    for template in TEMPLATES:
        notification = Notification(
            notification_id=f"e:{ADA.participant_id}",
            relationship_id="rel-1",
            recipient_id=ADA.participant_id,
            template=template,
            data=data,
        )
        message = render(notification, ADA, {GRACE.participant_id: GRACE})
        assert message.from_template, template
        assert "$" not in message.subject + message.body, template

    def rendered(template: str, **only: str) -> str:
        notification = Notification(
            notification_id="e:x", relationship_id="r", recipient_id=ADA.participant_id, template=template, data=only
        )
        message = render(notification, ADA, {GRACE.participant_id: GRACE})
        assert message.from_template
        return message.body

    respond_by = data["respond_by"]
    proposed = rendered("match_proposed", mentor_id="emp-311", respond_by=respond_by, explanation="shared goals")
    assert "Grace Hopper has been proposed" in proposed
    assert "Tuesday 9 March 2027, 13:00 CET" in proposed
    assert "Why this match: shared goals" in proposed
    # Optional paragraphs disappear when their parameter is missing or empty.
    assert "Why this match" not in rendered("match_proposed", mentor_id="emp-311", respond_by=respond_by)
    assert "Why" not in rendered("health_at_risk", reasons="")
    assert "Why: no meeting, missed meetings." in rendered("health_at_risk", reasons=data["reasons"])
    keys = ("reason", "duration_days", "meetings_held", "goals_achieved", "goals_total", "feedback_trend")
    summary = rendered("relationship_summary", **{key: data[key] for key in keys})
    assert "closed (closed by mentee)" in summary and "round by round: 4, 3, 5." in summary
    assert "Meetings missed" not in summary


async def test_an_early_closure_emails_the_coordinator_at_once_without_the_note(
    pool: asyncpg.Pool, smtp_server: SmtpServer
) -> None:
    """The rules, the templates and the email channel together: the decision that closes a
    relationship early makes an email to the coordinator arrive (issue #11)."""
    note = "NOTE-left-for-another-team-5c7d"
    relationship = phases.active()
    relationship.meet()
    events = relationship.do(CloseRelationship, phases.MENTOR, note=f"{note}: I am moving teams")
    [begun] = [event for event in events if isinstance(event, ClosureBegun)]
    assert note in begun.note
    mentee = ADA.model_copy(update={"participant_id": phases.MENTEE})
    mentor = GRACE.model_copy(update={"participant_id": phases.MENTOR})
    coordinator = Participant(
        participant_id=phases.COORDINATOR, display_name="Lena Ortiz", email="lena@example.org", timezone="Europe/Berlin"
    )
    acts = activities(pool, [mentee, mentor, coordinator], [email_channel(smtp_server.port)])

    await send(acts, relationship.notifications_of(events))

    [received] = [m for m in smtp_server.inbox.messages if m.rcpt_tos == ["lena@example.org"]]
    message = received.message
    assert message["Subject"] == "Mentoring relationship closed early"
    assert message["X-Mentorflow-Template"] == "relationship_closed_early"
    assert list(message.iter_attachments()) == []
    body = message.get_content().replace("\r\n", "\n")
    assert body.startswith("Hello Lena Ortiz,\n")
    assert f"The mentoring relationship {phases.STREAM} of Ada Lovelace has been closed early (closed by mentor)." in body
    assert "Mentor: Grace Hopper." in body and "Closed by: Grace Hopper." in body
    # The reflection deadline, in Berlin time.
    due = begun.reflections_due_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert f"closing reflection by {due:%A} {due.day} {due:%B %Y}, {due:%H:%M} {due.tzname()};" in body
    # The parties got their reflection requests; nobody got the note.
    subjects = sorted((m.rcpt_tos[0], m.message["Subject"]) for m in smtp_server.inbox.messages)
    assert ("ada@example.org", "Reflect on your mentoring") in subjects
    assert ("grace@example.org", "Reflect on your mentoring") in subjects
    for received in smtp_server.inbox.messages:
        assert note.encode() not in received.message.as_bytes()


def test_an_unknown_template_gets_the_generic_text() -> None:
    notification = Notification(
        notification_id="e:1",
        relationship_id="rel-1",
        recipient_id=GRACE.participant_id,
        template="goal_revision_requested",
        data={"mentee_id": ADA.participant_id, "target_date": "2027-05-01", "respond_by": "2027-04-01T16:00:00Z"},
    )
    message = render(notification, GRACE, {ADA.participant_id: ADA})
    assert not message.from_template
    assert message.subject == "Mentoring update: Goal revision requested"
    assert "Mentee: Ada Lovelace" in message.body
    assert "Target date: Saturday 1 May 2027" in message.body
    assert "Respond by: Thursday 1 April 2027, 12:00 EDT" in message.body


def test_a_known_template_missing_a_parameter_falls_back_to_the_generic_text() -> None:
    notification = Notification(
        notification_id="e:1", relationship_id="rel-1", recipient_id=ADA.participant_id, template="match_proposed"
    )
    message = render(notification, ADA)
    assert not message.from_template and message.subject == "Mentoring update: Match proposed"


def test_an_unknown_time_zone_renders_in_utc() -> None:
    lost = ADA.model_copy(update={"timezone": "Mars/Olympus_Mons"})
    message = render(reminder(lost), lost)
    assert "10:00–11:00 UTC" in message.body


# -- configuration -----------------------------------------------------------------------


def test_settings_configure_email_and_webhooks() -> None:
    settings = Settings.from_env(
        {
            "MENTORFLOW_SMTP_HOST": "smtp.example.org",
            "MENTORFLOW_SMTP_PORT": "465",
            "MENTORFLOW_SMTP_SECURITY": "tls",
            "MENTORFLOW_SMTP_USERNAME": "mentorflow",
            "MENTORFLOW_SMTP_PASSWORD": "s3cret",
            "MENTORFLOW_SMTP_FROM": SENDER,
            "MENTORFLOW_WEBHOOK_SECRET": SECRET,
        }
    )
    assert "s3cret" not in repr(settings) and SECRET not in repr(settings)
    kinds = [channel.kind for channel in channels_from_settings(settings)]
    assert kinds == ["log", "email", "webhook"]
    assert [c.kind for c in channels_from_settings(Settings.from_env({}))] == ["log"]


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"MENTORFLOW_SMTP_HOST": "smtp.example.org"}, "MENTORFLOW_SMTP_FROM: required when MENTORFLOW_SMTP_HOST"),
        ({"MENTORFLOW_SMTP_SECURITY": "ssl"}, "MENTORFLOW_SMTP_SECURITY"),
        ({"MENTORFLOW_WEBHOOK_SECRET": "whsec_not base64!"}, "MENTORFLOW_WEBHOOK_SECRET: a webhook secret is whsec_"),
        ({"MENTORFLOW_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "MENTORFLOW_WEBHOOK_SECRET: a webhook secret needs at least"),
    ],
)
def test_bad_notification_settings_fail_fast_and_name_themselves(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(environ)
    assert problem in str(caught.value).replace("Value error, ", "")
    assert "not base64!" not in str(caught.value)


