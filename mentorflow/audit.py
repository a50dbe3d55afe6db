"""`mentorflow audit streams`: was a relationship's event stream written or read by more than
one workflow? (security issue #12, "Already stored").

Before migration 0008 a stream was keyed by the relationship id alone. A workflow started as
`relationship/OTHER-PROGRAMME/<someone's relationship id>` met that relationship's events as
a concurrency conflict on its first append, adopted them (the worker decrypted them into
that workflow's history) and went on appending to the same stream. Since 0008 every append
and every read for a workflow is checked against the stream's recorded owner
(`stream_owners`), so this cannot happen any more; this audit tells whether it happened
before.

The event store never recorded who wrote an event, so the store alone shows only traces:
a stream started twice, or not started by a RelationshipStarted, a recorded owner that is
not the one its RelationshipStarted names, events naming another programme. The decisive
evidence is in Temporal: every Relationship workflow (running or closed, each run) says in
its start input which relationship (= stream) and programme it is for. A workflow whose
programme or workflow id is not the stream's owner's, or a stream that more than one
workflow id addressed, means the stream was shared: that workflow's history may hold the
stream's confidential text in clear (as the worker decrypted it, re-encrypted only by the
payload codec's shared key), and `mentorflow forget` of the relationship does not reach it.
Delete such workflows once inspected (`temporal workflow delete --workflow-id …`).

Read only: nothing in the store or in Temporal is changed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from events.relationship_io import relationship_workflow_id

# What a finding says, worst first.
SHARED = "shared"  # more than one workflow addressed the stream, or a stranger did
TAMPERED = "inconsistent"  # the store contradicts itself (owner, starts, programmes)
UNCLAIMABLE = "unclaimable"  # no owner can be derived: every workflow is refused
INCOMPLETE = "incomplete"  # the audit could not read a workflow's input
UNOWNED = "unowned"  # written by a worker older than 0008: its rightful owner claims it next
_ORDER = (SHARED, TAMPERED, UNCLAIMABLE, INCOMPLETE, UNOWNED)


@dataclass(frozen=True)
class WorkflowOfStream:
    """What one Relationship workflow run says it is for (its start input)."""

    workflow_id: str
    run_id: str
    programme_id: str | None
    relationship_id: str | None
    status: str = ""
    # The input could not be decoded (another codec key, not JSON): programme and
    # relationship then come from the workflow id, if it has the usual shape.
    input_unreadable: bool = False


@dataclass(frozen=True)
class StreamFacts:
    stream_id: str
    events: int
    first_event: str | None
    # The programme of the stream's RelationshipStarted at version 1.
    started_in: str | None
    starts: int
    # Every programme named in a RelationshipStarted or a closing summary of the stream.
    programmes_named: tuple[str, ...]
    owner_programme: str | None
    owner_workflow: str | None
    claimed_by: str | None

    @property
    def rightful_workflow(self) -> str | None:
        """The workflow the stream belongs to: its recorded owner, else the one its start names."""
        if self.owner_workflow is not None:
            return self.owner_workflow
        return relationship_workflow_id(self.started_in, self.stream_id) if self.started_in else None

    @property
    def rightful_programme(self) -> str | None:
        return self.owner_programme if self.owner_programme is not None else self.started_in


@dataclass(frozen=True)
class Finding:
    stream_id: str
    kind: str
    detail: str
    owner: str | None = None
    workflows: tuple[str, ...] = ()


@dataclass
class AuditReport:
    streams: int
    workflows_checked: int | None  # None: Temporal was not asked (--store-only)
    findings: list[Finding] = field(default_factory=list)

    @property
    def affected_streams(self) -> list[str]:
        """Streams another workflow reached: their confidential text may be in its history."""
        return sorted({f.stream_id for f in self.findings if f.kind == SHARED})

    @property
    def clean(self) -> bool:
        return not any(f.kind in (SHARED, TAMPERED, UNCLAIMABLE, INCOMPLETE) for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "workflows_checked": self.workflows_checked,
            "affected_streams": self.affected_streams,
            "clean": self.clean,
            "findings": [asdict(f) | {"workflows": list(f.workflows)} for f in self.findings],
        }

    def lines(self) -> list[str]:
        """A plain-text account for an operator (ids only: no event content)."""
        checked = (
            "Temporal not asked (store only)"
            if self.workflows_checked is None
            else f"{self.workflows_checked} Relationship workflow runs checked"
        )
        out = [f"{self.streams} streams in the event store; {checked}."]
        if not self.findings:
            out.append("No stream was written or read by more than one workflow.")
            return out
        for finding in self.findings:
            out.append(f"[{finding.kind}] {finding.stream_id}: {finding.detail}")
            for workflow_id in finding.workflows:
                out.append(f"    workflow {workflow_id}")
        if self.affected_streams:
            out.append(
                f"{len(self.affected_streams)} streams were reached by a workflow that is not theirs: that "
                "workflow's history may hold their confidential text, and forgetting the relationship does "
                "not reach it. Inspect, then delete those workflows (temporal workflow delete --workflow-id …)."
            )
        if self.workflows_checked is None:
            out.append("Store traces only: run without --store-only to check every Relationship workflow.")
        return out


_FACTS = """
SELECT e.stream_id,
       count(*) AS events,
       min(e.event_type) FILTER (WHERE e.version = 1) AS first_event,
       min(e.payload->>'programme_id') FILTER (WHERE e.version = 1 AND e.event_type = 'RelationshipStarted') AS started_in,
       count(*) FILTER (WHERE e.event_type = 'RelationshipStarted') AS starts,
       coalesce(array_agg(DISTINCT coalesce(e.payload->>'programme_id', e.payload->'summary'->>'programme_id'))
                FILTER (WHERE coalesce(e.payload->>'programme_id', e.payload->'summary'->>'programme_id') IS NOT NULL
                          AND e.event_type IN ('RelationshipStarted', 'RelationshipClosed')),
                '{}') AS programmes_named,
       o.programme_id AS owner_programme, o.workflow_id AS owner_workflow, o.claimed_by
  FROM events e LEFT JOIN stream_owners o ON o.stream_id = e.stream_id
 GROUP BY e.stream_id, o.programme_id, o.workflow_id, o.claimed_by
 ORDER BY e.stream_id
"""


async def stream_facts(pool: asyncpg.Pool) -> dict[str, StreamFacts]:
    """What the store says about each stream (ids, types and counts: no confidential text)."""
    rows = await pool.fetch(_FACTS)
    return {
        row["stream_id"]: StreamFacts(
            stream_id=row["stream_id"],
            events=row["events"],
            first_event=row["first_event"],
            started_in=row["started_in"],
            starts=row["starts"],
            programmes_named=tuple(sorted(row["programmes_named"])),
            owner_programme=row["owner_programme"],
            owner_workflow=row["owner_workflow"],
            claimed_by=row["claimed_by"],
        )
        for row in rows
    }


def store_findings(facts: Iterable[StreamFacts]) -> list[Finding]:
    """Traces in the store alone."""
    found: list[Finding] = []
    for stream in facts:
        owner = f"{stream.owner_workflow} (programme {stream.owner_programme})" if stream.owner_workflow else None
        if stream.first_event != "RelationshipStarted":
            kind = UNCLAIMABLE if stream.owner_workflow is None else TAMPERED
            found.append(Finding(stream.stream_id, kind, f"its first event is {stream.first_event}, not RelationshipStarted", owner))
        if stream.starts > 1:
            found.append(Finding(stream.stream_id, TAMPERED, f"started {stream.starts} times", owner))
        named = set(stream.programmes_named)
        if stream.started_in is not None and named - {stream.started_in}:
            others = ", ".join(sorted(named - {stream.started_in}))
            found.append(Finding(stream.stream_id, TAMPERED, f"started in {stream.started_in}, but events name {others}", owner))
        if stream.owner_workflow is not None and stream.started_in is not None:
            expected = relationship_workflow_id(stream.started_in, stream.stream_id)
            if stream.owner_programme != stream.started_in or stream.owner_workflow != expected:
                found.append(
                    Finding(stream.stream_id, TAMPERED, f"owned by {owner}, but started in {stream.started_in}", owner)
                )
        if stream.owner_workflow is None and stream.first_event == "RelationshipStarted":
            found.append(
                Finding(
                    stream.stream_id,
                    UNOWNED,
                    f"no owner recorded yet (written by a worker older than migration 0008); "
                    f"{stream.rightful_workflow} claims it at its next append, anyone else is refused",
                )
            )
    return found


def workflow_findings(facts: dict[str, StreamFacts], workflows: Iterable[WorkflowOfStream]) -> list[Finding]:
    """Streams addressed by a workflow that is not theirs, or by more than one workflow id."""
    found: list[Finding] = []
    by_stream: dict[str, set[str]] = defaultdict(set)
    strangers: dict[str, set[str]] = defaultdict(set)
    for run in workflows:
        if run.input_unreadable:
            found.append(
                Finding(
                    run.relationship_id or "?",
                    INCOMPLETE,
                    f"the input of {run.workflow_id} (run {run.run_id}) could not be read: check it by hand "
                    "(is the codec key that encrypted it configured?)",
                    workflows=(run.workflow_id,),
                )
            )
        if run.relationship_id is None:
            continue
        stream = facts.get(run.relationship_id)
        if stream is None:
            continue  # nothing stored under that id: nothing to adopt
        by_stream[stream.stream_id].add(run.workflow_id)
        if run.programme_id != stream.rightful_programme or run.workflow_id != stream.rightful_workflow:
            strangers[stream.stream_id].add(f"{run.workflow_id} (programme {run.programme_id})")
    # A stream that several workflow ids addressed has a stranger among them: at most one
    # of them is the stream's owner.
    for stream_id in sorted(strangers):
        stream = facts[stream_id]
        owner = f"{stream.rightful_workflow} (programme {stream.rightful_programme})"
        found.append(
            Finding(
                stream_id,
                SHARED,
                f"addressed by {len(by_stream[stream_id])} workflow id(s); the stream is {owner}'s, "
                f"these are not: {', '.join(sorted(strangers[stream_id]))}",
                owner,
                tuple(sorted(by_stream[stream_id])),
            )
        )
    return found


async def audit_streams(pool: asyncpg.Pool, workflows: Iterable[WorkflowOfStream] | None) -> AuditReport:
    """The report: store traces, and with `workflows` (see `relationship_workflows`) the
    cross-check against what each Relationship workflow says it is for."""
    facts = await stream_facts(pool)
    findings = store_findings(facts.values())
    checked: int | None = None
    if workflows is not None:
        runs = list(workflows)
        checked = len(runs)
        findings += workflow_findings(facts, runs)
    findings.sort(key=lambda f: (_ORDER.index(f.kind), f.stream_id))
    return AuditReport(streams=len(facts), workflows_checked=checked, findings=findings)


def _from_workflow_id(workflow_id: str) -> tuple[str | None, str | None]:
    parts = workflow_id.split("/")
    if len(parts) == 3 and parts[0] == "relationship" and all(parts[1:]):
        return parts[1], parts[2]
    return None, None


async def relationship_workflows(
    client: Any, *, query: str = "WorkflowType = 'Relationship'", concurrency: int = 8
) -> list[WorkflowOfStream]:
    """Every run of every Relationship workflow (running or closed, as far as retention
    keeps them), with the programme and relationship its start input names. One history
    request per run (its first event only), `concurrency` at a time."""
    executions = [execution async for execution in client.list_workflows(query)]
    limit = asyncio.Semaphore(concurrency)

    async def read(execution: Any) -> WorkflowOfStream:
        status = execution.status.name if execution.status is not None else ""
        async with limit:
            try:
                handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
                async for event in handle.fetch_history_events(page_size=1):
                    payloads = event.workflow_execution_started_event_attributes.input.payloads
                    break
                else:
                    raise ValueError("no history")
                values = await client.data_converter.decode(payloads) if payloads else []
                start = values[0] if values else None
                if not isinstance(start, dict):
                    raise ValueError("the input is not an object")
                programme, relationship = start.get("programme_id"), start.get("relationship_id")
                if not isinstance(programme, str) or not isinstance(relationship, str):
                    raise ValueError("no programme_id or relationship_id")
            except Exception:  # noqa: BLE001 - reported as a finding: the audit is incomplete there
                programme, relationship = _from_workflow_id(execution.id)
                return WorkflowOfStream(execution.id, execution.run_id, programme, relationship, status, True)
        return WorkflowOfStream(execution.id, execution.run_id, programme, relationship, status)

    return list(await asyncio.gather(*(read(execution) for execution in executions)))
