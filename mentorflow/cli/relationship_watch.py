"""`mentorflow relationship list`, `history` and `events`: watching relationships through
Temporal's visibility, a workflow's history and the event store (mentorflow/operations.py
fetches the rows; this prints them)."""

from __future__ import annotations

import json
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from temporalio.service import RPCError

from mentorflow.cli.relationship import relationship_app
from mentorflow.cli.shared import (
    DIRECTORY_DATABASE_HELP,
    JsonOption,
    Problem,
    R,
    _connect,
    _parse_moment,
    _with_database,
    err,
    out,
    reported_as_problem,
    run,
)
from mentorflow.config import Settings


def _operation(call: Coroutine[Any, Any, R]) -> R:
    from mentorflow.operations import OperationError

    try:
        return run(call)
    except OperationError as error:
        raise Problem(str(error), exit_code=2 if error.usage else 1) from None
    except RPCError as error:
        raise Problem(f"Temporal: {error.message}") from None


WATCH_EXIT_CODES = (
    "Exit codes: 0 done (an empty list too); 1 Temporal or the database unreachable, no such "
    "workflow, no stored events; 2 bad input: an unknown phase or health, a malformed date or id, "
    "a query the server refuses."
)


def _when(moment: datetime | None) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M}" if moment else ""


@relationship_app.command("list", epilog=WATCH_EXIT_CODES)
def list_relationships(
    programme: Annotated[str | None, typer.Option("--programme", help="Only this programme.")] = None,
    phase: Annotated[str | None, typer.Option("--phase", help="matching, agreement, active, review, closing or closed.")] = None,
    health: Annotated[str | None, typer.Option("--health", help="healthy, at_risk or stalled.")] = None,
    due_before: Annotated[
        str | None, typer.Option("--due-before", help="NextDueAt before this moment: ISO 8601 with offset, or a date (UTC).")
    ] = None,
    query: Annotated[str | None, typer.Option("--query", help="More of the Web UI's list query, e.g. \"MentorId = 'emp-311'\".")] = None,
    include_closed: Annotated[bool, typer.Option("--all", help="Include relationships that have ended.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000, help="At most this many rows.")] = 200,
    as_json: JsonOption = False,
) -> None:
    """List relationships by their search attributes, as the Web UI's list does (running ones unless --all).

    The query it runs is printed on stderr (in JSON, as "query"): paste it into the Web UI or
    `temporal workflow list --query`.
    """
    from mentorflow.operations import list_relationships as fetch, visibility_query

    settings = Settings.from_env()
    due = _parse_moment(due_before, "--due-before") if due_before is not None else None

    async def load() -> tuple[str, list[Any]]:
        text = visibility_query(programme=programme, phase=phase, health=health, due_before=due,
                                query=query, include_closed=include_closed)  # fmt: skip
        client = await _connect(settings)
        return text, await fetch(client, text, limit=limit)

    text, rows = _operation(load())
    if as_json:
        print(json.dumps({"query": text, "relationships": [row.to_json() for row in rows]}))
        return
    err.print(f"[dim]{escape(text)}[/dim]")
    if not rows:
        out.print("No relationships match.")
        return
    _print_relationship_rows(rows)
    if len(rows) == limit:
        err.print(f"[dim]showing the first {limit}; --limit shows more[/dim]")


def _print_relationship_rows(rows: list[Any]) -> None:
    """A table when it fits the terminal; else each relationship's workflow id on a line of its
    own and its details indented below. Either way the workflow id, the value an operator
    copies, is printed whole on one line (a terminal narrower than the id wraps it)."""
    import textwrap

    from rich.measure import Measurement

    table = Table(box=None, header_style="bold")
    table.add_column("Workflow", no_wrap=True)
    for header in ("Status", "Phase", "Health", "Mentee", "Mentor", "Next due (UTC)", "Meetings"):
        table.add_column(header, no_wrap=True)
    for row in rows:
        table.add_row(escape(row.workflow_id), escape(row.status), escape(row.phase or ""), escape(row.health or ""),
                      escape(row.mentee_id or ""), escape(row.mentor_id or ""), _when(row.next_due_at),
                      "" if row.meetings_held is None else str(row.meetings_held))  # fmt: skip
    if Measurement.get(out, out.options.update_width(10_000), table).maximum <= out.width:
        out.print(table)
        return
    for row in rows:
        details = [row.status, row.phase, row.health, row.mentee_id and f"mentee {row.mentee_id}",
                   row.mentor_id and f"mentor {row.mentor_id}", row.next_due_at and f"next due {_when(row.next_due_at)} UTC",
                   row.meetings_held is not None and f"{row.meetings_held} meetings held"]  # fmt: skip
        out.print(escape(row.workflow_id), soft_wrap=True)
        line = ", ".join(str(detail) for detail in details if detail)
        out.print(escape(textwrap.fill(line, max(out.width, 40), initial_indent="  ", subsequent_indent="  ",
                                        break_long_words=False, break_on_hyphens=False)), soft_wrap=True)


@relationship_app.command("history", epilog=WATCH_EXIT_CODES)
def relationship_history(
    workflow_id: Annotated[str, typer.Argument(help="The workflow id, e.g. relationship/PROGRAMME/ID.")],
    run_id: Annotated[str | None, typer.Option("--run-id", help="An earlier run (default: the latest).")] = None,
    as_json: JsonOption = False,
) -> None:
    """The relationship's Temporal history: each event's time, type and what it was for.

    "What" is the summary the Web UI shows on activities and timers, else the activity
    type, signal or update name.
    """
    from mentorflow.operations import relationship_history as fetch

    settings = Settings.from_env()

    async def load() -> list[Any]:
        client = await _connect(settings)
        return await fetch(client, workflow_id, run_id)

    rows = _operation(load())
    if as_json:
        print(json.dumps([row.to_json() for row in rows]))
        return
    table = Table("#", "Time (UTC)", "Event", "What", box=None, header_style="bold")
    for row in rows:
        what = row.summary if row.summary is not None else (row.detail or "")
        table.add_row(str(row.event_id), f"{row.time:%Y-%m-%d %H:%M:%S}", escape(row.event_type), escape(what))
    out.print(table)


@relationship_app.command(
    "events",
    epilog=WATCH_EXIT_CODES,
    help="The relationship's event stream in the event store (PostgreSQL): version, type and time "
    "of each event, its command and who sent it (the HTTP API's credential, \"sent directly\" when "
    "the API has no record of it, or \"internal\"; see docs/api.md, \"Audit\"); payloads are not "
    "shown.\n\n" + DIRECTORY_DATABASE_HELP,
)
def relationship_events(
    relationship: Annotated[str, typer.Argument(help="The workflow id (relationship/PROGRAMME/ID) or the relationship id.")],
    as_json: JsonOption = False,
) -> None:
    import asyncpg

    from activities.audit_trail import SentBy, sent_by_of_event, stream_senders
    from mentorflow.operations import OperationError, StoredEventRow, stream_events, stream_id_of

    with reported_as_problem(OperationError, exit_code=2):
        stream_id = stream_id_of(relationship)

    async def read(pool: asyncpg.Pool) -> tuple[Sequence[StoredEventRow], dict[str | None, SentBy]]:
        return await stream_events(pool, stream_id), await stream_senders(pool, stream_id)

    rows, senders = _with_database(read)
    if not rows:
        raise Problem(f"no events for relationship {stream_id} in the event store")
    sent_by = [sent_by_of_event(row.event_type, row.command_id, senders) for row in rows]
    if as_json:
        print(json.dumps([row.to_json() | {"sent_by": by.model_dump()} for row, by in zip(rows, sent_by)]))
        return
    table = Table("Version", "Event", "Occurred (UTC)", "Command", "Sent by", box=None, header_style="bold")
    for row, by in zip(rows, sent_by):
        table.add_row(str(row.version), escape(row.event_type), f"{row.occurred_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
                      escape(row.command_id or ""), escape(by.describe()))  # fmt: skip
    out.print(table)
