"""Prometheus metrics from a real worker on the dev server, scraped over HTTP."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from activities.directory import Directory
from events.people import Participant
from mentorflow.client import connect
from mentorflow.config import ConfigurationError, Settings
from mentorflow.metrics import metrics_runtime
from tests.support.session import DATA_CONVERTER, dev_server
from tests.support.helpers import cmd, start_relationship
from tests.support.peers import free_port
from worker import run_worker
from workflows.relationship import Relationship

_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Samples = list[tuple[str, dict[str, str], float]]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: Samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = dict(_LABEL.findall(match["labels"] or ""))
            samples.append((match["name"], labels, float(match["value"])))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(value for n, l, value in samples if n == name and all(l.get(k) == v for k, v in labels.items()))


async def eventually(port: int, check: Callable[[Samples], bool], timeout: float = 20) -> Samples:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await asyncio.to_thread(scrape, port)
        if check(samples) or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.2)


async def delivered(pool: asyncpg.Pool) -> dict[tuple[str, str], int]:
    rows = await pool.fetch(
        "SELECT channel, template, count(*) AS n FROM notification_deliveries WHERE status = 'delivered' GROUP BY 1, 2"
    )
    return {(row["channel"], row["template"]): row["n"] for row in rows}


async def test_the_worker_serves_temporal_and_mentorflow_metrics(
    temporal_binary: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    env = await dev_server(temporal_binary, tmp_path / "temporal.db")
    port = free_port()
    # trust_start_settings: its relationships bring their settings (no programme "prog-1").
    settings = Settings(
        metrics_port=port, metrics_host="127.0.0.1", metrics_phase_interval=0.2, trust_start_settings=True
    )
    target = env.client.service_client.config.target_host
    client = await connect(target, env.client.namespace, data_converter=DATA_CONVERTER, runtime=metrics_runtime(settings))
    await Directory(pool).upsert_participants(
        [Participant(participant_id=p, display_name=p.title(), email=f"{p}@example.org") for p in ("mentee-1", "mentee-2", "mentor-1", "coord-1")]
    )
    task_queue = f"tq-{uuid.uuid4()}"
    ready = asyncio.Event()
    worker = asyncio.create_task(run_worker(client, pool, task_queue, ready=ready, settings=settings))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        closing = await start_relationship(client, task_queue, mentee_id="mentee-1")
        waiting = await start_relationship(client, task_queue, mentee_id="mentee-2")
        # Two rejections by signal (out of phase; a bad payload), then a proposal that notifies.
        await closing.signal("sign_agreement", cmd("mentee-1", agreement_version=1))
        await closing.signal("propose_match", cmd("coord-1", mentor_id=42))
        await closing.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        await closing.execute_update("close_relationship", cmd("mentee-1"))
        await closing.result()
        await waiting.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))

        sent = await delivered(pool)
        assert sent.get(("log", "match_proposed")) == 4  # mentee and mentor, twice

        # Running relationships by phase: the closed one no longer counts.
        phases = {"matching": 1, "agreement": 0, "active": 0, "review": 0, "closing": 0, "closed": 0}

        def settled(samples: Samples) -> bool:
            return (
                total(samples, "mentorflow_notifications_sent", outcome="sent") >= sum(sent.values())
                and all(total(samples, "mentorflow_relationships", phase=p) == n for p, n in phases.items())
                and total(samples, "temporal_workflow_completed", workflow_type="Relationship") == 1
            )

        samples = await eventually(port, settled)
        assert total(samples, "mentorflow_commands_rejected", command="sign_agreement") == 1
        assert total(samples, "mentorflow_commands_rejected", command="propose_match") == 1
        assert total(samples, "mentorflow_commands_rejected") == 2
        sent = await delivered(pool)
        for (channel, template), count in sent.items():
            assert total(
                samples, "mentorflow_notifications_sent", channel=channel, template=template, outcome="sent"
            ) == count, (channel, template)
        assert total(samples, "mentorflow_notifications_sent", outcome="sent") == sum(sent.values())
        for phase, count in phases.items():
            assert total(samples, "mentorflow_relationships", phase=phase) == count, phase
        # And Temporal's own, from the same endpoint.
        assert total(samples, "temporal_workflow_completed", workflow_type="Relationship") == 1
        assert total(samples, "temporal_request", operation="StartWorkflowExecution") >= 2
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await env.shutdown()


def test_a_metrics_port_in_use_fails_fast_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match="MENTORFLOW_METRICS_PORT"):
            metrics_runtime(Settings(metrics_port=port, metrics_host="127.0.0.1"))


def test_no_metrics_port_means_no_endpoint() -> None:
    assert metrics_runtime(Settings()) is None
