"""docs/api.md's curl examples, run in order with the real curl against the real
`mentorflow api` process (a real worker and dev server behind it): each answers the status
its `# → …` comment says."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.api_keys import ApiKeyStore
from activities.directory import Directory
from events.people import Programme
from events.settings import ProgrammeSettings
from tests.support.session import TEST_KEYRING, project_root
from tests.support.helpers import new_worker

SECRET = "docs-secret-" + "9" * 32
EXAMPLE = re.compile(r"```sh\n# → (\d{3})\n(curl .*?)\n```", re.DOTALL)


def examples() -> list[tuple[int, str]]:
    text = (project_root() / "docs" / "api.md").read_text(encoding="utf-8")
    return [(int(status), command) for status, command in EXAMPLE.findall(text)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_document_has_examples_for_every_resource() -> None:
    commands = " ".join(command for _, command in examples())
    for resource in ("/v1/relationships\"", "/commands/", "/events", "/audit", "/v1/programmes\"", "/profiles/",
                     "/rounds", "/report", "?programme_id="):  # fmt: skip
        assert resource in commands, resource


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_the_curl_examples_answer_as_documented(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await Directory(pool).create_or_update_programme(
        Programme(programme_id="spring-2027", name="Spring", settings=ProgrammeSettings(coordinator_ids=("coord-7",)))
    )
    store = ApiKeyStore(pool, SECRET.encode())
    keys = {
        "KEY": (await store.create("coordinator-tool", ["spring-2027"], ["coordinators"]))[1],
        "PORTAL": (await store.create("hr-portal", ["spring-2027"], ["participants"]))[1],
        "READER": (await store.create("dashboard", ["spring-2027"]))[1],
    }
    port = free_port()
    worker = new_worker(dev_env.client, pool)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MENTORFLOW_")},
        "MENTORFLOW_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "MENTORFLOW_TEMPORAL_NAMESPACE": dev_env.client.namespace,
        "MENTORFLOW_TASK_QUEUE": worker.task_queue,
        "MENTORFLOW_DATABASE_URL": database_url,
        "MENTORFLOW_ENCRYPTION_KEYS": TEST_KEYRING.format(),
        "MENTORFLOW_API_KEY_SECRET": SECRET,
        "MENTORFLOW_API_PORT": str(port),
    }
    log = (tmp_path / "api.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mentorflow.api.commands", "api", env=env, stdout=log, stderr=log
    )
    api = f"http://127.0.0.1:{port}"
    try:
        async with worker, httpx.AsyncClient() as client:
            for _ in range(300):
                try:
                    if (await client.get(f"{api}/v1/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.returncode is None, (tmp_path / "api.log").read_text()
                await asyncio.sleep(0.1)
            shell = {**env, "API": api, **keys}
            for expected, command in examples():
                process = await asyncio.create_subprocess_exec(
                    "bash", "-c", command + " -w '\\n%{http_code}'", env=shell,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                out, err = await asyncio.wait_for(process.communicate(), 60)
                body, _, status = out.decode().rpartition("\n")
                assert int(status) == expected, (command, status, body, err.decode())
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), 30)
        log.close()
