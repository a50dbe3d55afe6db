"""Another language over the HTTP API alone: examples/node/drive-relationship-http.mjs, with
nothing but Node's own `fetch` (no Temporal SDK, no codec, no npm packages), drives a
relationship through its whole life against a real uvicorn API, a real Temporal dev server,
a real worker and PostgreSQL, with a key acting as participants and a coordinator key.

The worker starts only after the client got its first 503 (no worker answered in time):
the client waits Retry-After and sends the same request again, which then completes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import uuid
from typing import Any

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.event_store import PostgresEventStore
from tests.support import system_packages
from tests.support.api_support import api_stack
from tests.support.session import TEST_KEYRING, project_root
from tests.support.helpers import new_worker

EXAMPLE = project_root() / "examples" / "node"
SCRIPT = EXAMPLE / "drive-relationship-http.mjs"
NODE_TIMEOUT = 240
MINIMUM_NODE = 20


async def test_a_fetch_only_node_client_drives_a_relationship_through_the_api(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    node = system_packages.ensure_node_runtime(MINIMUM_NODE)
    async with api_stack(dev_env.client, pool, worker=False, command_timeout=2) as stack:
        coordinator_key = await stack.key("coordinator-tool", may_act_as=("coordinators",))
        participants_key = await stack.key("hr-portal", may_act_as=("participants",))
        relationship = f"r-{uuid.uuid4().hex[:8]}"
        environment = {name: value for name, value in os.environ.items() if not name.startswith("MENTORFLOW_")}
        environment |= {"MENTORFLOW_API_URL": stack.url, "MENTORFLOW_API_COORDINATOR_KEY": coordinator_key,
                        "MENTORFLOW_API_PARTICIPANTS_KEY": participants_key}  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            node, str(SCRIPT), "--programme", stack.programme, "--relationship", relationship,
            "--mentee", "emp-1042", "--mentor", "emp-311", "--coordinator", "coord-7", "--max-wait", "60",
            cwd=EXAMPLE, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(NODE_TIMEOUT):
                # No worker yet: the first command waits 2 s, answers 503, and the client says it retries.
                while not any("retrying in" in line for line in lines):
                    line = (await process.stdout.readline()).decode()
                    assert line, f"node ended before retrying:\n{''.join(lines)}{(await process.stderr.read()).decode()}"
                    lines.append(line)
                async with new_worker(stack.client, pool, task_queue=stack.context.settings.task_queue):
                    rest, stderr = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        stdout = "".join(lines) + rest.decode()
        assert process.returncode == 0, f"node exited with {process.returncode}:\n{stdout}\n{stderr.decode()}"
        outcome: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        audit_reader = stack.http(coordinator_key)
        audit = (await audit_reader.get(f"/v1/relationships/{stack.programme}/{relationship}/audit",
                                        params={"limit": 1000})).json()["audit"]  # fmt: skip

    assert outcome["workflow_id"] == f"relationship/{stack.programme}/{relationship}"
    assert (outcome["phase"], outcome["closure_reason"], outcome["meetings_held"]) == ("closed", "closed_by_mentee", 3)
    assert "phase: closed (closed_by_mentee" in stdout

    # 503 with Retry-After: the same request again, with the same Idempotency-Key, completed it once.
    first = outcome["retries"][0]
    assert (first["status"], first["code"], first["waitSeconds"]) == (503, "unavailable", 5), first
    assert first["path"].endswith("/commands/propose_match") and first["idempotencyKey"]
    steps = outcome["steps"]
    assert steps[0]["command"] == "propose_match" and steps[0]["command_id"] == first["idempotencyKey"]
    stored = await PostgresEventStore(pool, TEST_KEYRING).read_stream(relationship)
    assert [event.type for event in stored].count("MatchProposed") == 1
    assert {(row["message"], row["outcome"], row["http_status"]) for row in audit} >= {
        ("propose_match", "unavailable", 503), ("accept_match", "replay", 200), ("start", "started", 201)
    }  # fmt: skip
    assert {row["credential_name"] for row in audit} == {"coordinator-tool", "hr-portal"}

    # A retry of an applied command is answered as a replay; nothing happens twice.
    replayed = outcome["replayed"]
    assert replayed["replay"] is True and replayed["applied"] is False and replayed["events"] == ["MatchAccepted"]
    # Refusals: problem documents with the contract's codes, as Node read them.
    refusals = {refusal["code"]: refusal for refusal in outcome["refusals"]}
    assert {code: refusal["status"] for code, refusal in refusals.items()} == {
        "command_id_reused": 409, "invalid_payload": 422, "not_allowed": 403, "not_found": 404,
    }  # fmt: skip
    assert all(refusal["type"] == f"/v1/problems/{code}" for code, refusal in refusals.items())
    assert {problem["field"] for problem in refusals["invalid_payload"]["problems"]} == {"actor_id", "(unknown field)"}
    assert "agreement" in refusals["not_found"]["detail"]
    assert "accept_match refused: 422 invalid_payload" in stdout
    for refusal in outcome["refusals"]:
        assert not [event for event in stored if event.command_id == refusal["command_id"]
                    and refusal["code"] != "command_id_reused"], refusal  # fmt: skip

    # Each step, as the API answered it, is in the event store; Node read the same events back.
    assert [step["command"] for step in steps] == [
        "propose_match", "accept_match", "accept_match", "accept_match", "propose_agreement", "sign_agreement",
        "sign_agreement", "record_meeting", "record_meeting", "record_meeting", "record_goal_progress",
        "submit_feedback", "submit_feedback", "request_review", "submit_review", "submit_review",
        "close_relationship", "submit_reflection", "submit_reflection",
    ]  # fmt: skip
    for step in steps:
        caused = [event for event in stored if event.command_id == step["command_id"]]
        assert [event.type for event in caused] == step["events"] and caused[-1].version == step["version"], step
    assert steps[-1]["phase"] == "closed"
    assert outcome["event_types"] == [event.type for event in stored]


async def test_without_an_answer_it_retries_until_its_budget_ends_then_says_so_in_one_line() -> None:
    node = system_packages.ensure_node_runtime(MINIMUM_NODE)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {name: value for name, value in os.environ.items() if not name.startswith("MENTORFLOW_")}
    process = await asyncio.create_subprocess_exec(
        node, str(SCRIPT), "--api", f"http://127.0.0.1:{port}", "--max-wait", "2",
        env=environment | {"MENTORFLOW_API_KEY": "mfk_unused"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1, (stdout, stderr)
    retries = stdout.decode().splitlines()
    retry = "POST /v1/relationships: fetch failed (ECONNREFUSED); retrying in 1 s"
    assert retries and all(line == retry for line in retries)
    assert stderr.decode().splitlines() == ["error: POST /v1/relationships: fetch failed (ECONNREFUSED)"]


def test_the_client_uses_nothing_but_node_itself() -> None:
    """No npm package, no Temporal SDK, no codec: every import is a `node:` module or a file beside it."""
    for name in ("api-client.mjs", "drive-relationship-http.mjs"):
        source = (EXAMPLE / name).read_text()
        imported = re.findall(r"""^import .* from ['"]([^'"]+)['"];?$""", source, re.MULTILINE)
        assert imported and all(spec.startswith("node:") or spec == "./api-client.mjs" for spec in imported), imported
        assert "fetch(" in source or name != "api-client.mjs"


def test_without_node_it_fails_with_one_line_saying_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    which = shutil.which
    missing = ("apt-get", "node")
    monkeypatch.setattr("tests.support.system_packages.shutil.which", lambda name: None if name in missing else which(name))
    with pytest.raises(pytest.fail.Exception) as failed:
        system_packages.ensure_node_runtime(MINIMUM_NODE)
    assert failed.value.pytrace is False and str(failed.value) == (
        "this test (Node.js) needs node, and there is no apt-get here to install it: install nodejs "
        "(or the same for your system)"
    )


def test_a_node_too_old_fails_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    old = tmp_path / "node"
    old.write_text("#!/bin/sh\necho v18.19.1\n")
    old.chmod(0o755)
    which = shutil.which
    monkeypatch.setattr("tests.support.system_packages.shutil.which", lambda name: str(old) if name == "node" else which(name))
    with pytest.raises(pytest.fail.Exception) as failed:
        system_packages.ensure_node_runtime(MINIMUM_NODE)
    message = str(failed.value)
    assert "\n" not in message and message.startswith(f"this test needs Node.js 20 or later; {old} is v18.19.1: ")


def test_the_client_is_documented() -> None:
    docs = (project_root() / "docs" / "api.md").read_text()
    readme = (EXAMPLE / "README.md").read_text()
    for text in (docs, readme):
        assert "drive-relationship-http.mjs" in text and "api-client.mjs" in text
