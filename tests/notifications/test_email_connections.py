"""What a sent email costs the worker (issue #16), and that it sends the same: connections kept
open between messages (and closed whenever something went wrong), the trust store read once,
headers parsed once, a claim in one statement. A real SMTP server (aiosmtpd) on loopback, a
real PostgreSQL for the delivery log."""

from __future__ import annotations

import asyncio
import email.policy
import ssl
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

import activities.notifications_email as email_module
from activities.notifications_channels import Delivery
from activities.notifications_delivery_log import DeliveryKey, PostgresDeliveryLog
from activities.notifications_email import EmailChannel, SmtpConfig
from activities.templates import render
from events.notifications import Notification
from events.people import Participant
from tests.support.peers import Inbox, SmtpServer, free_port

SENDER = "Mentoring programme <mentoring@example.org>"
ADA = Participant(participant_id="emp-1042", display_name="Ada Lovelace", email="ada@example.org", timezone="Europe/Berlin")
GRACE = Participant(participant_id="emp-311", display_name="Grace Hopper", email="grace@example.org",
                    timezone="America/New_York")  # fmt: skip
# A name and a subject the email package must encode (RFC 2047) and fold.
ZOE = Participant(participant_id="emp-7", display_name="Zoë Ñúñez-Østergård, PhD", email="zoe@example.org",
                  timezone="Asia/Kolkata")  # fmt: skip


class PeerInbox(Inbox):
    """Also records the connection (the client's address and port) each message came over."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[Any] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        if answer.startswith("250"):
            self.peers.append(session.peer)
        return answer


async def peer_server(**options: Any) -> tuple[SmtpServer, PeerInbox]:
    server = SmtpServer(**options)
    inbox = server.inbox = PeerInbox()
    return await server.start(), inbox


def notification(recipient: Participant, template: str = "relationship_closed", **data: str) -> Notification:
    return Notification(
        notification_id=f"{uuid.uuid4()}:{recipient.participant_id}",
        relationship_id="rel-42",
        recipient_id=recipient.participant_id,
        template=template,
        data={"reason": "term_completed"} | data,
    )


def meeting(recipient: Participant) -> Notification:
    start = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    return notification(
        recipient, "meeting_reminder", mentee_id=ADA.participant_id, mentor_id=GRACE.participant_id,
        meeting_number="4", meeting_start=start.isoformat(), meeting_end=(start + timedelta(hours=1)).isoformat(),
        meeting_uid="meeting-4-rel-42@mentorflow", meeting_sequence="1",
    )  # fmt: skip


def delivery(note: Notification, recipient: Participant) -> Delivery:
    people = {p.participant_id: p for p in (ADA, GRACE, ZOE)}
    return Delivery(note, recipient, recipient.email, render(note, recipient, people), f"msg_{uuid.uuid4().hex}",
                    datetime.now(UTC), people, "email")  # fmt: skip


def channel(port: int, **options: Any) -> EmailChannel:
    config: dict[str, Any] = {"host": "127.0.0.1", "port": port, "sender": SENDER, "security": "none", "timeout": 5}
    return EmailChannel(SmtpConfig(**(config | options)))


# -- the same bytes --------------------------------------------------------------------------------


def wire(channel: EmailChannel, sent: Delivery, *, stock: bool, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The bytes aiosmtplib sends for `sent`, built with the channel's policy or the email
    package's own; the Date and the MIME boundary (the two that differ from one send to the
    next) made the same."""
    from aiosmtplib.email import flatten_message

    with monkeypatch.context() as patched:
        if stock:
            patched.setattr(email_module, "POLICY", email.policy.default)
        message = channel.message(sent)
        del message["Date"]
        message["Date"] = "Fri, 05 Mar 2027 09:00:00 +0000"
        if message.is_multipart():
            message.set_boundary("===============0123456789==")
        return flatten_message(message)


def test_emails_are_the_bytes_the_email_package_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    sender = channel(25)
    long_subject = "A subject long enough that the email package has to fold it over more than one line, twice over"
    notes = [
        (notification(ADA), ADA),
        (meeting(ADA), ADA),
        (meeting(GRACE), GRACE),
        (notification(ZOE), ZOE),
        (meeting(ZOE), ZOE),
        (notification(ZOE, "an_unknown_template", note=long_subject, title="Ünïcödé ☃ everywhere"), ZOE),
    ]
    # Twice: the second time every repeated header comes from what the first one parsed.
    for _ in range(2):
        for note, recipient in notes:
            sent = delivery(note, recipient)
            ours = wire(sender, sent, stock=False, monkeypatch=monkeypatch)
            assert ours == wire(sender, sent, stock=True, monkeypatch=monkeypatch)


# -- connections -----------------------------------------------------------------------------------


async def test_messages_share_a_connection_until_the_limit() -> None:
    server, inbox = await peer_server()
    try:
        sender = channel(server.port)
        for _ in range(3):
            await sender.deliver(delivery(notification(ADA), ADA))
        assert len(inbox.messages) == 3 and len(set(inbox.peers)) == 1

        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(email_module, "MESSAGES_PER_CONNECTION", 2)
            limited = channel(server.port)
            for _ in range(5):
                await limited.deliver(delivery(notification(GRACE), GRACE))
        assert [len(set(inbox.peers[3:][i : i + 2])) for i in (0, 2, 4)] == [1, 1, 1]
        assert len(set(inbox.peers[3:])) == 3
        await sender.close()
        await limited.close()
    finally:
        await server.stop()


async def test_a_connection_on_which_something_failed_is_not_used_again() -> None:
    server, inbox = await peer_server()
    inbox.refuse.add(GRACE.email)
    try:
        sender = channel(server.port)
        await sender.deliver(delivery(notification(ADA), ADA))
        with pytest.raises(Exception, match="recipient refused"):
            await sender.deliver(delivery(notification(GRACE), GRACE))
        await sender.deliver(delivery(notification(ADA), ADA))
        first, after = inbox.peers
        assert first != after
        await sender.close()
    finally:
        await server.stop()


async def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    # aiosmtpd hangs up on a client idle for `timeout` seconds ("421 timeout"), as servers do.
    server, inbox = await peer_server(timeout=0.3)
    try:
        sender = channel(server.port)
        await sender.deliver(delivery(notification(ADA), ADA))
        await asyncio.sleep(0.8)
        await sender.deliver(delivery(notification(ADA), ADA))
        assert len(inbox.messages) == 2 and len(set(inbox.peers)) == 2
        await sender.close()
    finally:
        await server.stop()


async def test_idle_connections_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    quits: list[Any] = []

    class QuitInbox(PeerInbox):
        async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            quits.append(session.peer)
            return "221 Bye"

    monkeypatch.setattr(email_module, "IDLE_SECONDS", 0.2)
    server = SmtpServer()
    inbox = server.inbox = QuitInbox()
    await server.start()
    try:
        sender = channel(server.port)
        await sender.deliver(delivery(notification(ADA), ADA))
        assert quits == []
        for _ in range(50):
            if quits:
                break
            await asyncio.sleep(0.05)
        assert quits == inbox.peers
    finally:
        await server.stop()


def test_each_event_loop_opens_its_own_connections() -> None:
    """Connections belong to the loop that opened them: a channel used from another loop (tests
    run several) opens new ones, and closes those of the other loop rather than use them."""
    inbox = PeerInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        sender = channel(controller.port)
        first.run_until_complete(sender.deliver(delivery(notification(ADA), ADA)))
        [opened] = sender._connections._idle
        second.run_until_complete(sender.deliver(delivery(notification(ADA), ADA)))
        first.run_until_complete(asyncio.sleep(0))  # the first loop carries out the close
        assert not opened.client.is_connected
        second.run_until_complete(sender.close())
        assert len(inbox.messages) == 2 and len(set(inbox.peers)) == 2
    finally:
        first.close()
        second.close()
        controller.stop()


# -- the trust store -------------------------------------------------------------------------------


@pytest.fixture
def trusted_server_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ssl.SSLContext]:
    """A server certificate from an authority that the default trust store holds: SSL_CERT_FILE
    names it, as a system's bundle would."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "authorities.pem"
    bundle.write_bytes(authority.cert_pem.bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    yield context


async def test_the_default_trust_store_is_read_once(
    trusted_server_context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    create_default_context = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        nonlocal reads
        reads += 1
        return create_default_context(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    monkeypatch.setattr(email_module, "MESSAGES_PER_CONNECTION", 1)  # a new connection for each
    server, inbox = await peer_server(tls_context=trusted_server_context, require_starttls=True,
                                      auth_required=True, authenticator=lambda *_: AuthResult(success=True))  # fmt: skip
    try:
        sender = channel(server.port, security="starttls", username="mentorflow", password="s3cret")
        for _ in range(3):
            await sender.deliver(delivery(notification(ADA), ADA))
        assert [m.tls for m in inbox.messages] == [True] * 3 and len(set(inbox.peers)) == 3
        assert reads == 1
    finally:
        await server.stop()


# -- the delivery log ------------------------------------------------------------------------------


async def test_a_claim_takes_over_failed_and_abandoned_deliveries_only(pool: asyncpg.Pool) -> None:
    log = PostgresDeliveryLog(pool)
    note = notification(ADA)
    key = DeliveryKey(note.notification_id, "email", uuid.uuid4().hex)
    claimant = str(uuid.uuid4())
    first = await log.claim(key, note, claimant)
    assert (first.state, first.attempts, first.interrupted) == ("claimed", 1, False)
    busy = await log.claim(key, note, str(uuid.uuid4()))
    assert (busy.state, busy.attempts, busy.first_attempt_at) == ("busy", 1, first.first_attempt_at)

    # A failure ended the first attempt: the next one takes it over, and nothing was interrupted.
    await log.failed(key, str(uuid.uuid4()), "SMTPDataError 451", permanent=False)
    assert (await log.claim(key, note, str(uuid.uuid4()))).state == "busy"  # only the claimant fails it
    await log.failed(key, claimant, "SMTPDataError 451", permanent=False)
    second = await log.claim(key, note, str(uuid.uuid4()))
    assert (second.state, second.attempts, second.interrupted) == ("claimed", 2, False)
    assert second.first_attempt_at == first.first_attempt_at

    # An attempt that never reported back: once its lease is over, taken over as interrupted.
    await pool.execute("UPDATE notification_deliveries SET claimed_until = NULL WHERE destination = $1", key.destination)
    third = await log.claim(key, note, str(uuid.uuid4()))
    assert (third.state, third.attempts, third.interrupted) == ("claimed", 3, True)

    await log.delivered(key)
    settled = await log.claim(key, note, str(uuid.uuid4()))
    assert (settled.state, settled.attempts, settled.first_attempt_at) == ("delivered", 3, first.first_attempt_at)

    refused = DeliveryKey(note.notification_id, "email", uuid.uuid4().hex)
    token = str(uuid.uuid4())
    await log.claim(refused, note, token)
    await log.failed(refused, token, "SMTP 550: recipient refused", permanent=True)
    assert (await log.claim(refused, note, str(uuid.uuid4()))).state == "rejected"

