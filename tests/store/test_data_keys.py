"""Per-relationship data keys in the event store: sealed on append, opened on read, idempotent
retries, race-safe key creation, and `forget` (unknown, running, legacy plain text, twice)."""

from __future__ import annotations

import asyncio
import json
import typing
from typing import Any

import asyncpg
import pytest

from activities.data_keys import FORGOTTEN, SEALED, DataKeyError, locations
from activities.event_store import PostgresEventStore
from events.model import CONFIDENTIAL_PATHS, EVENT_TYPES, AnyEvent, ConcernRaised, MeetingHeld, ReviewSubmitted
from events.store import UPCASTERS, event_payload
from events.sensitivity import (
    CONFIDENTIAL,
    ConfidentialText,
    confidential_paths,
    not_confidential_fields,
    redacted_json,
    unmarked_text_fields,
)
from events.decider import fold
from events.store import ConcurrencyConflict
from mentorflow.forgetting import ForgetRefused, forget_relationship
from mentorflow.keyring import Keyring
from tests.support.helpers import (
    HISTORY_START,
    SECRET,
    closed_by_mentee,
    confidential_history,
    confidential_places_covered,
    envelope,
    every_confidential_place,
    never_running,
    planted,
)
from tests.support.helpers import STORE_KEYRING as KEYRING
from tests.support.owners import owner

NOW = HISTORY_START


def history(stream_id: str, text: str = SECRET) -> list[AnyEvent]:
    return confidential_history(stream_id, text)


async def raw_payloads(pool: asyncpg.Pool) -> str:
    rows = await pool.fetch("SELECT payload::text FROM events ORDER BY position")
    return "\n".join(row[0] for row in rows)


def test_every_text_field_of_every_event_is_classified() -> None:
    assert {name: unmarked_text_fields(model) for name, model in EVENT_TYPES.items() if unmarked_text_fields(model)} == {}
    # The union of events and the table agree, and the walker does see nested text.
    assert len(EVENT_TYPES) == len(typing.get_args(typing.get_args(AnyEvent)[0]))
    assert CONFIDENTIAL_PATHS["ReviewSubmitted"] == (("goal_assessments", "*", "comment"), ("comment",))
    assert CONFIDENTIAL_PATHS["MeetingHeld"] == (("notes",),)
    # Nested models, tuples of them and tuples of text (security issue #12).
    assert CONFIDENTIAL_PATHS["AgreementProposed"] == (
        ("terms", "objective"), ("terms", "goals", "*", "title"), ("terms", "goals", "*", "measure"),
        ("terms", "goals", "*", "milestones", "*", "title"), ("terms", "confidentiality", "not_private", "*"),
        ("terms", "early_exit_plan"),
    )  # fmt: skip
    assert CONFIDENTIAL_PATHS["ResourceShared"] == (("title",), ("url",))
    # A new, unmarked text field is caught; a marked one is placed.
    unmarked = type("Probe", (MeetingHeld,), {"__annotations__": {"agenda": str}, "agenda": ""})
    assert unmarked_text_fields(unmarked) == ["agenda"]
    marked = type("Probe2", (MeetingHeld,), {"__annotations__": {"agenda": ConfidentialText}, "agenda": ""})
    assert ("agenda",) in confidential_paths(marked) and CONFIDENTIAL.value == "confidential"


# Text stored in plain, each with the reason it may be (security issue #12: free text is
# confidential unless a report or a search needs it). Ids (`*_id`, `*_by`, `*_ids`) are
# plain everywhere: reports, projections and SQL join on them.
PLAIN_TEXT = {
    "caused_by.message": "a message name of the contract",
    "caused_by.digest": "a SHA-256 digest of the command",
    "command_name": "CommandRejected: a message name of the contract",
    "reason": "CommandRejected: written by the decider, names fields and rules, never values sent",
    "problems.*.field": "CommandRejected: a field name (unknown ones are not echoed)",
    "problems.*.message": "CommandRejected: written by the validator, never values sent",
    "payload_digest": "CommandRejected: a digest",
    "reasons.*": "HealthChanged: codes (quiet, missed_meetings, concern_open, low_feedback)",
    "terms.availability.*.timezone": "an IANA zone name checked against the tz database; scheduling needs it",
    "summary.goal_progress.<key>": "goal ids",
}


def _is_id(path: str) -> bool:
    last = path.removesuffix(".*").rsplit(".", 1)[-1]
    return last.endswith(("_id", "_by", "_ids"))


def test_only_ids_codes_and_listed_fields_are_stored_in_plain() -> None:
    plain = {(name, path) for name, model in EVENT_TYPES.items() for path in not_confidential_fields(model)}
    unexplained = {(name, path) for name, path in plain if not _is_id(path) and path not in PLAIN_TEXT}
    assert unexplained == set(), "free text is confidential; a plain field needs a reason in PLAIN_TEXT"
    assert {path for _, path in plain if not _is_id(path)} == set(PLAIN_TEXT)
    assert {name for name, path in plain if path == "reason"} == {"CommandRejected"}


async def test_every_confidential_place_is_sealed_and_reads_forgotten_after_forget(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool, KEYRING)
    events = every_confidential_place("rel-1")
    every_place = {(name, ".".join(path)) for name, paths in CONFIDENTIAL_PATHS.items() for path in paths}
    assert confidential_places_covered(events, SECRET) == every_place, "plant the secret in the new place too"
    values = planted(events, SECRET)
    await store.append("rel-1", 0, events, owner=owner("rel-1"))
    raw = await raw_payloads(pool)
    # Not in any row, in any form: not a word of it, nor the URL.
    assert SECRET not in raw and "Worried" not in raw and "example.org" not in raw
    assert raw.count('"$enc"') == values
    # The rest stays readable for reports and SQL: ids, the time zone, numbers.
    terms = json.loads(await pool.fetchval("SELECT payload::text FROM events WHERE event_type = 'AgreementProposed'"))["terms"]
    assert [g["goal_id"] for g in terms["goals"]] == ["g1", "g2"] and terms["meeting_minutes"] == 45
    assert terms["goals"][0]["milestones"][1]["milestone_id"] == "m2" and terms["availability"][0]["timezone"] == "Europe/Berlin"
    assert await store.read_stream("rel-1") == events
    # Without the keys: a marker in every confidential place (and the events still load).
    sealed = await PostgresEventStore(pool).read_stream("rel-1")
    assert sum(json.dumps(event_payload(e)).count(SEALED) for e in sealed) == values

    done = await forget_relationship(pool, "rel-1", forgotten_by="ops-1", still_running=never_running)
    assert (done.sealed_values, done.scrubbed_events) == (values, 0)
    after = await PostgresEventStore(pool, KEYRING).read_stream("rel-1")
    dumped = json.dumps([event_payload(e) for e in after])
    assert SECRET not in dumped and "example.org" not in dumped
    assert dumped.count(FORGOTTEN) == values
    assert [blanked(e) for e in after] == [blanked(e) for e in events]


def test_a_state_can_be_shown_without_its_confidential_text() -> None:
    """The `state` query holds the agreement and goals: `redacted_json` is what a reader
    without the right to read them (a read-only API key) may be shown."""
    events = every_confidential_place("rel-1")
    for upto in ("GoalRevisionProposed", "RelationshipPaused"):  # a revision pending; the revised goal in force
        state = fold(events[: 1 + next(n for n, e in enumerate(events) if e.type == upto)])
        full, shown = json.dumps(state.model_dump(mode="json")), json.dumps(redacted_json(state, SEALED))
        assert SECRET in full and SECRET not in shown and shown.count(SEALED) == full.count(SECRET)
        assert state.agreement is not None and (state.pending_goal_revisions or state.goals)
        assert json.loads(shown)["agreement"]["terms"]["meeting_minutes"] == 45


def blanked(event: AnyEvent) -> dict[str, Any]:
    """The stored payload with its confidential places blanked: what forgetting keeps."""
    payload = event_payload(event)
    for path in CONFIDENTIAL_PATHS.get(event.type, ()):
        for container, key, _ in locations(payload, path):
            if isinstance(container[key], str) and container[key]:
                container[key] = "…"
    return payload


async def test_confidential_text_is_sealed_at_rest_and_read_back_exactly(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool, KEYRING)
    events = history("rel-1")
    await store.append("rel-1", 0, events[:2], owner=owner("rel-1"))
    await store.append("rel-1", 2, events[2:], owner=owner("rel-1"))
    raw = await raw_payloads(pool)
    assert SECRET not in raw and "Worried" not in raw
    assert raw.count('"$enc"') == 4  # notes, concern, review comment, one goal comment (the empty one stays)
    assert await store.read_stream("rel-1") == events
    assert [stored.event for stored in await store.read_all()] == events
    # Everything that is not confidential stays readable in the row (reports, SQL).
    meeting = json.loads(await pool.fetchval("SELECT payload::text FROM events WHERE event_type = 'MeetingHeld'"))
    assert meeting["duration_minutes"] == 45 and meeting["recorded_by"] == "mentor-1"
    # Another process with the same keys reads it too; one without keys sees a marker, not an error.
    assert await PostgresEventStore(pool, KEYRING).read_stream("rel-1") == events
    sealed = await PostgresEventStore(pool).read_stream("rel-1")
    assert isinstance(sealed[-1], ReviewSubmitted) and sealed[-1].comment == SEALED
    assert sealed[-1].goal_assessments[1].comment == "" and sealed[-1].model_dump(exclude={"comment", "goal_assessments"}) == \
        events[-1].model_dump(exclude={"comment", "goal_assessments"})  # fmt: skip
    with pytest.raises(DataKeyError, match="MENTORFLOW_ENCRYPTION_KEYS"):
        await PostgresEventStore(pool).append("rel-2", 0, history("rel-2")[:2], owner=owner("rel-2"))


async def test_a_retried_append_is_recognised_and_another_text_is_a_conflict(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool, KEYRING)
    events = history("rel-1")
    first = await store.append("rel-1", 0, events, owner=owner("rel-1"))
    # The same batch again, from a process that did not create the key: same positions.
    assert await PostgresEventStore(pool, KEYRING).append("rel-1", 0, events, owner=owner("rel-1")) == first
    assert await pool.fetchval("SELECT count(*) FROM events") == len(events)
    # The same ids with other text (a task decided again) is a conflict, not a repeat.
    changed = history("rel-1", text="something else")
    changed = [*events[:-1], changed[-1].model_copy(update={"event_id": events[-1].event_id})]
    with pytest.raises(ConcurrencyConflict):
        await store.append("rel-1", 0, changed, owner=owner("rel-1"))
    # The workflow adopts what it stored after a conflict: exactly what it wrote.
    assert await store.read_stream("rel-1", after_version=1) == events[1:]


async def test_concurrent_first_appends_agree_on_one_key(pool: asyncpg.Pool) -> None:
    streams = [f"rel-{n}" for n in range(6)]
    stores = [PostgresEventStore(pool, KEYRING) for _ in range(4)]
    # Every store creates the key of every stream at the same moment.
    ciphers = await asyncio.gather(*(store._keys.for_append(s) for s in streams for store in stores))
    assert await pool.fetchval("SELECT count(*) FROM data_keys") == len(streams)
    for n, stream in enumerate(streams):
        tokens = {c.seal("same text", b"aad") for c in ciphers[n * len(stores) : (n + 1) * len(stores)] if c}
        assert len(tokens) == 1, stream
    histories = {stream: history(stream) for stream in streams}
    await asyncio.gather(*(stores[n % 4].append(s, 0, histories[s], owner=owner(s)) for n, s in enumerate(streams)))
    for stream in streams:
        assert await stores[(streams.index(stream) + 1) % 4].read_stream(stream) == histories[stream]


async def test_a_value_moved_to_another_place_does_not_decrypt(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool, KEYRING)
    await store.append("rel-1", 0, history("rel-1"), owner=owner("rel-1"))
    # Copy the concern's ciphertext into the meeting's notes: authenticated to another place.
    await pool.execute(
        """UPDATE events SET payload = jsonb_set(payload, '{notes}',
               (SELECT payload->'text' FROM events WHERE event_type = 'ConcernRaised'))
           WHERE event_type = 'MeetingHeld'"""
    )
    with pytest.raises(DataKeyError, match=r"notes of event rel-1@\d+ does not decrypt"):
        await store.read_stream("rel-1")


async def test_upcasters_see_the_decrypted_text(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PostgresEventStore(pool, KEYRING)
    await store.append("rel-1", 0, history("rel-1"), owner=owner("rel-1"))
    monkeypatch.setitem(UPCASTERS, ("MeetingHeld", 1), lambda data: data | {"notes": data["notes"].upper()})
    meeting = next(e for e in await store.read_stream("rel-1") if isinstance(e, MeetingHeld))
    assert meeting.notes == f"NOTES: {SECRET.upper()}" and meeting.schema_version == 2


async def test_forget_makes_the_text_unreadable_and_keeps_the_rest(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore(pool, KEYRING)
    events = history("rel-1")
    await store.append("rel-1", 0, events, owner=owner("rel-1"))
    other = history("rel-2")
    await store.append("rel-2", 0, other, owner=owner("rel-2"))  # another relationship, untouched
    asked: list[tuple[str, str]] = []

    async def running(programme_id: str, relationship_id: str) -> bool:
        asked.append((programme_id, relationship_id))
        return True

    with pytest.raises(ForgetRefused, match="still running"):
        await forget_relationship(pool, "relationship/prog-1/rel-1", forgotten_by="ops-1", still_running=running)
    assert asked == [("prog-1", "rel-1")]
    with pytest.raises(ForgetRefused, match="no relationship 'rel-404'"):
        await forget_relationship(pool, "rel-404", forgotten_by="ops-1", still_running=never_running)
    with pytest.raises(ForgetRefused, match="--by must be an id"):
        await forget_relationship(pool, "rel-1", forgotten_by="Jane Doe", still_running=never_running)

    done = await forget_relationship(pool, "relationship/prog-1/rel-1", forgotten_by="ops-1", still_running=never_running)
    assert (done.now, done.relationship_id, done.programme_id, done.sealed_values, done.scrubbed_events) == \
        (True, "rel-1", "prog-1", 4, 0)  # fmt: skip
    # Even this store, which still holds the key in its cache from the appends above.
    for reader in (store, PostgresEventStore(pool, KEYRING)):
        after = await reader.read_stream("rel-1")
        assert len(after) == len(events)
        for before, now in zip(events, after, strict=True):
            paths = CONFIDENTIAL_PATHS.get(before.type, ())
            if not paths:
                assert now == before
                continue
            assert now.model_dump(exclude={p[0] for p in paths}) == before.model_dump(exclude={p[0] for p in paths})
        review = after[-1]
        assert isinstance(review, ReviewSubmitted) and review.comment == FORGOTTEN
        assert [a.comment for a in review.goal_assessments] == [FORGOTTEN, ""]
        assert [a.progress_percent for a in review.goal_assessments] == [40, 90]
    assert await PostgresEventStore(pool, KEYRING).read_stream("rel-2") == other
    row = await pool.fetchrow("SELECT * FROM data_keys WHERE stream_id = 'rel-1'")
    assert row["wrapped_key"] is None and row["kek_id"] is None and row["forgotten_by"] == "ops-1"
    # A second time changes nothing and says when it happened; no new key is ever made.
    again = await forget_relationship(pool, "rel-1", forgotten_by="ops-2", still_running=running)
    assert (again.now, again.forgotten_by, again.forgotten_at) == (False, "ops-1", done.forgotten_at)
    late = MeetingHeld(**envelope("rel-1", len(events) + 1), meeting_number=2, held_at=NOW, duration_minutes=30,
                       recorded_by="mentor-1", notes="written after forgetting")  # fmt: skip
    await PostgresEventStore(pool, KEYRING).append("rel-1", len(events), [late], owner=owner("rel-1"))
    assert "written after forgetting" not in await raw_payloads(pool)
    assert (await store.read_stream("rel-1", after_version=len(events)))[0] == late.model_copy(update={"notes": FORGOTTEN})


async def test_forget_overwrites_text_stored_in_plain_before_encryption(pool: asyncpg.Pool) -> None:
    events = history("rel-1")
    # As a store before migration 0007 wrote them: the payload JSON as it is.
    await pool.execute(
        """INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, occurred_at,
                               command_id, payload)
           SELECT nextval('event_position'), 'rel-1', v, e::uuid, t, 1, o, c, p::jsonb
             FROM unnest($1::int[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])
                  AS u(v, e, t, o, c, p)""",
        [e.version for e in events], [e.event_id for e in events], [e.type for e in events],
        [e.occurred_at for e in events], [e.command_id for e in events],
        [json.dumps(event_payload(e)) for e in events],
    )  # fmt: skip
    events.append(closed_by_mentee("rel-1", len(events) + 1))
    store = PostgresEventStore(pool, KEYRING)
    await store.append("rel-1", len(events) - 1, events[-1:], owner=owner("rel-1"))
    assert await store.read_stream("rel-1") == events  # plain text reads as it is
    assert SECRET in await raw_payloads(pool)

    async def must_not_ask(programme_id: str, relationship_id: str) -> bool:
        raise AssertionError("the store shows it closed: Temporal need not be asked")

    done = await forget_relationship(pool, "rel-1", forgotten_by="ops-1", still_running=must_not_ask)
    assert (done.sealed_values, done.scrubbed_events) == (0, 3)
    assert SECRET not in await raw_payloads(pool)
    concern = next(e for e in await store.read_stream("rel-1") if isinstance(e, ConcernRaised))
    assert concern.text == FORGOTTEN and concern.raised_by == "mentee-1"


async def test_a_data_key_wrapped_with_a_key_no_longer_configured_names_it(pool: asyncpg.Pool) -> None:
    events = history("rel-1")
    await PostgresEventStore(pool, KEYRING).append("rel-1", 0, events, owner=owner("rel-1"))
    # A rotation that dropped the old key too early: a clear error, not a traceback.
    with pytest.raises(DataKeyError, match=r"relationship rel-1 cannot be unwrapped: encryption key 'kek-1' is not configured"):
        await PostgresEventStore(pool, Keyring.generate("kek-2")).read_stream("rel-1")
    # Rotated properly (new key first, old key kept): old data reads, new data keys use the new key.
    rotated = Keyring.parse(f"{Keyring.generate('kek-2').format()} {KEYRING.format()}")
    assert await PostgresEventStore(pool, rotated).read_stream("rel-1") == events
    await PostgresEventStore(pool, rotated).append("rel-2", 0, history("rel-2"), owner=owner("rel-2"))
    assert await pool.fetchval("SELECT kek_id FROM data_keys WHERE stream_id = 'rel-2'") == "kek-2"
