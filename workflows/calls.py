"""How the Relationship workflow calls its activities: the retry policies, and one helper for
the activities it runs against PostgreSQL (the store, the programme, the mentor pool, the
directory)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.activity_refs import SEND_NOTIFICATIONS, ActivityRef

if TYPE_CHECKING:
    from events.notifications import Notification

A = TypeVar("A")
R = TypeVar("R")

STORE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=10))
# Notifications are first tried as a local activity (one marker in history); if that fails
# they move to a regular activity that retries with backoff for as long as it takes.
NOTIFY_FIRST_TRY = RetryPolicy(maximum_attempts=2)


async def call(ref: ActivityRef[A, R], argument: A, **options: Any) -> R:
    """The activity `ref` as a regular activity (`options` as for `workflow.execute_activity`)."""
    result: R = await workflow.execute_activity(ref.name, argument, result_type=ref.result, **options)
    return result


async def call_local(ref: ActivityRef[A, R], argument: A, **options: Any) -> R:
    """The activity `ref` as a local activity (`options` as for `workflow.execute_local_activity`)."""
    result: R = await workflow.execute_local_activity(ref.name, argument, result_type=ref.result, **options)
    return result


async def call_activity(
    ref: ActivityRef[A, R],
    argument: A,
    *,
    summary: str,
    timeout: timedelta = timedelta(seconds=30),
    local: bool = True,
) -> R:
    """An activity against PostgreSQL, retried like the store's calls. Local unless said
    otherwise: one marker in history instead of three events and a task."""
    options: dict[str, Any] = {"start_to_close_timeout": timeout, "retry_policy": STORE_RETRY, "summary": summary}
    return await (call_local if local else call)(ref, argument, **options)


async def send_retrying(notifications: list[Notification], *, summary: str, **options: Any) -> int:
    """`send_notifications` as the retrying activity: with NOTIFY_RETRY's backoff until all is
    sent (the delivery log keeps what went out from going again), each message held for its
    recipient's daytime when it is not urgent (the activity's retry waits for the window)."""
    return await call(
        SEND_NOTIFICATIONS,
        notifications,
        start_to_close_timeout=timedelta(minutes=1),
        retry_policy=NOTIFY_RETRY,
        summary=summary,
        **options,
    )
