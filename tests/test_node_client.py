"""Another language drives a relationship: examples/node/drive-relationship.mjs with the npm
package @temporalio/client, plain JSON matching the contract, a real dev server and worker.

The test installs the example's npm packages itself (into examples/node/node_modules,
git-ignored; skipped when the pinned version is already there)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.directory import Directory
from events.people import Programme
from events.settings import ProgrammeSettings
from tests.conftest import TEST_KEYRING, project_root
from tests.helpers import failed_workflow_tasks, new_worker

EXAMPLE = project_root() / "examples" / "node"
NPM_TIMEOUT = 600


def node_and_npm() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are not installed (apt-get install nodejs npm)")
    return node, npm


def pinned_client_version() -> str:
    version: str = json.loads((EXAMPLE / "package.json").read_text())["dependencies"]["@temporalio/client"]
    return version


def installed_client_version() -> str | None:
    installed = EXAMPLE / "node_modules" / "@temporalio" / "client" / "package.json"
    if not installed.exists():
        return None
    version: str = json.loads(installed.read_text())["version"]
    return version


@pytest.fixture(scope="module")
def node_example() -> str:
    """`node`, with the example's packages installed (once; test runs may overlap, so under a lock)."""
    node, npm = node_and_npm()
    with open(EXAMPLE / "package.json", "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed_client_version() != pinned_client_version():
            installed = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=EXAMPLE, capture_output=True, text=True, timeout=NPM_TIMEOUT,
            )  # fmt: skip
            assert installed.returncode == 0, f"npm install failed:\n{installed.stdout}\n{installed.stderr}"
    assert installed_client_version() == pinned_client_version()
    return node


def address_of(client: Client) -> str:
    return client.service_client.config.target_host


async def run_node(node: str, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        node, "drive-relationship.mjs", *args, cwd=EXAMPLE, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
async def test_a_node_client_drives_a_relationship_with_plain_json(
    node_example: str, dev_env: WorkflowEnvironment, pool: asyncpg.Pool, encrypted: bool
) -> None:
    programme = f"prog-node-{uuid.uuid4().hex[:6]}"
    await Directory(pool).create_or_update_programme(
        Programme(programme_id=programme, name="Node", settings=ProgrammeSettings(coordinator_ids=("coord-7",)))
    )
    # The project's workers encrypt; a worker without a codec shows that the example needs
    # nothing but plain JSON then.
    client = dev_env.client if encrypted else await Client.connect(
        address_of(dev_env.client), namespace="mentorflow", data_converter=pydantic_data_converter
    )  # fmt: skip
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MENTORFLOW_")}
    if encrypted:
        environment["MENTORFLOW_ENCRYPTION_KEYS"] = TEST_KEYRING.format()
    relationship_id = f"r-{uuid.uuid4().hex[:8]}"
    async with new_worker(client, pool) as worker:
        code, stdout, stderr = await run_node(
            node_example,
            "--address", address_of(dev_env.client), "--namespace", "mentorflow", "--task-queue", worker.task_queue,
            "--programme", programme, "--relationship", relationship_id,
            "--mentee", "emp-1042", "--mentor", "emp-311", "--coordinator", "coord-7",
            env=environment,
        )  # fmt: skip
        assert code == 0, f"node exited with {code}:\n{stdout}\n{stderr}"
        outcome: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        handle = client.get_workflow_handle(outcome["workflow_id"])
        state = await handle.query("state")

    assert outcome["workflow_id"] == f"relationship/{programme}/{relationship_id}"
    assert (outcome["phase"], outcome["mentor_id"], outcome["encrypted"]) == ("agreement", "emp-311", encrypted)
    assert (state["phase"], state["mentor_id"], state["version"]) == ("agreement", "emp-311", outcome["version"])
    # The malformed update came back with its fields named; the malformed signal was recorded.
    assert outcome["bad_update_error"] == (
        "invalid payload: actor_id: Field required; actor: Extra inputs are not permitted"
    )
    assert outcome["rejected_signal"]["command_name"] == "decline_match"
    assert outcome["rejected_signal"]["reason"] == "invalid payload: reason: Input should be a valid string"
    assert "update accept_match refused: invalid payload: actor_id: Field required" in stdout
    assert "phase: agreement" in stdout
    assert await failed_workflow_tasks(handle) == 0

    if encrypted:
        # What Node sent reached the server encrypted: a client without the codec sees no JSON.
        raw = await Client.connect(address_of(dev_env.client), namespace="mentorflow")
        history = await raw.get_workflow_handle(outcome["workflow_id"]).fetch_history()
        sent = [event.workflow_execution_started_event_attributes.input for event in history.events
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED]  # fmt: skip
        sent += [event.workflow_execution_signaled_event_attributes.input for event in history.events
                 if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]  # fmt: skip
        assert len(sent) == 3
        for payloads in sent:
            assert [p.metadata["encoding"] for p in payloads.payloads] == [b"binary/encrypted"]
            assert b"emp-1042" not in payloads.payloads[0].data


def test_the_example_pins_its_client_and_keeps_node_modules_out_of_git() -> None:
    package = json.loads((EXAMPLE / "package.json").read_text())
    assert all(version[0].isdigit() for version in package["dependencies"].values()), "pin exact versions"
    lock = json.loads((EXAMPLE / "package-lock.json").read_text())
    assert lock["packages"][""]["dependencies"] == package["dependencies"]
    assert "node_modules/" in (EXAMPLE / ".gitignore").read_text().split()


def test_the_example_script_is_documented() -> None:
    docs = (project_root() / "docs" / "contract.md").read_text()
    assert "examples/node/drive-relationship.mjs" in docs and "examples/node/codec.mjs" in docs
    assert Path(EXAMPLE / "drive-relationship.mjs").exists() and Path(EXAMPLE / "codec.mjs").exists()
