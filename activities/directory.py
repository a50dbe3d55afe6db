"""The directory on PostgreSQL: programmes with their settings, and participants.

`Directory` is the repository (used by the CLI and by the activities); every write goes
through the pydantic models of `events.people` and `events.settings`, so what is stored
is always something the workflow can load. `DirectoryActivities` is what workflows call:
a relationship loads its programme's settings when it starts and checks its participants
(a participant who left closes the relationship).

Only this module and the `participants` table see personal data. Error messages name the
field that is wrong, never the value that was given (a bad time zone is the exception:
naming it is what makes the message useful, and it is not a secret).
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Literal

import asyncpg
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from events.people import ChannelAddress, ChannelKind, Participant, ParticipantStatus, Programme
from events.settings import ProgrammeRequest, ProgrammeSettings

SaveOutcome = Literal["created", "updated", "unchanged"]

CHANNEL_KINDS: tuple[ChannelKind, ...] = ("email", "webhook", "log")
# A separator that cannot occur in a channel kind, an email address or a template name,
# so "email; webhook=https://…" fits in one CSV cell.
LIST_SEPARATOR = ";"


class DirectoryError(ValueError):
    """Input the directory refuses; the message names the field (and never echoes personal data)."""


class UnknownParticipant(LookupError):
    def __init__(self, participant_id: str):
        super().__init__(f"participant {participant_id!r} is not in the directory")
        self.participant_id = participant_id


class StoredProgrammeInvalid(RuntimeError):
    """A stored programme no longer fits the settings model (a setting was renamed or removed)."""


def describe_validation_error(error: ValidationError, *, prefix: str = "") -> str:
    """Every problem as `field: message`, joined by `; `, without the submitted values."""
    problems = []
    for detail in error.errors():
        location = ".".join(str(part) for part in (prefix, *detail["loc"]) if part != "") or "value"
        message = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "string_pattern_mismatch":
            # The regular expression means nothing to the person who typed the value.
            field = str(detail["loc"][-1]) if detail["loc"] else ""
            if field == "email":
                message = "not an email address"
            elif field.endswith("_id"):
                message = "use letters, digits and . _ : @ - only, starting with a letter or digit"
        problems.append(f"{location}: {message}")
    return "; ".join(problems)


# -- checks the models cannot make on their own -------------------------------------------


@cache
def _timezones_by_lowercase_name() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def check_timezone(name: str) -> str:
    """`name` if it is a time zone in the IANA database, else a DirectoryError naming it."""
    try:
        zoneinfo.ZoneInfo(name)
        return name
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    hint = " (e.g. Europe/Berlin, America/New_York or UTC)"
    suggestion = _timezones_by_lowercase_name().get(name.strip().lower())
    if suggestion:
        hint = f"; did you mean {suggestion!r}?"
    raise DirectoryError(f"timezone: {name!r} is not a time zone in the IANA database{hint}")


def check_channels(channels: Iterable[ChannelAddress]) -> None:
    for index, channel in enumerate(channels):
        where = f"channels.{index}"
        if channel.kind == "webhook" and not (channel.address or "").startswith(("https://", "http://")):
            raise DirectoryError(f"{where}: a webhook channel needs an http(s) URL, e.g. webhook=https://example.com/hook")
        if channel.kind == "email" and channel.address is not None and "@" not in channel.address:
            raise DirectoryError(f"{where}: an email channel's address must be an email address")
        if channel.kind == "log" and channel.address is not None:
            raise DirectoryError(f"{where}: the log channel takes no address")


def check_participant(participant: Participant) -> Participant:
    """The checks beyond the model's own: a real time zone, usable channels."""
    check_timezone(participant.timezone)
    check_channels(participant.channels)
    return participant


def parse_channel(text: str) -> ChannelAddress:
    """`email`, `email=someone@example.com`, `webhook=https://…` or `log`."""
    kind, has_address, address = text.strip().partition("=")
    kind = kind.strip()
    if kind not in CHANNEL_KINDS:
        raise DirectoryError(f"channels: unknown channel {kind!r}; use one of {', '.join(CHANNEL_KINDS)} (webhook=URL)")
    return ChannelAddress.model_validate({"kind": kind, "address": address.strip() if has_address else None})


def participant_from_record(record: Mapping[str, Any]) -> Participant:
    """A participant from a loosely written record: a CSV row, a JSON or YAML object.

    Blank values count as not given. `channels` and `muted_templates` may be lists or one
    string separated by `;` (a CSV cell); a channel may be written `webhook=URL`. A record
    without `status` leaves the stored status alone when it is saved (see `Directory`).
    """
    fields: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, str):
            value = value.strip()
        if value is None or value == "":
            continue
        fields[str(key)] = value
    try:
        for key in ("channels", "muted_templates"):
            if isinstance(fields.get(key), str):
                fields[key] = [part.strip() for part in fields[key].split(LIST_SEPARATOR) if part.strip()]
        if isinstance(fields.get("channels"), list):
            fields["channels"] = [parse_channel(c) if isinstance(c, str) else c for c in fields["channels"]]
        if "left_at" in fields and fields.get("status") != "left":
            raise DirectoryError("left_at: only allowed together with status: left")
        participant = Participant.model_validate(fields)
    except ValidationError as error:
        raise DirectoryError(describe_validation_error(error)) from None
    return check_participant(participant)


def programme_from_data(data: Any) -> Programme:
    """A programme from a parsed document `{programme_id, name, settings: {...}}`."""
    if not isinstance(data, Mapping):
        raise DirectoryError("a programme is an object with programme_id, name and settings")
    try:
        return Programme.model_validate(data)
    except ValidationError as error:
        raise DirectoryError(describe_validation_error(error)) from None


# -- the repository ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgrammeListing:
    programme_id: str
    name: str
    created_at: datetime
    updated_at: datetime


@dataclass
class SaveCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, outcome: SaveOutcome) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


_PARTICIPANT_COLUMNS = "participant_id, display_name, email, timezone, channels, muted_templates, status, left_at"


def _participant(row: asyncpg.Record) -> Participant:
    return Participant.model_validate(
        {
            "participant_id": row["participant_id"],
            "display_name": row["display_name"],
            "email": row["email"],
            "timezone": row["timezone"],
            "channels": json.loads(row["channels"]),
            "muted_templates": row["muted_templates"],
            "status": row["status"],
            "left_at": row["left_at"],
        }
    )


def merge_participant(stored: Participant | None, incoming: Participant, now: datetime) -> Participant | None:
    """What to store for `incoming`, given what is stored; None when nothing would change.

    Leaving is sticky: a record that does not say `status` keeps the stored one, so
    re-importing an old HR export never brings back someone who left. A record that says
    `status: left` keeps the first recorded `left_at` unless it gives its own. Mutes are
    sticky the same way: a record without `muted_templates` keeps what the person muted
    (from an email's link, say); one that gives them replaces them.
    """
    if "status" in incoming.model_fields_set:
        status = incoming.status
        if status == "left":
            left_at = incoming.left_at or (stored.left_at if stored and stored.status == "left" else None) or now
        else:
            left_at = None
    elif stored is not None:
        status, left_at = stored.status, stored.left_at
    else:
        status, left_at = "active", None
    update: dict[str, Any] = {"status": status, "left_at": left_at}
    if stored is not None and "muted_templates" not in incoming.model_fields_set:
        update["muted_templates"] = stored.muted_templates
    merged = incoming.model_copy(update=update)
    return None if merged == stored else merged


class Directory:
    """Programmes and participants in PostgreSQL (migrations/0002_directory.sql)."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    # -- programmes

    async def create_or_update_programme(self, programme: Programme) -> SaveOutcome:
        """Store a programme; saving the same programme again changes nothing (not even updated_at)."""
        settings = json.dumps(programme.settings.model_dump(mode="json"))
        async with self._pool.acquire() as connection, connection.transaction():
            # Insert-or-nothing first, then a conditional update: two concurrent saves of a
            # new programme cannot both fail, and an unchanged one is not rewritten.
            if await connection.fetchval(
                """INSERT INTO programmes (programme_id, name, settings) VALUES ($1, $2, $3::jsonb)
                   ON CONFLICT (programme_id) DO NOTHING RETURNING true""",
                programme.programme_id, programme.name, settings,
            ):  # fmt: skip
                return "created"
            changed = await connection.fetchval(
                """UPDATE programmes SET name = $2, settings = $3::jsonb, updated_at = now()
                    WHERE programme_id = $1 AND (name, settings) IS DISTINCT FROM ($2, $3::jsonb)
                   RETURNING true""",
                programme.programme_id, programme.name, settings,
            )  # fmt: skip
            return "updated" if changed else "unchanged"

    async def get_programme(self, programme_id: str) -> Programme | None:
        row = await self._pool.fetchrow(
            "SELECT programme_id, name, settings FROM programmes WHERE programme_id = $1", programme_id
        )
        if row is None:
            return None
        try:
            settings = ProgrammeSettings.model_validate(json.loads(row["settings"]))
        except ValidationError as error:
            raise StoredProgrammeInvalid(
                f"the stored settings of programme {programme_id!r} no longer fit the settings model "
                f"({describe_validation_error(error, prefix='settings')}); save the programme again"
            ) from None
        return Programme(programme_id=row["programme_id"], name=row["name"], settings=settings)

    async def list_programmes(self) -> list[ProgrammeListing]:
        rows = await self._pool.fetch(
            "SELECT programme_id, name, created_at, updated_at FROM programmes ORDER BY programme_id"
        )
        return [ProgrammeListing(**dict(row)) for row in rows]

    # -- participants

    async def upsert_participant(self, participant: Participant) -> SaveOutcome:
        counts = await self.upsert_participants([participant])
        return "created" if counts.created else "updated" if counts.updated else "unchanged"

    async def upsert_participants(
        self,
        participants: Sequence[Participant],
        *,
        batch_size: int = 500,
        on_batch: Callable[[int], None] | None = None,
    ) -> SaveCounts:
        """Create or update participants in batches (one transaction each); unchanged rows are not rewritten.

        Raises DirectoryError before writing anything if one is invalid or an id repeats.
        `on_batch(n)` is called after each batch with the number of participants it held.
        """
        seen: set[str] = set()
        for participant in participants:
            try:
                check_participant(participant)
            except DirectoryError as error:
                raise DirectoryError(f"participant {participant.participant_id!r}: {error}") from None
            if participant.participant_id in seen:
                raise DirectoryError(f"participant {participant.participant_id!r} appears more than once")
            seen.add(participant.participant_id)
        counts = SaveCounts()
        for start in range(0, len(participants), batch_size):
            batch = participants[start : start + batch_size]
            await self._upsert_batch(batch, counts)
            if on_batch is not None:
                on_batch(len(batch))
        return counts

    async def _upsert_batch(self, batch: Sequence[Participant], counts: SaveCounts) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            now: datetime = await connection.fetchval("SELECT now()")
            # Locked, so that a concurrent `people leave` cannot be undone by a merge
            # computed from the row as it was before.
            rows = await connection.fetch(
                f"SELECT {_PARTICIPANT_COLUMNS} FROM participants WHERE participant_id = ANY($1::text[]) FOR UPDATE",
                [participant.participant_id for participant in batch],
            )
            stored = {row["participant_id"]: _participant(row) for row in rows}
            writes = []
            for participant in batch:
                before = stored.get(participant.participant_id)
                merged = merge_participant(before, participant, now)
                if merged is None:
                    counts.add("unchanged")
                    continue
                counts.add("updated" if before else "created")
                writes.append(
                    (
                        merged.participant_id,
                        merged.display_name,
                        merged.email,
                        merged.timezone,
                        json.dumps([channel.model_dump(mode="json", exclude_none=True) for channel in merged.channels]),
                        list(merged.muted_templates),
                        merged.status,
                        merged.left_at,
                    )
                )
            if writes:
                await connection.executemany(
                    f"""INSERT INTO participants ({_PARTICIPANT_COLUMNS})
                        VALUES ($1, $2, $3, $4, $5::jsonb, $6::text[], $7, $8)
                        ON CONFLICT (participant_id) DO UPDATE SET
                            display_name = EXCLUDED.display_name, email = EXCLUDED.email,
                            timezone = EXCLUDED.timezone, channels = EXCLUDED.channels,
                            muted_templates = EXCLUDED.muted_templates, status = EXCLUDED.status,
                            left_at = EXCLUDED.left_at, updated_at = now()""",
                    writes,
                )

    async def get_participant(self, participant_id: str) -> Participant | None:
        found = await self.get_participants([participant_id])
        return found[0] if found else None

    async def get_participants(self, participant_ids: Sequence[str]) -> list[Participant]:
        """The known ones among `participant_ids`, in that order (unknown ids are simply absent)."""
        if not participant_ids:
            return []
        rows = await self._pool.fetch(
            f"SELECT {_PARTICIPANT_COLUMNS} FROM participants WHERE participant_id = ANY($1::text[])",
            list(participant_ids),
        )
        by_id = {row["participant_id"]: _participant(row) for row in rows}
        return [by_id[i] for i in dict.fromkeys(participant_ids) if i in by_id]

    async def check_participants(self, participant_ids: Sequence[str]) -> list[ParticipantStatus]:
        """One status per distinct id, in order; reads only ids and status, no personal data."""
        if not participant_ids:
            return []
        rows = await self._pool.fetch(
            "SELECT participant_id, status FROM participants WHERE participant_id = ANY($1::text[])",
            list(participant_ids),
        )
        status = {row["participant_id"]: row["status"] for row in rows}
        return [
            ParticipantStatus(participant_id=i, known=i in status, active=status.get(i) == "active")
            for i in dict.fromkeys(participant_ids)
        ]

    async def set_muted(self, participant_id: str, template: str, muted: bool) -> bool:
        """Mute (or unmute) one kind of message for one person, keeping their other mutes;
        whether this changed anything (an email's "Stop getting these emails", docs/people.md)."""
        changed = await self._pool.fetchval(
            """UPDATE participants SET updated_at = now(), muted_templates = CASE WHEN $3
                      THEN array_append(muted_templates, $2) ELSE array_remove(muted_templates, $2) END
                WHERE participant_id = $1 AND ($2 = ANY(muted_templates)) <> $3 RETURNING true""",
            participant_id, template, muted,
        )  # fmt: skip
        return bool(changed)

    async def mark_left(self, participant_id: str, at: datetime | None = None) -> tuple[Participant, bool]:
        """Record that a participant left; returns them and whether this call changed anything.

        Leaving twice keeps the first date.
        """
        row = await self._pool.fetchrow(
            f"""UPDATE participants SET status = 'left', left_at = coalesce($2, now()), updated_at = now()
                 WHERE participant_id = $1 AND status <> 'left'
                RETURNING {_PARTICIPANT_COLUMNS}""",
            participant_id,
            at,
        )
        if row is not None:
            return _participant(row), True
        participant = await self.get_participant(participant_id)
        if participant is None:
            raise UnknownParticipant(participant_id)
        return participant, False


# -- activities ----------------------------------------------------------------------------


class DirectoryActivities:
    """The directory as workflows see it; registered as bound methods on the worker."""

    def __init__(self, directory: Directory, *, trust_start_settings: bool = False):
        self._directory = directory
        self._trust_start_settings = trust_start_settings

    @activity.defn(name="load_programme")
    async def load_programme(self, request: ProgrammeRequest | str) -> ProgrammeSettings:
        """The settings a relationship copies when it starts: its programme's. Settings its
        starter passed must be the programme's (or the worker trusts them: tests only).
        A bare programme id is what relationships started before that check ask with."""
        if isinstance(request, str):
            request = ProgrammeRequest(programme_id=request)
        if request.given is not None and self._trust_start_settings:
            return request.given
        programme_id = request.programme_id
        try:
            programme = await self._directory.get_programme(programme_id)
        except StoredProgrammeInvalid as error:
            raise ApplicationError(str(error), type="InvalidProgrammeSettings", non_retryable=True) from None
        if programme is None:
            # Retrying cannot make a programme appear that nobody created; failing fast
            # lets the workflow close with a reason instead of waiting silently.
            raise ApplicationError(
                f"programme {programme_id!r} does not exist; create it with `mentorflow programme create`",
                type="UnknownProgramme",
                non_retryable=True,
            )
        if request.given is not None and request.given != programme.settings:
            raise ApplicationError(
                f"the settings given at start are not programme {programme_id!r}'s: a relationship takes its rules "
                "from its programme (change them with `mentorflow programme`), not from whoever starts it",
                type="SettingsNotFromProgramme",
                non_retryable=True,
            )
        return programme.settings

    @activity.defn(name="check_participants")
    async def check_participants(self, participant_ids: list[str]) -> list[ParticipantStatus]:
        """Known and active, per distinct id: ids and flags only, safe for workflow history."""
        return await self._directory.check_participants(participant_ids)

