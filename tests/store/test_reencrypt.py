"""The one-off re-encryption (security issue #12): text stored in plain under the old
classification — and before migration 0007 — is sealed exactly as an append seals it
today, nothing else in the rows changes, forgotten relationships get "[forgotten]", and a
second run does nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

import activities.event_store
import mentorflow.forgetting
from activities.data_keys import ENCRYPTED, FORGOTTEN, DataKeyError, locations
from activities.event_store import PostgresEventStore
from events.model import CONFIDENTIAL_PATHS, AnyEvent
from events.store import event_payload
from events.sensitivity import FieldPath
from mentorflow.forgetting import forget_relationship
from mentorflow.reencrypt import Reencrypted, reencrypt_plain_text
from tests.support.owners import owner
from tests.support.helpers import STORE_KEYRING as KEYRING
from tests.support.helpers import every_confidential_place, never_running, planted

# What issue #12 moved from "not confidential" to confidential: the old classification is
# today's without these.
NEWLY_CONFIDENTIAL: dict[str, tuple[FieldPath, ...]] = {
    "MatchProposed": (("explanation",),),
    "AgreementProposed": (
        ("terms", "objective"), ("terms", "goals", "*", "title"), ("terms", "goals", "*", "measure"),
        ("terms", "goals", "*", "milestones", "*", "title"), ("terms", "confidentiality", "not_private", "*"),
        ("terms", "early_exit_plan"),
    ),
    "GoalRevisionProposed": (("goal", "title"), ("goal", "measure"), ("goal", "milestones", "*", "title")),
    "GoalRevised": (("goal", "title"), ("goal", "measure"), ("goal", "milestones", "*", "title")),
    "IntroductionRecorded": (("introduced_to",),),
    "ResourceShared": (("title",), ("url",)),
}  # fmt: skip
OLD_PATHS = {
    name: kept
    for name, paths in CONFIDENTIAL_PATHS.items()
    if (kept := tuple(path for path in paths if path not in NEWLY_CONFIDENTIAL.get(name, ())))
}
LIVE, GONE, LEGACY = "LIVE-7f3a-secret", "GONE-21c9-secret", "LEGACY-88d0-secret"


def values_at(events: list[AnyEvent], table: dict[str, tuple[FieldPath, ...]]) -> tuple[int, int]:
    """(events, non-empty values) at the places `table` names."""
    counts = [
        sum(1 for path in table.get(e.type, ()) for c, k, _ in locations(event_payload(e), path) if c[k])
        for e in events
    ]
    return sum(1 for n in counts if n), sum(counts)


async def rows(pool: asyncpg.Pool, stream_id: str) -> dict[int, dict[str, Any]]:
    records = await pool.fetch("SELECT version, payload::text FROM events WHERE stream_id = $1", stream_id)
    return {r["version"]: json.loads(r["payload"]) for r in records}


async def every_row(pool: asyncpg.Pool) -> str:
    events = await pool.fetch("SELECT e::text FROM events e")
    keys = await pool.fetch("SELECT k::text FROM data_keys k")
    return "\n".join(r[0] for r in [*events, *keys])


async def insert_plain(pool: asyncpg.Pool, stream_id: str, events: list[AnyEvent]) -> None:
    """As a store before migration 0007 wrote them: every payload as it is."""
    await pool.execute(
        """INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, occurred_at,
                               command_id, payload)
           SELECT nextval('event_position'), $1, v, e::uuid, t, 1, o, c, p::jsonb
             FROM unnest($2::int[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[])
                  AS u(v, e, t, o, c, p)""",
        stream_id, [e.version for e in events], [e.event_id for e in events], [e.type for e in events],
        [e.occurred_at for e in events], [e.command_id for e in events], [json.dumps(event_payload(e)) for e in events],
    )  # fmt: skip


def only_new_places_changed(before: dict[str, Any], after: dict[str, Any], paths: tuple[FieldPath, ...]) -> bool:
    """`after` is `before` with each plain value at `paths` sealed, and nothing else changed."""
    before, after = json.loads(json.dumps(before)), json.loads(json.dumps(after))
    for path in paths:
        olds = {where: c[k] for c, k, where in locations(before, path)}
        for container, key, where in locations(after, path):
            if olds[where]:
                assert isinstance(olds[where], str) and set(container[key]) == {ENCRYPTED}, where
                container[key] = olds[where]
    return before == after


async def test_reencrypt_seals_what_the_old_classification_left_in_plain(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert OLD_PATHS["MeetingHeld"] == (("notes",),) and "ResourceShared" not in OLD_PATHS
    live, gone, legacy = (every_confidential_place(s, text) for s, text in
                          (("rel-live", LIVE), ("rel-gone", GONE), ("rel-legacy", LEGACY)))  # fmt: skip
    with monkeypatch.context() as old_classification:
        # A store, and a `forget`, from before issue #12.
        old_classification.setattr(activities.event_store, "CONFIDENTIAL_PATHS", OLD_PATHS)
        old_classification.setattr(mentorflow.forgetting, "CONFIDENTIAL_PATHS", OLD_PATHS)
        old_store = PostgresEventStore(pool, KEYRING)
        positions = await old_store.append("rel-live", 0, live, owner=owner("rel-live"))
        await old_store.append("rel-gone", 0, gone, owner=owner("rel-gone"))
        await forget_relationship(pool, "rel-gone", forgotten_by="ops-1", still_running=never_running)
    await insert_plain(pool, "rel-legacy", legacy)  # and one from before migration 0007
    raw = await every_row(pool)
    # The residue this is for: the newly confidential text in plain, also after `forget`.
    assert all(text in raw for text in (LIVE, GONE, LEGACY)) and "notes: LIVE" not in raw
    new_events, new_values = values_at(live, NEWLY_CONFIDENTIAL)
    assert (new_events, new_values) == (6, 21)
    before = await rows(pool, "rel-live")

    # Counting only, and without keys: nothing changes.
    expected = Reencrypted(streams=3, events=2 * new_events + len(legacy) - 1, dry_run=True,
                           encrypted_values=new_values + planted(legacy, LEGACY), forgotten_values=new_values)  # fmt: skip
    assert await reencrypt_plain_text(pool, None, dry_run=True) == expected
    assert await every_row(pool) == raw
    with pytest.raises(DataKeyError, match="MENTORFLOW_ENCRYPTION_KEYS"):
        await reencrypt_plain_text(pool, None)
    assert await every_row(pool) == raw

    # One relationship on its own (it had no data key: it gets one).
    only = await reencrypt_plain_text(pool, KEYRING, stream_id="rel-legacy")
    assert (only.streams, only.encrypted_values) == (1, planted(legacy, LEGACY))
    assert await pool.fetchval("SELECT wrapped_key IS NOT NULL FROM data_keys WHERE stream_id = 'rel-legacy'")
    assert LEGACY not in await every_row(pool) and LIVE in await every_row(pool)
    done = await reencrypt_plain_text(pool, KEYRING)
    assert done == Reencrypted(streams=2, events=2 * new_events, encrypted_values=new_values, forgotten_values=new_values)
    raw = await every_row(pool)
    assert not any(text in raw for text in (LIVE, GONE, LEGACY, "example.org")), "text left in plain"

    # Only those values changed; everything else, the values sealed before included, is byte for byte the same.
    after = await rows(pool, "rel-live")
    assert after.keys() == before.keys()
    for event in live:
        assert only_new_places_changed(before[event.version], after[event.version], NEWLY_CONFIDENTIAL.get(event.type, ()))
    # Read back exactly as written, by readers with the keys.
    store = PostgresEventStore(pool, KEYRING)
    assert await store.read_stream("rel-live") == live
    assert await store.read_stream("rel-legacy") == legacy
    # Sealed as an append seals it today: a workflow retrying the whole batch is recognised.
    assert await PostgresEventStore(pool, KEYRING).append("rel-live", 0, live, owner=owner("rel-live")) == positions
    # The forgotten relationship: "[forgotten]" wherever there was text, and no key was made.
    forgotten = json.dumps([event_payload(e) for e in await store.read_stream("rel-gone")])
    assert GONE not in forgotten and forgotten.count(FORGOTTEN) == planted(gone, GONE)
    assert await pool.fetchval("SELECT wrapped_key FROM data_keys WHERE stream_id = 'rel-gone'") is None

    # Idempotent.
    assert await reencrypt_plain_text(pool, KEYRING) == Reencrypted()
    assert await every_row(pool) == raw
    # And `forget` now reaches the newly confidential text too.
    await forget_relationship(pool, "rel-live", forgotten_by="ops-1", still_running=never_running)
    forgotten = json.dumps([event_payload(e) for e in await store.read_stream("rel-live")])
    assert LIVE not in forgotten and forgotten.count(FORGOTTEN) == planted(live, LIVE)


async def test_forget_overwrites_text_the_old_classification_left_in_plain(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the re-encryption, `forget` (run after the upgrade) still scrubs it."""
    live = every_confidential_place("rel-live", LIVE)
    with monkeypatch.context() as old_classification:
        old_classification.setattr(activities.event_store, "CONFIDENTIAL_PATHS", OLD_PATHS)
        await PostgresEventStore(pool, KEYRING).append("rel-live", 0, live, owner=owner("rel-live"))
    new_events, new_values = values_at(live, NEWLY_CONFIDENTIAL)
    done = await forget_relationship(pool, "rel-live", forgotten_by="ops-1", still_running=never_running)
    assert (done.sealed_values, done.scrubbed_events) == (planted(live, LIVE) - new_values, new_events)
    assert LIVE not in await every_row(pool)
    forgotten = json.dumps([event_payload(e) for e in await PostgresEventStore(pool, KEYRING).read_stream("rel-live")])
    assert forgotten.count(FORGOTTEN) == planted(live, LIVE)


async def test_reencrypt_and_forget_at_the_same_time_leave_nothing_readable(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both lock the relationship's key row first: whichever comes second sees the other's work."""
    streams = [f"rel-{n}" for n in range(6)]
    written = {stream: every_confidential_place(stream, LIVE) for stream in streams}
    with monkeypatch.context() as old_classification:
        old_classification.setattr(activities.event_store, "CONFIDENTIAL_PATHS", OLD_PATHS)
        for stream, events in written.items():
            await PostgresEventStore(pool, KEYRING).append(stream, 0, events, owner=owner(stream))
    await asyncio.gather(
        reencrypt_plain_text(pool, KEYRING),
        *(forget_relationship(pool, s, forgotten_by="ops-1", still_running=never_running) for s in streams[::2]),
    )
    assert LIVE not in await every_row(pool)
    store = PostgresEventStore(pool, KEYRING)
    for stream, events in written.items():
        read = json.dumps([event_payload(e) for e in await store.read_stream(stream)])
        if stream in streams[::2]:
            assert LIVE not in read and read.count(FORGOTTEN) == planted(events, LIVE), stream
        else:
            assert await store.read_stream(stream) == events
    assert await reencrypt_plain_text(pool, KEYRING) == Reencrypted()
