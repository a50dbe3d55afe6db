"""`mentorflow people add`, `import`, `show` and `leave`: the participant directory."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from activities.directory import (
    Directory,
    DirectoryError,
    SaveCounts,
    SaveOutcome,
    UnknownParticipant,
    participant_from_record,
)
from events.people import Participant
from mentorflow.cli.shared import (
    JsonOption, Problem, _input_problem, _parse_moment, _with_directory, command_group, details_table, err,
    import_summary, out, reported_as_problem,
)
from mentorflow.directory_input import read_people

people_app = command_group(
    "people", "The participant directory: names, email addresses, time zones, channels, who has left.", on_database=True
)


@people_app.command("add")
def add_person(
    participant_id: Annotated[str, typer.Option("--id", help="The participant's id, e.g. emp-1042.")],
    name: Annotated[str | None, typer.Option("--name", help="Display name (needed for someone new).")] = None,
    email: Annotated[str | None, typer.Option("--email", help="Email address (needed for someone new).")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="IANA time zone, e.g. Europe/Berlin (new: UTC).")] = None,
    channels: Annotated[
        list[str] | None,
        typer.Option("--channel", metavar="KIND[=ADDRESS]",
                     help="How to reach them: email, email=ADDRESS, webhook=URL or log; repeatable (new: email)."),
    ] = None,
    muted: Annotated[
        list[str] | None, typer.Option("--mute", metavar="TEMPLATE", help="A notification they do not want; repeatable.")
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="active or left; leave it out to keep the stored status.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Add a participant, or change the given details of one who exists (the rest stay as they are)."""
    given = {"display_name": name, "email": email, "timezone": timezone, "channels": channels,
             "muted_templates": muted, "status": status}  # fmt: skip
    given = {key: value for key, value in given.items() if value is not None}

    async def save(directory: Directory) -> tuple[Participant, SaveOutcome]:
        before = await directory.get_participant(participant_id)
        record: dict[str, Any] = {"participant_id": participant_id}
        if before is not None:
            record |= before.model_dump(mode="json", exclude={"status", "left_at"})
        record |= given
        try:
            participant = participant_from_record(record)
        except DirectoryError as error:
            raise _input_problem(f"participant {participant_id}", error) from None
        outcome = await directory.upsert_participant(participant)
        after = await directory.get_participant(participant_id)
        assert after is not None
        return after, outcome

    participant, outcome = _with_directory(save)
    if as_json:
        print(json.dumps({"outcome": outcome, "participant_id": participant.participant_id, "status": participant.status}))
        return
    if outcome == "unchanged":
        out.print(f"Participant {escape(participant.participant_id)} is unchanged.")
    else:
        out.print(f"[green]{outcome.capitalize()} participant[/green] {escape(participant.participant_id)}.")
    if participant.status == "left" and "status" not in given:
        err.print(f"[dim]{escape(participant.participant_id)} left on {participant.left_at:%Y-%m-%d}; "
                  "--status active brings them back.[/dim]")  # fmt: skip


IMPORT_BATCH_SIZE = 500


@people_app.command("import")
def import_people(
    file: Annotated[Path, typer.Argument(help="A JSON list, a YAML list or a CSV file with a header row (see examples/people.csv).")],
    as_json: JsonOption = False,
) -> None:
    """Add or update every participant in a file; bad rows are reported by line and left out.

    Columns / keys: participant_id, display_name, email, timezone, channels, muted_templates,
    status, left_at (in CSV, list cells are separated by ';': "email; webhook=https://…").
    A row that does not say status keeps the stored one, so importing an old file again
    brings nobody back who has left. Importing the same file twice changes nothing.
    Exits with 2 when a row was rejected (the good rows are imported all the same).
    """
    try:
        people = read_people(file)
    except DirectoryError as error:
        raise _input_problem(file, error) from None

    async def save(directory: Directory) -> SaveCounts:
        total = len(people.participants)
        if total <= IMPORT_BATCH_SIZE or not err.is_terminal:
            return await directory.upsert_participants(people.participants, batch_size=IMPORT_BATCH_SIZE)
        from rich.progress import Progress

        with Progress(console=err, transient=True) as progress:
            task = progress.add_task(escape(f"importing {file.name}"), total=total)
            return await directory.upsert_participants(
                people.participants,
                batch_size=IMPORT_BATCH_SIZE,
                on_batch=lambda count: progress.advance(task, count),
            )

    counts = _with_directory(save) if people.participants else SaveCounts()
    for row in people.rejected:
        err.print(f"[bold red]error:[/bold red] {escape(str(file))} line {row.line}: {escape(row.reason)}")
    if as_json:
        print(json.dumps({
            "created": counts.created, "updated": counts.updated, "unchanged": counts.unchanged,
            "rejected": [{"line": row.line, "reason": row.reason} for row in people.rejected],
        }))  # fmt: skip
    else:
        out.print(import_summary(len(people.participants), "participant", f"from {file.name}", counts.created,
                                 counts.updated, counts.unchanged, len(people.rejected)))  # fmt: skip
    if people.rejected:
        raise typer.Exit(2)


@people_app.command("show")
def show_person(
    participant_id: Annotated[str, typer.Argument(help="The participant's id.")],
    as_json: JsonOption = False,
) -> None:
    """Show a participant's directory entry."""

    participant = _with_directory(lambda directory: directory.get_participant(participant_id))
    if participant is None:
        raise Problem(f"participant {participant_id!r} is not in the directory")
    if as_json:
        print(participant.model_dump_json(indent=2))
        return
    table = details_table()
    channels = ", ".join(c.kind + (f"={c.address}" if c.address else "") for c in participant.channels)
    status = participant.status + (f" since {participant.left_at:%Y-%m-%d %H:%M} UTC" if participant.left_at else "")
    for label, value in [
        ("Participant", participant.participant_id),
        ("Name", participant.display_name),
        ("Email", participant.email),
        ("Time zone", participant.timezone),
        ("Channels", channels or "(none)"),
        ("Muted", ", ".join(participant.muted_templates) or "(nothing)"),
        ("Status", status),
    ]:
        table.add_row(label, escape(value))
    out.print(table)


@people_app.command("leave")
def leave(
    participant_id: Annotated[str, typer.Argument(help="The participant's id.")],
    at: Annotated[
        str | None, typer.Option("--at", help="When they left: ISO 8601 with offset, or a date (UTC); default now.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Record that a participant left the organisation: their relationships close with that reason."""
    left_at = _parse_moment(at) if at is not None else None

    async def mark(directory: Directory) -> tuple[Participant, bool]:
        with reported_as_problem(UnknownParticipant):
            return await directory.mark_left(participant_id, left_at)

    participant, changed = _with_directory(mark)
    assert participant.left_at is not None
    when = f"{participant.left_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if as_json:
        print(json.dumps({"participant_id": participant.participant_id, "changed": changed,
                          "left_at": participant.left_at.isoformat()}))  # fmt: skip
    elif changed:
        out.print(f"[green]{escape(participant.participant_id)} has left[/green] ({when}). "
                  "Their relationships close when they next check the directory.")  # fmt: skip
    else:
        out.print(f"{escape(participant.participant_id)} already left on {when}; nothing changed.")
