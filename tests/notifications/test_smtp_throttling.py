"""An SMTP server that throttles (issue #16, the Monday-morning timer storm): real providers
answer 421/450/451/452 when too much arrives at once. Those are temporary: the delivery is
retried with backoff and goes out once; a 5xx for the recipient or the message is final.

Against a real aiosmtpd on loopback (tests/support/peers.py), a real PostgreSQL for the delivery
log and, for the burst, a real Temporal dev server retrying the `send_notifications`
activity with the workflow's own retry policy. A throttled attempt asks for its retry at
the policy's backoff spread at random (half to one and a half times it), so that deliveries
throttled together do not all come back together."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from datetime import timedelta
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.notifications import NotificationActivities, StaticContacts
from activities.notifications_delivery_log import PostgresDeliveryLog
from activities.notifications_email import EmailChannel, SmtpConfig
from events.notifications import Notification
from events.people import Participant
from tests.support.peers import Inbox, SmtpServer, free_port
from workflows.calls import NOTIFY_RETRY

SENDER = "Mentoring programme <mentoring@example.org>"


def person(index: int) -> Participant:
    return Participant(participant_id=f"emp-{index}", display_name=f"Person {index}", email=f"p{index}@example.org")


def closed(recipient: Participant, relationship_id: str = "rel-1") -> Notification:
    return Notification(
        notification_id=f"{uuid.uuid4()}:{recipient.participant_id}",
        relationship_id=relationship_id,
        recipient_id=recipient.participant_id,
        template="relationship_closed",
        data={"reason": "term_completed"},
    )


def email_activities(pool: asyncpg.Pool, port: int, people: list[Participant]) -> NotificationActivities:
    channel = EmailChannel(SmtpConfig(host="127.0.0.1", port=port, sender=SENDER, security="none", timeout=5))
    return NotificationActivities(deliveries=PostgresDeliveryLog(pool), contacts=StaticContacts(people), channels=[channel])


async def deliveries(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT recipient_id, status, attempts, last_error FROM notification_deliveries ORDER BY recipient_id")
    return [dict(row) for row in rows]


# -- each answer: temporary or final ----------------------------------------------------------


class Answers(Inbox):
    """Answers the first message with `code` at `stage` (MAIL, RCPT or DATA), then accepts."""

    def __init__(self, stage: str, code: int):
        super().__init__()
        self.stage, self.code, self.answered = stage, code, 0

    def _once(self, stage: str) -> str | None:
        if stage == self.stage and self.answered == 0:
            self.answered += 1
            return f"{self.code} {self.code // 100}.0.0 as the test says"
        return None

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        if (answer := self._once("MAIL")) is not None:
            return answer
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        return self._once("RCPT") or await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self._once("DATA") or await super().handle_DATA(server, session, envelope)


@asynccontextmanager
async def answering(stage: str, code: int) -> AsyncIterator[SmtpServer]:
    """A mail server that answers the first message with `code` at `stage`, then accepts."""
    server = SmtpServer()
    server.inbox = Answers(stage, code)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def retrying() -> ActivityEnvironment:
    """An environment whose activity runs as the retrying `send_notifications` does: under
    NOTIFY_RETRY, which a worker reads from the server (`activity.info().retry_policy`)."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, retry_policy=NOTIFY_RETRY)
    return env


@pytest.mark.parametrize(
    ("stage", "code"),
    [("MAIL", 421), ("RCPT", 450), ("RCPT", 452), ("DATA", 451), ("DATA", 421), ("MAIL", 451), ("DATA", 452)],
)
async def test_an_smtp_4xx_is_retried_and_then_sent_once(pool: asyncpg.Pool, stage: str, code: int) -> None:
    async with answering(stage, code) as server:
        ada = person(1)
        acts = email_activities(pool, server.port, [ada])
        batch = [closed(ada)]
        with pytest.raises(ApplicationError) as caught:
            await retrying().run(acts.send_notifications, batch)
        assert caught.value.type == "NotificationsPending" and not caught.value.non_retryable
        assert str(code) in caught.value.message and "example.org" not in caught.value.message
        # Throttled: the first retry's 5 s, spread over 2.5 to 7.5 s.
        delay = caught.value.next_retry_delay
        assert delay is not None and timedelta(seconds=2.5) <= delay <= timedelta(seconds=7.5)
        [row] = await deliveries(pool)
        assert (row["status"], row["attempts"]) == ("failed", 1) and str(code) in row["last_error"]
        assert server.inbox.messages == []

        assert await ActivityEnvironment().run(acts.send_notifications, batch) == 1
        assert await ActivityEnvironment().run(acts.send_notifications, batch) == 0
        assert [m.rcpt_tos for m in server.inbox.messages] == [["p1@example.org"]]
        [row] = await deliveries(pool)
        assert (row["status"], row["attempts"]) == ("delivered", 2)


async def test_throttled_retries_spread_around_the_backoff_and_other_failures_keep_the_policy(pool: asyncpg.Pool) -> None:
    server = SmtpServer()
    server.inbox.rate_limit = 0  # throttles everything
    await server.start()
    ada = person(1)
    acts = email_activities(pool, server.port, [ada])
    env = retrying()
    delays = []
    try:
        for attempt in (1, 4, 12):
            env.info = dataclasses.replace(env.info, attempt=attempt)
            for _ in range(5):
                with pytest.raises(ApplicationError) as caught:
                    await env.run(acts.send_notifications, [closed(ada)])
                assert caught.value.next_retry_delay is not None
                delays.append((attempt, caught.value.next_retry_delay.total_seconds()))
    finally:
        await server.stop()
    for attempt, seconds in delays:
        base = min(5 * 2 ** (attempt - 1), 600)
        assert 0.5 * base <= seconds <= 1.5 * base
    assert len({seconds for _, seconds in delays}) > 3  # spread, not one moment
    # A server that is down is not throttling: the retry policy's own backoff applies.
    down = email_activities(pool, free_port(), [ada])
    with pytest.raises(ApplicationError) as caught:
        await retrying().run(down.send_notifications, [closed(ada)])
    assert caught.value.type == "NotificationsPending" and caught.value.next_retry_delay is None


@pytest.mark.parametrize(("stage", "code"), [("RCPT", 550), ("RCPT", 553), ("DATA", 554), ("DATA", 552)])
async def test_an_smtp_5xx_for_the_recipient_or_the_message_is_final(pool: asyncpg.Pool, stage: str, code: int) -> None:
    async with answering(stage, code) as server:
        ada = person(1)
        acts = email_activities(pool, server.port, [ada])
        batch = [closed(ada)]
        # Refused for good: recorded, and the activity succeeds (nothing left to retry).
        assert await ActivityEnvironment().run(acts.send_notifications, batch) == 0
        assert await ActivityEnvironment().run(acts.send_notifications, batch) == 0
        [row] = await deliveries(pool)
        assert (row["status"], row["attempts"]) == ("rejected", 1) and str(code) in row["last_error"]
        assert server.inbox.messages == []


# -- a burst against a throttling server, retried by Temporal ---------------------------------

@workflow.defn(name="ThrottledBurst", sandboxed=False)
class ThrottledBurst:
    """Sends one batch of notifications as the Relationship workflow's retrying activity does."""

    @workflow.run
    async def run(self, notifications: list[Notification]) -> int:
        sent: int = await workflow.execute_activity(
            "send_notifications",
            notifications,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=NOTIFY_RETRY,
        )
        return sent


async def test_a_burst_against_a_throttling_server_is_delivered_once_each_with_retries(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    # 40 relationships telling both their people at the same moment, 80 emails, against a
    # server that takes at most 10 a second: most are throttled at first.
    server = SmtpServer()
    server.inbox.rate_limit = 10
    await server.start()
    people = [person(index) for index in range(80)]
    batches = [[closed(people[2 * k], f"rel-{k}"), closed(people[2 * k + 1], f"rel-{k}")] for k in range(40)]
    task_queue = f"throttled-{uuid.uuid4().hex[:8]}"
    acts = email_activities(pool, server.port, people)
    try:
        async with Worker(dev_env.client, task_queue=task_queue, workflows=[ThrottledBurst], activities=[acts.send_notifications]):
            handles = [
                await dev_env.client.start_workflow(
                    ThrottledBurst.run, batch, id=f"burst-{task_queue}-{k}", task_queue=task_queue
                )
                for k, batch in enumerate(batches)
            ]
            results = await asyncio.wait_for(asyncio.gather(*(handle.result() for handle in handles)), 120)
            histories = [await handle.fetch_history() for handle in handles]
    finally:
        await server.stop()

    # Every email arrived exactly once, none failed, none was refused for good.
    expected = {n.notification_id for batch in batches for n in batch}
    arrived = Counter(m.message["X-Mentorflow-Notification"] for m in server.inbox.messages)
    assert set(arrived) == expected and set(arrived.values()) == {1}
    # (Each workflow's result is what its last attempt sent: the rest went out in earlier ones.)
    assert all(0 < sent <= 2 for sent in results)
    rows = await deliveries(pool)
    assert len(rows) == len(expected) and {row["status"] for row in rows} == {"delivered"}
    # The server did throttle, with both kinds of answer, and the deliveries were retried:
    # by Temporal (activity attempts above 1), not failed.
    assert server.inbox.throttled.get(451, 0) > 0 and server.inbox.throttled.get(421, 0) > 0
    assert max(row["attempts"] for row in rows) > 1
    attempts = [
        event.activity_task_started_event_attributes.attempt
        for history in histories
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    assert max(attempts) > 1
    for history in histories:
        types = {event.event_type for event in history.events}
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED in types
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED not in types
