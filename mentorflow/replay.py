"""Replaying workflow histories against the current code: `mentorflow replay-check` and CI.

A workflow's code must make the same decisions (timers, activities, markers, in the same
order) for the history it already has; otherwise the next worker to pick it up fails its
workflow task with a non-determinism error and the relationship stops moving. Replaying
real histories with `temporalio.worker.Replayer` finds such a change before it is
deployed: `mentorflow replay-check` takes them from a server, tests/workflow/test_replay.py from
the recorded files in tests/histories/ (see docs/deploying.md).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from workflows.digest import CoordinatorDigests
from workflows.matching_round import MatchingRound
from workflows.relationship import Relationship

WORKFLOWS: Sequence[type] = (Relationship, MatchingRound, CoordinatorDigests)
WORKFLOW_TYPES = ("Relationship", "MatchingRound", "CoordinatorDigests")
TYPE_FILTER = "WorkflowType IN (" + ", ".join(f"'{name}'" for name in WORKFLOW_TYPES) + ")"

Verdict = Literal["ok", "nondeterministic", "failed"]


@dataclass(frozen=True)
class ReplayOutcome:
    workflow_id: str
    run_id: str
    workflow_type: str
    events: int
    verdict: Verdict
    detail: str = ""

    def summary(self) -> str:
        """The failure's own message, without the SDK core's wrapping around it."""
        found = re.search(r'message: "((?:[^"\\]|\\.)*)"', self.detail)
        return (found[1] if found else self.detail).replace('\\"', '"')

    def to_json(self) -> dict[str, Any]:
        """The fields, with the failure's `message` (`summary`) before its full `detail`."""
        fields = asdict(self)
        detail = fields.pop("detail")
        return fields | {"message": self.summary() if detail else "", "detail": detail}


def visibility_query(query: str | None) -> str:
    """Our workflow types, narrowed by the caller's own visibility query if given."""
    return f"{TYPE_FILTER} AND ({query})" if query and query.strip() else TYPE_FILTER


def workflow_type_of(history: WorkflowHistory) -> str:
    first = history.events[0] if history.events else None
    if first is None or not first.HasField("workflow_execution_started_event_attributes"):
        return "?"
    return str(first.workflow_execution_started_event_attributes.workflow_type.name)


def quiet_runtime() -> Runtime:
    """A runtime without the SDK core's own log lines: they go to stdout, and the outcome of
    each replay (the non-determinism message included) is reported anyway."""
    return Runtime(telemetry=TelemetryConfig(logging=None))


def replayer(data_converter: DataConverter, workflows: Sequence[type] = WORKFLOWS, runtime: Runtime | None = None) -> Replayer:
    return Replayer(workflows=list(workflows), data_converter=data_converter, runtime=runtime)


async def replay_histories(
    histories: AsyncIterator[WorkflowHistory] | Iterable[WorkflowHistory],
    data_converter: DataConverter,
    *,
    workflows: Sequence[type] = WORKFLOWS,
    runtime: Runtime | None = None,
) -> list[ReplayOutcome]:
    """Replay each history; one outcome per history, failures included (nothing is raised)."""

    async def each() -> AsyncIterator[WorkflowHistory]:
        if isinstance(histories, AsyncIterator):
            async for history in histories:
                yield history
        else:
            for history in histories:
                yield history

    outcomes: list[ReplayOutcome] = []
    async with replayer(data_converter, workflows, runtime).workflow_replay_iterator(each()) as results:
        async for result in results:
            history, failure = result.history, result.replay_failure
            verdict: Verdict = "ok"
            if isinstance(failure, NondeterminismError):
                verdict = "nondeterministic"
            elif failure is not None:
                verdict = "failed"
            outcomes.append(
                ReplayOutcome(
                    workflow_id=history.workflow_id,
                    run_id=history.run_id,
                    workflow_type=workflow_type_of(history),
                    events=len(history.events),
                    verdict=verdict,
                    detail="" if failure is None else str(failure),
                )
            )
    return outcomes


async def replay_recent(
    client: Client, *, query: str | None = None, limit: int = 50, runtime: Runtime | None = None
) -> list[ReplayOutcome]:
    """Replay the histories of the `limit` most recent matching workflows (open and closed,
    every run of a continued-as-new chain) with the client's data converter."""
    # Listed first, so that a bad query is an RPCError here rather than inside the replayer.
    executions = [(w.id, w.run_id) async for w in client.list_workflows(visibility_query(query), limit=limit)]

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for workflow_id, run_id in executions:
            yield await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()

    return await replay_histories(histories(), client.data_converter, runtime=runtime)


def load_histories(folder: Path) -> list[WorkflowHistory]:
    """The recorded histories in `folder` (*.json, as `temporal workflow show --output json`
    writes them); the workflow id is the file name without .json."""
    return [
        WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))
        for path in sorted(folder.glob("*.json"))
    ]
