"""What an operator sees, from a real `mentorflow dev`: the Temporal Web UI in headless
Chromium, and the CLI's `relationship list / history / events`.

One `mentorflow dev` (Temporal dev server with its Web UI and codec server, embedded
PostgreSQL, a worker) serves the whole module; a relationship is driven to active (with a
meeting, goal progress and a concern) through the CLI, and then each test reads it back the
way an operator would. The browser test needs Debian's `chromium` and Node.js (installed
with apt-get when missing, as root) and npm `playwright-core` (installed into
tests/ui/node_modules/); where it cannot install them it fails with one line.
Screenshots are kept under the test's tmp folder and copied to tests/artifacts/web-ui/.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from mentorflow.cli import app
from mentorflow.operations import ensure_search_attributes
from tests.support.session import project_root
from tests.support.system_packages import CHROMIUM, UI_SCRIPTS, ensure_debian_packages, ensure_node, npm_install
from tests.support.dev_stack import DevProcess, dev_environment
from workflows.search_attributes import ALL_KEYS

ARTIFACTS = project_root() / "tests" / "artifacts" / "web-ui"
PROGRAMME = "ui-prog"
MENTEE = "emp-ui-1"
MENTOR = "emp-ui-2"
COORDINATOR = "coord-ui"
# Planted in the concern and the meeting notes: no page and no command may show it.
SECRET = "SECRET-ui-5d1c"


# -- running the CLI in this process ---------------------------------------------------------


async def mentorflow(env: dict[str, str], *args: str) -> Result:
    """`mentorflow ARGS` with this environment (in a thread: the commands run their own loop)."""
    overlay: dict[str, str | None] = {key: None for key in os.environ if key.startswith("MENTORFLOW_")}
    overlay |= {key: value for key, value in env.items() if key.startswith("MENTORFLOW_")}
    overlay["COLUMNS"] = "200"  # tables as wide as they like
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=overlay)


async def succeeds(env: dict[str, str], *args: str) -> Result:
    result = await mentorflow(env, *args)
    assert result.exit_code == 0, f"mentorflow {' '.join(args)} exited with {result.exit_code}:\n{result.stderr}{result.output}"
    return result


@dataclass
class Setup:
    env: dict[str, str]
    workdir: Path
    ui_port: str
    workflow_id: str
    relationship_id: str
    run_id: str
    state: dict[str, Any]


@pytest.fixture(scope="module")
async def active_relationship(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    workdir = tmp_path_factory.mktemp("web-ui")
    env = dev_environment(workdir / "state")
    dev = DevProcess(env, workdir, "dev")
    try:
        await dev.wait_until_ready()
        await succeeds(env, "programme", "create", "--id", PROGRAMME, "--name", "UI programme",
                       "--set", f"coordinator_ids={COORDINATOR}")  # fmt: skip
        started = await succeeds(env, "relationship", "start", "--programme", PROGRAMME, "--mentee", MENTEE, "--json")
        workflow_id, relationship_id, run_id = (json.loads(started.stdout)[key] for key in ("workflow_id", "relationship_id", "run_id"))
        terms = {"objective": "Grow", "goals": [{"title": "Run a design review"}], "meeting_frequency": "biweekly",
                 "meeting_minutes": 60, "term_months": 6}  # fmt: skip
        commands: list[tuple[str, dict[str, Any]]] = [
            ("propose_match", {"actor_id": COORDINATOR, "mentor_id": MENTOR}),
            ("accept_match", {"actor_id": MENTEE}),
            ("accept_match", {"actor_id": MENTOR}),
            ("propose_agreement", {"actor_id": MENTEE, "terms": terms}),
            ("sign_agreement", {"actor_id": MENTEE, "agreement_version": 1}),
            ("sign_agreement", {"actor_id": MENTOR, "agreement_version": 1}),
            # held_at: made when it is sent (it may not precede the agreement)
            ("record_meeting", {"actor_id": MENTOR, "duration_minutes": 45, "notes": f"{SECRET} notes"}),
            ("record_goal_progress", {"actor_id": MENTEE, "goal_id": "g1", "progress_percent": 40}),
            ("raise_concern", {"actor_id": MENTEE, "command_id": "concern-ui-1", "text": f"{SECRET} a worry"}),
        ]  # fmt: skip
        for command, payload in commands:
            if command == "record_meeting":
                payload["held_at"] = datetime.now(UTC).isoformat()
            await succeeds(env, "relationship", "send", workflow_id, command, json.dumps(payload), "--json")
        shown = await succeeds(env, "relationship", "show", workflow_id, "--json")
        state = json.loads(shown.stdout)
        assert (state["phase"], state["health"], state["meetings_held"]) == ("active", "at_risk", 1)
        yield Setup(env, workdir, env["MENTORFLOW_TEMPORAL_UI_PORT"], workflow_id, relationship_id, run_id, state)
    finally:
        dev.kill()


# -- the Web UI in a real browser ------------------------------------------------------------


def chromium() -> Path:
    """Debian's chromium, installed with apt-get when it is missing (tests/support/system_packages.py)."""
    ensure_debian_packages([str(CHROMIUM)], ["chromium"], "the Web UI test (a real browser)")
    return CHROMIUM


def playwright_core() -> None:
    """npm playwright-core (the version in tests/ui/package.json) in tests/ui/node_modules/."""
    wanted = json.loads((UI_SCRIPTS / "package.json").read_text())["dependencies"]["playwright-core"]
    installed = UI_SCRIPTS / "node_modules" / "playwright-core" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == wanted:
        ensure_node()
        return
    npm_install(UI_SCRIPTS, ["--no-audit", "--no-fund", "--no-package-lock"], f"the Web UI test (playwright-core {wanted})")


async def read_web_ui(setup: Setup, list_query: str, expect: dict[str, str], screenshots: Path) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None
    config = {
        "base": f"http://127.0.0.1:{setup.ui_port}", "namespace": "mentorflow", "workflowId": setup.workflow_id,
        "runId": setup.run_id, "listQuery": list_query, "expect": expect, "screenshots": str(screenshots),
        "chromium": str(CHROMIUM),
    }  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        node, str(UI_SCRIPTS / "webui.mjs"), json.dumps(config), cwd=UI_SCRIPTS,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    lines = stdout.decode().strip().splitlines()
    assert lines, f"webui.mjs printed nothing (exit {process.returncode}):\n{stderr.decode()[-3000:]}"
    pages: dict[str, Any] = json.loads(lines[-1])
    assert process.returncode == 0 and "error" not in pages, (
        f"{pages.get('error')} on {pages.get('url')}; screenshots: {pages.get('screenshots')}\n{stderr.decode()[-2000:]}"
    )
    return pages


def keep_screenshots(paths: list[str]) -> list[Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    kept = []
    for path in paths:
        target = ARTIFACTS / Path(path).name
        shutil.copyfile(path, target)
        kept.append(target)
    print("Web UI screenshots:", *paths, "copied to:", *kept, sep="\n  ")
    return kept


async def test_the_web_ui_shows_what_a_relationship_is_and_where_it_stands(
    active_relationship: Setup, tmp_path: Path
) -> None:
    chromium()
    playwright_core()
    setup, state = active_relationship, active_relationship.state
    next_meeting = state["next_meeting"]["meeting_number"]
    list_query = (f"MentoringProgramme = '{PROGRAMME}' AND MentoringPhase = 'active' AND MentoringHealth = 'at_risk' "
                  f"AND MentorId = '{MENTOR}' AND MeetingsHeld = 1 AND ExecutionStatus = 'Running'")  # fmt: skip
    summary = f"Mentee {MENTEE} in programme {PROGRAMME}"
    pages = await read_web_ui(
        setup,
        list_query,
        {"history": summary, "currentDetails": "Open concerns: 1", "searchAttributes": "MentoringPhase"},
        tmp_path,
    )
    try:
        # The history: the start's summary (decrypted by the codec server), and activities
        # and timers that say what they do.
        assert summary in pages["history"]
        assert "Store event" in pages["history"] and "Read programme settings" in pages["history"]
        assert "Invite to mentee and mentor for meeting 1" in pages["history"]

        # User Metadata: start summary and details, and the current details the worker keeps.
        assert pages["summary"].strip() == summary
        details = pages["details"]
        assert setup.relationship_id in details and PROGRAMME in details and MENTEE in details
        assert f"coordinator_ids: {COORDINATOR}" in details
        current = pages["currentDetails"]
        assert "Phase active" in current and "health at_risk (concern_open)" in current
        assert f"mentor {MENTOR}" in current
        assert f"Next due: Meeting {next_meeting}, by" in current
        assert "Meetings: 1 held" in current
        assert "Open concerns: 1 (concern-ui-1)" in current
        assert "Goal g1: 40%" in current

        # Search attributes, as stored; and the workflow list filtered by them.
        attributes = pages["searchAttributes"]
        for name, value in [("MentoringPhase", '"active"'), ("MentoringHealth", '"at_risk"'),
                            ("MentoringProgramme", f'"{PROGRAMME}"'), ("MenteeId", f'"{MENTEE}"'),
                            ("MentorId", f'"{MENTOR}"'), ("MeetingsHeld", "1"), ("NextDueAt", '"20')]:  # fmt: skip
            assert f'"{name}": {value}' in attributes, name
        assert setup.workflow_id in pages["list"]

        for text in (pages["history"], details, current, attributes, pages["list"]):
            assert SECRET not in text and "Run a design review" not in text
    finally:
        keep_screenshots(pages["screenshots"])


# -- the CLI -------------------------------------------------------------------------------


async def listed(setup: Setup, *options: str) -> list[dict[str, Any]]:
    """`relationship list --json`, waiting for visibility to catch up (it is asynchronous)."""
    for _ in range(50):
        result = await succeeds(setup.env, "relationship", "list", "--programme", PROGRAMME, *options, "--json")
        rows: list[dict[str, Any]] = json.loads(result.stdout)["relationships"]
        if rows:
            return rows
        await asyncio.sleep(0.2)
    return []


async def test_relationship_list_filters_by_search_attributes(active_relationship: Setup) -> None:
    setup = active_relationship
    rows = await listed(setup, "--phase", "active", "--health", "at_risk")
    assert [(r["workflow_id"], r["mentee_id"], r["mentor_id"], r["meetings_held"], r["status"]) for r in rows] == [
        (setup.workflow_id, MENTEE, MENTOR, 1, "running")
    ]
    due = datetime.fromisoformat(rows[0]["next_due_at"])
    assert due == datetime.fromisoformat(setup.state["next_meeting"]["starts_at"])

    later = (due + timedelta(days=1)).isoformat()
    assert [r["workflow_id"] for r in await listed(setup, "--due-before", later)] == [setup.workflow_id]
    for options in (["--phase", "matching"], ["--health", "healthy"], ["--due-before", due.isoformat()],
                    ["--query", "MentorId = 'someone-else'"]):  # fmt: skip
        none = await succeeds(setup.env, "relationship", "list", "--programme", PROGRAMME, *options, "--json")
        assert json.loads(none.stdout)["relationships"] == [], options

    table = await succeeds(setup.env, "relationship", "list", "--programme", PROGRAMME)
    assert setup.workflow_id in table.stdout and "at_risk" in table.stdout
    assert f"MentoringProgramme = '{PROGRAMME}'" in table.stderr

    for options, message in [(["--phase", "sleeping"], "--phase 'sleeping'"),
                             (["--due-before", "tomorrow"], "--due-before 'tomorrow'"),
                             (["--query", "MentoringPhase = = 'x'"], "the list query was refused")]:  # fmt: skip
        bad = await mentorflow(setup.env, "relationship", "list", *options)
        assert bad.exit_code == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


async def test_relationship_history_shows_what_each_event_was_for(active_relationship: Setup) -> None:
    setup = active_relationship
    result = await succeeds(setup.env, "relationship", "history", setup.workflow_id, "--json")
    rows = json.loads(result.stdout)
    assert rows[0]["event_type"] == "WorkflowExecutionStarted"
    assert rows[0]["summary"] == f"Mentee {MENTEE} in programme {PROGRAMME}"
    summaries = [row["summary"] for row in rows if row["summary"]]
    assert "Read programme settings" in summaries
    assert any(s.startswith("Store event") for s in summaries)
    assert any("Invite to mentee and mentor for meeting 1" in s for s in summaries), summaries
    assert any(row["event_type"] == "TimerStarted" and row["summary"] for row in rows)
    updates = [row["detail"] for row in rows if row["event_type"] == "WorkflowExecutionUpdateAccepted"]
    assert updates[:3] == ["propose_match", "accept_match", "accept_match"]
    assert SECRET not in result.stdout

    table = await succeeds(setup.env, "relationship", "history", setup.workflow_id)
    assert "WorkflowExecutionStarted" in table.stdout and "Read programme settings" in table.stdout

    missing = await mentorflow(setup.env, "relationship", "history", f"relationship/{PROGRAMME}/nobody")
    assert missing.exit_code == 1 and "nobody" in missing.stderr and "Traceback" not in missing.stderr


async def test_relationship_events_lists_the_stored_stream(active_relationship: Setup) -> None:
    setup = active_relationship
    result = await succeeds(setup.env, "relationship", "events", setup.workflow_id, "--json")
    rows = json.loads(result.stdout)
    assert [row["version"] for row in rows] == list(range(1, len(rows) + 1)) == list(range(1, setup.state["version"] + 1))
    types = [row["event_type"] for row in rows]
    assert types[:4] == ["RelationshipStarted", "MatchProposed", "MatchAccepted", "MatchAccepted"]
    assert {"RelationshipActivated", "MeetingHeld", "ConcernRaised"} <= set(types)
    assert next(row for row in rows if row["event_type"] == "ConcernRaised")["command_id"] == "concern-ui-1"
    assert SECRET not in result.stdout

    by_id = await succeeds(setup.env, "relationship", "events", setup.relationship_id)
    assert "RelationshipStarted" in by_id.stdout and "ConcernRaised" in by_id.stdout

    unknown = await mentorflow(setup.env, "relationship", "events", "no-such-relationship")
    assert unknown.exit_code == 1 and "no events for relationship no-such-relationship" in unknown.stderr
    malformed = await mentorflow(setup.env, "relationship", "events", "relationship/only-two")
    assert malformed.exit_code == 2 and "relationship/PROGRAMME/ID" in malformed.stderr


# -- a worker registers the search attributes --------------------------------------------------


async def test_a_worker_registers_missing_search_attributes_or_warns_when_refused(
    temporal_binary: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = await WorkflowEnvironment.start_local(namespace="bare", dev_server_existing_path=temporal_binary)
    try:
        client = env.client
        service = client.operator_service

        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise RPCError("Request unauthorized.", RPCStatusCode.PERMISSION_DENIED, b"")

        with monkeypatch.context() as patched:
            patched.setattr(service, "add_search_attributes", refuse)
            assert await ensure_search_attributes(client, "bare") == []
        assert "lacks search attributes" in caplog.text and "MentoringPhase" in caplog.text

        assert await ensure_search_attributes(client, "bare") == sorted(key.name for key in ALL_KEYS)
        assert await ensure_search_attributes(client, "bare") == []
    finally:
        await env.shutdown()
