"""The `CoordinatorDigests` workflow, started every day by one Temporal Schedule: which
programmes are due for their coordinators' digest, and each one's digest sent.

One run asks `digest_programmes_due`, then per due programme `prepare_programme_digest`
(which decides the items and records the day) and hands all of that programme's
notifications to `send_notifications` at once: the activity every notification goes out
through, which holds each digest until its coordinator's daytime begins (events/daytime.py,
the programme's `delivery_window`) and retries with backoff like a relationship's
notifications. Programmes go side by side: one whose digest cannot be prepared or sent is
reported in the result and does not hold up the others.

`ensure_digest_schedule` creates the schedule when a worker starts; several workers
starting at once create it once (the others find it there).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
)
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.service import RPCError

with workflow.unsafe.imports_passed_through():
    from events.digest import DigestRunResult, DueProgrammes, PreparedDigest, ProgrammeDigestRequest
    from events.notifications import Notification

from workflows.activity_refs import DIGEST_PROGRAMMES_DUE, PREPARE_PROGRAMME_DIGEST
from workflows.calls import call, send_retrying
from workflows.patches import DIGEST_HELD_BY_THE_NOTIFICATION_ACTIVITY

WORKFLOW_NAME = "CoordinatorDigests"
SCHEDULE_ID = "coordinator-digests"
# Any hour would do: each message then waits for its coordinator's own daytime (the digest is
# not urgent, events/daytime.py), and at 06:00 UTC Europe's is about to begin.
RUN_AT_HOUR_UTC = 6

log = logging.getLogger("mentorflow.digest")

# Like the store's calls (workflows/calls.py), but bounded: a programme whose digest cannot be prepared (its stored
# settings no longer fit, say) is reported in the result instead of holding the run forever.
PREPARE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1), maximum_attempts=10)
# How long one digest may take to go out: held until its coordinator's daytime (a window opens
# at least once a day: the activity's retry waits for it, `next_retry_delay`, and the retry
# policy sets no maximum of attempts), then up to 20 hours of retries. Past it, it is given
# up (the day stays recorded, so it is not sent again): a digest days late is no digest.
SEND_FOR_AT_MOST = timedelta(days=1, hours=20)
# A run prepares (minutes), then sends for up to SEND_FOR_AT_MOST; the rest is to spare.
RUN_FOR_AT_MOST = timedelta(days=3)


@workflow.defn(name=WORKFLOW_NAME)
class CoordinatorDigests:
    @workflow.run
    async def run(self) -> DigestRunResult:
        now = workflow.now()
        due = await call(
            DIGEST_PROGRAMMES_DUE,
            DueProgrammes(now=now),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=PREPARE_RETRY,
            summary="Which programmes are due for a digest",
        )
        sent = await asyncio.gather(*(self._one(programme_id, now) for programme_id in due))
        failed = tuple(programme_id for programme_id, count in zip(due, sent, strict=True) if count is None)
        return DigestRunResult(programmes_due=len(due), digests=sum(count or 0 for count in sent), failed_programmes=failed)

    async def _one(self, programme_id: str, now: datetime) -> int | None:
        """How many coordinators were sent this programme's digest; None when it failed."""
        try:
            prepared = await call(
                PREPARE_PROGRAMME_DIGEST,
                ProgrammeDigestRequest(programme_id=programme_id, now=now),
                # It first brings the read models up to date, which after a rebuild can take a while.
                start_to_close_timeout=timedelta(minutes=10),
                retry_policy=PREPARE_RETRY,
                summary=f"Prepare the digest of {programme_id}",
            )
            if not prepared.notifications:
                return 0
            if workflow.patched(DIGEST_HELD_BY_THE_NOTIFICATION_ACTIVITY):
                await self._send(programme_id, list(prepared.notifications))
            else:
                await self._send_in_waves(programme_id, prepared, now)
        except ActivityError as error:
            workflow.logger.warning("digest of programme %s failed: %s", programme_id, error.cause or error)
            return None
        return len(prepared.notifications)

    async def _send(self, programme_id: str, notifications: list[Notification]) -> None:
        await send_retrying(
            notifications, summary=f"Send the digest of {programme_id}", schedule_to_close_timeout=SEND_FOR_AT_MOST
        )

    async def _send_in_waves(self, programme_id: str, prepared: PreparedDigest, now: datetime) -> None:
        """Runs begun before DIGEST_HELD_BY_THE_NOTIFICATION_ACTIVITY: they waited on a timer
        of their own until each coordinator's daytime (`send_at`), then sent that wave. Kept so
        that they replay; it goes with the patch (docs/deploying.md)."""
        waves: dict[datetime, list[Notification]] = {}
        for notification in prepared.notifications:
            waves.setdefault(prepared.send_at.get(notification.notification_id, now), []).append(notification)
        outcomes = await asyncio.gather(
            *(self._wave(programme_id, at, wave) for at, wave in sorted(waves.items())), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _wave(self, programme_id: str, at: datetime, notifications: list[Notification]) -> None:
        wait = at - workflow.now()
        if wait > timedelta(0):
            await workflow.sleep(wait, summary=f"Wait for the coordinators' daytime ({programme_id})")
        await self._send(programme_id, notifications)


async def ensure_digest_schedule(client: Client, task_queue: str) -> str:
    """Create the daily schedule unless it exists: `created`, `existed`, or `unavailable`
    (the server refused; logged, and the worker runs on without it: the time-skipping test
    server, for one, has no schedules)."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            WORKFLOW_NAME,
            id=f"{SCHEDULE_ID}/run",
            task_queue=task_queue,
            execution_timeout=RUN_FOR_AT_MOST,
        ),
        spec=ScheduleSpec(calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(RUN_AT_HOUR_UTC)])]),
        # A run lasts as long as its digests are held for their coordinators' daytime and
        # retried, up to SEND_FOR_AT_MOST (more than a day): with the default policy (skip), such
        # a run would cost a programme the next day's run. Runs may overlap: each sends only what
        # is due and not recorded yet, and a digest's id has the delivery log send it once.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.ALLOW_ALL, catchup_window=timedelta(days=1)),
    )
    try:
        await client.create_schedule(SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        return "existed"
    except RPCError as error:
        log.warning("the coordinators' digest schedule could not be created (%s): no digests from here", error)
        return "unavailable"
    log.info("created the schedule %s: coordinators' digests every day at %02d:00 UTC", SCHEDULE_ID, RUN_AT_HOUR_UTC)
    return "created"
