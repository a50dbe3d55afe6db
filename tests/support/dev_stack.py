"""`mentorflow dev` as a person runs it, for the tests that need the whole dev stack: the
command in a subprocess on free ports with its own state folder (`DevProcess`; the
`start_dev` fixture in tests/conftest.py starts and stops them), other commands against it
(`cli`), and what a command's failure looks like."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import asyncpg
import pytest

from mentorflow.dev import EmbeddedPostgres
from tests.support.peers import free_port

READY_LINE = "Ready. Press Ctrl-C to stop"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 40.0
CLI = [sys.executable, "-m", "mentorflow.cli"]


def dev_environment(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MENTORFLOW_")}
    temporal_port = free_port()
    ui_port = free_port()
    while ui_port == temporal_port:
        ui_port = free_port()
    env.update(
        MENTORFLOW_STATE_DIR=str(state_dir),
        MENTORFLOW_TEMPORAL_ADDRESS=f"127.0.0.1:{temporal_port}",
        MENTORFLOW_TEMPORAL_UI_PORT=str(ui_port),
        **extra,
    )
    return env


class DevProcess:
    """`mentorflow dev` in a subprocess, its output in files (a full pipe would block it)."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str):
        self.env = env
        self.state_dir = Path(env["MENTORFLOW_STATE_DIR"])
        self.stdout_path = workdir / f"{name}.out"
        self.stderr_path = workdir / f"{name}.err"
        self._files: list[IO[bytes]] = [open(self.stdout_path, "wb"), open(self.stderr_path, "wb")]
        self.process = subprocess.Popen(
            [*CLI, "dev"], env=env, stdin=subprocess.DEVNULL, stdout=self._files[0], stderr=self._files[1]
        )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def line_starting(self, label: str) -> str:
        return next(line for line in self.stdout.splitlines() if line.strip().startswith(label))

    @property
    def database_url(self) -> str:
        # "  Database      URL  (note)"
        return self.line_starting("Database").split()[1]

    async def wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while READY_LINE not in self.stdout:
            if self.process.poll() is not None:
                pytest.fail(f"mentorflow dev exited with {self.process.returncode}:\n{self.stdout}\n{self.stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"mentorflow dev was not ready within {START_TIMEOUT} s:\n{self.stdout}\n{self.stderr}")
            await asyncio.sleep(0.2)

    async def wait_for_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"mentorflow dev did not exit within {timeout} s:\n{self.stdout}\n{self.stderr}")
            await asyncio.sleep(0.1)
        self.close()
        return self.process.returncode

    async def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await self.wait_for_exit()

    def close(self) -> None:
        for file in self._files:
            file.close()

    def kill(self) -> None:
        """Last resort after a failed test: no process or server may outlive it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.close()
        EmbeddedPostgres(self.state_dir / "postgres").stop()


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


async def event_types(database_url: str, stream_id: str) -> list[str]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT event_type FROM events WHERE stream_id = $1 ORDER BY version", stream_id)
    finally:
        await connection.close()
    return [row["event_type"] for row in rows]


def assert_one_clean_error_line(stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr
