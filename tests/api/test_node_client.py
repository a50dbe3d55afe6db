"""Another language drives a relationship through its whole life: examples/node/drive-relationship.mjs
with the npm package @temporalio/client, JSON matching the contract and the AES-GCM codec of
examples/node/codec.mjs, against a real dev server and worker.

The test installs what it needs itself, as README.md says: Node.js and npm with apt-get when
missing (tests/support/system_packages.py), and the example's npm packages into
examples/node/node_modules (git-ignored; only when the pinned version is not there yet).
Where it cannot, it fails with one line saying what to install: it never skips."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
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
from activities.event_store import PostgresEventStore
from events.people import Programme
from events.settings import ProgrammeSettings
from events.decider import fold
from mentorflow.config import Settings
from tests.support.session import TEST_KEYRING, project_root
from tests.support.helpers import RecordingChannel, failed_workflow_tasks
from tests.support.system_packages import ensure_node, ensure_node_runtime, fail, npm_install
from worker import build_worker
from workflows.relationship import Relationship

EXAMPLE = project_root() / "examples" / "node"
NPM_TIMEOUT = 600
NODE_TIMEOUT = 120


def node_and_npm() -> tuple[str, str]:
    """Installed with apt-get when missing (as root), else one line saying what to install;
    as recent as the example's `engines` asks (an older Node.js: one line too)."""
    node, npm = ensure_node()
    wanted = json.loads((EXAMPLE / "package.json").read_text())["engines"]["node"]  # ">=20.3"
    major, _, minor = wanted.removeprefix(">=").partition(".")
    return ensure_node_runtime(int(major), int(minor or 0)), npm


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
    node, _ = node_and_npm()
    with open(EXAMPLE / "package.json", "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed_client_version() != pinned_client_version():
            npm_install(EXAMPLE, ["--no-audit", "--no-fund", "--loglevel=error"], "the Node.js client test", NPM_TIMEOUT)
    if installed_client_version() != pinned_client_version():
        fail(f"the Node.js client test needs @temporalio/client {pinned_client_version()} in {EXAMPLE / 'node_modules'}; "
             f"`npm install` left {installed_client_version() or 'none'} there")  # fmt: skip
    return node


def address_of(client: Client) -> str:
    return client.service_client.config.target_host


async def run_node(node: str, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        node, "drive-relationship.mjs", *args, cwd=EXAMPLE, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=NODE_TIMEOUT)
    except TimeoutError:
        process.kill()
        stdout, stderr = await process.communicate()
        pytest.fail(f"node did not finish in {NODE_TIMEOUT} s:\n{stdout.decode()}\n{stderr.decode()}")
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


# What the script drives, as the event store must show it: these events in this order (others,
# such as CommandRejected, HealthChanged or AgendaRequested, may come between them).
LIFECYCLE = [
    "RelationshipStarted", "MatchProposed", "MatchAccepted", "MatchAccepted", "MatchConfirmed",
    "AgreementProposed", "AgreementSigned", "AgreementSigned", "RelationshipActivated", "MeetingScheduled",
    "MeetingHeld", "MeetingHeld", "MeetingHeld", "FeedbackRequested",
    "GoalProgressRecorded", "FeedbackSubmitted", "FeedbackSubmitted",
    "ReviewOpened", "ReviewSubmitted", "ReviewSubmitted", "ReviewCompleted",
    "ClosureBegun", "ReflectionSubmitted", "ReflectionSubmitted", "RelationshipClosed",
]  # fmt: skip
# A refusal's `type`: "CommandRejected"/"ValueError" before refusal codes, a code such as
# "not_found" or "wrong_phase" after (events/refusals.py).
OLD_REFUSAL_TYPES = {"CommandRejected", "ValueError"}
RFC3339_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?[+-]\d{2}:\d{2}$")


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    remaining = iter(seen)
    return all(name in remaining for name in wanted)


def is_refusal_type(value: Any) -> bool:
    return isinstance(value, str) and (value in OLD_REFUSAL_TYPES or re.fullmatch(r"[a-z][a-z_]*", value) is not None)


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
async def test_a_node_client_drives_a_relationship_through_its_whole_life(
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
    # Without a Temporal codec the worker still encrypts confidential text (meeting notes,
    # reflections) in the event store, with the same keys.
    settings = Settings.from_env({**os.environ, "MENTORFLOW_ENCRYPTION_KEYS": TEST_KEYRING.format()})
    worker = build_worker(client, pool, f"tq-{uuid.uuid4()}", channels=[RecordingChannel()], settings=settings)
    async with worker:
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
        state = await handle.query(Relationship.state)
        result = await handle.result()
    assert state is not None

    # The relationship went all the way: closed by the mentee after both reflected.
    assert outcome["workflow_id"] == f"relationship/{programme}/{relationship_id}"
    assert (outcome["phase"], outcome["closure_reason"], outcome["encrypted"]) == ("closed", "closed_by_mentee", encrypted)
    assert (state.phase, state.closure_reason, state.version) == ("closed", "closed_by_mentee", outcome["version"])
    assert (state.mentor_id, state.meetings_held, state.feedback_round) == ("emp-311", 3, 1)
    assert state.reviews_completed == ("on_demand",) and state.reflections_from == ("mentee", "mentor")
    assert state.goals["design"].progress_percent == 60  # recorded at 50, assessed at 60 in the review
    assert "phase: closed" in stdout
    # Node read the workflow's result (the summary) like everything else it was answered.
    summary = outcome["summary"]
    assert (summary["closure_reason"], summary["meetings_held"], summary["feedback_trend"]) == ("closed_by_mentee", 3, [4.5])
    assert summary == result

    # The malformed update came back with its fields named; the malformed signal was recorded.
    # (What follows a field's name changed with contract version 2: match the names only.)
    assert outcome["bad_update_error"].startswith("invalid payload: actor_id: Field required; ")
    assert outcome["rejected_signal"]["command_name"] == "decline_match"
    assert outcome["rejected_signal"]["reason"].startswith("invalid payload: reason: ")
    assert "update accept_match refused: type " in stdout
    # A valid command the relationship refused: Node sees the failure's type and message.
    refused = outcome["refused_update"]
    assert refused["command"] == "sign_agreement" and is_refusal_type(refused["type"]), refused
    assert "agreement_version" in refused["message"], refused
    assert f"update sign_agreement refused: type {refused['type']}, message: {refused['message']}" in stdout
    assert refused["command_id"] not in state.processed_command_ids

    # The event store holds each step, as each update reported it, and folds to the state.
    stored = await PostgresEventStore(pool, TEST_KEYRING).read_stream(relationship_id)
    assert is_subsequence(LIFECYCLE, [event.type for event in stored]), [event.type for event in stored]
    assert fold(stored) == state
    assert not [event for event in stored if event.command_id == refused["command_id"]]
    steps = outcome["steps"]
    assert [step["command"] for step in steps] == [
        "propose_match", "accept_match", "propose_agreement", "sign_agreement", "sign_agreement",
        "record_meeting", "record_meeting", "record_meeting", "record_goal_progress",
        "submit_feedback", "submit_feedback", "request_review", "submit_review", "submit_review",
        "close_relationship", "submit_reflection", "submit_reflection",
    ]  # fmt: skip
    for step in steps:
        caused = [event for event in stored if event.command_id == step["command_id"]]
        assert step["applied"] and [event.type for event in caused] == step["events"], step
        assert caused[-1].version == step["version"], step
    assert [step["phase"] for step in steps if step["command"] in ("sign_agreement", "submit_review", "close_relationship")] == [
        "agreement", "active", "review", "active", "closing"
    ]  # fmt: skip
    assert steps[-1]["phase"] == "closed"
    assert await failed_workflow_tasks(handle) == 0

    raw = await Client.connect(address_of(dev_env.client), namespace="mentorflow")
    history = await raw.get_workflow_handle(outcome["workflow_id"]).fetch_history()
    sent = [event.workflow_execution_started_event_attributes.input for event in history.events
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED]  # fmt: skip
    sent += [event.workflow_execution_signaled_event_attributes.input for event in history.events
             if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]  # fmt: skip
    updates = [event.workflow_execution_update_accepted_event_attributes.accepted_request.input
               for event in history.events
               if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED]  # fmt: skip
    assert len(sent) == 3 and [update.name for update in updates] == [step["command"] for step in steps]
    if encrypted:
        # What Node sent reached the server encrypted: a client without the codec sees no JSON.
        for payloads in sent + [update.args for update in updates]:
            assert [p.metadata["encoding"] for p in payloads.payloads] == [b"binary/encrypted"]
            assert b"emp-1042" not in payloads.payloads[0].data
    else:
        # Plain JSON as the contract spells it: held_at an RFC 3339 date-time with an offset.
        meetings = [json.loads(update.args.payloads[0].data) for update in updates if update.name == "record_meeting"]
        assert len(meetings) == 3
        for meeting in meetings:
            assert RFC3339_WITH_OFFSET.match(meeting["held_at"]) and meeting["duration_minutes"] == 60, meeting


async def test_a_node_client_without_the_keys_says_it_cannot_read_the_answers(
    node_example: str, dev_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    """The workers encrypt their answers: without the codec a client cannot tell an applied
    update from a refused one, so the example stops at its first answer and says why."""
    programme = f"prog-node-{uuid.uuid4().hex[:6]}"
    await Directory(pool).create_or_update_programme(
        Programme(programme_id=programme, name="Node", settings=ProgrammeSettings(coordinator_ids=("coord-7",)))
    )
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MENTORFLOW_")}
    # Workers as `./run dev` runs them, accepting plain payloads (mentorflow worker refuses them).
    settings = Settings.from_env().model_copy(update={"refuse_plain_payloads": False})
    worker = build_worker(dev_env.client, pool, f"tq-{uuid.uuid4()}", channels=[RecordingChannel()], settings=settings)
    async with worker:
        code, stdout, stderr = await run_node(
            node_example,
            "--address", address_of(dev_env.client), "--namespace", "mentorflow", "--task-queue", worker.task_queue,
            "--programme", programme, env=environment,
        )  # fmt: skip
    assert code == 1, f"node exited with {code}:\n{stdout}\n{stderr}"
    assert stderr.strip().splitlines() == [
        "error: the workers encrypt their answers: set MENTORFLOW_ENCRYPTION_KEYS to their keys to read them "
        "(Unknown encoding: binary/encrypted)"
    ]
    assert "update propose_match" not in stdout


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
