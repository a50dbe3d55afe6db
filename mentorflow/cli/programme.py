"""`mentorflow programme create`, `show` and `list`: the programmes in the directory and the
settings every relationship copies when it starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from activities.directory import (
    Directory,
    DirectoryError,
    SaveOutcome,
    StoredProgrammeInvalid,
    programme_from_data,
)
from events.people import Programme
from events.settings import ProgrammeSettings
from mentorflow.cli.shared import (
    JsonOption, Problem, _input_problem, _with_database, _with_directory, command_group, details_table, launcher_name,
    out, reported_as_problem,
)
from mentorflow.cli.profiles import matching_on, read_matching_settings
from mentorflow.directory_input import apply_setting_overrides, read_programme_document

programme_app = command_group(
    "programme", "Create and inspect programmes: the settings every relationship copies when it starts.", on_database=True
)


def _format_setting(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ", ".join(str(item) for item in value) or "(none)"
    return str(value)


@programme_app.command("create")
def create_programme(
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="The programme as YAML or JSON: programme_id, name, settings "
                     "and optionally matching (see examples/programme.yaml; `programme show ID --json` writes one)."),
    ] = None,
    programme_id: Annotated[str | None, typer.Option("--id", help="The programme id (overrides the file's).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="The programme's name (overrides the file's).")] = None,
    assignments: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="NAME=VALUE",
                     help="Change one setting, e.g. --set proposal_ttl_days=10; repeatable; "
                     "lists are comma-separated: --set coordinator_ids=coord-1,coord-2."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a programme, or update the one with that id; saving the same thing again changes nothing.

    With --file, the file describes the whole programme: a setting it leaves out takes its
    default; a `matching` section replaces the programme's matching settings (the same as
    `profiles settings --set FILE`; without one they stay as they are). Without --file, --id names the programme: an existing one keeps its settings
    and --set changes only the ones named; a new one starts from the defaults.
    Relationships already running keep the settings they started with.
    """
    document: dict[str, Any] = {}
    source = str(file) if file else "programme"
    if file is not None:
        try:
            document = read_programme_document(file)
        except DirectoryError as error:
            raise _input_problem(file, error) from None
    if programme_id is not None:
        document["programme_id"] = programme_id
    if name is not None:
        document["name"] = name
    if not document.get("programme_id"):
        raise Problem("name the programme: --file FILE or --id ID", exit_code=2)
    matching = None
    if "matching" in document:
        try:
            matching = read_matching_settings(document.pop("matching"))
        except Problem as problem:
            raise Problem(f"{source}: {problem}", exit_code=2) from None
    settings = document.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise Problem(f"{source}: settings: must be an object of NAME: VALUE", exit_code=2)
    try:
        document["settings"] = apply_setting_overrides(settings, assignments or [])
        if file is not None:
            programme_from_data(document)  # report a bad file before connecting to anything
    except DirectoryError as error:
        raise _input_problem(source, error) from None

    async def save(pool: Any) -> tuple[Programme, SaveOutcome, list[str]]:
        directory = Directory(pool)
        try:
            before = await directory.get_programme(str(document["programme_id"]))
        except StoredProgrammeInvalid:
            before = None
        if file is None and before is not None:
            # Without a file, flags edit what is stored rather than replace it.
            stored = before.model_dump(mode="json")
            document.setdefault("name", stored["name"])
            document["settings"] = {**stored["settings"], **document["settings"]}
        document.setdefault("name", document["programme_id"])
        try:
            programme = programme_from_data(document)
        except DirectoryError as error:
            raise _input_problem(source, error) from None
        outcome = await directory.create_or_update_programme(programme)
        changed = []
        if matching is not None and await matching_on(pool).profiles.save_settings(programme.programme_id, matching):
            changed.append("matching")
            outcome = "updated" if outcome == "unchanged" else outcome
        if before is not None:
            if before.name != programme.name:
                changed.append("name")
            changed += [
                setting for setting in ProgrammeSettings.model_fields
                if getattr(before.settings, setting) != getattr(programme.settings, setting)
            ]  # fmt: skip
        return programme, outcome, changed

    programme, outcome, changed = _with_database(save)
    if as_json:
        print(json.dumps({"outcome": outcome, "programme_id": programme.programme_id, "changed": changed}))
        return
    label = f"{programme.programme_id} ({programme.name})"
    if outcome == "created":
        out.print(f"[green]Created programme[/green] {escape(label)}.")
    elif outcome == "updated":
        what = f"; changed {', '.join(changed)}" if changed else ""
        out.print(f"[green]Updated programme[/green] {escape(label)}{escape(what)}. "
                  "Running relationships keep the settings they started with.")  # fmt: skip
    else:
        out.print(f"Programme {escape(label)} is unchanged.")


@programme_app.command("show")
def show_programme(
    programme_id: Annotated[str, typer.Argument(help="The programme id.")],
    as_json: JsonOption = False,
) -> None:
    """Show a programme and every setting (--json prints a file that `programme create --file` takes)."""

    async def load(directory: Directory) -> Programme | None:
        with reported_as_problem(StoredProgrammeInvalid):
            return await directory.get_programme(programme_id)

    programme = _with_directory(load)
    if programme is None:
        raise Problem(f"programme {programme_id!r} does not exist (see `{launcher_name()} programme list`)")
    if as_json:
        print(programme.model_dump_json(indent=2))
        return
    table = details_table(notes=True)
    table.add_row("Programme", escape(programme.programme_id), "")
    table.add_row("Name", escape(programme.name), "")
    defaults = ProgrammeSettings()
    for setting in ProgrammeSettings.model_fields:
        value, default = getattr(programme.settings, setting), getattr(defaults, setting)
        note = "" if value == default else f"default {_format_setting(default)}"
        table.add_row(setting, escape(_format_setting(value)), escape(note))
    out.print(table)


@programme_app.command("list")
def list_programmes(as_json: JsonOption = False) -> None:
    """List the programmes."""

    listings = _with_directory(lambda directory: directory.list_programmes())
    if as_json:
        print(json.dumps([
            {"programme_id": p.programme_id, "name": p.name,
             "created_at": p.created_at.isoformat(), "updated_at": p.updated_at.isoformat()}
            for p in listings
        ]))  # fmt: skip
        return
    if not listings:
        out.print(f"No programmes yet. Create one: {escape(launcher_name())} programme create --file examples/programme.yaml")
        return
    table = Table("Programme", "Name", "Updated (UTC)", box=None, header_style="bold")
    for listing in listings:
        table.add_row(escape(listing.programme_id), escape(listing.name), f"{listing.updated_at:%Y-%m-%d %H:%M}")
    out.print(table)
