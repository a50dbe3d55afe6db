"""The sentinel test (issue #6): confidential text is readable only through the decrypting
paths, and `mentorflow forget` makes it unreadable for good.

One relationship runs on a real dev server (its output captured to a file) through every
phase, with a unique sentinel in every confidential field of every command that has one.
Then the sentinel must appear nowhere in: the raw history (a client without the codec),
the raw description (memo, summaries, search attributes), the workflow listing (ids), the
failures of rejected commands, the dev server's log, our own log records, the notifications,
the `state` query, and the text of every row of every table of the event-store database.
What the two parties share with each other — the agreement (objective, goals, measures,
milestones, not-private list, exit plan), match explanations, introductions and resources —
carries a second sentinel (security issue #12): the same holds for it, except that the
parties see it in their notifications (only as a confidential parameter) and in the
`state` query.
It must appear through the decrypting paths (codec, event store), or the test proves nothing.
Finally `mentorflow forget` (the real command) refuses while the relationship runs, and
afterwards the store reads "[forgotten]" where the sentinel was and the same everything else,
and Temporal has no run of the relationship's workflow left: neither its description nor its
history, with or without the keys (security issue #12).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.data_keys import FORGOTTEN, locations
from activities.event_store import PostgresEventStore
from activities.notifications_channels import CONFIDENTIAL_PARAMETERS
from events.commands import COMMAND_TYPES
from events.model import CONFIDENTIAL_PATHS, AnyEvent
from events.sensitivity import confidential_paths
from events.settings import ProgrammeSettings
from mentorflow.client import dev_server_flags
from mentorflow.dev import _die_with_parent
from tests.support.runs import every_run
from tests.support.session import DATA_CONVERTER, TEST_KEYRING, project_root
from tests.support.helpers import (
    RecordingChannel,
    cmd,
    failed_workflow_tasks,
    new_worker,
    start_relationship,
    state_of,
    what_temporal_has,
)
from tests.support.peers import free_port

SENTINEL = f"SENTINEL{uuid.uuid4().hex}"


SHARED = f"SHARED{uuid.uuid4().hex}"


def secret(label: str) -> str:
    return f"{SENTINEL} {label}"


def shared(label: str) -> str:
    """Confidential text the two parties see (the agreement, goals, explanations, …)."""
    return f"{SHARED} {label}"


SHARED_AGREEMENT = {
    "objective": shared("objective"),
    "goals": [
        {"goal_id": "g1", "title": shared("goal title"), "measure": shared("goal measure"),
         "milestones": [{"milestone_id": "m1", "title": shared("milestone title")}]},
        {"goal_id": "g2", "title": shared("second goal title")},
    ],
    "meeting_frequency": "monthly",
    "meeting_minutes": 60,
    "term_months": 6,
    "confidentiality": {"not_private": [shared("not private")]},
    "early_exit_plan": shared("early exit plan"),
}  # fmt: skip


# Every (command, confidential path) this test plants a sentinel in; checked against the models.
PLANTED = {
    ("decline_match", "reason"), ("record_meeting", "notes"), ("cancel_meeting", "reason"),
    ("propose_goal_revision", "rationale"), ("submit_feedback", "comment"), ("raise_concern", "text"),
    ("resolve_concern", "resolution"), ("record_introduction", "note"), ("pause_relationship", "reason"),
    ("submit_review", "comment"), ("submit_review", "goal_assessments.*.comment"),
    ("close_relationship", "note"), ("submit_reflection", "text"),
    ("report_meeting_not_held", "reason"), ("correct_meeting_report", "reason"),
    # Shared between the parties (SHARED).
    ("propose_match", "explanation"), ("propose_agreement", "terms.objective"),
    ("propose_agreement", "terms.goals.*.title"), ("propose_agreement", "terms.goals.*.measure"),
    ("propose_agreement", "terms.goals.*.milestones.*.title"),
    ("propose_agreement", "terms.confidentiality.not_private.*"), ("propose_agreement", "terms.early_exit_plan"),
    ("propose_goal_revision", "goal.title"), ("propose_goal_revision", "goal.measure"),
    ("propose_goal_revision", "goal.milestones.*.title"), ("record_introduction", "introduced_to"),
    ("share_resource", "title"), ("share_resource", "url"),
}  # fmt: skip
# The planted values the event store keeps: every one (close_relationship's note too) but
# report_meeting_not_held's, which is only sent refused (no meeting of that number).
STORED_SECRETS = 15
# Two explanations; objective, 2 goal titles, a measure, a milestone, not-private, exit plan;
# the revision proposed and acknowledged (title, measure, milestone, twice); introduced to;
# resource title and URL.
STORED_SHARED = 2 + 7 + 6 + 1 + 2


class DevServer:
    """`temporal server start-dev`, its stdout and stderr in a file, INFO-level logging."""

    def __init__(self, binary: str, directory: Path):
        self.port = free_port()
        self.log_file = directory / "temporal-server.log"
        self._log = open(self.log_file, "wb")
        self.process = subprocess.Popen(
            [binary, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(self.port),
             "--namespace", "mentorflow", "--log-level", "info", *dev_server_flags(),
             # Deleting a just-closed run waits for this (30 s by default): `forget` below.
             "--dynamic-config-value", 'history.transferProcessorUpdateAckInterval="1s"'],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent(),
        )  # fmt: skip

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def client(self, **options: Any) -> Client:
        for _ in range(300):
            if self.process.poll() is not None:
                raise AssertionError(f"the dev server exited: {self.log_file.read_text()[-3000:]}")
            try:
                client = await Client.connect(self.address, namespace="mentorflow", **options)
                await client.count_workflows()
                return client
            except (RuntimeError, RPCError):
                await asyncio.sleep(0.1)
        raise AssertionError("the dev server did not answer within 30 s")

    def stop(self) -> str:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
        return self.log_file.read_text(errors="replace")


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every Payload inside a proto message (history events, descriptions, failures)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            items = list(value.values())
            if items and isinstance(items[0], Message):
                for item in items:
                    yield from payloads_in(item)
        elif field.label == FieldDescriptor.LABEL_REPEATED:
            for item in value:
                yield from payloads_in(item)
        else:
            yield from payloads_in(value)


async def every_row_as_text(pool: asyncpg.Pool) -> str:
    tables = await pool.fetch(
        """SELECT table_schema, table_name FROM information_schema.tables
            WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"""
    )
    assert {"events", "data_keys"} <= {t["table_name"] for t in tables}
    texts = []
    for table in tables:
        rows = await pool.fetch(f'SELECT t::text FROM "{table["table_schema"]}"."{table["table_name"]}" t')
        texts.extend(row[0] for row in rows)
    return "\n".join(texts)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mentorflow.cli", *args], cwd=project_root(), env=env,
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def drive_through_every_phase(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Plant the sentinel in every confidential field; returns the rejected updates' messages."""
    send = handle.execute_update
    await send("propose_match", cmd("coord-1", mentor_id="mentor-0", explanation=shared("explanation")))
    await send("decline_match", cmd("mentee-1", reason=secret("decline reason")))
    await send("propose_match", cmd("coord-1", mentor_id="mentor-1", explanation=shared("second explanation")))
    await send("accept_match", cmd("mentee-1"))
    await send("accept_match", cmd("mentor-1"))
    await send("propose_agreement", cmd("mentee-1", terms=SHARED_AGREEMENT))
    await send("sign_agreement", cmd("mentee-1", agreement_version=1))
    await send("sign_agreement", cmd("mentor-1", agreement_version=1))
    state = await state_of(handle)
    assert state.activated_at is not None
    await send("record_meeting", cmd("mentee-1", held_at=state.activated_at.isoformat(), duration_minutes=45,
                                     notes=secret("meeting notes")))  # fmt: skip
    await send("submit_feedback", cmd("mentee-1", feedback_round=1, score=4, comment=secret("feedback comment")))
    await send("correct_meeting_report", cmd("mentor-1", meeting_number=1, outcome="not_held",
                                             reason=secret("correction reason")))  # fmt: skip
    await send("correct_meeting_report", cmd("mentee-1", meeting_number=1, outcome="held",
                                             held_at=state.activated_at.isoformat(), duration_minutes=45))  # fmt: skip
    state = await state_of(handle)
    assert state.next_meeting is not None
    await send("cancel_meeting", cmd("mentor-1", meeting_number=state.next_meeting.meeting_number,
                                     reason=secret("cancel reason")))  # fmt: skip
    # A milestone and a goal reached: their notifications name the goal (to the two parties).
    await send("record_goal_progress", cmd("mentee-1", goal_id="g2", progress_percent=100))
    await send("record_goal_progress", cmd("mentee-1", goal_id="g1", progress_percent=40, milestones_reached=["m1"]))
    revised = {"goal_id": "g1", "title": shared("revised title"), "measure": shared("revised measure"),
               "milestones": [{"milestone_id": "m1", "title": shared("revised milestone")}]}
    await send("propose_goal_revision", cmd("mentee-1", goal=revised, rationale=secret("revision rationale")))
    [revision_id] = (await state_of(handle)).pending_goal_revisions
    await send("acknowledge_goal_revision", cmd("mentor-1", revision_id=revision_id))
    concern = cmd("mentee-1", text=secret("concern text"))
    await send("raise_concern", concern)
    await send("resolve_concern", cmd("mentee-1", concern_id=concern["command_id"], resolution=secret("resolution")))
    await send("record_introduction", cmd("mentor-1", introduced_to=shared("introduced to"), note=secret("introduction note")))
    await send("share_resource", cmd("mentor-1", title=shared("resource title"), url=f"https://example.org/{SHARED}/read"))
    now = await state_of(handle)
    until = (now.activated_at or state.activated_at) + timedelta(days=20)
    await send("pause_relationship", cmd("mentee-1", until=until.isoformat(), reason=secret("pause reason")))
    await send("resume_relationship", cmd("mentee-1"))

    # Refused: too long (an update's answer and a signal's recorded rejection), out of phase,
    # and a field that does not exist. None of them may echo what was sent.
    refusals = []
    for name, payload in (
        ("raise_concern", cmd("mentee-1", text=secret("too long") * 400)),
        ("submit_reflection", cmd("mentee-1", text=secret("reflection out of phase"))),
        ("report_meeting_not_held", cmd("mentee-1", meeting_number=99, reason=secret("not held reason"))),
        ("record_introduction", cmd("mentor-1", introduced_to="emp-78", gossip=secret("no such field"))),
    ):
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await send(name, payload)
        refusals.append(f"{refused.value} {refused.value.cause}")
        await handle.signal(name, payload)

    await send("request_review", cmd("mentee-1"))
    await send("submit_review", cmd("mentee-1", outcome="continue", comment=secret("review comment"),
                                    goal_assessments=[{"goal_id": "g1", "progress_percent": 50,
                                                       "comment": secret("goal assessment")}]))  # fmt: skip
    await send("submit_review", cmd("mentor-1", outcome="continue"))
    await send("close_relationship", cmd("mentee-1", note=secret("closing note")))
    return refusals


async def test_confidential_text_appears_only_through_the_decrypting_paths(
    temporal_binary: str, pool: asyncpg.Pool, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    planted = {(name, ".".join(path)) for name, model in COMMAND_TYPES.items() for path in confidential_paths(model)}
    assert planted == PLANTED, "plant the sentinel in the new confidential field too"
    caplog.set_level(logging.DEBUG)
    server = DevServer(temporal_binary, tmp_path)
    server_log = ""
    try:
        client = await server.client(data_converter=DATA_CONVERTER)
        raw = await server.client()  # no codec: what anyone with access to Temporal sees
        channel = RecordingChannel()
        settings = ProgrammeSettings(coordinator_ids=("coord-1",), feedback_every_sessions=1)
        async with new_worker(client, pool, channel) as worker:
            handle = await start_relationship(client, worker, settings=settings)
            relationship_id = handle.id.rsplit("/", 1)[-1]
            refusals = await drive_through_every_phase(handle)
            state = await state_of(handle)
            env = {k: v for k, v in os.environ.items() if not k.startswith("MENTORFLOW_")} | {
                "MENTORFLOW_DATABASE_URL": database_url,
                "MENTORFLOW_TEMPORAL_ADDRESS": server.address,
                "MENTORFLOW_ENCRYPTION_KEYS": TEST_KEYRING.format(),
            }
            # Still running (closing): refused, the key stays.
            refused = await asyncio.to_thread(run_cli, "forget", relationship_id, "--yes", env=env)
            assert refused.returncode == 1 and "still running" in refused.stderr, refused.stderr
            await handle.execute_update("submit_reflection", cmd("mentee-1", text=secret("mentee reflection")))
            await handle.execute_update("submit_reflection", cmd("mentor-1", text=secret("mentor reflection")))
            summary = await handle.result()
            assert summary.meetings_held == 1 and summary.concerns_raised == 1
            assert await failed_workflow_tasks(handle) == 0

            # Every run's events: the relationship continues as new on the way.
            runs = await every_run(raw, handle.id)
            events = [event for _, history in reversed(runs) for event in history.events]
            description = await raw.workflow_service.describe_workflow_execution(
                DescribeWorkflowExecutionRequest(namespace="mentorflow", execution=WorkflowExecution(workflow_id=handle.id))
            )
            listed = [w async for w in raw.list_workflows(f"WorkflowId = '{handle.id}'")]
            final_state = (await state_of(handle)).model_dump_json()
        stored = await PostgresEventStore(pool, TEST_KEYRING).read_stream(relationship_id)
        rows = await every_row_as_text(pool)

        # Forgetting: the real command, on the closed relationship, while Temporal runs.
        forgot = await asyncio.to_thread(run_cli, "forget", f"relationship/prog-1/{relationship_id}", "--yes",
                                         "--by", "ops-7", "--json", env=env)  # fmt: skip
        left_in_temporal = {run.run_id: await what_temporal_has(client, handle.id, run.run_id) for run in listed}
        again = await asyncio.to_thread(run_cli, "forget", relationship_id, "--yes", env=env)
    finally:
        server_log = server.stop()

    # Positive controls: the sentinel is there for whoever holds the keys.
    assert DATA_CONVERTER.payload_codec is not None
    decoded = await DATA_CONVERTER.payload_codec.decode([p for e in events for p in payloads_in(e)])
    assert sum(SENTINEL.encode() in p.data for p in decoded) >= 13 - 1  # the goal comment rides along
    assert sum(SHARED.encode() in p.data for p in decoded) >= 6  # a command of each kind, and more
    assert sum(json.dumps(e.model_dump(mode="json")).count(SENTINEL) for e in stored) == STORED_SECRETS
    assert sum(json.dumps(e.model_dump(mode="json")).count(SHARED) for e in stored) == STORED_SHARED
    assert len(events) > 50 and len(runs) > 1 and "server" in server_log.lower() and listed

    # Nowhere else.
    places = {
        "raw history": b"".join(event.SerializeToString() for event in events),
        "raw description (memo, summaries, search attributes)": description.SerializeToString(),
        "listing (workflow ids, search attributes, memo)": b"".join(w.raw_info.SerializeToString() for w in listed),
        "workflow id": handle.id.encode(),
        "dev server log": server_log.encode(),
        "our log records": caplog.text.encode(),
        "rejections": " ".join(refusals).encode(),
        "notifications": json.dumps([n.model_dump(mode="json") for n in channel.sent]).encode(),
        "state query": state.model_dump_json().encode() + final_state.encode(),
        "every row of every table": rows.encode(),
        "every row of every table after forget": (await every_row_as_text(pool)).encode(),
    }
    for place, content in places.items():
        assert SENTINEL.encode() not in content, f"the sentinel leaked into the {place}"
        if place not in ("notifications", "state query"):
            assert SHARED.encode() not in content, f"the shared sentinel leaked into the {place}"
    assert b"example.org" not in places["every row of every table"]
    # What the two parties share reaches them: their agreement and goals in the state, goal
    # titles and the match explanation in their messages — as parameters logs redact.
    assert SHARED in final_state
    told = {key for n in channel.sent for key, value in n.data.items() if SHARED in value}
    assert told == CONFIDENTIAL_PARAMETERS
    assert {n.recipient_id for n in channel.sent if any(SHARED in value for value in n.data.values())} == \
        {"mentee-1", "mentor-0", "mentor-1"}  # fmt: skip
    rejected = [e for e in stored if e.type == "CommandRejected"]
    assert len(rejected) == 4 and all(
        "invalid payload" in e.reason or "phase" in e.reason or "no meeting" in e.reason for e in rejected
    )
    assert rows.count('"$enc"') == STORED_SECRETS + STORED_SHARED

    # Forgetting: the data key is gone, and so is every run of the workflow in Temporal.
    assert forgot.returncode == 0, forgot.stderr
    outcome = json.loads(forgot.stdout)
    stored_values = STORED_SECRETS + STORED_SHARED
    assert (outcome["sealed_values"], outcome["forgotten_by"], outcome["now"]) == (stored_values, "ops-7", True)
    assert (outcome["workflow_id"], outcome["workflow_runs_deleted"]) == (handle.id, len(listed))
    assert left_in_temporal == {run.run_id: [] for run in listed}
    assert SENTINEL not in forgot.stdout + forgot.stderr and SHARED not in forgot.stdout + forgot.stderr
    after = await PostgresEventStore(pool, TEST_KEYRING).read_stream(relationship_id)
    assert SENTINEL not in json.dumps([e.model_dump(mode="json") for e in after])
    assert SHARED not in json.dumps([e.model_dump(mode="json") for e in after])
    assert sum(json.dumps(e.model_dump(mode="json")).count(FORGOTTEN) for e in after) == stored_values
    assert [without_text(e) for e in after] == [without_text(e) for e in stored]
    assert again.returncode == 0 and "already forgotten" in again.stdout, again.stderr
    unknown = await asyncio.to_thread(run_cli, "forget", "rel-nobody", "--yes", env=env)
    assert unknown.returncode == 1 and "no relationship 'rel-nobody'" in unknown.stderr


def without_text(event: AnyEvent) -> dict[str, Any]:
    """The event with its confidential places blanked: what forgetting must leave unchanged."""
    data = event.model_dump(mode="json")
    for path in CONFIDENTIAL_PATHS.get(event.type, ()):
        for container, key, _ in locations(data, path):
            container[key] = "…"
    return data
