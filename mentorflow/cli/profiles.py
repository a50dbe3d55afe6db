"""`mentorflow profiles`: mentor and mentee profiles for matching, and a programme's matching settings."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from mentorflow.cli.shared import (
    JsonOption,
    Problem,
    ProgrammeOption,
    R,
    _with_database,
    command_group,
    err,
    import_summary,
    out,
)

profiles_app = command_group(
    "profiles",
    "Mentor and mentee profiles for matching: strengths, goals, availability, languages, "
    "formats, seniority, capacity and exclusions; and a programme's matching settings.",
    on_database=True,
)

RoleOption = Annotated[str | None, typer.Option("--role", help="mentor or mentee (for rows that do not say).")]


def matching_on(pool: Any) -> Any:
    """The matching activities on `pool`, with the keys (MENTORFLOW_ENCRYPTION_KEYS, or
    `mentorflow dev`'s) when there are any, which confidential profile attributes need."""
    from activities.matching import MatchingActivities
    from mentorflow.config import ConfigurationError, Settings

    try:
        keyring = Settings.from_env().keyring(dev_key_file=True)
    except ConfigurationError:
        keyring = None
    return MatchingActivities(pool, keyring=keyring)


def _with_matching(action: Callable[[Any], Coroutine[Any, Any, R]]) -> R:
    """Run `action` with the matching activities on the configured database, migrated first."""
    return _with_database(lambda pool: action(matching_on(pool)))


def read_matching_settings(document: Any) -> Any:
    """`document` as the programme's matching settings; a Problem naming the rule when it is not."""
    from pairing.importing import describe_errors
    from pairing.settings import MatchingSettings

    if not isinstance(document, dict):
        raise Problem("matching settings: expected an object of NAME: VALUE", exit_code=2)
    try:
        return MatchingSettings.model_validate(document)
    except ValidationError as error:
        raise Problem(f"matching settings: {describe_errors(error)}", exit_code=2) from None


def _role(role: str | None) -> Any:
    if role not in (None, "mentor", "mentee"):
        raise Problem(f"--role {role!r}: mentor or mentee", exit_code=2)
    return role


def _read_text(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    if path.exists():
        return path.read_text(encoding="utf-8-sig")
    return source  # inline JSON


@profiles_app.command("import")
def import_profiles(
    file: Annotated[Path, typer.Argument(help="A CSV file with a header row, a JSON array or JSON Lines.")],
    programme: ProgrammeOption,
    role: RoleOption = None,
    file_format: Annotated[str | None, typer.Option("--format", help="csv or json (default: from the file name).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Add or update every profile in a file; bad rows are reported by line and left out.

    Columns: participant_id, role, timezone, seniority, capacity, strengths ("python:5; sql"),
    goals ("public speaking:3; python"), availability ("mon-fri 09:00-10:00"), languages,
    formats, reports_to, previous_partners, opt_out, preferred, mentor_quota, active, and
    attr:NAME for each attribute the programme's matching settings declare (JSON: an
    "attributes" object). Other columns (a name, an email address) are ignored and listed.
    Importing the same file twice changes nothing. Exits with 2 when a row was rejected (the
    good rows are imported all the same).
    """
    from pairing.importing import parse_profiles

    suffix = file.suffix.lower()
    given = file_format or ("csv" if suffix == ".csv" else "json" if suffix in (".json", ".jsonl") else None)
    kind: Literal["csv", "json"]
    if given == "csv":
        kind = "csv"
    elif given == "json":
        kind = "json"
    else:
        raise Problem(f"{file}: say --format csv or --format json", exit_code=2)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise Problem(f"{file}: {error.strerror}", exit_code=2) from None
    wanted_role = _role(role)

    async def save(matching: Any) -> Any:
        # The programme's settings say which attributes exist and which are confidential.
        parsed = parse_profiles(text, kind, role=wanted_role, settings=await matching.profiles.get_settings(programme))
        profiles = [profile for _, profile in parsed.profiles]
        return parsed, (await matching.profiles.save_profiles(programme, profiles) if profiles else None)

    parsed, counts = _with_matching(save)
    profiles = parsed.profiles
    inserted, updated, unchanged = (counts.inserted, counts.updated, counts.unchanged) if counts else (0, 0, 0)
    for problem in parsed.problems:
        err.print(f"[bold red]error:[/bold red] {escape(str(file))} {escape(str(problem))}")
    if as_json:
        print(json.dumps({"inserted": inserted, "updated": updated, "unchanged": unchanged,
                          "ignored_columns": parsed.ignored_columns,
                          "rejected": [p.model_dump() for p in parsed.problems]}))  # fmt: skip
    else:
        out.print(import_summary(len(profiles), "profile", f"into {programme}", inserted, updated, unchanged,
                                 len(parsed.problems)))  # fmt: skip
        if parsed.ignored_columns:
            out.print(f"[dim]ignored columns: {escape(', '.join(parsed.ignored_columns))}[/dim]")
    if parsed.problems:
        raise typer.Exit(2)


@profiles_app.command("set")
def set_profile(
    profile: Annotated[str, typer.Argument(help="One profile as a JSON object, a file holding one, or '-' for stdin.")],
    programme: ProgrammeOption,
    role: RoleOption = None,
) -> None:
    """Add or update one profile (the same keys as a JSON import)."""
    from pairing.importing import parse_profiles

    text, wanted_role = _read_text(profile), _role(role)

    async def save(matching: Any) -> Any:
        parsed = parse_profiles(text, "json", role=wanted_role, settings=await matching.profiles.get_settings(programme))
        if parsed.problems or len(parsed.profiles) != 1:
            reason = parsed.problems[0].reason if parsed.problems else "expected exactly one JSON object"
            raise Problem(f"profile: {reason}", exit_code=2)
        one = parsed.profiles[0][1]
        return one, await matching.profiles.save_profiles(programme, [one])

    one, counts = _with_matching(save)
    what = "added" if counts.inserted else "updated" if counts.updated else "unchanged"
    out.print(f"{one.role} {escape(one.participant_id)} in {escape(programme)}: {what}")


@profiles_app.command("show")
def show_profile(
    participant_id: Annotated[str, typer.Argument(help="The participant's id.")],
    programme: ProgrammeOption,
    role: Annotated[str, typer.Option("--role", help="mentor or mentee.")] = "mentee",
) -> None:
    """Print a stored profile as JSON."""

    async def load(matching: Any) -> Any:
        return await matching.profiles.get_profile(programme, _role(role), participant_id)

    found = _with_matching(load)
    if found is None:
        raise Problem(f"no {role} profile {participant_id} in {programme}")
    print(found.model_dump_json(indent=2))


@profiles_app.command("list")
def list_profiles(programme: ProgrammeOption, as_json: JsonOption = False) -> None:
    """List a programme's mentors (with free slots) and mentees.

    A mentor's load counts every open relationship however it was matched, so mentors who
    hold slots without a profile (matched by hand) are listed too, after those with one.
    """

    async def load(matching: Any) -> Any:
        mentors = await matching.profiles.list_profiles(programme, "mentor")
        mentees = await matching.profiles.list_profiles(programme, "mentee")
        return mentors, mentees, await matching.profiles.slots_taken(programme)

    mentors, mentees, taken = _with_matching(load)
    without_profile = sorted(set(taken) - {m.participant_id for m in mentors})
    if as_json:
        print(json.dumps({
            "mentors": [{"participant_id": m.participant_id, "capacity": m.capacity, "taken": taken.get(m.participant_id, 0),
                         "active": m.active} for m in mentors]
                       + [{"participant_id": mentor_id, "capacity": None, "taken": taken[mentor_id], "active": None}
                          for mentor_id in without_profile],
            "mentees": [{"participant_id": m.participant_id, "active": m.active} for m in mentees],
        }))  # fmt: skip
        return
    table = Table(title=f"Profiles in {escape(programme)}")
    for column in ("role", "participant", "slots taken", "topics", "active"):
        table.add_column(column)
    for m in mentors:
        table.add_row("mentor", escape(m.participant_id), f"{taken.get(m.participant_id, 0)}/{m.capacity}",
                      escape(", ".join(s.topic for s in m.strengths)), "yes" if m.active else "no")  # fmt: skip
    for mentor_id in without_profile:
        table.add_row("mentor", escape(mentor_id), f"{taken[mentor_id]}/–", "no profile", "")
    for e in mentees:
        table.add_row("mentee", escape(e.participant_id), "", escape(", ".join(g.topic for g in e.goals)),
                      "yes" if e.active else "no")  # fmt: skip
    out.print(table)


@profiles_app.command("explain")
def explain_pair(
    mentee_id: Annotated[str, typer.Argument(help="The mentee's id.")],
    programme: ProgrammeOption,
    mentor_id: Annotated[str | None, typer.Argument(help="The mentor's id (none: why this mentee may go unmatched).")] = None,
    rule_set: Annotated[str | None, typer.Option("--rule-set", help="Judge with one of the programme's rule sets.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Score one pair with the programme's settings and say why: every criterion, every rule
    and score term of the programme by name, and whether the pair is excluded. Without a
    mentor: how many of the programme's active mentors each reason rules out for the mentee."""
    from pairing.scoring import exclusion_counts, score_pair

    async def load(matching: Any) -> Any:
        mentee = await matching.profiles.get_profile(programme, "mentee", mentee_id)
        mentors = ([await matching.profiles.get_profile(programme, "mentor", mentor_id)] if mentor_id is not None
                   else [m for m in await matching.profiles.list_profiles(programme, "mentor") if m.active])  # fmt: skip
        standing = await matching.profiles.mentee_standing(programme, mentee_id, "")
        return mentee, mentors, await matching.profiles.get_settings(programme), standing.other_relationships > 0

    mentee, mentors, stored_settings, has_mentor = _with_matching(load)
    try:
        matching_settings = stored_settings.for_round(rule_set)
    except KeyError as error:
        raise Problem(str(error.args[0]), exit_code=2) from None
    if mentee is None or None in mentors:
        missing = f"mentee {mentee_id}" if mentee is None else f"mentor {mentor_id}"
        raise Problem(f"no profile for {missing} in {programme}")
    today = datetime.now(UTC).date()
    if mentor_id is None:
        [counts] = exclusion_counts([mentee], mentors, matching_settings, today, has_mentor=[has_mentor])
        if as_json:
            print(json.dumps({"mentee_id": mentee_id, "mentors": len(mentors), "excluded": counts}))
            return
        out.print(escape(describe_exclusions(len(mentors), counts)))
        return
    pair = score_pair(mentee, mentors[0], matching_settings, today, has_mentor=has_mentor)
    if as_json:
        print(pair.model_dump_json())
        return
    out.print(escape(pair.explanation))
    for rule in matching_settings.rules:
        outcome = pair.rules.get(rule.name, "")
        points = f" {pair.terms[rule.name]:+d}" if rule.name in pair.terms else ""
        out.print(f"  rule {escape(rule.name)} ({escape(rule.describe())}): {escape(outcome)}{points}")
    if pair.excluded:
        out.print(f"[bold red]never proposed:[/bold red] {escape(pair.excluded)}")


def describe_exclusions(mentors: int, counts: dict[str, int]) -> str:
    """'of 40 mentors: 25 rule 'other organisation', 3 no common language' (reasons only, no values)."""
    if not counts:
        return f"none of {mentors} mentors is ruled out"
    listed = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return f"of {mentors} mentors ruled out: {listed}"


def _settings_document(source: str) -> Any:
    """The matching settings in `source` (inline JSON, '-', or a JSON/YAML file; a programme
    file's `matching` section)."""
    import yaml

    text = _read_text(source)
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise Problem(f"matching settings: neither JSON nor YAML ({error})", exit_code=2) from None
    if isinstance(document, dict) and "programme_id" in document:
        document = document.get("matching") or {}
    return document


@profiles_app.command("settings")
def matching_settings(
    programme: ProgrammeOption,
    new: Annotated[str | None, typer.Option("--set", help="New settings: JSON object, a file holding one, or '-'.")] = None,
) -> None:
    """Show (or with --set, replace) the programme's matching settings: criterion weights,
    objective (max_total or max_matched), minimum score, hard constraints, attributes, rules
    and rule sets (docs/matching.md). --set takes JSON or YAML, inline or a file; a programme
    file (programme_id, name, settings) gives its `matching` section."""
    replacement = None if new is None else read_matching_settings(_settings_document(new))

    async def apply(matching: Any) -> Any:
        changed = None if replacement is None else await matching.profiles.save_settings(programme, replacement)
        return changed, await matching.profiles.get_settings(programme)

    changed, current = _with_matching(apply)
    print(current.model_dump_json(indent=2))
    if changed is not None:
        err.print("saved" if changed else "unchanged")
