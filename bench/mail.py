"""The worker's CPU per email: what one notification sent by SMTP costs the process that sends it.

Run it with `python -m bench.mail [--emails 600] [--concurrency 4] [--security none|starttls]
[--no-links] [--only ours|parts] [--profile FILE]`; see
bench/README.md (the `bench.storm` section, "Worker CPU per email").

The emails are the ones commands cause (events/notifications.py), one command's
notifications to one call, in turn: a match proposed (mentee and mentor), an agreement
proposed (the other party), a reminder to sign it (both), a meeting reminder (both, with
an .ics invite). Every recipient is in the directory with an email address and a time zone
of their own; every relationship has its `RelationshipStarted` settings in the event store
(no delivery window, so nothing waits for daytime). Links are signed as on a worker with
MENTORFLOW_PUBLIC_URL (`--no-links`: as `bench.load`'s worker, without).

Contestants, on the same PostgreSQL (embedded, or MENTORFLOW_DATABASE_URL) and the same SMTP
server (aiosmtpd on loopback, in a process of its own so that its CPU is not counted here),
`--concurrency` calls or sends at a time:

* ours: `NotificationActivities.send_notifications`, as the worker runs it (directory,
  delivery log, stored settings, links, the email channel), through the SDK's
  `ActivityEnvironment` with the relationship's workflow id.
* floor: the same emails' bytes, built beforehand, sent with a bare aiosmtplib client over
  one connection per concurrent sender: what sending costs with nothing else.
* parts, each alone: `render` (text, links, MIME and the bytes on the wire, no I/O),
  `delivery_log` (claim and mark delivered, one delivery at a time), and `smtp_connection`
  (one aiosmtplib.send, so one connection, per email).

CPU is this process's (time.process_time), over the emails of the run: milliseconds per
email. `smtp_connections`: the connections the server saw, all contestants together (with
`--only ours`, ours'). `--profile FILE` writes a cProfile of ours' run. The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import json
import multiprocessing
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from datetime import UTC, datetime, timedelta
from typing import Any

ZONES = ("Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC", "Australia/Sydney", "America/Sao_Paulo")
PROGRAMME = "mailbench"
SENDER = "Mentoring programme <mentoring@example.org>"
PUBLIC_URL = "https://mentoring.example.org"


# -- the SMTP server, in a process of its own ----------------------------------------------------


def _serve_sink(ports: Any, stop: Any, starttls: bool) -> None:
    from tests.support.peers import Inbox, SmtpServer

    class CountingInbox(Inbox):
        """Accepts everything and counts the messages and the connections they came over."""

        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self.peers: set[Any] = set()

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.count += 1
            self.peers.add(session.peer)
            return "250 OK"

    async def serve() -> None:
        options: dict[str, Any] = {}
        authority = b""
        if starttls:
            import ssl

            import trustme
            from aiosmtpd.smtp import AuthResult

            ca = trustme.CA()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
            authority = ca.cert_pem.bytes()
            options = {"tls_context": context, "require_starttls": True, "auth_required": True,
                       "authenticator": lambda *_: AuthResult(success=True)}  # fmt: skip
        sink = SmtpServer(**options)
        sink.inbox = CountingInbox()
        await sink.start()
        ports.send((sink.port, authority))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        ports.send((sink.inbox.count, len(sink.inbox.peers)))
        await sink.stop()

    asyncio.run(serve())


class Sink:
    """aiosmtpd on loopback in a child process; `accepted()` at the end says how many arrived,
    over how many connections.
    With `starttls` it requires STARTTLS and a login, with a certificate of its own authority
    (`authority`: PEM)."""

    def __init__(self, starttls: bool) -> None:
        context = multiprocessing.get_context("spawn")
        self._ours, theirs = context.Pipe()
        self._stop = context.Event()
        self._process = context.Process(target=_serve_sink, args=(theirs, self._stop, starttls), daemon=True)
        self._process.start()
        self.port, self.authority = self._ours.recv()

    def accepted(self) -> tuple[int, int]:
        """(messages, connections they came over)."""
        self._stop.set()
        counts: tuple[int, int] = self._ours.recv()
        self._process.join(10)
        return counts


def trust(authority: bytes, scratch: Path) -> None:
    """This process trusts the system's authorities and the sink's, as a worker without
    MENTORFLOW_SMTP_CA_FILE trusts the system's: every default TLS context reads SSL_CERT_FILE."""
    import ssl

    bundle = scratch / "authorities.pem"
    bundle.write_bytes(Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt").read_bytes()
                       + b"\n" + authority)  # fmt: skip
    os.environ["SSL_CERT_FILE"] = str(bundle)


def smtp_config(port: int, args: argparse.Namespace) -> Any:
    """The worker's mail settings: no TLS, or STARTTLS with a login and the default trust."""
    from activities.notifications_email import SmtpConfig

    if args.security == "starttls":
        return SmtpConfig("127.0.0.1", SENDER, port, "starttls", username="mentorflow", password="bench")
    return SmtpConfig("127.0.0.1", SENDER, port, "none")


# -- the people, the relationships and the emails ------------------------------------------------


async def seed(pool: Any, relationships: int) -> None:
    """Both parties of each relationship in the directory, and each relationship's settings
    where the worker reads them (its `RelationshipStarted` event)."""
    from activities.directory import Directory
    from events.people import Participant, Programme
    from events.settings import ProgrammeSettings

    settings = ProgrammeSettings(delivery_window=None)
    directory = Directory(pool)
    await directory.create_or_update_programme(Programme(programme_id=PROGRAMME, name="Mail bench", settings=settings))
    await directory.upsert_participants(
        [
            Participant(participant_id=pid, display_name=f"{role.title()} {k}", email=f"{pid}@example.org",
                        timezone=ZONES[(2 * k + len(role)) % len(ZONES)])  # fmt: skip
            for k in range(relationships)
            for role, pid in (("mentee", f"mentee-{k}"), ("mentor", f"mentor-{k}"))
        ]
    )
    payload = json.dumps({"settings": settings.model_dump(mode="json")})
    await pool.executemany(
        """INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version, occurred_at, payload)
           VALUES (nextval('event_position'), $1, 1, $2, 'RelationshipStarted', 1, now(), $3::jsonb)
           ON CONFLICT DO NOTHING""",
        [(f"rel-{k}", uuid.uuid4(), payload) for k in range(relationships)],
    )


def commands(emails: int, relationships: int) -> list[tuple[str, list[Any]]]:
    """(relationship id, its notifications) for each command, until `emails` emails: the
    data each template gets from events/notifications.py."""
    from events.notifications import Notification

    soon = datetime.now(UTC) + timedelta(days=2)
    batches: list[tuple[str, list[Any]]] = []
    count = k = 0
    while count < emails:
        relationship, mentee, mentor = f"rel-{k % relationships}", f"mentee-{k % relationships}", f"mentor-{k % relationships}"
        kind = k % 4
        recipients: tuple[str, ...]
        if kind == 0:
            template, recipients = "match_proposed", (mentee, mentor)
            data = {"mentor_id": mentor, "respond_by": (soon + timedelta(days=5)).isoformat(),
                    "explanation": "Both of you work in data engineering and want to get better at public speaking."}  # fmt: skip
        elif kind == 1:
            template, recipients, data = "agreement_proposed", (mentor,), {"agreement_version": "1"}
        elif kind == 2:
            template, recipients = "agreement_reminder", (mentee, mentor)
            data = {"agreement_version": "1", "days_left": "3", "agreement_due_at": (soon + timedelta(days=1)).isoformat()}
        else:
            start = soon.replace(minute=0, second=0, microsecond=0)
            template, recipients = "meeting_reminder", (mentee, mentor)
            data = {"mentee_id": mentee, "mentor_id": mentor, "meeting_number": "3",
                    "meeting_start": start.isoformat(), "meeting_end": (start + timedelta(hours=1)).isoformat(),
                    "meeting_uid": f"{relationship}-meeting-3@mentorflow", "meeting_sequence": "0"}  # fmt: skip
        event_id = uuid.uuid4()
        batches.append(
            (relationship, [Notification(notification_id=f"{event_id}:{r}", relationship_id=relationship,
                                         recipient_id=r, template=template, data=data) for r in recipients])  # fmt: skip
        )
        count += len(recipients)
        k += 1
    return batches


# -- running and timing --------------------------------------------------------------------------


async def timed(
    name: str, work: Sequence[Any], run: Callable[[Any], Awaitable[Any]], concurrency: int, emails: int,
    profile: str | None = None,
) -> dict[str, Any]:
    """Runs `run` over `work`, `concurrency` at a time; this process's CPU and wall time per email."""
    queue = list(reversed(work))

    async def runner() -> None:
        while queue:
            await run(queue.pop())

    profiler = cProfile.Profile() if profile else None
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    if profiler is not None and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    from bench.stage import progress

    progress(f"{name}: {emails} emails, {1000 * cpu / emails:.2f} ms CPU each, {emails / wall:.0f}/s")
    return {"emails": emails, "cpu_ms_per_email": round(1000 * cpu / emails, 3), "wall_s": round(wall, 3),
            "emails_per_s": round(emails / wall, 1)}  # fmt: skip


def in_activity(relationship: str) -> Any:
    """An activity environment whose workflow is the relationship's (its links name it)."""
    from temporalio.testing import ActivityEnvironment

    from events.relationship_io import relationship_workflow_id

    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, workflow_id=relationship_workflow_id(PROGRAMME, relationship))
    return environment


async def run_ours(pool: Any, port: int, batches: list[tuple[str, list[Any]]], args: argparse.Namespace) -> dict[str, Any]:
    from activities.directory import Directory
    from activities.notifications import DirectoryContacts, NotificationActivities
    from activities.notifications_daytime import StoredDeliveryWindows
    from activities.notifications_delivery_log import PostgresDeliveryLog
    from activities.notifications_email import EmailChannel

    stored = StoredDeliveryWindows(pool)
    channel = EmailChannel(smtp_config(port, args))
    activities = NotificationActivities(
        deliveries=PostgresDeliveryLog(pool), contacts=DirectoryContacts(Directory(pool)),
        channels=[channel], windows=stored, lifetimes=stored, links=link_maker(args),
    )  # fmt: skip
    sent = 0

    async def send(batch: tuple[str, list[Any]]) -> None:
        nonlocal sent
        count: int = await in_activity(batch[0]).run(activities.send_notifications, batch[1])
        sent += count

    emails = sum(len(notifications) for _, notifications in batches)
    figures = await timed("ours", batches, send, args.concurrency, emails, args.profile)
    if hasattr(channel, "close"):  # the connections it keeps open (before issue #16 it kept none)
        await channel.close()
    return figures | {"sent": sent}


def link_maker(args: argparse.Namespace) -> Any:
    from mentorflow.action_links import LinkMaker
    from mentorflow.keyring import Keyring

    return None if args.no_links else LinkMaker(Keyring.generate("bench-1"), PUBLIC_URL)


async def emails_of(pool: Any, batches: list[tuple[str, list[Any]]], args: argparse.Namespace) -> tuple[list[Any], float]:
    """Each notification's email as ours sends it (recipients from the directory), and the CPU
    seconds that building them took: the text, the links, the MIME message."""
    from activities.directory import Directory
    from activities.notifications import NotificationActivities, _Job
    from activities.notifications_channels import Delivery
    from activities.notifications_email import EmailChannel
    from activities.templates import render

    channel = EmailChannel(smtp_config(25, args))
    activities = NotificationActivities(deliveries=None, contacts=None, links=link_maker(args))  # type: ignore[arg-type]
    named = sorted({v for _, ns in batches for n in ns for v in (n.recipient_id, *n.data.values())})
    people = {p.participant_id: p for p in await Directory(pool).get_participants(named)}

    async def build(notifications: list[Any]) -> list[Any]:
        built = []
        for notification in notifications:
            recipient = people[notification.recipient_id]
            job = _Job(notification, "email", recipient=recipient, address=recipient.email, meant_for="email")
            message = activities._with_links(job, render(notification, recipient, people))
            delivery = Delivery(notification, recipient, recipient.email, message, "msg_x", datetime.now(UTC), people, "email")
            built.append(channel.message(delivery))
        return built

    environments = [in_activity(relationship) for relationship, _ in batches]
    cpu = time.process_time()
    messages = [m for (_, ns), env in zip(batches, environments, strict=True) for m in await env.run(build, ns)]
    return messages, time.process_time() - cpu


def smtp_options(port: int, args: argparse.Namespace) -> dict[str, Any]:
    """aiosmtplib's options for the same server and settings as the worker's."""
    starttls = args.security == "starttls"
    return {"hostname": "127.0.0.1", "port": port, "use_tls": False, "start_tls": starttls, "timeout": 20,
            **({"username": "mentorflow", "password": "bench"} if starttls else {})}  # fmt: skip


async def run_parts(pool: Any, port: int, batches: list[tuple[str, list[Any]]], args: argparse.Namespace) -> dict[str, Any]:
    """The parts of ours, each alone, and the floor."""
    import ssl

    import aiosmtplib
    from aiosmtplib.email import flatten_message

    from activities.notifications_delivery_log import DeliveryKey, PostgresDeliveryLog

    notifications = [n for _, ns in batches for n in ns]
    emails = len(notifications)
    messages, building = await emails_of(pool, batches, args)
    cpu = time.process_time()
    wires = [flatten_message(message) for message in messages]  # as aiosmtplib flattens them
    flattening = time.process_time() - cpu
    addresses = [message["To"].addresses[0].addr_spec for message in messages]
    parts: dict[str, Any] = {
        "render": {"cpu_ms_per_email": round(1000 * (building + flattening) / emails, 3),
                   "flattening_cpu_ms_per_email": round(1000 * flattening / emails, 3)},
    }  # fmt: skip

    log = PostgresDeliveryLog(pool)
    token = str(uuid.uuid4())

    async def record(notification: Any) -> None:
        key = DeliveryKey(f"parts-{notification.notification_id}", "email", "d" * 32)
        await log.claim(key, notification, token)
        await log.delivered(key)

    parts["delivery_log"] = await timed("delivery log alone", notifications, record, args.concurrency, emails)
    options = smtp_options(port, args)

    async def one_connection_each(index: int) -> None:
        await aiosmtplib.send(wires[index], sender="mentoring@example.org", recipients=[addresses[index]], **options)

    parts["smtp_connection"] = await timed("smtp, aiosmtplib.send per email", range(emails), one_connection_each,
                                           args.concurrency, emails)  # fmt: skip

    # The floor: the same bytes over one connection per concurrent sender, trust read once.
    context = ssl.create_default_context() if args.security == "starttls" else None
    clients = [aiosmtplib.SMTP(**options, tls_context=context) for _ in range(args.concurrency)]
    for client in clients:
        await client.connect()
    free = list(clients)

    async def over_one_connection(index: int) -> None:
        client = free.pop()
        try:
            await client.sendmail("mentoring@example.org", [addresses[index]], wires[index])
        finally:
            free.append(client)

    floor = await timed("floor: the bytes over open connections", range(emails), over_one_connection,
                        args.concurrency, emails)  # fmt: skip
    for client in clients:
        await client.quit()
    return {"floor": floor, "parts": parts}


async def main(argv: list[str]) -> dict[str, Any]:
    from activities.database import create_pool, migrate
    from bench.stage import progress, scratch_database

    parser = argparse.ArgumentParser(prog="python -m bench.mail", description=__doc__.split("\n")[0])
    parser.add_argument("--emails", type=int, default=600, help="emails per contestant (about 1.75 per command)")
    parser.add_argument("--relationships", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4, help="calls (or sends) at a time")
    parser.add_argument("--security", choices=("none", "starttls"), default="none",
                        help="starttls: STARTTLS and a login, trusting the system's authorities (the default)")
    parser.add_argument("--no-links", action="store_true", help="no signed links (as bench.load's worker)")
    parser.add_argument("--only", choices=("ours", "parts"), help="run one of them")
    parser.add_argument("--profile", help="write a cProfile of ours' run to this file")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"load_average_1m_at_start": round(os.getloadavg()[0], 2), "links": not args.no_links,
                              "security": args.security, "concurrency": args.concurrency}  # fmt: skip
    sink = Sink(args.security == "starttls")
    async with scratch_database("mail") as (scratch, env):
        if sink.authority:
            trust(sink.authority, scratch)
        # As the worker's (mentorflow/dev.py open_pool).
        pool = await create_pool(env["MENTORFLOW_DATABASE_URL"], max_size=20)
        try:
            await migrate(pool)
            await seed(pool, args.relationships)
            if args.only in (None, "ours"):
                await run_ours(pool, sink.port, commands(40, args.relationships), argparse.Namespace(**{**vars(args), "profile": None}))
                progress("ours: warmed up")
                result["ours"] = await run_ours(pool, sink.port, commands(args.emails, args.relationships), args)
            if args.only in (None, "parts"):
                result |= await run_parts(pool, sink.port, commands(args.emails, args.relationships), args)
        finally:
            await pool.close()
    result["emails_accepted_by_the_server"], result["smtp_connections"] = sink.accepted()
    if "ours" in result and "floor" in result:
        result["ours_over_floor_cpu"] = round(result["ours"]["cpu_ms_per_email"] / result["floor"]["cpu_ms_per_email"], 2)
    return result


if __name__ == "__main__":
    from bench.stage import command_line

    async def no_ceiling() -> None:
        raise SystemExit("bench.mail has no ceiling worker")

    command_line(main, no_ceiling)
