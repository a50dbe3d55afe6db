"""`mentorflow dev` accepts payloads sent unencrypted unless MENTORFLOW_REFUSE_PLAIN_PAYLOADS is
on (`mentorflow worker` refuses them by default): the docs' examples send plain JSON from
clients without the keys (the Node example without MENTORFLOW_ENCRYPTION_KEYS, the `temporal`
CLI without a codec endpoint), and they must keep working next to `./run dev`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.support.dev_stack import DevProcess, cli, dev_environment, event_types


@pytest.mark.parametrize(("setting", "outcome"), [(None, "MatchProposed"), ("true", "CommandRejected")],
                         ids=["dev default", "refusing"])  # fmt: skip
async def test_dev_accepts_a_plain_signal_unless_told_to_refuse_it(
    tmp_path: Path, start_dev: Callable[..., DevProcess], setting: str | None, outcome: str
) -> None:
    extra = {"MENTORFLOW_REFUSE_PLAIN_PAYLOADS": setting} if setting else {}
    env = dev_environment(tmp_path / "state", **extra)
    dev = start_dev(env)
    await dev.wait_until_ready()
    created = await cli(env, "programme", "create", "--id", "prog-1", "--name", "Pilot", "--set", "coordinator_ids=coord-1")
    assert created.returncode == 0, created.stderr
    started = await cli(env, "relationship", "start", "--programme", "prog-1", "--mentee", "mentee-1", "--json")
    assert started.returncode == 0, started.stderr
    workflow_id, relationship_id = (json.loads(started.stdout)[key] for key in ("workflow_id", "relationship_id"))

    # A client without the keys: the SDK's default converter, plain JSON.
    plain = await Client.connect(env["MENTORFLOW_TEMPORAL_ADDRESS"], namespace="mentorflow")
    await plain.get_workflow_handle(workflow_id).signal(
        "propose_match", {"command_id": "c-plain", "actor_id": "coord-1", "mentor_id": "mentor-1"}
    )
    for _ in range(100):
        stored = await event_types(dev.database_url, relationship_id)
        if len(stored) > 1:
            break
        await asyncio.sleep(0.1)
    assert stored == ["RelationshipStarted", outcome]
