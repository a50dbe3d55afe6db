"""`mentorflow forget`: make an ended relationship's confidential text unreadable for good."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import asyncpg
import typer
from rich.markup import escape

from mentorflow.cli.shared import JsonOption, Problem, _connect, _with_database, app, out, reported_as_problem
from mentorflow.config import Settings
from mentorflow.start_options import relationship_id_of


@app.command()
def forget(
    relationship: Annotated[str, typer.Argument(help="The relationship id (or its workflow id relationship/PROGRAMME/ID).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    by: Annotated[str | None, typer.Option("--by", help="Who asks for it, recorded with the deletion (default: $USER).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Make an ended relationship's confidential text (notes, concerns, comments, reflections)
    unreadable for good: delete its workflow's runs from Temporal, then its data key; everything
    else stays. See docs/confidentiality.md."""
    from mentorflow.forgetting import ForgetRefused, TemporalRuns, forget_relationship

    settings = Settings.from_env()
    requester = by or os.environ.get("USER") or "unknown"
    if not yes:
        if not sys.stdin.isatty():
            raise Problem("forgetting cannot be undone: pass --yes to confirm", exit_code=2)
        with reported_as_problem(ValueError, exit_code=2):
            relationship_id = relationship_id_of(relationship)
        typer.confirm(
            f"Make the notes, concerns, comments and reflections of {relationship_id} "
            "unreadable for good, and delete its workflow's history from Temporal?", abort=True,
        )  # fmt: skip

    async def action(pool: asyncpg.Pool) -> Any:
        # Temporal is connected to only once the relationship is known.
        temporal = TemporalRuns(lambda: _connect(settings))
        try:
            return await forget_relationship(pool, relationship, forgotten_by=requester, temporal=temporal)
        except ForgetRefused as refused:
            raise Problem(str(refused)) from None

    done = _with_database(action)
    if as_json:
        print(json.dumps({"relationship_id": done.relationship_id, "forgotten_at": done.forgotten_at.isoformat(),
                          "forgotten_by": done.forgotten_by, "now": done.now, "events": done.events,
                          "sealed_values": done.sealed_values, "scrubbed_events": done.scrubbed_events,
                          "workflow_id": done.workflow_id, "workflow_runs_deleted": done.workflow_runs_deleted}))  # fmt: skip
    elif not done.now:
        out.print(f"Relationship {escape(done.relationship_id)} was already forgotten "
                  f"({done.forgotten_at:%Y-%m-%d %H:%M} UTC, on request of {escape(done.forgotten_by)})"
                  + (f"; {escape(_runs_deleted(done.workflow_runs_deleted))}" if done.workflow_runs_deleted else "")
                  + ".")  # fmt: skip
    else:
        out.print(f"Forgot relationship {escape(done.relationship_id)}: its data key is deleted; "
                  f"{done.sealed_values} confidential texts in its {done.events} events now read as {escape('[forgotten]')}"
                  + (f" ({done.scrubbed_events} events stored before encryption overwritten)" if done.scrubbed_events else "")
                  + (f"; {escape(_runs_deleted(done.workflow_runs_deleted))}" if done.workflow_runs_deleted is not None else "")
                  + ". Everything else is kept.")  # fmt: skip


def _runs_deleted(runs: int | None) -> str:
    """What `forget` did in Temporal (its workflow's history holds the same text, encrypted)."""
    if not runs:
        return "Temporal had no run of its workflow left"
    return f"{runs} run{'s' if runs != 1 else ''} of its workflow deleted from Temporal"
