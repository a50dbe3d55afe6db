"""The Monday-morning timer storm (issue #16): N reminders due in the same minute, against a
throttling mail server, and Temporal's own ceiling for N timers firing at once.

Two contestants, each on a fresh `temporal server start-dev` (its own database file) with its
worker in a separate process, in this order:

- **ceiling**: N trivial workflows (`StormCeiling`, below), each sleeping until the same
  moment and then running one activity that does nothing but return the time: what this
  machine's Temporal does with N timers firing together and no work in them.
- **ours**: `mentorflow worker` (the production command) and N `Relationship` workflows of
  one programme. Each is driven to the active phase by signals (match, agreement, both
  signatures); then meeting 1 of every relationship is rescheduled to start one hour after
  the storm moment T, and the programme's `meeting_reminder_lead_hours` is 1, so every
  reminder falls due at T, to both parties: 2·N emails. The people muted every other
  template (their directory entries), so the setup sends no mail and the sink sees only the
  storm; the programme has no delivery window and no digest, and the agreements ask for no
  agenda (nothing else falls due at T).

The sink is a real SMTP server on loopback (aiosmtpd, `tests/support/peers.py`) that accepts at most
`--sink-rate` messages a second (20; 0: no limit) from T on and answers the rest "451 4.7.1"
or "421 4.7.0", in turn, as providers throttle. (During the setup it has no limit.)

Reported, for ours: reminder events stored (`MeetingReminderIssued` in the event store) and
their drain (from T to the last one stored), the reminders that arrived at the sink (each
notification id counted: exactly once each is the goal) and their drain, what the sink
throttled, the delivery log (every reminder `delivered`, none `rejected`, attempts), the
retrying activities seen in the histories (backoff, not failure: retries, and no activity
or workflow failed), and the workflow-task timeouts and failures of every history. The
ceiling: its drain from T to the last activity completed. The drain-rate ratio compares
ours' reminder events (the timer firing and its workflow work, where the sink is not the
limit) with the ceiling's activities; the emails' drain is bounded by the sink's rate.

Last stdout line: one JSON object. Progress on stderr. Run: `python -m bench.storm`
(`--relationships N`, default 2,000; `--sink-rate`, `--lead`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.load import to_active
from bench.stage import (
    ceiling_clock, ceiling_then_ours, command_line, cpu_seconds, progress, serve_ceiling_worker, worker_command,
    worker_on_dev_server,
)

PROGRAMME = "storm"
COORDINATOR = "coord-1"
AGREEMENT = {
    "objective": "Lead the Monday design review",
    "goals": [{"title": "Run two design reviews"}],
    "meeting_frequency": "weekly",
    "meeting_minutes": 30,
    "term_months": 6,
    "agenda_policy": "no_agenda",
}


# -- the ceiling: a timer and one activity ------------------------------------------------------


@workflow.defn(name="StormCeiling", sandboxed=False)
class StormCeiling:
    """Sleeps until `at` (seconds since the epoch), then runs one activity; returns when it ran."""

    @workflow.run
    async def run(self, at: float) -> float:
        delay = at - workflow.now().timestamp()
        if delay > 0:
            await workflow.sleep(delay)
        ran: float = await workflow.execute_activity(
            ceiling_clock, start_to_close_timeout=timedelta(minutes=1)
        )
        return ran


async def serve_ceiling() -> None:
    await serve_ceiling_worker([StormCeiling], [ceiling_clock])


# -- histories ------------------------------------------------------------------------------------


async def read_histories(
    client: Client, workflow_ids: list[str], concurrency: int = 16, *, since: float | None = None
) -> dict[str, Any]:
    """Workflow-task timeouts and failures, and what the activities did, from every history;
    `since` (seconds since the epoch): also the timeouts from then on, apart."""
    counts = Counter[str]()
    max_attempt = 0
    queue = list(workflow_ids)

    async def reader() -> None:
        nonlocal max_attempt
        while queue:
            history = await client.get_workflow_handle(queue.pop()).fetch_history()
            scheduled_types: dict[int, str] = {}
            for event in history.events:
                kind = event.event_type
                if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                    counts["workflow_task_timeouts"] += 1
                    if since is not None and event.event_time.ToDatetime(tzinfo=UTC).timestamp() >= since:
                        counts["workflow_task_timeouts_after_t"] += 1
                elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                    counts["workflow_task_failures"] += 1
                elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                    name = event.activity_task_scheduled_event_attributes.activity_type.name
                    scheduled_types[event.event_id] = name
                    counts[f"activities_scheduled:{name}"] += 1
                elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                    attributes = event.activity_task_started_event_attributes
                    name = scheduled_types.get(attributes.scheduled_event_id, "?")
                    if attributes.attempt > 1:
                        counts[f"activities_retried:{name}"] += 1
                        counts[f"activity_retries:{name}"] += attributes.attempt - 1
                    max_attempt = max(max_attempt, attributes.attempt)
                elif kind in (EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED, EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT):
                    counts["activities_failed_for_good"] += 1
                elif kind in (EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED):
                    counts["workflows_failed"] += 1
                counts["history_events"] += 1

    await asyncio.gather(*(reader() for _ in range(concurrency)))
    result: dict[str, Any] = {
        "workflow_task_timeouts": counts.pop("workflow_task_timeouts", 0),
        "workflow_task_failures": counts.pop("workflow_task_failures", 0),
        **({"workflow_task_timeouts_after_t": counts.pop("workflow_task_timeouts_after_t", 0)} if since is not None else {}),
        "activities_failed_for_good": counts.pop("activities_failed_for_good", 0),
        "workflows_failed": counts.pop("workflows_failed", 0),
        "max_activity_attempt": max_attempt,
    }
    result.update(sorted(counts.items()))
    return result


def seconds_after(moment: float, times: list[float]) -> dict[str, float | None]:
    if not times:
        return {"first_s": None, "p50_s": None, "last_s": None}
    ordered = sorted(t - moment for t in times)
    return {
        "first_s": round(ordered[0], 2),
        "p50_s": round(ordered[len(ordered) // 2], 2),
        "last_s": round(ordered[-1], 2),
    }


async def results(client: Client, ids: list[str], concurrency: int = 16) -> list[float]:
    """Every workflow's result (a float), at most `concurrency` waits at once: the server
    limits the long polls one namespace may hold."""
    found: dict[str, float] = {}

    async def fetch(index: int) -> None:
        found[ids[index]] = await client.get_workflow_handle(ids[index], result_type=float).result()

    await in_parallel(len(ids), concurrency, fetch)
    return [found[i] for i in ids]


async def in_parallel(count: int, concurrency: int, job: Any) -> None:
    queue = iter(range(count))

    async def runner() -> None:
        for index in queue:
            await job(index)

    await asyncio.gather(*(runner() for _ in range(concurrency)))


# -- the ceiling --------------------------------------------------------------------------------


async def run_ceiling(args: argparse.Namespace, base_env: dict[str, str], scratch: Path) -> dict[str, Any]:
    directory = scratch / "ceiling"
    directory.mkdir()
    task_queue = "storm-ceiling"
    command = worker_command("ceiling", "bench.storm")
    async with worker_on_dev_server(directory, base_env, task_queue, "ceiling worker", command) as stage:
        client, server, worker = stage.client, stage.server, stage.worker
        # Starts ran at 30/s on a busy 2-core machine here: T is set well after the last.
        lead = args.lead if args.lead else 30 + args.relationships * 0.05
        at = time.time() + lead
        ids = [f"storm-ceiling-{k}" for k in range(args.relationships)]
        started_late = 0

        async def start(index: int) -> None:
            nonlocal started_late
            await client.start_workflow(StormCeiling.run, at, id=ids[index], task_queue=task_queue)
            started_late += time.time() > at

        progress(f"ceiling: starting {len(ids)} workflows, timers at T = now + {lead:.0f} s")
        await in_parallel(len(ids), 50, start)
        progress(f"ceiling: started ({started_late} after T); waiting for T and the activities")
        await asyncio.sleep(max(0.0, at - time.time()))
        cpu_before, server_before = cpu_seconds(worker.pid), cpu_seconds(server.pid)
        ran = await results(client, ids)
        worker_cpu, server_cpu = cpu_seconds(worker.pid) - cpu_before, cpu_seconds(server.pid) - server_before
        histories = await read_histories(client, ids, since=at)
    drain = max(ran) - at
    return {
        "workflows": len(ids),
        "started_after_t": started_late,
        "activities_after_t": seconds_after(at, list(ran)),
        "drain_seconds": round(drain, 2),
        "drain_per_s": round(len(ids) / drain, 1) if drain > 0 else None,
        "worker_cpu_ms_per_timer": round(worker_cpu * 1000 / len(ids), 2),
        "server_cpu_ms_per_timer": round(server_cpu * 1000 / len(ids), 2),
        **histories,
    }


# -- ours -----------------------------------------------------------------------------------------


def timed_sink(delay: float = 0) -> Any:
    """The SMTP sink; `delay`: seconds it takes to accept each message (a slow mail server)."""
    from tests.support.peers import Inbox, SmtpServer

    class TimedInbox(Inbox):
        """Records when each message was accepted, with its template and notification id."""

        def __init__(self) -> None:
            super().__init__()
            self.arrived: list[tuple[float, str, str]] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if delay:
                await asyncio.sleep(delay)
            answer = await super().handle_DATA(server, session, envelope)
            if answer.startswith("250"):
                message = self.messages[-1].message
                self.messages[-1].raw = b""  # the count is what matters here, not the bytes
                self.arrived.append(
                    (time.time(), str(message["X-Mentorflow-Template"]), str(message["X-Mentorflow-Notification"]))
                )
            return answer

    sink = SmtpServer()
    sink.inbox = TimedInbox()
    return sink


def sink_settings(sink: Any) -> dict[str, str]:
    """The worker's mail settings for `timed_sink()`."""
    return {
        "MENTORFLOW_SMTP_HOST": "127.0.0.1",
        "MENTORFLOW_SMTP_PORT": str(sink.port),
        "MENTORFLOW_SMTP_SECURITY": "none",
        "MENTORFLOW_SMTP_FROM": "Mentoring programme <mentoring@example.org>",
    }


def arrivals(sink: Any, template: str) -> list[tuple[float, str]]:
    """(when, notification id) of every message of `template` the sink accepted."""
    return [(t, nid) for t, kind, nid in sink.inbox.arrived if kind == template]


def mail_counts(arrived: list[tuple[float, str]], expected: int) -> dict[str, int]:
    """What arrived against `expected` emails: each notification once is the goal."""
    per_notification = Counter(nid for _, nid in arrived)
    return {
        "emails_expected": expected,
        "emails_arrived": len(arrived),
        "emails_distinct": len(per_notification),
        "emails_duplicated": sum(count - 1 for count in per_notification.values()),
    }


async def people_and_programme(pool: Any, count: int) -> None:
    from activities.directory import Directory
    from activities.template_texts import TEMPLATES
    from events.people import Participant, Programme
    from events.settings import ProgrammeSettings

    settings = ProgrammeSettings(
        coordinator_ids=(COORDINATOR,),
        meeting_reminder_lead_hours=1,
        agenda_request_lead_hours=1,
        delivery_window=None,
        digest_every_days=None,
    )
    directory = Directory(pool)
    await directory.create_or_update_programme(Programme(programme_id=PROGRAMME, name="Monday storm", settings=settings))
    muted = tuple(sorted(name for name in TEMPLATES if name != "meeting_reminder"))
    people = [
        Participant(participant_id=pid, display_name=f"Person {pid}", email=f"{pid}@example.org", muted_templates=muted)
        for index in range(count)
        for pid in (f"mentee-{index}", f"mentor-{index}")
    ]
    await directory.upsert_participants(people)


async def count_events(pool: Any, event_type: str) -> int:
    value: int = await pool.fetchval("SELECT count(*) FROM events WHERE event_type = $1", event_type)
    return value


async def wait_for_events(pool: Any, event_type: str, count: int, what: str, timeout: float, worker: Any) -> int:
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while (found := await count_events(pool, event_type)) < count and time.monotonic() < deadline:
        worker.check_alive()
        if time.monotonic() - last_report > 15:
            progress(f"ours: {found} of {count} {what}")
            last_report = time.monotonic()
        await asyncio.sleep(1)
    return found


async def run_ours(args: argparse.Namespace, base_env: dict[str, str], scratch: Path) -> dict[str, Any]:
    from activities.database import create_pool, migrate
    from events.relationship_io import RelationshipInput, relationship_workflow_id
    from mentorflow.start_options import relationship_start_options

    directory = scratch / "ours"
    directory.mkdir()
    task_queue = "storm-ours"
    n = args.relationships
    sink = timed_sink()
    await sink.start()
    pool = await create_pool(base_env["MENTORFLOW_DATABASE_URL"], max_size=4)
    try:
        await migrate(pool)
        await people_and_programme(pool, n)
        async with worker_on_dev_server(
            directory, base_env, task_queue, "ours worker", worker_command("ours", "bench.storm"), settings=sink_settings(sink)
        ) as stage:
            client, server, worker = stage.client, stage.server, stage.worker
            await asyncio.sleep(1)
            ids = [relationship_workflow_id(PROGRAMME, f"storm-{k}") for k in range(n)]

            def command(actor: str, **fields: Any) -> dict[str, Any]:
                return {"command_id": f"c-{uuid.uuid4().hex[:16]}", "actor_id": actor, **fields}

            async def activate(index: int) -> None:
                mentee, mentor = f"mentee-{index}", f"mentor-{index}"
                relationship = RelationshipInput(relationship_id=f"storm-{index}", programme_id=PROGRAMME, mentee_id=mentee)
                handle = await client.start_workflow(
                    "Relationship", relationship, id=ids[index], task_queue=task_queue,
                    **relationship_start_options(relationship, started_by="bench/storm.py"),
                )  # fmt: skip
                for name, actor, fields in to_active(COORDINATOR, mentee, mentor, AGREEMENT):
                    await handle.signal(name, command(actor, **fields))

            setup_started = time.monotonic()
            progress(f"ours: starting {n} relationships and driving them to the active phase (signals)")
            await in_parallel(n, 50, activate)
            active = await wait_for_events(pool, "RelationshipActivated", n, "relationships active", 60 + n * 0.5, worker)
            setup_seconds = time.monotonic() - setup_started
            progress(f"ours: {active} of {n} active after {setup_seconds:.0f} s")

            # The reschedules must all be applied before T: at the rate the setup's seven
            # commands per relationship went through here, twice over, and 30 s more.
            lead = args.lead if args.lead else 30 + 2 * setup_seconds / 7
            at = time.time() + lead
            starts_at = datetime.fromtimestamp(at, UTC) + timedelta(hours=1)
            progress(f"ours: rescheduling meeting 1 of each to T + 1 h, reminders due at T = now + {lead:.0f} s")

            async def reschedule(index: int) -> None:
                payload = command(f"mentee-{index}", meeting_number=1, starts_at=starts_at.isoformat())
                await client.get_workflow_handle(ids[index]).signal("reschedule_meeting", payload)

            await in_parallel(n, 50, reschedule)
            rescheduled = await wait_for_events(pool, "MeetingRescheduled", n, "meetings rescheduled", max(5.0, at - time.time()), worker)
            rescheduled_late = time.time() > at
            progress(f"ours: {rescheduled} rescheduled{' (after T!)' if rescheduled_late else ''}; waiting for T")
            await asyncio.sleep(max(0.0, at - time.time() - 1))
            sink.inbox.rate_limit = args.sink_rate or None
            await asyncio.sleep(max(0.0, at - time.time()))
            cpu_before, server_before = cpu_seconds(worker.pid), cpu_seconds(server.pid)

            expected = 2 * n
            timeout = 300 + 3 * expected / (args.sink_rate or 100)
            deadline = time.monotonic() + timeout
            last_report = 0.0
            while time.monotonic() < deadline:
                worker.check_alive()
                stored = await count_events(pool, "MeetingReminderIssued")
                delivered = len({nid for _, nid in arrivals(sink, "meeting_reminder")})
                if stored >= n and delivered >= expected:
                    break
                if time.monotonic() - last_report > 15:
                    throttled = sum(sink.inbox.throttled.values())
                    progress(f"ours: T+{time.time() - at:.0f} s: {stored} of {n} reminders stored, {delivered} of {expected} emails in, {throttled} throttled")
                    last_report = time.monotonic()
                await asyncio.sleep(0.5)
            worker_cpu, server_cpu = cpu_seconds(worker.pid) - cpu_before, cpu_seconds(server.pid) - server_before
            await asyncio.sleep(2)  # anything arriving twice arrives now
            recorded = [
                row["recorded_at"].timestamp()
                for row in await pool.fetch("SELECT recorded_at FROM events WHERE event_type = 'MeetingReminderIssued'")
            ]
            log_rows = await pool.fetch(
                "SELECT status, count(*) AS n, sum(attempts) AS attempts, max(attempts) AS max_attempts, "
                "count(*) FILTER (WHERE attempts > 1) AS retried "
                "FROM notification_deliveries WHERE template = 'meeting_reminder' AND channel = 'email' GROUP BY status"
            )
            other_mail = sum(1 for _, template, _ in sink.inbox.arrived if template != "meeting_reminder")
            progress(f"ours: reading {n} histories")
            histories = await read_histories(client, ids, since=at)
    finally:
        await pool.close()
        await sink.stop()

    reminder_arrivals = arrivals(sink, "meeting_reminder")
    timer_drain = max(recorded) - at if recorded else None
    mail_drain = max(t for t, _ in reminder_arrivals) - at if reminder_arrivals else None
    delivery_log = {row["status"]: {"deliveries": row["n"], "attempts": row["attempts"], "max_attempts": row["max_attempts"],
                                    "retried": row["retried"]} for row in log_rows}  # fmt: skip
    return {
        "relationships": n,
        "setup_seconds": round(setup_seconds, 1),
        "rescheduled_after_t": rescheduled_late,
        "rescheduled_by_t": rescheduled,
        "reminders_stored": len(recorded),
        "reminders_stored_after_t": seconds_after(at, recorded),
        "timer_drain_seconds": round(timer_drain, 2) if timer_drain else None,
        "timer_drain_per_s": round(n / timer_drain, 1) if timer_drain else None,
        **mail_counts(reminder_arrivals, 2 * n),
        "emails_other_templates": other_mail,
        "emails_after_t": seconds_after(at, [t for t, _ in reminder_arrivals]),
        "mail_drain_seconds": round(mail_drain, 2) if mail_drain else None,
        "mail_drain_per_s": round(len(reminder_arrivals) / mail_drain, 1) if mail_drain else None,
        "sink_rate_limit": args.sink_rate or None,
        "sink_throttled": {str(code): count for code, count in sorted(sink.inbox.throttled.items())},
        "delivery_log": delivery_log,
        "worker_cpu_ms_per_reminder": round(worker_cpu * 1000 / n, 2),
        "server_cpu_ms_per_reminder": round(server_cpu * 1000 / n, 2),
        **histories,
    }


async def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--relationships", type=int, default=2000, help="N: relationships, and ceiling workflows (2000)")
    parser.add_argument("--sink-rate", type=float, default=20, help="messages per second the sink accepts (20; 0: no limit)")
    parser.add_argument("--lead", type=float, default=0, help="seconds from the setup's end to T (default: by N)")
    rate = ("drain_ratio", "timer_drain_per_s", "drain_per_s")
    args, result = await ceiling_then_ours("storm", parser, argv, run_ceiling, run_ours, rate)
    ours = result.get("ours")
    if ours:
        log = ours["delivery_log"]
        result["exactly_once"] = (
            ours["emails_distinct"] == ours["emails_expected"]
            and ours["emails_duplicated"] == 0
            and set(log) == {"delivered"}
            and log["delivered"]["deliveries"] == ours["emails_expected"]
        )
        result["backoff_not_failure"] = (
            ours["activities_failed_for_good"] == 0 and ours["workflows_failed"] == 0 and "rejected" not in log
        )
        result["goal_met"] = (
            result["exactly_once"]
            and result["backoff_not_failure"]
            and ours["workflow_task_timeouts"] == 0
            and result.get("drain_ratio", 0) >= 0.7
        )
    result.update(relationships=args.relationships, sink_rate=args.sink_rate)
    return result


if __name__ == "__main__":
    command_line(main, serve_ceiling)
