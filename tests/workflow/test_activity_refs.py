"""Every activity a workflow calls is named once, with its types (workflows/activity_refs.py),
and each reference matches what the worker really registers: the name, the argument's
type and the result's type. A renamed activity, a changed argument or result type, or an
activity registered that no workflow calls fails here."""

from __future__ import annotations

import ast
from typing import Annotated, Any, get_args, get_origin

import asyncpg
from temporalio import activity
from temporalio.testing import WorkflowEnvironment

from tests.support.helpers import new_worker
from tests.support.session import project_root
from workflows.activity_refs import ALL, READ_STREAM, SOLVE_ROUND, ActivityRef


def plain(hint: Any) -> Any:
    """`hint` without Annotated metadata (the SDK reads activity hints without it)."""
    if get_origin(hint) is Annotated:
        return plain(get_args(hint)[0])
    if get_origin(hint) is list:
        return list[plain(get_args(hint)[0])]  # type: ignore[misc]
    return hint


def registered(worker: Any) -> dict[str, Any]:
    definitions = [activity._Definition.must_from_callable(fn) for fn in worker.config()["activities"]]
    return {str(definition.name): definition for definition in definitions}


def mismatches(refs: tuple[ActivityRef[Any, Any], ...], activities: dict[str, Any]) -> list[str]:
    """What differs between the references and the registered activities."""
    found = [f"{ref.name}: not registered" for ref in refs if ref.name not in activities]
    for ref in refs:
        if ref.name in activities:
            definition = activities[ref.name]
            if definition.arg_types != [plain(ref.argument)]:
                found.append(f"{ref.name}: takes {definition.arg_types}, the reference says {ref.argument}")
            if definition.ret_type != plain(ref.result):
                found.append(f"{ref.name}: returns {definition.ret_type}, the reference says {ref.result}")
    found += [f"{name}: registered, but no reference calls it" for name in sorted(set(activities) - {r.name for r in refs})]
    return found


async def test_every_reference_is_an_activity_the_worker_registers_with_the_same_types(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    activities = registered(new_worker(time_skipping_env.client, pool))
    assert mismatches(ALL, activities) == []

    # The check itself: a wrong argument, a wrong result, a wrong name and a missing reference.
    wrong: tuple[ActivityRef[Any, Any], ...] = (ActivityRef(READ_STREAM.name, str, READ_STREAM.result), ActivityRef(SOLVE_ROUND.name, SOLVE_ROUND.argument, int),
             ActivityRef("read_streams", READ_STREAM.argument, READ_STREAM.result))  # fmt: skip
    found = mismatches(wrong, activities)
    assert any(line.startswith("read_stream: takes") for line in found)
    assert any(line.startswith("solve_round: returns") for line in found)
    assert "read_streams: not registered" in found and "append_events: registered, but no reference calls it" in found


def test_workflows_call_activities_only_through_references() -> None:
    """No activity is called by a string name in workflows/: the SDK's own calls appear only in
    workflows/calls.py, which takes references."""
    calls = {"execute_activity", "execute_local_activity", "start_activity", "start_local_activity"}
    found = []
    for path in sorted((project_root() / "workflows").glob("*.py")):
        if path.name == "calls.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in calls:
                found.append(f"{path.name}:{node.lineno} {node.attr}")
    assert not found, found
