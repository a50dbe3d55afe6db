"""Daytime delivery end to end (issue #15): relationships on the time-skipping server, their
messages delivered by the real email channel to an SMTP server on loopback, the people in
the directory (PostgreSQL) with their time zones.

The notification activity reads the test server's clock (`ServerClock`), which also records
every attempt: so the tests see both when a message arrived, against the server's clock
(nothing a minute before the window opens, the message a minute after), and that the
retrying activity waited for the window rather than for its retry policy's backoff
(at most 10 minutes between attempts: no attempt at all in the hours between).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.directory import Directory
from activities.event_store import EventStoreActivities, PostgresEventStore
from activities.notifications import NotificationActivities, StaticContacts
from activities.notifications_daytime import StoredDeliveryWindows
from activities.notifications_delivery_log import PostgresDeliveryLog
from activities.notifications_email import EmailChannel, SmtpConfig
from events.daytime import DeliveryWindow
from events.deadlines import add_months, midpoint
from events.decider import start_relationship as relationship_started
from events.digest import digest_relationship_id
from events.notifications import Notification
from events.people import Participant, Programme
from events.settings import ProgrammeSettings
from events.state import Phase
from mentorflow.config import Settings
from tests.support.daytime import ServerClock, delivered, local_eight
from tests.support.helpers import cmd, ended_on_failure, sleep_until, start_relationship, state_of
from tests.support.owners import owner
from tests.support.peers import Received, SmtpServer, eventually
from events.store import AppendRequest
from worker import build_worker

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"
MENTEE = Participant(participant_id="emp-ber-1", display_name="Ada Lovelace", email="ada@example.org", timezone=BERLIN)
MENTOR = Participant(participant_id="emp-nyc-1", display_name="Grace Hopper", email="grace@example.org", timezone=NEW_YORK)
NEIGHBOUR = Participant(participant_id="emp-ber-2", display_name="Lise Meitner", email="lise@example.org", timezone=BERLIN)
COORDINATOR = Participant(participant_id="coord-ber", display_name="Lena Ortiz", email="lena@example.org", timezone=BERLIN)
PEOPLE = [MENTEE, MENTOR, NEIGHBOUR, COORDINATOR]


@asynccontextmanager
async def delivering(
    env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_server: SmtpServer, clock: ServerClock
) -> AsyncIterator[str]:
    """The people in the directory and a worker that emails them; yields its task queue."""
    await Directory(pool).upsert_participants(PEOPLE)
    settings = Settings.from_env(
        {
            "MENTORFLOW_SMTP_HOST": "127.0.0.1",
            "MENTORFLOW_SMTP_PORT": str(smtp_server.port),
            "MENTORFLOW_SMTP_SECURITY": "none",
            "MENTORFLOW_SMTP_FROM": "Mentoring programme <mentoring@example.org>",
            # Its relationships bring their settings (no programme in the directory).
            "MENTORFLOW_TRUST_START_SETTINGS": "true",
        }
    )
    async with build_worker(env.client, pool, f"tq-{uuid.uuid4()}", settings=settings, notification_clock=clock) as worker:
        yield worker.task_queue


def emails(server: SmtpServer, to: Participant, template: str) -> list[Received]:
    return [m for m in server.inbox.messages if m.rcpt_tos == [to.email] and m.message["X-Mentorflow-Template"] == template]


def signing_for_a_night_midpoint(now: datetime) -> datetime:
    """A moment after `now` at which to sign a one-month agreement so that its midpoint falls at
    03:30 UTC: 04:30 or 05:30 in Berlin, 22:30 or 23:30 the evening before in New York."""
    for day in range(1, 5):
        for hour in (3, 15):  # half a 31-day month is 15.5 days
            signed = datetime.combine(now.date() + timedelta(days=day), time(hour, 30), tzinfo=UTC)
            if (signed + (add_months(signed, 1) - signed) / 2).time() == time(3, 30):
                return signed
    raise AssertionError("no month is that long")


async def activate(
    handle: WorkflowHandle[Any, Any], mentee: Participant, mentor: Participant, **terms: Any
) -> None:
    """Matched, then both sign the agreement (`terms` added to a one-goal, one-month one)."""
    await handle.execute_update("propose_match", cmd(COORDINATOR.participant_id, mentor_id=mentor.participant_id))
    await handle.execute_update("accept_match", cmd(mentee.participant_id))
    await handle.execute_update("accept_match", cmd(mentor.participant_id))
    agreement = {"objective": "Grow into a staff role", "goals": [{"title": "Lead a design review"}],
                 "meeting_frequency": "monthly", "meeting_minutes": 30, "term_months": 1, **terms}  # fmt: skip
    await handle.execute_update("propose_agreement", cmd(mentee.participant_id, terms=agreement))
    for party in (mentee, mentor):
        await handle.execute_update("sign_agreement", cmd(party.participant_id, agreement_version=1))


async def close(handle: WorkflowHandle[Any, Any], mentee: Participant, mentor: Participant) -> None:
    """Closed and reflected on, the way people end it: nothing left running on the shared server."""
    await handle.execute_update("close_relationship", cmd(mentee.participant_id))
    for party in (mentee, mentor):
        await handle.execute_update("submit_reflection", cmd(party.participant_id, text="thank you"))
    await handle.result()


async def test_a_midpoint_review_decided_at_night_reaches_each_party_at_eight_their_time(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_server: SmtpServer
) -> None:
    env = time_skipping_env
    clock = ServerClock(env)
    review = "midpoint_review_opened"
    async with delivering(env, pool, smtp_server, clock) as task_queue:
        await sleep_until(env, signing_for_a_night_midpoint(await env.get_current_time()))
        settings = ProgrammeSettings(coordinator_ids=(COORDINATOR.participant_id,))
        handle = await start_relationship(env.client, task_queue, mentee_id=MENTEE.participant_id, settings=settings)
        async with ended_on_failure(handle):
            await activate(handle, MENTEE, MENTOR)
            middle = midpoint(await state_of(handle))
            assert middle is not None
            window = DeliveryWindow()
            for zone in (BERLIN, NEW_YORK):  # night in both
                assert not window.holds(middle.astimezone(ZoneInfo(zone)).time()), (zone, middle)

            # -- the review opens at night: both messages are held.
            await sleep_until(env, middle + timedelta(minutes=1))
            await eventually(lambda: len(clock.between(middle, middle + timedelta(minutes=10))) >= 2,
                             "the quick first try and the retrying activity")  # fmt: skip
            assert (await state_of(handle)).phase is Phase.REVIEW
            assert not emails(smtp_server, MENTEE, review) and not emails(smtp_server, MENTOR, review)
            assert await delivered(pool, review) == []  # held messages are not even claimed

            # -- an urgent message at the same moment goes at once.
            await handle.execute_update("raise_concern", cmd(MENTEE.participant_id, text="we never meet"))
            await eventually(lambda: emails(smtp_server, COORDINATOR, "concern_raised"), "the concern, at night")
            assert await env.get_current_time() < local_eight(middle, BERLIN)

            # -- 08:00 in Berlin: the mentee's, not the mentor's (22:00 or so in New York still).
            berlin = local_eight(middle, BERLIN)
            await sleep_until(env, berlin - timedelta(minutes=1))
            assert not emails(smtp_server, MENTEE, review)
            await sleep_until(env, berlin + timedelta(minutes=1))
            await eventually(lambda: emails(smtp_server, MENTEE, review), "the mentee's review request at 08:00 Berlin")
            assert not emails(smtp_server, MENTOR, review)

            # -- 08:00 in New York: the mentor's.
            new_york = local_eight(middle, NEW_YORK)
            assert new_york > berlin
            await sleep_until(env, new_york - timedelta(minutes=1))
            assert not emails(smtp_server, MENTOR, review)
            await sleep_until(env, new_york + timedelta(minutes=1))
            await eventually(lambda: emails(smtp_server, MENTOR, review), "the mentor's review request at 08:00 New York")

            # The retrying activity waited for each window to open, not for its backoff
            # (NOTIFY_RETRY: at most 10 minutes between attempts): no attempt in between.
            assert clock.between(middle + timedelta(minutes=10), berlin) == []
            assert clock.between(berlin + timedelta(minutes=2), new_york) == []
            assert [r for r in clock.readings if berlin <= r <= berlin + timedelta(minutes=2)]
            assert [r for r in clock.readings if new_york <= r <= new_york + timedelta(minutes=2)]

            # Each exactly once, in the recipient's words.
            assert len(emails(smtp_server, MENTEE, review)) == len(emails(smtp_server, MENTOR, review)) == 1
            assert await delivered(pool, review) == [(MENTEE.participant_id, "delivered", 1),
                                                     (MENTOR.participant_id, "delivered", 1)]  # fmt: skip
            assert len(emails(smtp_server, COORDINATOR, "concern_raised")) == 1
            await close(handle, MENTEE, MENTOR)


# A meeting at 07:00 in Berlin, before the window opens: both are in Berlin and free then only.
EARLY = [{"party": party, "timezone": BERLIN, "windows": [{"weekday": day, "start": "07:00", "end": "07:30"} for day in range(7)]}
         for party in ("mentee", "mentor")]  # fmt: skip


@pytest.mark.parametrize(
    ("lead_hours", "window", "waits"),
    [
        # The reminder at 05:00, for a meeting at 07:00: waiting for 08:00 would be too late.
        pytest.param(2, DeliveryWindow(), False, id="before-an-early-meeting"),
        # A day ahead, at 07:00: no window, at once; the default window, at 08:00.
        pytest.param(24, None, False, id="no-window"),
        pytest.param(24, DeliveryWindow(), True, id="a-day-ahead"),
    ],
)
async def test_a_reminder_waits_for_the_window_only_if_it_opens_before_the_meeting(
    time_skipping_env: WorkflowEnvironment,
    pool: asyncpg.Pool,
    smtp_server: SmtpServer,
    lead_hours: int,
    window: DeliveryWindow | None,
    waits: bool,
) -> None:
    env = time_skipping_env
    clock = ServerClock(env)
    async with delivering(env, pool, smtp_server, clock) as task_queue:
        settings = ProgrammeSettings(
            coordinator_ids=(COORDINATOR.participant_id,), delivery_window=window,
            meeting_reminder_lead_hours=lead_hours, agenda_request_lead_hours=lead_hours,
        )  # fmt: skip
        handle = await start_relationship(env.client, task_queue, mentee_id=MENTEE.participant_id, settings=settings)
        async with ended_on_failure(handle):
            await activate(handle, MENTEE, NEIGHBOUR, availability=EARLY, meeting_frequency="weekly")
            meeting = (await state_of(handle)).next_meeting
            assert meeting is not None and meeting.starts_at.astimezone(ZoneInfo(BERLIN)).time() == time(7)
            reminded = meeting.starts_at - timedelta(hours=lead_hours)
            expected = local_eight(reminded, BERLIN) if waits else reminded

            await sleep_until(env, reminded + timedelta(minutes=1))
            if waits:
                await eventually(lambda: clock.between(reminded, reminded + timedelta(minutes=10)), "the held try")
                assert not emails(smtp_server, MENTEE, "meeting_reminder")
                await sleep_until(env, expected - timedelta(minutes=1))
                assert not emails(smtp_server, MENTEE, "meeting_reminder")
                await sleep_until(env, expected + timedelta(minutes=1))
            for person, template in ((MENTEE, "meeting_reminder"), (NEIGHBOUR, "meeting_reminder"), (MENTEE, "agenda_request")):
                await eventually(lambda: emails(smtp_server, person, template), f"{template} to {person.participant_id}")
            now = await env.get_current_time()
            assert now < meeting.starts_at and now < expected + timedelta(minutes=5), (now, expected)
            for template in ("meeting_reminder", "agenda_request"):
                rows = await delivered(pool, template)
                assert rows and all(status == "delivered" and attempts == 1 for _, status, attempts in rows), rows
            assert len(emails(smtp_server, MENTEE, "meeting_reminder")) == 1
            await close(handle, MENTEE, NEIGHBOUR)


# -- the activity on its own: where the windows come from, and how it asks to be retried ---------


async def stored(pool: asyncpg.Pool, relationship_id: str, settings: ProgrammeSettings) -> None:
    events = relationship_started(relationship_id, "prog-1", MENTEE.participant_id, settings, datetime(2027, 3, 1, tzinfo=UTC))
    store = EventStoreActivities(PostgresEventStore(pool))
    await store.append_events(AppendRequest(stream_id=relationship_id, expected_version=0, events=events, owner=owner(relationship_id)))


async def test_each_relationship_waits_by_the_window_it_started_with(pool: asyncpg.Pool) -> None:
    night_shift = DeliveryWindow(opens=time(22), closes=time(6))
    await stored(pool, "rel-default", ProgrammeSettings())
    await stored(pool, "rel-any-time", ProgrammeSettings(delivery_window=None))
    await stored(pool, "rel-nights", ProgrammeSettings(delivery_window=night_shift))
    await stored(pool, "rel-older", ProgrammeSettings(delivery_window=night_shift))
    # Started before the setting existed: its stored settings do not name it.
    await pool.execute("UPDATE events SET payload = payload #- '{settings,delivery_window}' WHERE stream_id = 'rel-older'")
    await Directory(pool).create_or_update_programme(
        Programme(programme_id="prog-nights", name="Nights", settings=ProgrammeSettings(delivery_window=night_shift))
    )
    windows = StoredDeliveryWindows(pool)
    digest = digest_relationship_id("prog-nights")
    asked = ["rel-default", "rel-any-time", "rel-nights", "rel-older", "rel-unknown", digest, digest_relationship_id("nope")]
    assert await windows.windows(asked) == {
        "rel-default": DeliveryWindow(),
        "rel-any-time": None,
        "rel-nights": night_shift,
        "rel-older": DeliveryWindow(),  # the default, as its state has it
        digest: night_shift,  # a programme's own message (the digest): the programme's window
    }
    # A relationship's copy never changes: remembered. A programme's may: read each time.
    await pool.execute("DELETE FROM events WHERE stream_id = 'rel-nights'")
    await Directory(pool).create_or_update_programme(Programme(programme_id="prog-nights", name="Nights"))
    assert await windows.windows(["rel-nights", digest]) == {"rel-nights": night_shift, digest: DeliveryWindow()}


def review_request(recipient: Participant) -> Notification:
    return Notification(
        notification_id=f"{uuid.uuid4()}:{recipient.participant_id}", relationship_id="rel-default",
        recipient_id=recipient.participant_id, template="midpoint_review_opened",
        data={"respond_by": "2027-03-20T12:00:00+00:00"},
    )  # fmt: skip


async def test_the_quick_first_try_hands_held_messages_over_and_the_retry_waits_for_the_window(
    pool: asyncpg.Pool, smtp_server: SmtpServer
) -> None:
    await stored(pool, "rel-default", ProgrammeSettings())
    night = datetime(2027, 3, 2, 3, 33, tzinfo=UTC)  # 04:33 in Berlin, 22:33 in New York

    async def at_night() -> datetime:
        return night

    channel = EmailChannel(SmtpConfig(host="127.0.0.1", port=smtp_server.port, sender="M <m@example.org>", security="none"))
    activities = NotificationActivities(
        deliveries=PostgresDeliveryLog(pool), contacts=StaticContacts(PEOPLE), channels=[channel],
        windows=StoredDeliveryWindows(pool), clock=at_night,
    )  # fmt: skip
    concern = Notification(notification_id=f"{uuid.uuid4()}:coord", relationship_id="rel-default",
                           recipient_id=COORDINATOR.participant_id, template="concern_raised", data={"concern_id": "c-1"})  # fmt: skip
    batch = [review_request(MENTEE), review_request(MENTOR), concern]

    local = ActivityEnvironment()
    local.info = dataclasses.replace(local.info, is_local=True)
    with pytest.raises(ApplicationError) as first:
        await local.run(activities.send_notifications, batch)
    # The local first try does not wait: its failure hands the batch to the retrying activity.
    assert first.value.type == "NotificationsHeld" and first.value.non_retryable
    assert [m.rcpt_tos for m in smtp_server.inbox.messages] == [[COORDINATOR.email]]  # the concern went at once

    with pytest.raises(ApplicationError) as retried:
        await ActivityEnvironment().run(activities.send_notifications, batch)
    # The retrying activity is retried when the first window opens: 08:00 in Berlin.
    assert retried.value.type == "NotificationsHeld" and not retried.value.non_retryable
    assert retried.value.next_retry_delay == datetime(2027, 3, 2, 7, 0, tzinfo=UTC) - night
    assert "emp-ber-1" in str(retried.value) and "ada@example.org" not in str(retried.value)
    assert len(smtp_server.inbox.messages) == 1  # the concern is not sent again
