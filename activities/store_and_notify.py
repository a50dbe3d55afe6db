"""Store a batch of events, then try its notifications once: one local activity.

A relationship used to run two local activities per command: `append_events`, then
`send_notifications` for what the new events cause. Each local activity is a marker in the
workflow's history and a round trip through the worker (an activity task, then a workflow
activation with its result), so under load the second one cost about a tenth of the worker's
and the server's CPU per command (bench/README.md, the load section). This activity does
both in one, in the same order: the notifications go out only once the events are stored.

Notifications must never hold the relationship up (DOMAIN.md): a channel that fails or takes
longer than `notify_within` (0: no try here at all) does not fail this activity (whose
retries would store the batch again and again); the result says something is still to be
sent, and the workflow hands the notifications to the `send_notifications` activity, which
retries with backoff. The delivery log keeps what already went out from going out again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from temporalio import activity

from activities.event_store import EventStoreActivities
from activities.notifications import NotificationActivities
from events.store import AppendAndNotifyRequest, AppendAndNotifyResult

log = logging.getLogger(__name__)

# Inside the local activity's 30 s start-to-close timeout, with room for the append: a retry
# of the whole activity (store again, then send) is for a lost worker or database, not for
# a slow mail server. A message cut short here keeps its claim in the delivery log until the
# lease runs out, as after a crash (activities/notifications_delivery_log.py).
NOTIFY_WITHIN = timedelta(seconds=20)


class StoreAndNotifyActivities:
    def __init__(
        self, store: EventStoreActivities, notifications: NotificationActivities, *, notify_within: timedelta = NOTIFY_WITHIN
    ) -> None:
        self._store = store
        self._notifications = notifications
        self._notify_within = notify_within.total_seconds()

    @activity.defn(name="append_events_and_notify")
    async def append_events_and_notify(self, request: AppendAndNotifyRequest) -> AppendAndNotifyResult:
        # A conflict or an invalid batch raises as `append_events` does: nothing was stored,
        # so nothing is sent.
        await self._store.append_events(request.append)
        if not self._notify_within:  # no first try here: the retrying activity sends them all
            return AppendAndNotifyResult(notifications_sent=0, notifications_pending=bool(request.notifications))
        try:
            async with asyncio.timeout(self._notify_within):
                sent = await self._notifications.send_notifications(request.notifications)
        except Exception as problem:  # noqa: BLE001 - every failure to send is retried elsewhere
            # The message names channels and counts, never a notification's text.
            reason = "took too long" if isinstance(problem, TimeoutError) else str(problem)
            log.warning(
                "events %d–%d of %s stored; notifications to retry: %s",
                request.append.expected_version + 1,
                request.append.expected_version + len(request.append.events),
                request.append.stream_id,
                reason[:500],
            )
            return AppendAndNotifyResult(notifications_sent=0, notifications_pending=True)
        return AppendAndNotifyResult(notifications_sent=sent, notifications_pending=False)
