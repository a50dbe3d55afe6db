"""`mentorflow report`: a programme's dashboard, from the read models brought up to date first."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer
from rich.markup import escape

from mentorflow.cli.projections import _catch_up_with_progress
from mentorflow.cli.shared import (
    JsonOption, Problem, ProgrammeOption, _with_database, app, err, launcher_name, out,
)


@app.command()
def report(
    programme: ProgrammeOption,
    as_json: JsonOption = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the dashboard as one HTML page with charts.")] = None,
) -> None:
    """A programme's dashboard: phases and health, time to match, meetings, goals, feedback, closures, senders.

    Relationships by phase and health, days to a confirmed match (median, p75, p90), meetings
    held and missed per month, goal completion, average feedback score per month, closure
    reasons and the audit view: the programme's commands by who sent them (an API key, a
    person's token, sent directly, internal). The read models are brought up to date first
    (what workers do continuously).
    """
    from activities.audit_trail import commands_by_credential
    from activities.projections import ProjectionFollower
    from mentorflow.reports import load_programme_report, report_html, report_json, report_renderable

    async def load(pool: asyncpg.Pool) -> tuple[Any, list[Any], list[Any]]:
        follower = ProjectionFollower(pool)
        await _catch_up_with_progress(follower, pool, "updating the read models")
        found = await load_programme_report(pool, programme)
        return found, await follower.status(), await commands_by_credential(pool, programme)

    found, statuses, senders = _with_database(load)
    if found is None:
        raise Problem(f"programme {programme!r} does not exist and has no relationships "
                      f"(see `{launcher_name()} programme list`)")  # fmt: skip
    generated_at = datetime.now(UTC)
    if html is not None:
        try:
            html.write_text(report_html(found, statuses, generated_at, senders), encoding="utf-8")
        except OSError as error:
            raise Problem(f"--html {html}: {error.strerror or error}") from None
        err.print(f"Wrote the dashboard of {escape(programme)} to {escape(str(html))}")
    if as_json:
        print(json.dumps(report_json(found, statuses, generated_at, senders)))
    elif html is None:
        out.print(report_renderable(found, statuses, senders))
