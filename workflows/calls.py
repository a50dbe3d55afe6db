"""How the Relationship workflow calls its activities: the retry policies, and one helper for
the activities it runs against PostgreSQL (the store, the programme, the mentor pool, the
directory)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

STORE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=10))
# Notifications are first tried as a local activity (one marker in history); if that fails
# they move to a regular activity that retries with backoff for as long as it takes.
NOTIFY_FIRST_TRY = RetryPolicy(maximum_attempts=2)


async def call_activity(
    activity: str,
    argument: Any,
    *,
    summary: str,
    result_type: Any = None,
    timeout: timedelta = timedelta(seconds=30),
    local: bool = True,
) -> Any:
    """An activity against PostgreSQL, retried like the store's calls; its result is
    `result_type`. Local unless said otherwise: one marker in history instead of three events
    and a task."""
    options: dict[str, Any] = {"start_to_close_timeout": timeout, "retry_policy": STORE_RETRY, "summary": summary}
    if local:
        return await workflow.execute_local_activity(activity, argument, result_type=result_type, **options)
    return await workflow.execute_activity(activity, argument, result_type=result_type, **options)
