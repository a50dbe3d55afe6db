"""A relationship on the time-skipping server, with notifications really delivered.

The worker is built from `Settings` the way a deployment builds it: SMTP pointing at a
real aiosmtpd server on loopback (no TLS) and a webhook signing secret, so the real
`EmailChannel` and `WebhookChannel` deliver to the recipients the directory (PostgreSQL)
knows. The relationship goes match → agreement with availability in two time zones → a
scheduled meeting and its reminder → the meeting held → a concern (to the coordinator's
webhook) → a milestone → close → reflections → summary, and the test reads the bytes
that arrived: who got which email and webhook, the calendar invite, the signatures, and
that nothing confidential left the event store. One webhook and one email are refused
temporarily on their first try, so the notification activity is retried; every
notification must still arrive exactly once per recipient and channel.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import asyncpg
import icalendar
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.directory import Directory
from activities.event_store import PostgresEventStore
from events.model import AnyEvent, ClosureReason, Health
from events.people import ChannelAddress, Participant
from events.settings import ProgrammeSettings
from events.state import Phase
from events.decider import fold
from mentorflow.config import Settings
from tests.support.helpers import (
    RecordingChannel,
    cmd,
    ended_on_failure,
    failed_workflow_tasks,
    sleep_until,
    start_relationship,
    state_of,
)
from tests.support.peers import Received, Request, SmtpServer, WebhookReceiver, eventually, verify_signature
from tests.support.session import TEST_KEYRING
from worker import build_worker
from workflows.search_attributes import (
    MEETINGS_HELD,
    MENTEE_ID,
    MENTOR_ID,
    MENTORING_HEALTH,
    MENTORING_PHASE,
    NEXT_DUE_AT,
)

SECRET = "whsec_" + base64.b64encode(b"lifecycle-delivery-signing-key-32").decode()
SENDER = "Mentoring programme <mentoring@example.org>"
# Planted in every confidential field the test fills in; must never leave the event store.
SENTINEL = "SENTINEL-q7Zx-do-not-leak"

MENTOR_HOOK = "/hooks/marcus?token=m-123"
COORDINATOR_HOOK = "/hooks/programme-office?token=c-456"

# Weekly windows in each party's own zone (weekday 0 is Monday). They overlap on
# Wednesdays only: 18:00–21:00 in Kolkata is 12:30–15:30 UTC, 08:00–11:00 in New York is
# 13:00–16:00 UTC (EST) or 12:00–15:00 UTC (EDT). The other windows are decoys that
# overlap nothing of the other party's.
MENTEE_WINDOWS = [
    {"weekday": 2, "start": "18:00", "end": "21:00"},
    {"weekday": 4, "start": "09:00", "end": "12:00"},
]
MENTOR_WINDOWS = [
    {"weekday": 0, "start": "14:00", "end": "17:00"},
    {"weekday": 2, "start": "08:00", "end": "11:00"},
]
AGREEMENT = {
    "objective": "Lead the design of a payments service",
    "goals": [
        {
            "goal_id": "design",
            "title": "Lead two design reviews",
            "milestones": [{"milestone_id": "first-review", "title": "First review led"}],
        },
        {"goal_id": "network", "title": "Meet three staff engineers"},
    ],
    "formats": ["video"],
    "meeting_frequency": "biweekly",
    "meeting_minutes": 60,
    "term_months": 3,
    "agenda_policy": "mentee_shares",
    "availability": [
        {"party": "mentee", "timezone": "Asia/Kolkata", "windows": MENTEE_WINDOWS},
        {"party": "mentor", "timezone": "America/New_York", "windows": MENTOR_WINDOWS},
    ],
}

SUBJECTS = {
    "match_proposed": "Mentoring match proposed",
    "match_confirmed": "Mentoring match confirmed",
    "relationship_activated": "Your mentoring relationship has started",
    "agenda_request": "Agenda for mentoring meeting 1",
    "meeting_reminder": "Reminder: mentoring meeting 1",
    "concern_raised": "A concern was raised in a mentoring relationship",
    "milestone_celebration": "Milestone reached: Lead two design reviews",
    "reflection_request": "Reflect on your mentoring",
    "relationship_summary": "Mentoring relationship closed: your summary",
}


def participants(receiver: WebhookReceiver) -> tuple[Participant, Participant, Participant]:
    mentee = Participant(
        participant_id="emp-2001",
        display_name="Priya Raman",
        email="priya@example.org",
        timezone="Asia/Kolkata",
        channels=(ChannelAddress(kind="email"),),
    )
    mentor = Participant(
        participant_id="emp-3002",
        display_name="Marcus Webb",
        email="marcus@example.org",
        timezone="America/New_York",
        channels=(ChannelAddress(kind="email"), ChannelAddress(kind="webhook", address=receiver.url_for(MENTOR_HOOK))),
    )
    coordinator = Participant(
        participant_id="coord-9",
        display_name="Lena Ortiz",
        email="lena@example.org",
        timezone="Europe/Berlin",
        channels=(ChannelAddress(kind="webhook", address=receiver.url_for(COORDINATOR_HOOK)),),
    )
    return mentee, mentor, coordinator


# -- reading what arrived ------------------------------------------------------------------


def emails(server: SmtpServer, to: Participant, template: str) -> list[Received]:
    return [
        m
        for m in server.inbox.messages
        if m.rcpt_tos == [to.email] and m.message["X-Mentorflow-Template"] == template
    ]


def payload(request: Request) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(request.body)
    return parsed


def webhooks(receiver: WebhookReceiver, path: str, template: str, *, accepted_only: bool = True) -> list[Request]:
    requests = receiver.accepted() if accepted_only else receiver.requests
    return [r for r in requests if r.path == path and payload(r)["type"] == f"mentoring.{template}"]


async def email_arrives(server: SmtpServer, to: Participant, template: str) -> Received:
    """The one email of `template` to `to`, once it has arrived."""
    found: list[Received] = await eventually(lambda: emails(server, to, template), f"{template} email to {to.email}")
    assert len(found) == 1, f"{template} reached {to.email} {len(found)} times"
    [received] = found
    message = received.message
    assert message["From"] == SENDER and received.mail_from == "mentoring@example.org"
    assert message["To"] == f"{to.display_name} <{to.email}>"
    assert message["Subject"] == SUBJECTS.get(template, message["Subject"]), template
    assert text_of(received).startswith(f"Hello {to.display_name},\n")
    return received


async def webhook_arrives(receiver: WebhookReceiver, path: str, to: Participant, template: str) -> dict[str, Any]:
    found: list[Request] = await eventually(lambda: webhooks(receiver, path, template), f"{template} webhook to {path}")
    assert len(found) == 1, f"{template} reached {path} {len(found)} times"
    [request] = found
    verify_signature(SECRET, request)
    body = payload(request)
    assert body["data"]["recipient_id"] == to.participant_id and body["data"]["template"] == template
    if template in SUBJECTS:
        assert body["data"]["subject"] == SUBJECTS[template]
    return body


def text_of(received: Received) -> str:
    part = received.message.get_body(preferencelist=("plain",))
    assert part is not None
    text: str = part.get_content()
    return text.replace("\r\n", "\n")


def invite_of(received: Received) -> icalendar.cal.Component:
    [attachment] = list(received.message.iter_attachments())
    assert attachment.get_content_type() == "text/calendar" and attachment.get_filename() == "invite.ics"
    assert attachment.get_param("method") == "REQUEST"
    calendar = icalendar.Calendar.from_ical(attachment.get_content())
    assert str(calendar["METHOD"]) == "REQUEST"
    [event] = calendar.walk("VEVENT")
    assert str(event["ATTENDEE"]) == f"mailto:{received.rcpt_tos[0]}"
    return event


def everything_in(received: Received) -> list[str]:
    """Every header, every decoded part (text and attachments) and the raw bytes of an email."""
    texts = [received.raw.decode(errors="replace"), *(f"{k}: {v}" for k, v in received.message.items())]
    for part in received.message.walk():
        if part.is_multipart():
            continue
        content = part.get_content()
        texts.append(content.decode(errors="replace") if isinstance(content, bytes) else str(content))
    return texts


def local_span(start: datetime, end: datetime, zone: str) -> str:
    """How the email should say when the meeting is: in the recipient's own zone."""
    local_start, local_end = start.astimezone(ZoneInfo(zone)), end.astimezone(ZoneInfo(zone))
    day = f"{local_start:%A} {local_start.day} {local_start:%B %Y}"
    return f"When: {day}, {local_start:%H:%M}–{local_end:%H:%M} {local_end.tzname()}"


def within_windows(start: datetime, end: datetime, zone: str, windows: list[dict[str, Any]]) -> bool:
    local_start, local_end = start.astimezone(ZoneInfo(zone)), end.astimezone(ZoneInfo(zone))
    return local_start.date() == local_end.date() and any(
        window["weekday"] == local_start.weekday()
        and time.fromisoformat(window["start"]) <= local_start.time()
        and local_end.time() <= time.fromisoformat(window["end"])
        for window in windows
    )


async def attributes(handle: WorkflowHandle[Any, Any]) -> Any:
    return (await handle.describe()).typed_search_attributes


def delivering_worker(
    env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_server: SmtpServer, tap: RecordingChannel
) -> Worker:
    """A worker configured the way a deployment is (the MENTORFLOW_* settings): email to the
    test's SMTP server without TLS, webhooks signed with SECRET; `tap` sees every notification."""
    settings = Settings.from_env(
        {
            "MENTORFLOW_SMTP_HOST": "127.0.0.1",
            "MENTORFLOW_SMTP_PORT": str(smtp_server.port),
            "MENTORFLOW_SMTP_SECURITY": "none",
            "MENTORFLOW_SMTP_FROM": SENDER,
            "MENTORFLOW_SMTP_TIMEOUT": "5",
            "MENTORFLOW_WEBHOOK_SECRET": SECRET,
            "MENTORFLOW_WEBHOOK_TIMEOUT": "5",
            # Its relationships bring their settings (no programme in the directory).
            "MENTORFLOW_TRUST_START_SETTINGS": "true",
        }
    )
    return build_worker(env.client, pool, f"tq-{uuid.uuid4()}", channels=[tap], settings=settings)


class Peers(NamedTuple):
    env: WorkflowEnvironment
    pool: asyncpg.Pool
    smtp_server: SmtpServer
    receiver: WebhookReceiver


@pytest.fixture
def peers(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_server: SmtpServer, receiver: WebhookReceiver
) -> Peers:
    """The time-skipping server, the store, and the SMTP server and webhook receiver that the
    participants' messages go to."""
    return Peers(time_skipping_env, pool, smtp_server, receiver)


@asynccontextmanager
async def relationship_of(
    people: tuple[Participant, Participant, Participant],
    env: WorkflowEnvironment,
    pool: asyncpg.Pool,
    smtp_server: SmtpServer,
    tap: RecordingChannel,
) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    """The test's people (`participants`) in the directory, a delivering worker, and the
    mentee's relationship under it (terminated if the test fails)."""
    mentee, _, coordinator = people
    await Directory(pool).upsert_participants(list(people))
    async with delivering_worker(env, pool, smtp_server, tap) as worker:
        handle = await start_relationship(
            env.client, worker, mentee_id=mentee.participant_id,
            # Any time of day: a reminder at 20:00 in Kolkata would wait for the morning
            # (daytime delivery has its own tests: tests/notifications/test_daytime_delivery.py).
            settings=ProgrammeSettings(coordinator_ids=(coordinator.participant_id,), delivery_window=None),
        )  # fmt: skip
        async with ended_on_failure(handle):
            yield handle


# -- the lifecycle -------------------------------------------------------------------------


async def live_through_the_lifecycle(
    env: WorkflowEnvironment,
    pool: asyncpg.Pool,
    handle: WorkflowHandle[Any, Any],
    smtp_server: SmtpServer,
    receiver: WebhookReceiver,
) -> list[AnyEvent]:
    """Match → agreement → meeting 1 reminded and held → concern → milestone → close →
    reflections → summary, checking each step's arrivals; returns the stored events."""
    mentee, mentor, coordinator = participants(receiver)
    # From the workflow id, not a `state` query: on the time-skipping server a query racing
    # the first workflow task can get that task redone at a later time, and the event store
    # takes the redone events (same event ids, another occurred_at) for an idempotent retry,
    # so the workflow's state and the stored events disagree on started_at.
    relationship_id = handle.id.rpartition("/")[2]

    # -- match: both sides are told, the mentor on both of his channels.
    explanation = "both build payment systems"
    await handle.execute_update(
        "propose_match", cmd(coordinator.participant_id, mentor_id=mentor.participant_id, explanation=explanation)
    )
    proposed = await email_arrives(smtp_server, mentee, "match_proposed")
    assert "Marcus Webb has been proposed as the mentor" in text_of(proposed)
    assert f"Why this match: {explanation}" in text_of(proposed)
    await email_arrives(smtp_server, mentor, "match_proposed")
    hook = await webhook_arrives(receiver, MENTOR_HOOK, mentor, "match_proposed")
    assert hook["data"]["relationship_id"] == relationship_id
    assert hook["data"]["parameters"]["mentor_id"] == mentor.participant_id
    await handle.execute_update("accept_match", cmd(mentee.participant_id))
    await handle.execute_update("accept_match", cmd(mentor.participant_id))
    await email_arrives(smtp_server, mentee, "match_confirmed")

    # -- agreement with availability in two time zones; signing activates it.
    await handle.execute_update("propose_agreement", cmd(mentee.participant_id, terms=AGREEMENT))
    await handle.execute_update("sign_agreement", cmd(mentee.participant_id, agreement_version=1))
    await handle.execute_update("sign_agreement", cmd(mentor.participant_id, agreement_version=1))
    state = await state_of(handle)
    assert state.phase is Phase.ACTIVE and state.next_meeting is not None
    meeting = state.next_meeting
    assert meeting.meeting_number == 1 and meeting.ends_at - meeting.starts_at == timedelta(minutes=60)
    # Inside both parties' windows, each read in their own zone.
    assert within_windows(meeting.starts_at, meeting.ends_at, "Asia/Kolkata", MENTEE_WINDOWS), meeting
    assert within_windows(meeting.starts_at, meeting.ends_at, "America/New_York", MENTOR_WINDOWS), meeting
    found = await attributes(handle)
    assert found.get(MENTORING_PHASE) == "active" and found.get(NEXT_DUE_AT) == meeting.starts_at
    assert found.get(MENTEE_ID) == mentee.participant_id and found.get(MENTOR_ID) == mentor.participant_id
    await email_arrives(smtp_server, mentee, "relationship_activated")
    uid = f"{relationship_id}-meeting-1@mentorflow"
    scheduled = invite_of(await email_arrives(smtp_server, mentor, "meeting_scheduled"))
    assert str(scheduled["UID"]) == uid and scheduled.decoded("DTSTART") == meeting.starts_at

    # -- the day before the meeting: a reminder with the invite, in each one's zone.
    assert not emails(smtp_server, mentee, "meeting_reminder")
    await sleep_until(env, meeting.starts_at - timedelta(hours=23))
    for person, zone in ((mentee, "Asia/Kolkata"), (mentor, "America/New_York")):
        reminder = await email_arrives(smtp_server, person, "meeting_reminder")
        event = invite_of(reminder)
        assert event.decoded("DTSTART") == meeting.starts_at
        assert event.decoded("DTEND") == meeting.ends_at
        assert str(event["UID"]) == uid and event["SEQUENCE"] == 0
        other = mentor if person is mentee else mentee
        assert str(event["SUMMARY"]) == f"Mentoring meeting with {other.display_name}"
        assert local_span(meeting.starts_at, meeting.ends_at, zone) in text_of(reminder)
    agenda = await email_arrives(smtp_server, mentee, "agenda_request")
    assert str(invite_of(agenda)["UID"]) == uid  # one calendar entry, not two
    assert not emails(smtp_server, mentor, "agenda_request")  # the mentee shares the agenda
    hook = await webhook_arrives(receiver, MENTOR_HOOK, mentor, "meeting_reminder")
    assert datetime.fromisoformat(hook["data"]["parameters"]["meeting_start"]) == meeting.starts_at
    assert hook["data"]["parameters"]["meeting_uid"] == uid

    # -- the meeting is held; its notes are confidential.
    await sleep_until(env, meeting.starts_at + timedelta(minutes=70))
    await handle.execute_update(
        "record_meeting",
        cmd(mentee.participant_id, held_at=meeting.starts_at.isoformat(), duration_minutes=60,
            notes=f"{SENTINEL}: worried about the reorg"),
    )  # fmt: skip
    state = await state_of(handle)
    assert state.meetings_held == 1 and state.next_meeting is not None
    second = state.next_meeting
    assert second.meeting_number == 2
    assert within_windows(second.starts_at, second.ends_at, "Asia/Kolkata", MENTEE_WINDOWS), second
    assert within_windows(second.starts_at, second.ends_at, "America/New_York", MENTOR_WINDOWS), second
    assert (await attributes(handle)).get(MEETINGS_HELD) == 1

    # -- a concern reaches the coordinator's webhook; its first delivery is refused (503).
    def refuse_the_first_concern(request: Request) -> int | None:
        first = not webhooks(receiver, COORDINATOR_HOOK, "concern_raised", accepted_only=False)[:-1]
        concern = request.path == COORDINATOR_HOOK and payload(request)["type"] == "mentoring.concern_raised"
        return 503 if concern and first else None

    receiver.respond = refuse_the_first_concern
    concern = cmd(mentee.participant_id, text=f"{SENTINEL}: my mentor keeps cancelling")
    await handle.execute_update("raise_concern", concern)
    state = await state_of(handle)
    assert state.health is Health.AT_RISK and "concern_open" in state.health_reasons
    assert (await attributes(handle)).get(MENTORING_HEALTH) == "at_risk"
    hook = await webhook_arrives(receiver, COORDINATOR_HOOK, coordinator, "concern_raised")
    assert hook["type"] == "mentoring.concern_raised"
    assert hook["data"]["parameters"] == {"concern_id": concern["command_id"], "raised_by_party": "mentee"}
    assert f"A concern ({concern['command_id']}) was raised by the mentee" in hook["data"]["text"]
    refused, taken = webhooks(receiver, COORDINATOR_HOOK, "concern_raised", accepted_only=False)
    assert (refused.status, taken.status) == (503, 200)
    # A retry is the same webhook: same id, same bytes, a valid signature each time.
    assert refused.headers["webhook-id"] == taken.headers["webhook-id"] and refused.body == taken.body
    verify_signature(SECRET, refused)
    # The coordinator hears the relationship is at risk; the parties are not told why (it
    # would give the concern away to the other side).
    await webhook_arrives(receiver, COORDINATOR_HOOK, coordinator, "health_at_risk")

    # -- a milestone is celebrated; the mentee's email is deferred (451) the first time.
    def defer_the_first_celebration(message: Any) -> bool:
        return (
            message["X-Mentorflow-Template"] == "milestone_celebration"
            and mentee.email in str(message["To"])
            and not smtp_server.inbox.deferred
        )

    smtp_server.inbox.defer = defer_the_first_celebration
    await handle.execute_update(
        "record_goal_progress",
        cmd(mentee.participant_id, goal_id="design", progress_percent=50, milestones_reached=["first-review"]),
    )
    celebration = await email_arrives(smtp_server, mentee, "milestone_celebration")
    assert "Congratulations! You reached a milestone on the way to your goal “Lead two design reviews”" in (
        text_of(celebration)
    )
    assert list(celebration.message.iter_attachments()) == []
    [deferred] = smtp_server.inbox.deferred
    assert deferred["Message-ID"] == celebration.message["Message-ID"]
    await email_arrives(smtp_server, mentor, "milestone_celebration")
    await webhook_arrives(receiver, MENTOR_HOOK, mentor, "milestone_celebration")

    await handle.execute_update(
        "resolve_concern",
        cmd(coordinator.participant_id, concern_id=concern["command_id"], resolution=f"{SENTINEL}: talked to both"),
    )
    assert (await state_of(handle)).health is Health.HEALTHY
    await webhook_arrives(receiver, COORDINATOR_HOOK, coordinator, "concern_resolved")

    # -- the mentee closes; both reflect; everyone gets the summary.
    result = await handle.execute_update(
        "close_relationship", cmd(mentee.participant_id, note=f"{SENTINEL}: moving teams")
    )
    assert result["phase"] == "closing"
    assert (await attributes(handle)).get(MENTORING_PHASE) == "closing"
    await email_arrives(smtp_server, mentee, "reflection_request")
    await email_arrives(smtp_server, mentor, "reflection_request")
    await handle.execute_update("submit_reflection", cmd(mentee.participant_id, text=f"{SENTINEL}: I grew"))
    await handle.execute_update("submit_reflection", cmd(mentor.participant_id, text=f"{SENTINEL}: so did I"))
    summary = await handle.result()

    assert summary.closure_reason is ClosureReason.CLOSED_BY_MENTEE
    assert summary.meetings_held == 1 and summary.concerns_raised == 1
    assert summary.reflections_from == ("mentee", "mentor")
    for person in (mentee, mentor):
        text = text_of(await email_arrives(smtp_server, person, "relationship_summary"))
        assert "closed (closed by mentee)" in text and "you held 1 meetings" in text
    for path, person in ((MENTOR_HOOK, mentor), (COORDINATOR_HOOK, coordinator)):
        hook = await webhook_arrives(receiver, path, person, "relationship_summary")
        assert hook["data"]["parameters"]["reason"] == "closed_by_mentee"
        assert hook["data"]["parameters"]["meetings_held"] == "1"

    final = await state_of(handle)
    assert final.phase is Phase.CLOSED
    found = await attributes(handle)
    assert found.get(MENTORING_PHASE) == "closed" and found.get(MEETINGS_HELD) == 1
    assert found.get(MENTORING_HEALTH) == "healthy"
    stored = await PostgresEventStore(pool, keyring=TEST_KEYRING).read_stream(relationship_id)
    assert fold(stored) == final
    kinds = [event.type for event in stored]
    for kind in ("MatchProposed", "MatchConfirmed", "AgreementSigned", "RelationshipActivated", "MeetingScheduled",
                 "AgendaRequested", "MeetingReminderIssued", "MeetingHeld", "ConcernRaised", "MilestoneReached",
                 "ConcernResolved", "ClosureBegun", "ReflectionSubmitted", "RelationshipClosed"):  # fmt: skip
        assert kind in kinds, kind
    assert await failed_workflow_tasks(handle) == 0
    return stored


# -- the tests -----------------------------------------------------------------------------


async def test_a_relationship_delivers_each_notification_once_to_the_smtp_and_http_peers(peers: Peers) -> None:
    env, pool, smtp_server, receiver = peers
    mentee, mentor, coordinator = participants(receiver)
    # Sees every notification the core asked for: what the peers are checked against.
    asked = RecordingChannel()
    async with relationship_of((mentee, mentor, coordinator), env, pool, smtp_server, asked) as handle:
        stored = await live_through_the_lifecycle(env, pool, handle, smtp_server, receiver)

    # -- exactly once per recipient and channel: what arrived is what the core asked for.
    ids = [n.notification_id for n in asked.sent]
    assert len(ids) == len(set(ids)), "the core's notifications were handed over more than once"
    people = {p.participant_id: p for p in (mentee, mentor, coordinator)}
    expected: Counter[tuple[str, str, str]] = Counter()
    for notification in asked.sent:
        recipient = people[notification.recipient_id]
        for channel in recipient.channels:
            where = recipient.email if channel.kind == "email" else (channel.address or "").removeprefix(
                f"http://127.0.0.1:{receiver.port}"
            )
            expected[(notification.notification_id, channel.kind, where)] += 1

    def arrived() -> Counter[tuple[str, str, str]]:
        got: Counter[tuple[str, str, str]] = Counter()
        for received in smtp_server.inbox.messages:
            for address in received.rcpt_tos:
                got[(str(received.message["X-Mentorflow-Notification"]).strip(), "email", address)] += 1
        for request in receiver.accepted():
            got[(payload(request)["data"]["notification_id"], "webhook", request.path)] += 1
        return got

    await eventually(lambda: sum(arrived().values()) >= sum(expected.values()), "every notification")
    assert arrived() == expected
    templates = {n.template for n in asked.sent}
    assert {"match_proposed", "meeting_reminder", "concern_raised", "milestone_celebration",
            "relationship_summary"} <= templates  # fmt: skip
    # Every email has its own Message-ID; the coordinator, reached by webhook only, got no email.
    message_ids = [str(m.message["Message-ID"]) for m in smtp_server.inbox.messages]
    assert len(message_ids) == len(set(message_ids))
    assert all(coordinator.email not in m.rcpt_tos for m in smtp_server.inbox.messages)
    # The summary went to both parties and the coordinator, each on every channel they have.
    summary_ids = {n.notification_id for n in asked.sent if n.template == "relationship_summary"}
    summaries = {(kind, where) for (nid, kind, where) in arrived() if nid in summary_ids}
    assert summaries == {("email", mentee.email), ("email", mentor.email), ("webhook", MENTOR_HOOK),
                         ("webhook", COORDINATOR_HOOK)}  # fmt: skip

    # Every webhook request (retries included) is validly signed.
    for request in receiver.requests:
        verify_signature(SECRET, request)

    # -- nothing confidential left the event store: not in any email, invite or webhook.
    # (It was planted: the store holds it, in the meeting notes, the concern, its resolution,
    # the closing note and both reflections.)
    planted = {
        event.type
        for event in stored
        if any(SENTINEL in str(value) for value in event.model_dump().values())
    }
    assert planted == {"MeetingHeld", "ConcernRaised", "ConcernResolved", "ClosureBegun", "ReflectionSubmitted"}
    for received in smtp_server.inbox.messages + [
        Received("", [], message, False, None, message.as_bytes()) for message in smtp_server.inbox.deferred
    ]:
        for text in everything_in(received):
            assert SENTINEL not in text, received.message["Subject"]
    for request in receiver.requests:
        assert SENTINEL.encode() not in request.body, payload(request)["type"]
        assert all(SENTINEL not in value for value in request.headers.values())
    assert not [n for n in asked.sent if any(SENTINEL in value for value in n.data.values())]

    # The delivery log: everything delivered; the two refused first tries took two attempts.
    rows = await pool.fetch("SELECT template, channel, status, attempts FROM notification_deliveries")
    assert {row["status"] for row in rows} == {"delivered"}
    retried = sorted((row["template"], row["channel"]) for row in rows if row["attempts"] > 1)
    assert retried == [("concern_raised", "webhook"), ("milestone_celebration", "email")]
    assert all(row["attempts"] <= 2 for row in rows)


async def test_closing_withdraws_the_invite_of_the_meeting_still_scheduled(peers: Peers) -> None:
    env, pool, smtp_server, receiver = peers
    mentee, mentor, coordinator = participants(receiver)
    async with relationship_of((mentee, mentor, coordinator), env, pool, smtp_server, RecordingChannel()) as handle:
        await handle.execute_update("propose_match", cmd(coordinator.participant_id, mentor_id=mentor.participant_id))
        await handle.execute_update("accept_match", cmd(mentee.participant_id))
        await handle.execute_update("accept_match", cmd(mentor.participant_id))
        await handle.execute_update("propose_agreement", cmd(mentee.participant_id, terms=AGREEMENT))
        await handle.execute_update("sign_agreement", cmd(mentee.participant_id, agreement_version=1))
        await handle.execute_update("sign_agreement", cmd(mentor.participant_id, agreement_version=1))
        uids = {str(invite_of(await email_arrives(smtp_server, p, "meeting_scheduled"))["UID"]) for p in (mentee, mentor)}
        await handle.execute_update("close_relationship", cmd(coordinator.participant_id))
        await handle.execute_update("submit_reflection", cmd(mentee.participant_id, text="thanks"))
        await handle.execute_update("submit_reflection", cmd(mentor.participant_id, text="thanks"))
        await handle.result()
    # The run waits for its deliveries before it ends: everything has arrived by now.
    assert len(uids) == 1 and emails(smtp_server, mentee, "relationship_summary")
    for person in (mentee, mentor):
        cancels = [
            str(icalendar.Calendar.from_ical(attachment.get_content()).walk("VEVENT")[0]["UID"])
            for received in smtp_server.inbox.messages
            if received.rcpt_tos == [person.email]
            for attachment in received.message.iter_attachments()
            if attachment.get_param("method") == "CANCEL"
        ]
        assert cancels == list(uids), f"{person.email} got no CANCEL for the meeting still in their calendar"
