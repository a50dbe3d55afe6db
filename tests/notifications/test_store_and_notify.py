"""`append_events_and_notify`: a batch and the first try of its notifications in one local
activity, against a real PostgreSQL and a real SMTP server on loopback."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.event_store import EventStoreActivities, PostgresEventStore
from activities.notifications import NotificationActivities, StaticContacts
from activities.notifications_delivery_log import PostgresDeliveryLog
from activities.notifications_email import EmailChannel, SmtpConfig
from activities.store_and_notify import StoreAndNotifyActivities
from events.commands import ProposeMatch
from events.decider import decide, start_relationship
from events.model import AnyEvent
from events.notifications import Notification, notifications_for
from events.people import Participant
from events.settings import ProgrammeSettings
from events.state import RelationshipState
from events.decider import evolve, fold
from events.store import AppendAndNotifyRequest, AppendAndNotifyResult, AppendRequest
from tests.support.owners import owner
from tests.support.peers import SmtpServer, free_port

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PEOPLE = [
    Participant(participant_id="mentee-1", display_name="Ada Lovelace", email="ada@example.org", timezone="UTC"),
    Participant(participant_id="mentor-1", display_name="Grace Hopper", email="grace@example.org", timezone="UTC"),
]


def proposal(stream_id: str) -> tuple[AppendRequest, AppendRequest, list[Notification]]:
    """The start of a relationship, then a match proposal and the notifications it causes."""
    settings = ProgrammeSettings(coordinator_ids=("coord-1",))
    started: list[AnyEvent] = start_relationship(stream_id, "prog-1", "mentee-1", settings, NOW)
    state = fold(started, None)
    proposed = decide(state, ProposeMatch(command_id="c-1", actor_id="coord-1", mentor_id="mentor-1"), NOW)
    assert isinstance(proposed, list) and proposed
    notifications: list[Notification] = []
    before: RelationshipState | None = state
    for event in proposed:
        after = evolve(before, event)
        notifications += notifications_for(event, after, before)
        before = after
    assert {n.recipient_id for n in notifications} == {"mentee-1", "mentor-1"}
    first = AppendRequest(stream_id=stream_id, expected_version=0, events=started, owner=owner(stream_id))
    second = AppendRequest(stream_id=stream_id, expected_version=len(started), events=proposed, owner=owner(stream_id))
    return first, second, notifications


def together(
    pool: asyncpg.Pool, smtp_port: int, **options: timedelta
) -> tuple[StoreAndNotifyActivities, PostgresEventStore]:
    store = PostgresEventStore(pool)
    channel = EmailChannel(
        SmtpConfig(host="127.0.0.1", port=smtp_port, sender="Mentoring <m@example.org>", security="none", timeout=5)
    )
    notifications = NotificationActivities(
        deliveries=PostgresDeliveryLog(pool), contacts=StaticContacts(PEOPLE), channels=[channel]
    )
    return StoreAndNotifyActivities(EventStoreActivities(store), notifications, **options), store


async def run(activities: StoreAndNotifyActivities, request: AppendAndNotifyRequest) -> AppendAndNotifyResult:
    result: AppendAndNotifyResult = await ActivityEnvironment().run(activities.append_events_and_notify, request)
    return result


async def test_stores_the_batch_then_sends_its_notifications_once(pool: asyncpg.Pool, smtp_server: SmtpServer) -> None:
    activities, store = together(pool, smtp_server.port)
    first, second, notifications = proposal("rel-1")
    await activities._store.append_events(first)
    request = AppendAndNotifyRequest(append=second, notifications=notifications)

    result = await run(activities, request)

    assert result == AppendAndNotifyResult(notifications_sent=2, notifications_pending=False)
    assert [e.type for e in await store.read_stream("rel-1")] == [e.type for e in first.events + second.events]
    assert sorted(m.rcpt_tos[0] for m in smtp_server.inbox.messages) == ["ada@example.org", "grace@example.org"]
    # A retry of the whole activity (the worker lost before the workflow heard back) stores
    # nothing twice and sends nothing twice.
    assert await run(activities, request) == AppendAndNotifyResult(notifications_sent=0, notifications_pending=False)
    assert len(await store.read_stream("rel-1")) == len(first.events + second.events)
    assert len(smtp_server.inbox.messages) == 2


async def test_a_channel_that_fails_leaves_the_batch_stored_and_the_notifications_pending(
    pool: asyncpg.Pool, smtp_server: SmtpServer
) -> None:
    activities, store = together(pool, free_port())  # nothing listens there
    first, second, notifications = proposal("rel-2")
    await activities._store.append_events(first)

    result = await run(activities, AppendAndNotifyRequest(append=second, notifications=notifications))

    assert result == AppendAndNotifyResult(notifications_sent=0, notifications_pending=True)
    assert len(await store.read_stream("rel-2")) == len(first.events + second.events)
    # What the workflow then does: the retrying activity, once the server is back, sends each once.
    retrying, _ = together(pool, smtp_server.port)
    sent = await ActivityEnvironment().run(retrying._notifications.send_notifications, notifications)
    assert sent == 2 and len(smtp_server.inbox.messages) == 2


async def test_with_no_first_try_it_stores_the_batch_and_leaves_every_notification_to_the_retries(
    pool: asyncpg.Pool, smtp_server: SmtpServer
) -> None:
    # MENTORFLOW_NOTIFY_FIRST_TRY_SECONDS=0: nothing is sent inside the workflow task.
    activities, store = together(pool, smtp_server.port, notify_within=timedelta(0))
    first, second, notifications = proposal("rel-4")
    await activities._store.append_events(first)
    real, tried = activities._notifications, []

    class Watched:  # not even begun: a try cut short at once could still claim a delivery
        async def send_notifications(self, notifications: list[Notification]) -> int:
            tried.append(notifications)
            return await real.send_notifications(notifications)

    activities._notifications = Watched()  # type: ignore[assignment]
    result = await run(activities, AppendAndNotifyRequest(append=second, notifications=notifications))

    assert result == AppendAndNotifyResult(notifications_sent=0, notifications_pending=True)
    assert tried == []
    assert len(await store.read_stream("rel-4")) == len(first.events + second.events)
    assert smtp_server.inbox.messages == []
    assert await pool.fetchval("SELECT count(*) FROM notification_deliveries") == 0
    sent = await ActivityEnvironment().run(real.send_notifications, notifications)
    assert sent == 2 and len(smtp_server.inbox.messages) == 2


async def test_a_conflict_stores_nothing_and_sends_nothing(pool: asyncpg.Pool, smtp_server: SmtpServer) -> None:
    activities, store = together(pool, smtp_server.port)
    first, second, notifications = proposal("rel-3")
    await activities._store.append_events(first)
    # Another writer took the same versions first (a task of this relationship that was
    # never completed): its events, not these, are the stream's.
    theirs = second.model_copy(update={"events": [e.model_copy(update={"event_id": str(uuid.uuid4())}) for e in second.events]})
    await activities._store.append_events(theirs)

    with pytest.raises(ApplicationError) as caught:
        await run(activities, AppendAndNotifyRequest(append=second, notifications=notifications))

    assert caught.value.type == "ConcurrencyConflict" and caught.value.non_retryable
    assert [e.event_id for e in await store.read_stream("rel-3")] == [e.event_id for e in first.events + theirs.events]
    assert smtp_server.inbox.messages == []
    assert await pool.fetchval("SELECT count(*) FROM notification_deliveries") == 0
