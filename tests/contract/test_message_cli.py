"""Sending messages from a shell, against a real dev server and worker: `mentorflow
relationship update/signal/send` (exit codes, --json) and the `temporal` CLI examples of
docs/contract.md. Also: a signal with no argument or several never gets a relationship stuck."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.testing import WorkflowEnvironment

from activities.directory import Directory
from events.people import Programme
from events.settings import ProgrammeSettings
from mentorflow.codec_server import CodecServerConfig, start_codec_server
from tests.support.session import TEST_KEYRING
from tests.support.helpers import failed_workflow_tasks, new_worker, start_relationship

CLI = [sys.executable, "-m", "mentorflow.cli"]


def address_of(client: Client) -> str:
    return client.service_client.config.target_host


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def run(*command: str, env: dict[str, str], stdin: bytes | None = None) -> Ran:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout=120)
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode())


async def create_programme(pool: asyncpg.Pool) -> str:
    programme = f"prog-{uuid.uuid4().hex[:6]}"
    await Directory(pool).create_or_update_programme(
        Programme(programme_id=programme, name="Shell", settings=ProgrammeSettings(coordinator_ids=("coord-7",)))
    )
    return programme


async def phase_of(handle: WorkflowHandle[Any, Any], wanted: str, timeout: float = 10) -> str:
    """The phase, once it is `wanted` (a signal is decided after it is delivered)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        phase: str = (await handle.query("state"))["phase"]
        if phase == wanted or asyncio.get_running_loop().time() > deadline:
            return phase
        await asyncio.sleep(0.1)


# -- mentorflow relationship update / signal / send ---------------------------------------------


async def test_update_signal_and_send_answer_with_meaningful_exit_codes(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MENTORFLOW_")}
    env.update(
        MENTORFLOW_TEMPORAL_ADDRESS=address_of(dev_env.client),
        MENTORFLOW_TEMPORAL_NAMESPACE="mentorflow",
        MENTORFLOW_STATE_DIR=str(tmp_path / "state"),
        MENTORFLOW_ENCRYPTION_KEYS=TEST_KEYRING.format(),
    )
    programme = await create_programme(pool)
    async with new_worker(dev_env.client, pool) as worker:
        handle = await start_relationship(
            dev_env.client, worker, programme_id=programme, relationship_id="r-cli", mentee_id="emp-1042", settings=None
        )
        workflow_id = handle.id

        async def mentorflow(*arguments: str, stdin: bytes | None = None) -> Ran:
            return await run(*CLI, "relationship", *arguments, env=env, stdin=stdin)

        propose = json.dumps({"command_id": "c-propose", "actor_id": "coord-7", "mentor_id": "emp-311"})
        proposed = await mentorflow("update", workflow_id, "propose_match", "--payload", propose, "--json")
        assert proposed.code == 0, proposed.stderr
        assert proposed.json() == {"outcome": "applied", "command_id": "c-propose", "applied": True, "replay": False,
                                   "events": ["MatchProposed"], "version": 2, "phase": "matching"}  # fmt: skip

        # Sent again, the same command is answered as a replay of what it did the first time.
        again = await mentorflow("update", workflow_id, "propose_match", "--payload", propose, "--json")
        assert again.code == 0, again.stderr
        assert again.json() == {**proposed.json(), "outcome": "already_applied", "applied": False, "replay": True}

        # The same command id with other content is refused, not answered as applied.
        reused = await mentorflow("update", workflow_id, "accept_match", "--payload",
                                  '{"command_id": "c-propose", "actor_id": "emp-1042"}', "--json")  # fmt: skip
        assert reused.code == 3 and reused.json()["code"] == "command_id_reused", reused.stderr

        stranger = await mentorflow("update", workflow_id, "accept_match", "--payload",
                                    '{"command_id": "c-stranger", "actor_id": "stranger"}', "--json")  # fmt: skip
        assert stranger.code == 3
        assert stranger.stderr.strip().splitlines() == [
            "error: accept_match rejected (not_allowed): actor stranger is not a party to this relationship"
        ]
        assert (stranger.json()["outcome"], stranger.json()["code"]) == ("rejected", "not_allowed")
        assert stranger.json()["reason"] == "actor stranger is not a party to this relationship"

        invalid = await mentorflow("update", workflow_id, "accept_match", "--payload", '{"actor": "emp-1042"}')
        assert invalid.code == 2
        assert "accept_match: invalid payload: actor_id: Field required; (unknown field): is not a field of this message" \
            in invalid.stderr  # fmt: skip

        # A signal with --wait reads the state until the relationship has decided.
        accepted = await mentorflow("signal", workflow_id, "accept_match", "--payload",
                                    '{"command_id": "c-accept-mentee", "actor_id": "emp-1042"}', "--wait", "--json")  # fmt: skip
        assert accepted.code == 0, accepted.stderr
        assert accepted.json()["outcome"] == "applied" and accepted.json()["phase"] == "matching"
        # The same command as an update now: applied once already, so nothing happens.
        repeated = await mentorflow("update", workflow_id, "accept_match", "--payload",
                                    '{"command_id": "c-accept-mentee", "actor_id": "emp-1042"}')  # fmt: skip
        assert repeated.code == 0, repeated.stderr
        assert "command c-accept-mentee was already applied earlier; nothing changed" in repeated.stdout

        too_early = await mentorflow("signal", workflow_id, "sign_agreement", "--payload",
                                     '{"command_id": "c-sign", "actor_id": "emp-1042", "agreement_version": 1}', "--wait")  # fmt: skip
        assert too_early.code == 3
        assert "sign_agreement rejected (wrong_phase): sign_agreement is only allowed in the agreement phase" in too_early.stderr

        # Without --wait a signal is only delivered; the payload from a file, and from stdin.
        payload_file = tmp_path / "accept.json"
        payload_file.write_text('{"command_id": "c-accept-mentor", "actor_id": "emp-311"}')
        delivered = await mentorflow("signal", workflow_id, "accept_match", "--payload", f"@{payload_file}", "--json")
        assert delivered.code == 0, delivered.stderr
        assert delivered.json() == {"outcome": "signalled", "signalled": "accept_match", "command_id": "c-accept-mentor"}
        assert await phase_of(handle, "agreement") == "agreement"

        # `send` is the older spelling of the same commands.
        sent = await mentorflow("send", workflow_id, "raise_concern", "-", "--json",
                                stdin=b'{"command_id": "c-concern", "actor_id": "emp-1042", "text": "slow start"}')  # fmt: skip
        assert sent.code == 0, sent.stderr
        assert sent.json()["events"] == ["ConcernRaised"]

        missing = await mentorflow("update", f"relationship/{programme}/nobody", "accept_match", "--payload",
                                   '{"actor_id": "emp-1042"}', "--timeout", "10")  # fmt: skip
        assert missing.code == 1
        assert "not found" in missing.stderr.lower()

        assert await failed_workflow_tasks(handle) == 0


# -- the temporal CLI, as docs/contract.md shows it ---------------------------------------------


async def test_the_temporal_cli_examples_of_the_docs_work(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, temporal_binary: str
) -> None:
    token = secrets.token_hex(32)
    codec = await start_codec_server(CodecServerConfig(keyring=TEST_KEYRING, namespace="mentorflow", tokens=[token]))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TEMPORAL_", "MENTORFLOW_"))}
    env.update(
        TEMPORAL_ADDRESS=address_of(dev_env.client),
        TEMPORAL_NAMESPACE="mentorflow",
        TEMPORAL_CODEC_ENDPOINT=codec.url,
        TEMPORAL_CODEC_AUTH=f"Bearer {token}",
    )
    programme = await create_programme(pool)
    workflow_id = f"relationship/{programme}/r-1042"

    async def temporal(*arguments: str) -> Ran:
        return await run(temporal_binary, "workflow", *arguments, env=env)

    try:
        async with new_worker(dev_env.client, pool) as worker:
            started = await temporal(
                "start", "--type", "Relationship", "--task-queue", worker.task_queue, "--workflow-id", workflow_id,
                "--input", json.dumps({"relationship_id": "r-1042", "programme_id": programme, "mentee_id": "emp-1042"}),
            )  # fmt: skip
            assert started.code == 0, started.stderr

            updated = await temporal(
                "update", "execute", "--workflow-id", workflow_id, "--name", "propose_match", "--update-id", "hr-7781",
                "--input", '{"command_id": "hr-7781", "actor_id": "coord-7", "mentor_id": "emp-311"}',
                "--output", "json",
            )  # fmt: skip
            assert updated.code == 0, updated.stderr
            assert updated.json()["result"]["events"] == ["MatchProposed"]

            signalled = await temporal("signal", "--workflow-id", workflow_id, "--name", "accept_match",
                                       "--input", '{"command_id": "hr-7782", "actor_id": "emp-1042"}')  # fmt: skip
            assert signalled.code == 0, signalled.stderr

            refused = await temporal("update", "execute", "--workflow-id", workflow_id, "--name", "accept_match",
                                     "--input", '{"command_id": "hr-x", "actor_id": "emp-311", "extra": 1}')  # fmt: skip
            assert refused.code == 1
            assert "invalid payload: (unknown field): is not a field of this message" in refused.stderr
            assert "type: invalid_payload, retryable: false" in refused.stderr

            # No --input at all: recorded as rejected, the relationship carries on.
            bare = await temporal("signal", "--workflow-id", workflow_id, "--name", "decline_match")
            assert bare.code == 0, bare.stderr

            handle = dev_env.client.get_workflow_handle(workflow_id)
            await handle.execute_update("accept_match", {"command_id": "hr-7783", "actor_id": "emp-311"})
            queried = await temporal("query", "--workflow-id", workflow_id, "--name", "state", "--output", "json")
            assert queried.code == 0, queried.stderr
            state = queried.json()["queryResult"][0]
            assert (state["phase"], state["mentor_id"]) == ("agreement", "emp-311")
            assert [(r["command_name"], r["reason"]) for r in state["rejected_commands"]] == [
                ("decline_match", "invalid payload: expected one argument, a JSON object; got 0")
            ]
            assert await failed_workflow_tasks(handle) == 0
    finally:
        await codec.stop()


async def test_a_signal_with_no_argument_or_several_is_recorded_not_stuck(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    programme = await create_programme(pool)
    async with new_worker(dev_env.client, pool) as worker:
        handle = await start_relationship(
            dev_env.client, worker, programme_id=programme, relationship_id="r-args", mentee_id="emp-1042", settings=None
        )
        await handle.signal("raise_concern")
        await handle.signal("raise_concern", args=[{"command_id": "c-1", "actor_id": "emp-1042", "text": "a"}, {}])
        for args in ([], [{"command_id": "c-2", "actor_id": "emp-1042", "text": "a"}, 2]):
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update("raise_concern", args=args)
            assert f"expected one argument, a JSON object; got {len(args)}" in str(refused.value.cause)
        # Not a JSON object: recorded. Not JSON at all: the SDK refuses the update and drops
        # the signal (a log line) before our code runs; either way the relationship goes on.
        await handle.signal("raise_concern", RawValue(Payload(metadata={"encoding": b"binary/plain"}, data=b"x")))
        broken = RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b"{not json"))
        await handle.signal("raise_concern", broken)
        with pytest.raises(WorkflowUpdateFailedError) as undecodable:
            await handle.execute_update("raise_concern", broken)
        assert "Failed decoding arguments" in str(undecodable.value.cause)
        result = await handle.execute_update("raise_concern", {"command_id": "c-3", "actor_id": "emp-1042", "text": "a"})
        assert result["events"] == ["ConcernRaised"]
        state = await handle.query("state")
        assert [r["reason"] for r in state["rejected_commands"]] == [
            "invalid payload: expected one argument, a JSON object; got 0",
            "invalid payload: expected one argument, a JSON object; got 2",
            "invalid payload: payload: should be a JSON object",
        ]
        assert await failed_workflow_tasks(handle) == 0


def test_the_documented_temporal_commands_use_real_flags(temporal_binary: str) -> None:
    """Every `temporal workflow …` line in docs/contract.md names a real subcommand and real flags."""
    import re
    import subprocess

    from tests.support.session import project_root

    text = (project_root() / "docs" / "contract.md").read_text().replace("\\\n", " ")
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("temporal workflow ")]
    assert len(commands) >= 4
    global_flags = subprocess.run([temporal_binary, "options"], capture_output=True, text=True, timeout=60).stdout
    for command in commands:
        words = command.split()
        subcommand = words[2:4] if words[2] == "update" else words[2:3]
        shown = subprocess.run([temporal_binary, "workflow", *subcommand, "--help"], capture_output=True, text=True,
                               timeout=60)  # fmt: skip
        assert shown.returncode == 0, command
        for flag in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", command):
            assert flag in shown.stdout or flag in global_flags, f"{flag} is not a flag of: {' '.join(words[:4])}"
