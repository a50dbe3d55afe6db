"""Daytime delivery for the notification activity: each relationship's delivery window, and
the clock the activity reads.

The window is a programme setting (`ProgrammeSettings.delivery_window`, the rule itself in
`events/daytime.py`). A relationship copies its programme's settings when it starts, into
its first event, `RelationshipStarted`; the activity reads the window from there, so a
message waits by the rules its relationship runs on, as every other rule does. That copy
never changes, so each relationship's window is looked up once per worker. A message of a
whole programme (the coordinators' digest, whose relationship id is `programme/ID`) waits by
the programme's window as it is now.

The lifetime of the signed links in a relationship's emails (`link_lifetime_days`) is read the
same way, from the same event (`StoredDeliveryWindows.link_lifetimes`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg
from temporalio import activity

from events.daytime import DeliveryWindow
from events.digest import digest_relationship_id
from events.settings import ProgrammeSettings

# When an attempt of the activity runs; `activity_clock` unless a test sets the time.
Clock = Callable[[], Awaitable[datetime]]


async def activity_clock() -> datetime:
    """Now: the worker's clock, or the moment Temporal scheduled this attempt if that is later
    (a retry that waited for a window to open must not find it still closed because the
    worker's clock is a little behind the server's; on the time-skipping test server that
    moment is the server's skipped time)."""
    now = datetime.now(UTC)
    if activity.in_activity():
        scheduled = activity.info().current_attempt_scheduled_time
        if scheduled is not None and scheduled > now:
            return scheduled
    return now


class DeliveryWindows(Protocol):
    async def windows(self, relationship_ids: Sequence[str]) -> dict[str, DeliveryWindow | None]:
        """The delivery window of each relationship among `relationship_ids` that is known
        (None: it delivers at any time); unknown ids are absent."""
        ...


class LinkLifetimes(Protocol):
    async def link_lifetimes(self, relationship_ids: Sequence[str]) -> dict[str, timedelta]:
        """How long the links in each known relationship's emails work; unknown ids are absent."""
        ...


# Relationships started before the setting existed stored settings without it: they run on
# its default, as their state does when it is folded from those events.
_DEFAULT = DeliveryWindow()
_DEFAULT_LIFETIME = timedelta(days=ProgrammeSettings().link_lifetime_days)
# What the notification side needs of a relationship's settings: its window, its links' lifetime.
_Rules = tuple[DeliveryWindow | None, timedelta]


def window_from_settings(settings: Any) -> DeliveryWindow | None:
    """The window in a stored `ProgrammeSettings` document (its JSON object)."""
    if isinstance(settings, str):
        settings = json.loads(settings)
    if not isinstance(settings, dict) or "delivery_window" not in settings:
        return _DEFAULT
    stored = settings["delivery_window"]
    return None if stored is None else DeliveryWindow.model_validate(stored)


def lifetime_from_settings(settings: Any) -> timedelta:
    """The links' lifetime in a stored `ProgrammeSettings` document (its JSON object)."""
    if isinstance(settings, str):
        settings = json.loads(settings)
    days = settings.get("link_lifetime_days") if isinstance(settings, dict) else None
    return timedelta(days=days) if isinstance(days, int) and days > 0 else _DEFAULT_LIFETIME


def _rules(settings: Any) -> _Rules:
    return window_from_settings(settings), lifetime_from_settings(settings)


# What a programme's own messages name where others name their relationship.
_PROGRAMME = digest_relationship_id("")


class StoredDeliveryWindows:
    """Each relationship's window and links' lifetime, from the settings in its
    `RelationshipStarted` event."""

    def __init__(self, pool: asyncpg.Pool, *, remember: int = 10_000):
        self._pool = pool
        self._remember = remember
        self._known: OrderedDict[str, _Rules] = OrderedDict()

    async def windows(self, relationship_ids: Sequence[str]) -> dict[str, DeliveryWindow | None]:
        return {r: rules[0] for r, rules in (await self._rules(relationship_ids)).items()}

    async def link_lifetimes(self, relationship_ids: Sequence[str]) -> dict[str, timedelta]:
        """How long the links in each known relationship's emails work (`link_lifetime_days`)."""
        return {r: rules[1] for r, rules in (await self._rules(relationship_ids)).items()}

    async def _rules(self, relationship_ids: Sequence[str]) -> dict[str, _Rules]:
        wanted = list(dict.fromkeys(relationship_ids))
        missing = [r for r in wanted if r not in self._known]
        if missing:
            rows = await self._pool.fetch(
                """SELECT stream_id, payload->'settings' AS settings FROM events
                    WHERE stream_id = ANY($1::text[]) AND version = 1 AND event_type = 'RelationshipStarted'""",
                missing,
            )
            for row in rows:
                self._known[row["stream_id"]] = _rules(row["settings"])
        found: dict[str, _Rules] = await self._programme_rules(
            [r for r in missing if r.startswith(_PROGRAMME) and r not in self._known]
        )
        for relationship_id in wanted:
            if relationship_id in self._known:
                self._known.move_to_end(relationship_id)
                found[relationship_id] = self._known[relationship_id]
        while len(self._known) > self._remember:
            self._known.popitem(last=False)
        return found

    async def _programme_rules(self, ids: Sequence[str]) -> dict[str, _Rules]:
        """Programme-wide messages: the programme's window now (not remembered: it may change)."""
        if not ids:
            return {}
        rows = await self._pool.fetch(
            "SELECT programme_id, settings FROM programmes WHERE programme_id = ANY($1::text[])",
            [i.removeprefix(_PROGRAMME) for i in ids],
        )
        return {_PROGRAMME + row["programme_id"]: _rules(row["settings"]) for row in rows}
