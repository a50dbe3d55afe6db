"""Operating a deployment on the real dev server: Worker Deployment Versioning (a versioned
worker gets tasks once its version is current; a new current version takes running
relationships over, AUTO_UPGRADE), `mentorflow replay-check`, and `mentorflow dev` with a
build id and a metrics port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType, PendingWorkflowTaskState, VersioningBehavior
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from mentorflow.config import Settings
from mentorflow.deployment import describe_deployment, set_current_version
from tests.support.session import TEST_KEYRING, dev_server
from tests.support.helpers import RecordingChannel, failed_workflow_tasks, new_worker, start_relationship
from tests.support.dev_stack import DevProcess, cli, dev_environment
from tests.support.peers import free_port
from tests.support.workflow_variants import UnpatchedTimer
from worker import build_worker
from workflows.matching_round import MatchingRound

CLI = [sys.executable, "-m", "mentorflow.cli"]


def cmd(actor: str, **fields: Any) -> dict[str, Any]:
    return {"command_id": f"cmd-{uuid.uuid4().hex[:12]}", "actor_id": actor, **fields}


def cli_environment(env: WorkflowEnvironment, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment a person would give the CLI to reach this server."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MENTORFLOW_")}
    environment.update(
        MENTORFLOW_TEMPORAL_ADDRESS=env.client.service_client.config.target_host,
        MENTORFLOW_TEMPORAL_NAMESPACE=env.client.namespace,
        MENTORFLOW_ENCRYPTION_KEYS=TEST_KEYRING.format(),
        MENTORFLOW_STATE_DIR=str(tmp_path / "no-dev-here"),
        # Its relationships bring their settings (no programme is created): see tests/conftest.py.
        MENTORFLOW_TRUST_START_SETTINGS="true",
        **extra,
    )
    return environment


async def run_cli(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [*CLI, *args], env=environment, capture_output=True, text=True, timeout=120
    )


async def versioning_info(handle: WorkflowHandle[Any, Any]) -> tuple[str, int]:
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    return info.deployment_version.build_id, info.behavior


async def task_builds(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The build id of the worker that completed each workflow task, in order."""
    history = await handle.fetch_history()
    return [
        e.workflow_task_completed_event_attributes.deployment_version.build_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]


async def workflow_tasks_started(handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)


async def wait_until(check: Callable[[], Any], timeout: float = 90) -> None:
    """Until `check()` holds: generous, since a busy machine only makes it take longer."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out after {timeout:g} s: {check.__name__}"
        await asyncio.sleep(0.2)


# -- Worker Deployment Versioning ------------------------------------------------------------


async def test_a_versioned_worker_gets_tasks_once_current_and_a_new_version_takes_over(
    temporal_binary: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    env = await dev_server(temporal_binary, tmp_path / "temporal.db")
    try:
        client, task_queue = env.client, f"tq-{uuid.uuid4()}"

        def versioned(build_id: str) -> Any:
            settings = Settings(build_id=build_id, trust_start_settings=True)  # its relationships bring their settings
            return build_worker(client, pool, task_queue, channels=[RecordingChannel()], settings=settings)

        async with versioned("build-1") as worker:
            handle = await start_relationship(client, worker)

            # Registered (the worker has polled: the server knows its version) but not
            # current: the server keeps the first task for a current version.
            async def registered() -> bool:
                described = await describe_deployment(client, "mentorflow")
                return described is not None and [v.build_id for v in described.versions] == ["build-1"]

            await wait_until(registered)
            described = await describe_deployment(client, "mentorflow")
            assert described is not None and described.current_build_id is None
            assert await workflow_tasks_started(handle) == 0
            pending = (await handle.describe()).raw_description.pending_workflow_task
            assert pending.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_SCHEDULED  # waiting for a version

            assert await set_current_version(client, "mentorflow", "build-1", wait=30) is None
            result = await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
            assert result["phase"] == "matching"
            assert await versioning_info(handle) == ("build-1", VersioningBehavior.VERSIONING_BEHAVIOR_AUTO_UPGRADE)
            # Setting it again is harmless.
            assert await set_current_version(client, "mentorflow", "build-1", wait=5) == "build-1"

            # The next build starts next to it; `mentorflow deployment set-current` switches.
            async with versioned("build-2"):
                environment = cli_environment(env, tmp_path)
                switched = await run_cli(environment, "deployment", "set-current", "build-2", "--wait", "30")
                assert switched.returncode == 0, switched.stderr
                assert "mentorflow.build-2 is the current version (before: build-1)" in switched.stdout

                # AUTO_UPGRADE: the running relationship moves over at its next workflow task
                # once the server routes by the new version (within moments of the switch).
                await handle.execute_update("accept_match", cmd("mentee-1"))

                async def moved() -> bool:
                    if (await versioning_info(handle))[0] == "build-2":
                        return True
                    await handle.signal("sign_agreement", cmd("mentee-1", agreement_version=1))  # one more task
                    return False

                await wait_until(moved)
                await handle.execute_update("accept_match", cmd("mentor-1"))
                assert (await handle.query("state"))["phase"] == "agreement"
                assert await versioning_info(handle) == ("build-2", VersioningBehavior.VERSIONING_BEHAVIOR_AUTO_UPGRADE)
                builds = await task_builds(handle)
                assert builds[0] == "build-1" and builds[-1] == "build-2"
                assert builds == sorted(builds), f"went back to an older build: {builds}"
                assert await failed_workflow_tasks(handle) == 0

                shown = await run_cli(environment, "deployment", "show", "--json")
                assert shown.returncode == 0, shown.stderr
                view = json.loads(shown.stdout)
                assert view["current_build_id"] == "build-2"
                assert {v["build_id"]: v["status"] for v in view["versions"]}["build-2"] == "current"
                assert {v["build_id"] for v in view["versions"]} == {"build-1", "build-2"}

                await handle.execute_update("close_relationship", cmd("mentee-1"))
                await handle.result()
    finally:
        await env.shutdown()


async def test_set_current_says_when_no_worker_of_that_build_runs(temporal_binary: str, tmp_path: Path) -> None:
    env = await dev_server(temporal_binary, tmp_path / "temporal.db")
    try:
        environment = cli_environment(env, tmp_path)
        missing = await run_cli(environment, "deployment", "set-current", "nobody-runs-me", "--wait", "1")
        assert missing.returncode == 1
        assert "nobody-runs-me" in missing.stderr and "Traceback" not in missing.stderr
        no_build = await run_cli(environment, "deployment", "set-current")
        assert no_build.returncode == 2 and "MENTORFLOW_BUILD_ID" in no_build.stderr
    finally:
        await env.shutdown()


# -- mentorflow replay-check -------------------------------------------------------------------


async def listed(client: Client, query: str, count: int) -> bool:
    return (await client.count_workflows(query)).count == count


async def test_replay_check_replays_recent_histories_and_fails_on_non_determinism(
    temporal_binary: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    env = await dev_server(temporal_binary, tmp_path / "temporal.db")
    try:
        client = env.client
        async with new_worker(client, pool) as worker:
            running = await start_relationship(client, worker)
            await running.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
            await running.signal("sign_agreement", cmd("mentee-1", agreement_version=1))  # rejected
            closed = await start_relationship(client, worker, mentee_id="mentee-2")
            await closed.execute_update("close_relationship", cmd("mentee-2"))
            await closed.result()
        await wait_until(lambda: listed(client, "WorkflowType = 'Relationship'", 2))

        environment = cli_environment(env, tmp_path)
        good = await run_cli(environment, "replay-check")
        assert good.returncode == 0, good.stdout + good.stderr
        assert "2 replayed: 2 ok, 0 non-deterministic, 0 failed" in good.stdout

        # A worker running an incompatible change leaves a history today's code cannot replay.
        task_queue = f"tq-{uuid.uuid4()}"
        changed = build_worker(
            client, pool, task_queue, channels=[RecordingChannel()], settings=Settings(trust_start_settings=True), workflows=[UnpatchedTimer, MatchingRound]
        )
        async with changed:
            broken = await start_relationship(client, changed, mentee_id="mentee-3")
            await broken.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        await wait_until(lambda: listed(client, "WorkflowType = 'Relationship'", 3))

        bad = await run_cli(environment, "replay-check", "--json")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        verdicts = {o["workflow_id"]: o["verdict"] for o in json.loads(bad.stdout)}
        assert verdicts == {running.id: "ok", closed.id: "ok", broken.id: "nondeterministic"}
        table = await run_cli(environment, "replay-check")
        assert table.returncode == 1 and "NON-DETERMINISTIC" in table.stdout

        narrowed = await run_cli(environment, "replay-check", "--query", f"WorkflowId = '{running.id}'", "--json")
        assert narrowed.returncode == 0, narrowed.stderr
        assert [o["workflow_id"] for o in json.loads(narrowed.stdout)] == [running.id]
        limited = await run_cli(environment, "replay-check", "--limit", "1", "--json")
        assert len(json.loads(limited.stdout)) == 1

        invalid = await run_cli(environment, "replay-check", "--query", "NoSuchAttribute = 'x'")
        assert invalid.returncode == 2 and "--query" in invalid.stderr and "Traceback" not in invalid.stderr
    finally:
        await env.shutdown()


# -- mentorflow dev with a build id and metrics -----------------------------------------------


async def test_dev_makes_its_versioned_worker_current_and_serves_metrics(
    tmp_path: Path, start_dev: Callable[..., DevProcess]
) -> None:
    metrics_port = free_port()
    env = dev_environment(
        tmp_path / "state", MENTORFLOW_BUILD_ID="dev-1", MENTORFLOW_METRICS_PORT=str(metrics_port),
        MENTORFLOW_METRICS_HOST="127.0.0.1",
    )  # fmt: skip
    dev = start_dev(env)
    await dev.wait_until_ready()
    assert "version mentorflow.dev-1" in dev.stdout
    assert f"http://127.0.0.1:{metrics_port}/metrics" in dev.stdout

    started = await cli(env, "relationship", "start", "--programme", "demo", "--mentee", "mentee-1")
    assert started.returncode == 0, started.stderr
    workflow_id = started.stdout.strip()
    sent = await cli(env, "relationship", "send", workflow_id, "propose_match", '{"actor_id": "coord-1", "mentor_id": "mentor-1"}')
    assert sent.returncode == 0, sent.stderr  # answered: the versioned worker got the task

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "temporal_workflow_task_execution_latency" in text
    assert "mentorflow_relationships" in text
    assert await dev.terminate() == 0


# -- `mentorflow worker` as a process ----------------------------------------------------------


async def test_the_worker_process_runs_versioned_serves_metrics_and_stops_on_sigterm(
    temporal_binary: str, database_url: str, tmp_path: Path
) -> None:
    env = await dev_server(temporal_binary, tmp_path / "temporal.db")
    metrics_port, task_queue = free_port(), f"tq-{uuid.uuid4()}"
    environment = cli_environment(
        env, tmp_path,
        MENTORFLOW_DATABASE_URL=database_url, MENTORFLOW_TASK_QUEUE=task_queue,
        MENTORFLOW_BUILD_ID="proc-1", MENTORFLOW_METRICS_PORT=str(metrics_port),
        MENTORFLOW_METRICS_HOST="127.0.0.1", MENTORFLOW_METRICS_PHASE_INTERVAL="0.5",
    )  # fmt: skip
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*CLI, "worker"], env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        made_current = await run_cli(environment, "deployment", "set-current", "--wait", "60")
        assert made_current.returncode == 0, made_current.stderr + log_path.read_text()
        assert "mentorflow.proc-1 is the current version" in made_current.stdout

        handle = await start_relationship(env.client, task_queue)
        result = await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        assert result["phase"] == "matching"

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
                return str(response.read().decode())

        async def counted() -> bool:
            return 'mentorflow_relationships{phase="matching",service_name="temporal-core-sdk"} 1' in await asyncio.to_thread(scrape)

        await wait_until(counted)
        assert "temporal_workflow_task_execution_latency" in await asyncio.to_thread(scrape)

        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0, log_path.read_text()
        assert "Traceback" not in log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await env.shutdown()
