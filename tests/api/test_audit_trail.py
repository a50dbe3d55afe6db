"""Who sent each command (issue #14, "Audit"): the credential the HTTP API recorded, shown with
the events by `relationship events`, the API's events resource and the report's audit view;
"sent directly" for a command the API has no record of. Real servers: uvicorn on loopback, a
Temporal dev server, a worker, PostgreSQL, a JWKS on loopback for people's tokens."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from activities.api_audit import AuditEntry
from activities.audit_trail import SentBy, _sent_by, commands_by_credential, sent_by_of_event, stream_senders
from events.relationship_io import CommandResult
from mentorflow.api.schemas import EventsPage
from mentorflow.cli import app
from tests.support.api_support import AUDIENCE, COORDINATOR, ISSUER, MENTEE, MENTOR, api_stack, token

DIRECT = {"via": "direct", "credential_id": None, "credential_name": None}
INTERNAL = {"via": "internal", "credential_id": None, "credential_name": None}


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(app, list(arguments), env={"COLUMNS": "200"})


async def test_each_command_shows_the_credential_that_sent_it_or_sent_directly(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, jwks_url: str, database_url: str,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    monkeypatch.setenv("MENTORFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("MENTORFLOW_STATE_DIR", str(tmp_path / "state"))
    async with api_stack(dev_env.client, pool, jwks_url=jwks_url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE) as stack:
        key, secret = await stack.store.create("hr-portal", [stack.programme], ["coordinators"])
        coordinator, mentee = stack.http(secret), stack.http(token(MENTEE))
        relationship = f"r-{uuid.uuid4().hex[:8]}"
        path = f"/v1/relationships/{stack.programme}/{relationship}"
        started = await coordinator.post("/v1/relationships", json={
            "programme_id": stack.programme, "relationship_id": relationship, "mentee_id": MENTEE})  # fmt: skip
        assert started.status_code == 201, started.text
        proposal = {"command_id": "p1", "actor_id": COORDINATOR, "mentor_id": MENTOR}
        assert (await coordinator.post(f"{path}/commands/propose_match", json=proposal)).status_code == 200
        # A retry of an applied command is a replay: the record still names the same key.
        assert (await coordinator.post(f"{path}/commands/propose_match", json=proposal)).json()["replay"] is True
        accepted = await mentee.post(f"{path}/commands/accept_match", json={"command_id": "a1"})
        assert accepted.status_code == 200, accepted.text
        # The same relationship's mentor accepts with the Temporal client: no API record.
        handle = stack.client.get_workflow_handle(f"relationship/{stack.programme}/{relationship}")
        direct = await handle.execute_update("accept_match", {"command_id": "d1", "actor_id": MENTOR},
                                             result_type=CommandResult)  # fmt: skip
        assert direct.applied and direct.phase.value == "agreement"
        # A command the API refused leaves no events and is credited to nobody.
        refused = await mentee.post(f"{path}/commands/accept_match", json={"command_id": "d1"})
        assert refused.status_code == 409, refused.text

        by_key = {"via": "api_key", "credential_id": key.key_id, "credential_name": "hr-portal"}
        by_token = {"via": "token", "credential_id": MENTEE, "credential_name": ISSUER}
        expected = {None: by_key, "p1": by_key, "a1": by_token, "d1": DIRECT}

        # The API's events resource: every event with its sender, in the documented shape.
        page = (await coordinator.get(f"{path}/events")).json()
        EventsPage.model_validate(page)
        events = page["events"]
        assert {e["command_id"] for e in events} == set(expected)
        for event in events:
            assert event["sent_by"] == expected[event["command_id"]], event
        # A later page alone still knows who started it, and who sent its commands.
        later = (await coordinator.get(f"{path}/events", params={"after_version": 2})).json()["events"]
        assert later and all(e["sent_by"] == expected[e["command_id"]] for e in later)

        # `mentorflow relationship events`: the same, as JSON and as a table.
        printed = await asyncio.to_thread(invoke, "relationship", "events", handle.id, "--json")
        assert printed.exit_code == 0, printed.stderr
        rows = json.loads(printed.stdout)
        assert [row["version"] for row in rows] == [e["version"] for e in events]
        for row in rows:
            assert row["sent_by"] == expected[row["command_id"]], row
        table = await asyncio.to_thread(invoke, "relationship", "events", relationship)
        assert table.exit_code == 0, table.stderr
        def line_of(*words: str) -> str:
            printed: str = table.stdout
            (found,) = [line for line in printed.splitlines() if all(w in line.split() for w in words)]
            return found

        assert f"API key hr-portal (id {key.key_id})" in line_of("RelationshipStarted")
        assert f"API key hr-portal (id {key.key_id})" in line_of("MatchProposed", "p1")
        assert f"token of {MENTEE} (issuer {ISSUER})" in line_of("MatchAccepted", "a1")
        assert "sent directly (not through the API)" in line_of("MatchAccepted", "d1")

        # The report's audit view: the programme's commands by credential.
        counts = {(c.sent_by.via, c.sent_by.credential_id): (c.commands, c.relationships)
                  for c in await commands_by_credential(pool, stack.programme)}  # fmt: skip
        assert counts == {("api_key", key.key_id): (2, 1), ("token", MENTEE): (1, 1), ("direct", None): (1, 1)}
        report = await asyncio.to_thread(invoke, "report", "--programme", stack.programme, "--json")
        assert report.exit_code == 0, report.stderr
        assert {"via": "token", "credential_id": MENTEE, "credential_name": ISSUER, "commands": 1, "relationships": 1} in (
            json.loads(report.stdout)["commands_by_credential"]
        )
        shown = await asyncio.to_thread(invoke, "report", "--programme", stack.programme)
        assert "Commands by credential" in shown.stdout and "hr-portal" in shown.stdout

        # Another programme's record of a relationship with the same id is not this one's, nor
        # is a record of another message under the command's id.
        await stack.context.audit.record(_entry("other-programme", relationship, "d1", "accept_match"))
        await stack.context.audit.record(_entry(stack.programme, relationship, "d1", "propose_match"))
        assert (await stream_senders(pool, relationship))["d1"] == SentBy(via="direct")
        await stack.context.audit.record(_entry(stack.programme, relationship, "d1", "accept_match"))
        assert (await stream_senders(pool, relationship))["d1"].credential_name == "elsewhere"


def _entry(programme_id: str, relationship_id: str, command_id: str, message: str) -> AuditEntry:
    return AuditEntry(credential_kind="api_key", credential_id="k-other", credential_name="elsewhere",
                      programme_id=programme_id, relationship_id=relationship_id, message=message,
                      command_id=command_id, actor_id=MENTOR, outcome="applied", http_status=200)  # fmt: skip


def _row(command_id: str | None, **fields: Any) -> dict[str, Any]:
    row = {"stream_id": "rel-1", "command_id": command_id, "first_type": "MatchProposed", "actor_event": None,
           "actor": None, "version": 2, "round_holds_pair": False, "credential_kind": None, "credential_id": None,
           "credential_name": None}  # fmt: skip
    return row | fields


def test_the_systems_own_commands_unknown_kinds_and_events_without_a_command() -> None:
    # The mentor pool's proposal, and the directory's report of a leaver: the system.
    pool = _row("pool-3", actor_event="MatchProposed", actor="matching-engine")
    assert _sent_by(pool, set()).via == "internal"
    leaver = _row("directory-left-emp-1", first_type="ClosureBegun", actor_event="ClosureBegun", actor="directory")
    assert _sent_by(leaver, set()).via == "internal"
    # The same actors under any other command id did not come from the system.
    assert _sent_by(_row("x1", actor_event="MatchProposed", actor="matching-engine"), set()).via == "direct"
    # A round's proposal, for a pair it stored (its actor may be a coordinator), and the start it made.
    proposal = _row("rel-1-propose", actor_event="MatchProposed", actor=COORDINATOR, round_holds_pair=True)
    assert _sent_by(proposal, set()).via == "internal"
    assert _sent_by(proposal | {"round_holds_pair": False}, set()).via == "direct"
    start = _row(None, first_type="RelationshipStarted", version=1)
    assert _sent_by(start, {"rel-1"}).via == "internal" and _sent_by(start, set()).via == "direct"
    # A credential kind this reader does not know (a newer API's) is shown as stored.
    link = _sent_by(_row("m1", credential_kind="link", credential_id="emp-1", credential_name="meeting_outcome"), set())
    assert link.model_dump() == {"via": "link", "credential_id": "emp-1", "credential_name": "meeting_outcome"}
    assert link.describe() == "link of emp-1 (for meeting_outcome)"
    assert SentBy(via="carrier-pigeon", credential_id="c", credential_name="n").describe() == "carrier-pigeon c (name n)"
    # Deadlines and timers: no command; a command the store names but nobody recorded: direct.
    senders: dict[str | None, SentBy] = {None: SentBy(via="api_key", credential_id="k", credential_name="n")}
    assert sent_by_of_event("MeetingOverdue", None, senders).model_dump() == INTERNAL
    assert sent_by_of_event("RelationshipStarted", None, senders).via == "api_key"
    assert sent_by_of_event("MatchAccepted", "zz", senders).model_dump() == DIRECT
