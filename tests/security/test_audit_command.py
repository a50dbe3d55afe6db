"""`mentorflow audit streams` on a real database (security issue #12): the command prints the
report of mentorflow/audit.py (tests/store/test_stream_owners.py tests the findings themselves)
and exits 1 when a stream was written or read by more than one workflow, or the store
contradicts itself."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from activities.event_store import PostgresEventStore
from events.decider import start_relationship
from events.settings import ProgrammeSettings
from mentorflow.audit import TAMPERED
from mentorflow.cli import app
from tests.support.session import TEST_KEYRING
from tests.support.owners import owner

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def streams(pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Two relationships stored by their own workflows, and the CLI pointed at that database."""
    store = PostgresEventStore(pool, TEST_KEYRING)
    for stream_id, programme_id in (("rel-1", "prog-1"), ("rel-2", "prog-2")):
        events = start_relationship(stream_id, programme_id, "mentee-1", ProgrammeSettings(), NOW)
        await store.append(stream_id, 0, events, owner=owner(stream_id, programme_id))
    monkeypatch.setenv("MENTORFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("MENTORFLOW_STATE_DIR", str(tmp_path / "state"))
    return database_url


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(app, ["audit", "streams", *arguments])


async def give_the_stream_to_another_programme(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("UPDATE stream_owners SET programme_id = 'evilprog' WHERE stream_id = 'rel-2'")
    finally:
        await connection.close()


def test_audit_streams_store_only_reports_clean_then_a_finding_with_exit_code_1(streams: str) -> None:
    clean = invoke("--store-only", "--json")
    assert clean.exit_code == 0, clean.stderr
    assert json.loads(clean.stdout) == {
        "streams": 2, "workflows_checked": None, "affected_streams": [], "clean": True, "findings": []
    }  # fmt: skip

    asyncio.run(give_the_stream_to_another_programme(streams))
    found = invoke("--store-only", "--json")
    assert found.exit_code == 1, found.stderr
    report = json.loads(found.stdout)
    assert report["clean"] is False and report["workflows_checked"] is None
    assert [(f["stream_id"], f["kind"]) for f in report["findings"]] == [("rel-2", TAMPERED)]
    assert found.stderr == ""  # a finding is the answer, not an error

    text = invoke("--store-only")
    assert text.exit_code == 1, text.stderr
    assert "2 streams in the event store; Temporal not asked (store only)." in text.stdout
    assert f"[{TAMPERED}] rel-2: owned by relationship/prog-2/rel-2 (programme evilprog)" in text.stdout
    assert "run without --store-only" in text.stdout


def test_audit_streams_without_a_database_is_one_error_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MENTORFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("MENTORFLOW_STATE_DIR", str(tmp_path / "state"))
    result = invoke("--store-only", "--json")
    assert result.exit_code == 2
    assert result.stdout == "" and result.stderr.startswith("error: configuration: no database")


async def store_commands(pool: asyncpg.Pool) -> None:
    """rel-a: the pool's own proposal (legitimate); rel-b: a proposal as the pool that a
    stranger sent; rel-c: a closure as the directory that a stranger sent."""
    from events.commands import CloseRelationship, ProposeMatch
    from events.decider import decide
    from events.decider import fold

    store = PostgresEventStore(pool, TEST_KEYRING)
    settings = ProgrammeSettings(coordinator_ids=("coord-1",))
    sent = {
        "rel-a": ProposeMatch(command_id="pool-1", actor_id="matching-engine", mentor_id="m-1", score=0.5),
        "rel-b": ProposeMatch(command_id="evil-7", actor_id="matching-engine", mentor_id="m-1"),
        "rel-c": CloseRelationship(command_id="evil-8", actor_id="coord-1"),
    }
    for stream_id, command in sent.items():
        events = start_relationship(stream_id, "prog-1", "mentee-1", settings, NOW)
        decided = decide(fold(events), command, NOW)  # type: ignore[arg-type]
        assert isinstance(decided, list) and decided
        if stream_id == "rel-c":  # as if the directory had closed it: what a forged signal stored
            closed = decided[-1]
            decided[-1] = closed.model_copy(update={"closed_by": "directory"})
        await store.append(stream_id, 0, [*events, *decided], owner=owner(stream_id, "prog-1"))


def test_audit_internal_actors_lists_what_the_system_did_not_send(streams: str) -> None:
    clean = CliRunner().invoke(app, ["audit", "internal-actors", "--json"])
    assert clean.exit_code == 0, clean.stderr
    assert json.loads(clean.stdout) == {"clean": True, "forged": []}

    asyncio.run(store_commands_on(streams))
    found = CliRunner().invoke(app, ["audit", "internal-actors", "--json"])
    assert found.exit_code == 1, found.stderr
    forged = json.loads(found.stdout)["forged"]
    assert [(f["stream_id"], f["event_type"], f["actor"], f["command_id"]) for f in forged] == [
        ("rel-b", "MatchProposed", "matching-engine", "evil-7"),
        ("rel-c", "RelationshipClosed", "directory", "evil-8"),
    ]


async def store_commands_on(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await store_commands(pool)
    finally:
        await pool.close()
