"""`mentorflow audit`: read-only checks of a running deployment.

`audit streams` lists event streams that more than one workflow read or wrote (security
issue #12); mentorflow/audit.py does the work.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import asyncpg
import typer
from rich.markup import escape

from mentorflow.cli.shared import JsonOption, _connect, _with_database, command_group, out
from mentorflow.config import Settings

audit_app = command_group("audit", "Read-only checks of a running deployment.")


@audit_app.command("streams")
def audit_streams_command(
    store_only: Annotated[bool, typer.Option("--store-only", help="Only the event store's own traces; do not ask Temporal.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List event streams that more than one workflow read or wrote. Read-only. Exit 1 if something was found."""
    from mentorflow.audit import audit_streams, relationship_workflows

    settings = Settings.from_env()

    async def action(pool: asyncpg.Pool) -> Any:
        workflows = None if store_only else await relationship_workflows(await _connect(settings))
        return await audit_streams(pool, workflows)

    report = _with_database(action)
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        for line in report.lines():
            out.print(escape(line))
    if not report.clean:
        raise typer.Exit(1)


@audit_app.command("internal-actors")
def audit_internal_actors_command(as_json: JsonOption = False) -> None:
    """List stored commands that name an internal actor (matching-engine, matching-round, directory) but that no part of the system sent: sent from outside before such messages were refused. Read-only. Exit 1 if something was found."""
    from mentorflow.audit_actors import forged_internal_commands

    found = _with_database(forged_internal_commands)
    if as_json:
        print(json.dumps({"clean": not found, "forged": [f.to_json() for f in found]}))
    elif not found:
        out.print("No stored command names an internal actor it did not come from.")
    else:
        for f in found:
            out.print(escape(f"{f.stream_id} v{f.version} {f.event_type} as {f.actor} (command {f.command_id}): {f.why}"))
    if found:
        raise typer.Exit(1)
