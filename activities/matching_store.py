"""Matching data in PostgreSQL: profiles, programme matching settings, mentor slots, and
who is already in a relationship (migrations/0004_matching.sql, 0009_mentor_load.sql).

A mentor's load is the number of their slots: one per open relationship holding them,
however it was matched. Capacity is enforced only by the database (reserve_mentor_slot(),
and a round's own reservations under the same per-mentor locks), never counted here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from pairing.profiles import MenteeProfile, MentorProfile, Role
from pairing.requests import SlotRelease, SlotRequest, SlotReservation
from pairing.settings import MatchingSettings

# SQL conditions on a participant id column (`{id}`), shared by the pool and rounds.
# Someone the directory lists as having left (absent from the directory: not left).
LEFT_THE_DIRECTORY = "EXISTS (SELECT 1 FROM participants d WHERE d.participant_id = {id} AND d.status = 'left')"


def open_relationships_of(programme: str, mentee: str) -> str:
    """SQL: how many open relationships the mentee has in the programme (see the view)."""
    return f"(SELECT count(*) FROM open_relationships o WHERE o.programme_id = {programme} AND o.mentee_id = {mentee})"


@dataclass
class SaveCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class MenteeStanding:
    """Where a mentee stands, seen from one of their relationships."""

    # The directory lists them as having left.
    left: bool
    # Their other open relationships in the programme.
    other_relationships: int
    # The mentors of those (proposed or matched): never proposed to them again.
    current_mentors: tuple[str, ...]


def _profile_json(profile: MentorProfile | MenteeProfile) -> str:
    return json.dumps(profile.model_dump(mode="json"), separators=(",", ":"), sort_keys=True)


def load_profile(role: Role, document: str) -> MentorProfile | MenteeProfile:
    data = json.loads(document)
    return MentorProfile.model_validate(data) if role == "mentor" else MenteeProfile.model_validate(data)


class ProfileStore:
    """Mentor and mentee profiles and programme matching settings in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def save_profiles(self, programme_id: str, profiles: Sequence[MentorProfile | MenteeProfile]) -> SaveCounts:
        """Insert or update; a profile equal to the stored one is left alone (updated_at too).
        Slots already held count against a new mentor's capacity: they are keyed by mentor
        id, not by profile."""
        counts = SaveCounts()
        for start in range(0, len(profiles), 1000):
            batch = profiles[start : start + 1000]
            rows = await self._pool.fetch(
                """INSERT INTO matching_profiles AS p (programme_id, role, participant_id, profile, capacity, active)
                   SELECT $1, role, participant_id, profile, capacity, active
                     FROM unnest($2::text[], $3::text[], $4::jsonb[], $5::int[], $6::bool[])
                          AS t(role, participant_id, profile, capacity, active)
                   ON CONFLICT (programme_id, role, participant_id) DO UPDATE
                      SET profile = EXCLUDED.profile, capacity = EXCLUDED.capacity,
                          active = EXCLUDED.active, updated_at = now()
                    WHERE (p.profile, p.capacity, p.active) IS DISTINCT FROM
                          (EXCLUDED.profile, EXCLUDED.capacity, EXCLUDED.active)
                   RETURNING (xmax = 0) AS inserted""",
                programme_id,
                [p.role for p in batch],
                [p.participant_id for p in batch],
                [_profile_json(p) for p in batch],
                [p.capacity if isinstance(p, MentorProfile) else 0 for p in batch],
                [p.active for p in batch],
            )
            inserted = sum(1 for row in rows if row["inserted"])
            counts.inserted += inserted
            counts.updated += len(rows) - inserted
            counts.unchanged += len(batch) - len(rows)
        return counts

    async def get_profile(self, programme_id: str, role: Role, participant_id: str) -> MentorProfile | MenteeProfile | None:
        document = await self._pool.fetchval(
            "SELECT profile FROM matching_profiles WHERE programme_id = $1 AND role = $2 AND participant_id = $3",
            programme_id, role, participant_id,
        )  # fmt: skip
        return None if document is None else load_profile(role, document)

    async def list_profiles(self, programme_id: str, role: Role) -> list[MentorProfile | MenteeProfile]:
        rows = await self._pool.fetch(
            "SELECT profile FROM matching_profiles WHERE programme_id = $1 AND role = $2 ORDER BY participant_id",
            programme_id, role,
        )  # fmt: skip
        return [load_profile(role, row["profile"]) for row in rows]

    async def slots_taken(self, programme_id: str) -> dict[str, int]:
        """Each mentor's load: their open relationships in the programme, however matched
        (mentors without a profile too)."""
        rows = await self._pool.fetch(
            "SELECT mentor_id, count(*) AS taken FROM mentor_slots WHERE programme_id = $1 GROUP BY mentor_id",
            programme_id,
        )
        return {row["mentor_id"]: row["taken"] for row in rows}

    async def mentee_standing(self, programme_id: str, mentee_id: str, relationship_id: str) -> MenteeStanding:
        row = await self._pool.fetchrow(
            f"""SELECT {LEFT_THE_DIRECTORY.format(id="$2")} AS left,
                       (SELECT count(*) FROM open_relationships o
                         WHERE o.programme_id = $1 AND o.mentee_id = $2 AND o.relationship_id <> $3) AS others,
                       ARRAY(SELECT s.mentor_id FROM mentor_slots s
                              WHERE s.programme_id = $1 AND s.mentee_id = $2 AND s.relationship_id <> $3
                              ORDER BY s.mentor_id) AS mentors""",
            programme_id, mentee_id, relationship_id,
        )  # fmt: skip
        assert row is not None
        return MenteeStanding(left=row["left"], other_relationships=row["others"], current_mentors=tuple(row["mentors"]))

    async def get_settings(self, programme_id: str, connection: asyncpg.Connection | None = None) -> MatchingSettings:
        document = await (connection or self._pool).fetchval(
            "SELECT settings FROM matching_settings WHERE programme_id = $1", programme_id
        )
        return MatchingSettings() if document is None else MatchingSettings.model_validate_json(document)

    async def save_settings(self, programme_id: str, settings: MatchingSettings) -> bool:
        """Store the programme's matching settings; returns False when nothing changed."""
        status = await self._pool.execute(
            """INSERT INTO matching_settings AS s (programme_id, settings) VALUES ($1, $2::jsonb)
               ON CONFLICT (programme_id) DO UPDATE SET settings = EXCLUDED.settings, updated_at = now()
                WHERE s.settings IS DISTINCT FROM EXCLUDED.settings""",
            programme_id,
            settings.model_dump_json(),
        )
        return bool(status.endswith(" 1"))


class MentorSlots:
    """Mentor capacity, reserved atomically (reserve_mentor_slot in 0009_mentor_load.sql)."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def reserve(self, request: SlotRequest) -> SlotReservation:
        row = await self._pool.fetchrow(
            "SELECT outcome, released_mentor_id FROM reserve_mentor_slot($1, $2, $3, $4)",
            request.programme_id, request.relationship_id, request.mentor_id, request.mentee_id,
        )  # fmt: skip
        assert row is not None
        return SlotReservation(
            outcome=row["outcome"], mentor_id=request.mentor_id, released_mentor_id=row["released_mentor_id"]
        )

    async def release(self, request: SlotRelease) -> str | None:
        """Returns the mentor whose slot was given back, or None if the relationship held none."""
        released: str | None = await self._pool.fetchval(
            """DELETE FROM mentor_slots
                WHERE programme_id = $1 AND relationship_id = $2 AND ($3::text IS NULL OR mentor_id = $3)
               RETURNING mentor_id""",
            request.programme_id, request.relationship_id, request.mentor_id,
        )  # fmt: skip
        return released

    async def held_by(self, programme_id: str, relationship_id: str) -> str | None:
        mentor: str | None = await self._pool.fetchval(
            "SELECT mentor_id FROM mentor_slots WHERE programme_id = $1 AND relationship_id = $2",
            programme_id, relationship_id,
        )  # fmt: skip
        return mentor
