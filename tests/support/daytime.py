"""Watching daytime delivery on the time-skipping server: the clock the notification activity
reads there, when a zone's window opens, and what the delivery log recorded."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
from temporalio.testing import WorkflowEnvironment


class ServerClock:
    """The time-skipping server's clock, as the notification activity reads it once per
    attempt (`build_worker(notification_clock=...)`); `readings` keeps every reading."""

    def __init__(self, env: WorkflowEnvironment):
        self._env = env
        self.readings: list[datetime] = []

    async def __call__(self) -> datetime:
        now = await self._env.get_current_time()
        self.readings.append(now)
        return now

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        return [reading for reading in self.readings if start < reading < end]


def local_eight(after: datetime, zone: str) -> datetime:
    """The first 08:00 on the clock in `zone` after `after` (the default window opens)."""
    local = after.astimezone(ZoneInfo(zone))
    eight = datetime.combine(local.date(), time(8), tzinfo=ZoneInfo(zone))
    if eight <= local:
        eight = datetime.combine(local.date() + timedelta(days=1), time(8), tzinfo=ZoneInfo(zone))
    return eight.astimezone(UTC)


async def delivered(pool: asyncpg.Pool, template: str) -> list[tuple[str, str, int]]:
    """The delivery log's rows of `template`: recipient, status, attempts (a held message has none)."""
    rows = await pool.fetch(
        "SELECT recipient_id, status, attempts FROM notification_deliveries WHERE template = $1 ORDER BY recipient_id",
        template,
    )
    return [(row["recipient_id"], row["status"], row["attempts"]) for row in rows]
