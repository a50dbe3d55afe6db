"""Matching data in PostgreSQL: profiles, programme matching settings, mentor slots, and
who is already in a relationship (migrations/0004_matching.sql, 0009_mentor_load.sql).

A mentor's load is the number of their slots: one per open relationship holding them,
however it was matched. Capacity is enforced only by the database (reserve_mentor_slot(),
and a round's own reservations under the same per-mentor locks), never counted here.

Profile attributes the programme declares confidential (pairing.settings.AttributeSpec)
are stored encrypted, like confidential text in the event store (activities/data_keys.py):
one data key per programme's profiles (`data_keys` row `profiles/<programme>`), each value
replaced by `{"$enc": …}` with the place (role, participant, attribute) as associated
data. Encryption is deterministic, so importing the same file again still changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from activities.data_keys import ENCRYPTED, DataKeyError, DataKeys, StreamCipher, field_aad
from mentorflow.keyring import Keyring
from pairing.profiles import MenteeProfile, MentorProfile, Role
from pairing.requests import SlotRelease, SlotRequest, SlotReservation
from pairing.settings import MatchingSettings

# SQL conditions on a participant id column (`{id}`), shared by the pool and rounds.
# Someone the directory lists as having left (absent from the directory: not left).
LEFT_THE_DIRECTORY = "EXISTS (SELECT 1 FROM participants d WHERE d.participant_id = {id} AND d.status = 'left')"


def mentee_quota_of(profile: str, default: str) -> str:
    """SQL: a mentee's quota of open relationships: their profile's `mentor_quota`, else `default`."""
    return f"COALESCE(({profile}->>'mentor_quota')::int, {default})"


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


def profiles_key_id(programme_id: str) -> str:
    """The `data_keys` row of a programme's profile attributes (never a relationship id: those have no '/')."""
    return f"profiles/{programme_id}"


def _attribute_aad(programme_id: str, role: str, participant_id: str, name: str) -> bytes:
    return field_aad(profiles_key_id(programme_id), 0, (role, participant_id, "attributes", name))


def _profile_json(
    programme_id: str, profile: MentorProfile | MenteeProfile, confidential: set[str], cipher: StreamCipher | None
) -> str:
    # Fields added since the first profiles were stored are left out while unset, so a
    # profile stored before them reads as unchanged on a re-import.
    data = profile.model_dump(mode="json", exclude={"mentor_quota"} if getattr(profile, "mentor_quota", 0) is None else None)
    attributes = data.pop("attributes", {})
    sealed: dict[str, Any] = {}
    for name, value in attributes.items():
        if name in confidential:
            if cipher is None:
                raise DataKeyError(
                    f"attribute {name!r} is confidential: storing it needs MENTORFLOW_ENCRYPTION_KEYS"
                )
            aad = _attribute_aad(programme_id, profile.role, profile.participant_id, name)
            value = {ENCRYPTED: cipher.seal(json.dumps(value, separators=(",", ":")), aad)}
        sealed[name] = value
    if sealed:
        data["attributes"] = sealed
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def load_profile(
    role: Role, document: str, *, programme_id: str = "", cipher: StreamCipher | None = None
) -> MentorProfile | MenteeProfile:
    """A stored profile. Confidential attributes are decrypted with `cipher`; without one
    they are left out (a reader that is not given the keys sees the rest)."""
    data = json.loads(document)
    attributes = data.get("attributes") or {}
    for name, value in list(attributes.items()):
        if isinstance(value, dict) and isinstance(value.get(ENCRYPTED), str):
            if cipher is None:
                del attributes[name]
                continue
            aad = _attribute_aad(programme_id, role, data.get("participant_id", ""), name)
            try:
                attributes[name] = json.loads(cipher.open(value[ENCRYPTED], aad))
            except Exception:
                raise DataKeyError(f"attribute {name!r} of {role} {data.get('participant_id')} in {programme_id} "
                                   "does not decrypt: the stored value was altered or moved") from None  # fmt: skip
    return MentorProfile.model_validate(data) if role == "mentor" else MenteeProfile.model_validate(data)


class ProfileStore:
    """Mentor and mentee profiles and programme matching settings in PostgreSQL. `keyring`:
    the keys that wrap the data key of confidential attributes (None: such attributes can
    be neither stored nor read)."""

    def __init__(self, pool: asyncpg.Pool, keyring: Keyring | None = None):
        self._pool = pool
        self._keys = DataKeys(pool, keyring)

    async def cipher(self, programme_id: str, *, create: bool = False) -> StreamCipher | None:
        """The cipher of the programme's confidential attributes (None: no keyring, or none stored yet)."""
        if self._keys.keyring is None:
            return None
        key_id = profiles_key_id(programme_id)
        if create:
            return await self._keys.for_append(key_id)
        row = await self._pool.fetchrow("SELECT wrapped_key, kek_id FROM data_keys WHERE stream_id = $1", key_id)
        return None if row is None else self._keys.from_row(key_id, row["wrapped_key"], row["kek_id"])

    async def load(self, programme_id: str, role: Role, documents: Sequence[str]) -> list[MentorProfile | MenteeProfile]:
        """Stored profiles of the programme, confidential attributes decrypted where the keys allow."""
        cipher = await self.cipher(programme_id) if any(ENCRYPTED in d for d in documents) else None
        return [load_profile(role, d, programme_id=programme_id, cipher=cipher) for d in documents]

    async def save_profiles(self, programme_id: str, profiles: Sequence[MentorProfile | MenteeProfile]) -> SaveCounts:
        """Insert or update; a profile equal to the stored one is left alone (updated_at too).
        Slots already held count against a new mentor's capacity: they are keyed by mentor
        id, not by profile."""
        counts = SaveCounts()
        settings = await self.get_settings(programme_id)
        confidential = {name for name, spec in settings.attributes.items() if spec.confidential}
        needs_key = any(name in confidential for p in profiles for name in p.attributes)
        cipher = await self.cipher(programme_id, create=True) if needs_key and self._keys.keyring else None
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
                [_profile_json(programme_id, p, confidential, cipher) for p in batch],
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
        return None if document is None else (await self.load(programme_id, role, [document]))[0]

    async def list_profiles(self, programme_id: str, role: Role) -> list[MentorProfile | MenteeProfile]:
        rows = await self._pool.fetch(
            "SELECT profile FROM matching_profiles WHERE programme_id = $1 AND role = $2 ORDER BY participant_id",
            programme_id, role,
        )  # fmt: skip
        return await self.load(programme_id, role, [row["profile"] for row in rows])

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
