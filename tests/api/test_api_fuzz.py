"""Schemathesis against the OpenAPI document of a real server (uvicorn, dev server, worker,
PostgreSQL): generated requests, valid and invalid, for every operation, with a key that
reaches everything; none may answer 5xx."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from tests.support.api_support import api_stack

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.skipif(not SCHEMATHESIS.exists() and shutil.which("schemathesis") is None, reason="needs schemathesis")
@pytest.mark.timeout(900)
async def test_schemathesis_finds_no_server_error(dev_env: WorkflowEnvironment, pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with api_stack(dev_env.client, pool) as stack:
        key = await stack.key("fuzzer", ["*"], ("participants", "coordinators"))
        # Something to find: a relationship in the fuzzed programme.
        started = await stack.http(key).post("/v1/relationships", json={
            "programme_id": stack.programme, "relationship_id": "r-fuzz", "mentee_id": "emp-1"})  # fmt: skip
        assert started.status_code == 201
        process = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS if SCHEMATHESIS.exists() else shutil.which("schemathesis")),
            "run", f"{stack.url}/v1/openapi.json",
            "--checks", "not_a_server_error",
            "--header", f"Authorization: Bearer {key}",
            "--max-examples", "6",
            "--phases", "examples,coverage,fuzzing",
            "--workers", "2",
            "--seed", "14",
            "--generation-database", "none",
            "--request-timeout", "60",
            "--no-color", "--report", "har", "--report-har-path", str(tmp_path / "run.har"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), 850)
        text = out.decode(errors="replace")
        (tmp_path / "schemathesis.txt").write_text(text)
        # Nothing sent through the API got a relationship stuck (a workflow task failing for ever).
        stuck = []
        async for execution in stack.client.list_workflows("WorkflowType = 'Relationship'"):
            history = await stack.client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
            for event in history.events:
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                    failure = event.workflow_task_failed_event_attributes.failure
                    stuck.append(f"{execution.id}: {failure.message}\n{failure.stack_trace[-3000:]}")
                    break
        assert not stuck, "\n\n".join(stuck)
        assert process.returncode == 0, text[-6000:]
