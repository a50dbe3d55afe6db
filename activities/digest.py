"""The coordinators' digest, against PostgreSQL: which programmes are due, and each one's
digest built from the read models (events/digest.py decides what is in it).

- `digest_programmes_due`: programmes whose digest is on, that have coordinators, and whose
  last digest (table `coordinator_digests`, migrations/0012_digest.sql) is at least
  `digest_every_days` old.
- `prepare_programme_digest`: first brings the read models up to date (like `mentorflow
  report`, so a digest never misses an event for want of a running follower), then reads
  the programme's `digest_relationships` rows and its mentors' load (`matching_profiles`,
  `mentor_slots`), decides each coordinator's items and returns their notifications. The
  day is recorded when there is something to send, before anything is sent: a retry, a
  restart or a second run that day finds it and sends nothing new, and notifications carry
  an id made of programme, day and coordinator, so the delivery log sends each once even
  when two runs race.

The workflow (workflows/digest.py) hands the notifications to `send_notifications`, the
road every notification takes (activities/notifications.py), which holds each until its
coordinator's daytime.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from temporalio import activity

from activities.directory import Directory
from activities.projections import ProjectionFollower
from events.digest import (
    DigestRow,
    DueProgrammes,
    MentorLoad,
    PreparedDigest,
    ProgrammeDigestRequest,
    coordinator_digests,
    digest_notification,
    is_due,
)
from events.projections import DIGEST
from events.settings import ProgrammeSettings


def day_of(moment: datetime) -> date:
    """The UTC day a digest belongs to."""
    return moment.astimezone(UTC).date()


class DigestActivities:
    def __init__(self, pool: asyncpg.Pool, *, follower: ProjectionFollower | None = None):
        self._pool = pool
        self._directory = Directory(pool)
        self._follower = follower or ProjectionFollower(pool)

    @activity.defn(name="digest_programmes_due")
    async def programmes_due(self, request: DueProgrammes) -> list[str]:
        today = day_of(request.now)
        rows = await self._pool.fetch(
            """SELECT p.programme_id, p.settings, max(d.day) AS last_day
                 FROM programmes p LEFT JOIN coordinator_digests d USING (programme_id)
                GROUP BY p.programme_id, p.settings ORDER BY p.programme_id"""
        )
        due = []
        for row in rows:
            try:
                settings = ProgrammeSettings.model_validate(json.loads(row["settings"]))
            except ValueError:
                # `programme show` names what no longer fits; one such programme must not stop the others.
                activity.logger.warning("programme %s: stored settings do not fit; no digest", row["programme_id"])
                continue
            if is_due(settings, row["last_day"], today):
                due.append(row["programme_id"])
        return due

    @activity.defn(name="prepare_programme_digest")
    async def prepare(self, request: ProgrammeDigestRequest) -> PreparedDigest:
        day = day_of(request.now)
        programme = await self._directory.get_programme(request.programme_id)
        every = programme.settings.digest_every_days if programme is not None else None
        if programme is None or every is None:
            return PreparedDigest(programme_id=request.programme_id, day=day)
        settings = programme.settings
        await self._follower.catch_up()
        since = request.now - timedelta(days=every)
        async with self._pool.acquire() as connection, connection.transaction():
            records = await connection.fetch(
                f"""SELECT {', '.join(DIGEST.columns)} FROM digest_relationships
                     WHERE programme_id = $1 AND (closed_at IS NULL OR closed_at > $2)""",
                request.programme_id,
                since,
            )
            rows = [DigestRow.model_validate(dict(record)) for record in records]
            load = await connection.fetch(
                """SELECT p.participant_id AS mentor_id, p.capacity, count(s.relationship_id) AS taken
                     FROM matching_profiles p
                     LEFT JOIN mentor_slots s ON s.programme_id = p.programme_id AND s.mentor_id = p.participant_id
                    WHERE p.programme_id = $1 AND p.role = 'mentor' AND p.active
                    GROUP BY p.participant_id, p.capacity""",
                request.programme_id,
            )
            mentor_load = [MentorLoad(mentor_id=r["mentor_id"], taken=r["taken"], capacity=r["capacity"]) for r in load]
            digests = coordinator_digests(settings, rows, mentor_load, request.now)
            if not digests:
                return PreparedDigest(programme_id=request.programme_id, day=day)
            recorded = await connection.fetchval(
                """INSERT INTO coordinator_digests (programme_id, day, coordinators, items)
                   VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
                request.programme_id,
                day,
                len(digests),
                sum(len(digest.items) for digest in digests),
            )
        notifications = tuple(
            digest_notification(request.programme_id, programme.name, day, settings, digest) for digest in digests
        )
        # Recorded earlier that day: by this activity's previous try, whose sending may not have
        # finished (the delivery log sends only what is still to go), or by another run.
        return PreparedDigest(
            programme_id=request.programme_id, day=day, notifications=notifications, recorded_before=not recorded
        )

    def all_activities(self) -> list[Callable[..., Any]]:
        return [self.programmes_due, self.prepare]
