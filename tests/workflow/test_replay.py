"""Replay: the recorded histories of every phase replay on the current code, a deliberately
incompatible change is caught, and the same change behind `workflow.patched` is not.

The histories in tests/histories/ come from `python -m tests.support.record_histories` (see there
for when to re-record). A failure of the first test means a change to workflow code would
break relationships that are running right now: guard it with `workflow.patched` instead
(docs/deploying.md).
"""

from __future__ import annotations

import ast
import base64
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from mentorflow.replay import ReplayOutcome, load_histories, replay_histories, workflow_type_of
from mentorflow.config import Settings
from tests.support.session import dev_server
from tests.support.helpers import RecordingChannel, failed_workflow_tasks, new_worker, start_relationship
from tests.support.record_histories import (
    HISTORIES,
    RELATIONSHIP_FILES,
    ROUND_FILES,
    histories_converter,
)
from tests.support.workflow_variants import PATCH_ID, PatchedActivity, PatchedTimer, UnpatchedActivity, UnpatchedTimer
from worker import build_worker
from workflows.matching_round import MatchingRound
from workflows.patches import (
    ADOPT_AFTER_CONFLICT,
    ANCHORED_CADENCE,
    ANSWER_FROM_THE_STORE,
    CONTINUE_WHEN_IDLE,
    RESERVE_EVERY_PROPOSAL,
    SETTINGS_FROM_THE_PROGRAMME,
    STORE_AND_NOTIFY_TOGETHER,
)
from workflows.relationship import Relationship

def cmd(actor: str, **fields: Any) -> dict[str, Any]:
    return {"command_id": f"cmd-{uuid.uuid4().hex[:12]}", "actor_id": actor, **fields}


def last_phase(path: Path) -> str | None:
    """The last MentoringPhase the workflow upserted (search attributes are not encrypted)."""
    phase = None
    for event in json.loads(path.read_text(encoding="utf-8"))["events"]:
        attributes = event.get("upsertWorkflowSearchAttributesEventAttributes")
        field = (attributes or {}).get("searchAttributes", {}).get("indexedFields", {}).get("MentoringPhase")
        if field:
            phase = json.loads(base64.b64decode(field["data"]))
    return phase


def by_file(outcomes: list[ReplayOutcome], paths: list[Path]) -> dict[str, ReplayOutcome]:
    return {path.stem: outcome for path, outcome in zip(paths, outcomes, strict=True)}


# -- the recorded histories --------------------------------------------------------------


# Each folder holds one recording of every phase, made by the code of its time: the oldest
# in tests/histories/ itself, later ones (recorded to cover a new path behind patched())
# in subfolders. Relationships recorded by each may be running somewhere.
RECORDINGS = [HISTORIES, HISTORIES / "store-and-notify", HISTORIES / "contract-v2", HISTORIES / "continue-when-idle"]
# The patches each recording must show in use (so that it covers the path it was made for).
PATCHES_IN_USE = {
    HISTORIES / "store-and-notify": {STORE_AND_NOTIFY_TOGETHER},
    # Contract version 2: settings checked against the programme, a slot for every proposal,
    # meetings anchored to the agreement.
    HISTORIES / "contract-v2": {
        STORE_AND_NOTIFY_TOGETHER, SETTINGS_FROM_THE_PROGRAMME, RESERVE_EVERY_PROPOSAL, ANCHORED_CADENCE
    },
    # A run past its history limit continues as new a second after it is idle.
    HISTORIES / "continue-when-idle": {
        STORE_AND_NOTIFY_TOGETHER, SETTINGS_FROM_THE_PROGRAMME, RESERVE_EVERY_PROPOSAL, ANCHORED_CADENCE, CONTINUE_WHEN_IDLE
    },
}


def patches_in(path: Path) -> set[str]:
    """The ids of the workflow.patched() markers in a history (core writes them unencrypted)."""
    ids = set()
    for event in json.loads(path.read_text(encoding="utf-8"))["events"]:
        attributes = event.get("markerRecordedEventAttributes") or {}
        if attributes.get("markerName") == "core_patch":
            [payload] = attributes["details"]["patch-data"]["payloads"]
            ids.add(json.loads(base64.b64decode(payload["data"]))["id"])
    return ids


@pytest.mark.parametrize("folder", RECORDINGS, ids=lambda folder: folder.name)
def test_there_is_a_recorded_history_of_every_phase(folder: Path) -> None:
    recorded = {path.stem for path in folder.glob("*.json")}
    missing = set(RELATIONSHIP_FILES + ROUND_FILES) - recorded
    assert not missing, f"record them: python -m tests.support.record_histories --out {folder} (missing {sorted(missing)})"
    for phase in ("matching", "agreement", "active", "review", "closing", "closed"):
        assert last_phase(folder / f"{phase}.json") == phase
    first_run = json.loads((folder / "continued-as-new-first-run.json").read_text())["events"]
    assert first_run[-1]["eventType"] in ("EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW", "WorkflowExecutionContinuedAsNew")
    second_run = json.loads((folder / "continued-as-new-second-run.json").read_text())["events"]
    assert second_run[0]["workflowExecutionStartedEventAttributes"].get("continuedExecutionRunId")
    if folder in PATCHES_IN_USE:
        used = patches_in(folder / "active.json") | patches_in(folder / "continued-as-new-first-run.json")
        assert PATCHES_IN_USE[folder] <= used
    else:
        assert STORE_AND_NOTIFY_TOGETHER not in patches_in(folder / "active.json")


# Runs that met a concurrency conflict (a lost task's events adopted from the store),
# recorded before ANSWER_FROM_THE_STORE: an update decided again, a command the lost task
# had applied, one the adopted events refused, one still open. Not a phase each, so apart.
CONFLICTS = HISTORIES / "conflicts"


async def test_runs_that_met_a_conflict_before_answers_came_from_the_store_replay() -> None:
    paths = sorted(CONFLICTS.glob("*.json"))
    assert [path.stem for path in paths] == ["another-open", "another", "lost-task", "refused"]
    for path in paths:
        used = patches_in(path)
        assert ADOPT_AFTER_CONFLICT in used and ANSWER_FROM_THE_STORE not in used, path.name
    outcomes = by_file(await replay_histories(load_histories(CONFLICTS), histories_converter()), paths)
    assert {name: o.detail for name, o in outcomes.items() if o.verdict != "ok"} == {}


@pytest.mark.parametrize("folder", RECORDINGS, ids=lambda folder: folder.name)
async def test_every_recorded_history_replays_on_the_current_code(folder: Path) -> None:
    paths = sorted(folder.glob("*.json"))
    histories = load_histories(folder)
    outcomes = by_file(await replay_histories(histories, histories_converter()), paths)
    failures = {name: o.detail for name, o in outcomes.items() if o.verdict != "ok"}
    assert not failures, (
        "recorded histories no longer replay: this change would break running workflows; "
        f"guard it with workflow.patched() (docs/deploying.md): {failures}"
    )
    assert {workflow_type_of(history) for history in histories} == {"Relationship", "MatchingRound"}


# -- every patch has its row in docs/deploying.md ----------------------------------------------

ROOT = Path(__file__).resolve().parent.parent.parent
PATCH_CALLS = ("patched", "deprecate_patch")


def patch_ids_in_code() -> set[str]:
    """The ids passed to workflow.patched / deprecate_patch anywhere in workflows/, as
    string literals or as names of module-level string constants."""
    constants: dict[str, str] = {}
    arguments: list[ast.expr] = []
    for path in sorted((ROOT / "workflows").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                constants.update({target.id: node.value.value for target in node.targets if isinstance(target, ast.Name)})
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PATCH_CALLS:
                arguments.append(node.args[0])
    ids = set()
    for argument in arguments:
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            ids.add(argument.value)
        else:
            assert isinstance(argument, ast.Name) and argument.id in constants, f"a patch id that is not a constant: {ast.unparse(argument)}"
            ids.add(constants[argument.id])
    return ids


def patch_table() -> dict[str, list[str]]:
    """docs/deploying.md's table of the patches in use: the cells of each row, by patch id."""
    text = (ROOT / "docs" / "deploying.md").read_text(encoding="utf-8")
    section = text.split("### The patches in use, and when each may go", 1)[1].split("\n#", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            assert cells[0].strip("`") not in rows, f"two rows for {cells[0]}"
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_patch_in_the_code_has_its_row_in_the_deploying_guide() -> None:
    in_code, rows = patch_ids_in_code(), patch_table()
    assert {STORE_AND_NOTIFY_TOGETHER, ANCHORED_CADENCE} <= in_code  # the scan finds them
    assert not in_code - rows.keys(), f"add a row to docs/deploying.md for: {sorted(in_code - rows.keys())}"
    assert not rows.keys() - in_code, f"rows for patches the code no longer uses: {sorted(rows.keys() - in_code)}"
    stages = [folder.relative_to(ROOT).as_posix() + "/" for folder in RECORDINGS]
    for patch_id, (does, stage, markers, deprecate_when) in rows.items():
        assert does and markers and deprecate_when, f"{patch_id}: fill in every cell"
        assert stage.strip("`") in stages, f"{patch_id}: its stage {stage} is not one of the recordings {stages}"


def test_no_recording_shows_a_patch_before_its_stage() -> None:
    stage_of = {patch_id: cells[1].strip("`") for patch_id, cells in patch_table().items()}
    for position, folder in enumerate(RECORDINGS):
        for path in sorted(folder.glob("*.json")):
            for patch_id in patches_in(path):
                stage = RECORDINGS.index(ROOT / stage_of[patch_id].rstrip("/"))
                assert stage <= position, f"{path.relative_to(ROOT)} shows {patch_id}, whose row says {stage_of[patch_id]}"


# -- a deliberately incompatible change ------------------------------------------------------


@pytest.mark.parametrize("variant", [UnpatchedTimer, UnpatchedActivity], ids=["timer", "activity"])
async def test_an_unguarded_change_fails_replay_of_every_phase(variant: type) -> None:
    paths = sorted(HISTORIES.glob("*.json"))
    outcomes = by_file(
        await replay_histories(load_histories(HISTORIES), histories_converter(), workflows=[variant, MatchingRound]),
        paths,
    )
    for name in RELATIONSHIP_FILES:
        assert outcomes[name].verdict == "nondeterministic", (name, outcomes[name])
    assert outcomes["matching-round"].verdict == "ok"


@pytest.mark.parametrize("variant", [PatchedTimer, PatchedActivity], ids=["timer", "activity"])
async def test_the_same_change_behind_patched_replays_cleanly(variant: type) -> None:
    outcomes = await replay_histories(
        load_histories(HISTORIES), histories_converter(), workflows=[variant, MatchingRound]
    )
    assert [o for o in outcomes if o.verdict != "ok"] == []


def variant_worker(client: Client, pool: asyncpg.Pool, task_queue: str, workflow_class: type) -> Worker:
    """The production worker with another implementation of "Relationship"."""
    return build_worker(
        client,
        pool,
        task_queue,
        channels=[RecordingChannel()],
        settings=Settings(trust_start_settings=True),  # its relationships bring their settings
        workflows=[workflow_class, MatchingRound],
    )


async def test_a_patched_change_takes_over_a_running_relationship_and_applies_to_new_ones(
    temporal_binary: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # The dev server: the test server does not move a stopped worker's sticky tasks on.
    env = await dev_server(temporal_binary, tmp_path / "temporal.db")
    try:
        await _patched_change(env, pool)
    finally:
        await env.shutdown()


async def _patched_change(env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    task_queue = f"tq-{uuid.uuid4()}"
    async with new_worker(env.client, pool, task_queue=task_queue) as worker:
        old = await start_relationship(env.client, worker)
        await old.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))

    # The new code, patched, picks up where the old one stopped.
    async with variant_worker(env.client, pool, task_queue, PatchedTimer) as worker:
        await old.execute_update("accept_match", cmd("mentee-1"))
        await old.execute_update("accept_match", cmd("mentor-1"))
        new = await start_relationship(env.client, worker, mentee_id="mentee-2")
        await new.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-3"))
        for handle in (old, new):
            await handle.execute_update("close_relationship", cmd("coord-1"))
            await handle.result()
            assert await failed_workflow_tasks(handle) == 0

    def patch_markers(history: WorkflowHistory) -> int:
        """Markers of the variant's patch (the workflow has patches of its own)."""
        return sum(
            1
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            and e.marker_recorded_event_attributes.marker_name == "core_patch"
            and json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"] == PATCH_ID
        )

    def paused_before_storing(history: WorkflowHistory) -> bool:
        """After the variant's patch marker, the next thing the workflow did was its new
        pause (a timer), before the next local activity (the append)."""
        events = list(history.events)
        [marker] = [i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
                    and e.marker_recorded_event_attributes.marker_name == "core_patch"
                    and PATCH_ID.encode() in e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data]  # fmt: skip
        for event in events[marker + 1 :]:
            if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
                return event.timer_started_event_attributes.start_to_fire_timeout.ToSeconds() == 1
            if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
                return False
        return False

    old_history, new_history = await old.fetch_history(), await new.fetch_history()
    # The running one kept the old path (patched() stays False for the rest of its run)…
    assert patch_markers(old_history) == 0
    # …the new one took the new step, after the patch marker that keeps it on that path.
    assert patch_markers(new_history) == 1
    assert paused_before_storing(new_history)

    # Both replay on the patched code; the new one no longer on the old code: roll back
    # only to a build that knows the patch (docs/deploying.md).
    converter = env.client.data_converter
    on_patched = await replay_histories([old_history, new_history], converter, workflows=[PatchedTimer])
    assert [o.verdict for o in on_patched] == ["ok", "ok"]
    on_old = await replay_histories([old_history, new_history], converter, workflows=[Relationship])
    assert [o.verdict for o in on_old] == ["ok", "nondeterministic"]
