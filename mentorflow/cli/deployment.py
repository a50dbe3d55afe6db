"""`mentorflow deployment`: Worker Deployment Versioning, which build gets the workflow tasks."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mentorflow.cli.shared import JsonOption, Problem, _connect, command_group, out, reported_as_problem, run
from mentorflow.config import Settings

deployment_app = command_group(
    "deployment",
    "Worker Deployment Versioning: which build of the worker gets the workflow tasks "
    "(MENTORFLOW_DEPLOYMENT_NAME, MENTORFLOW_BUILD_ID; see docs/deploying.md).",
)


@deployment_app.command("set-current")
def deployment_set_current(
    build_id: Annotated[str | None, typer.Argument(help="The build id; default MENTORFLOW_BUILD_ID.")] = None,
    wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for a worker of this build to poll and register it.")
    ] = 60,
) -> None:
    """Make a build the current version: it gets every workflow task from now on.

    Running relationships move to it at their next workflow task (AUTO_UPGRADE). Safe to repeat; exit code 1 if it cannot (no worker of that build polled within --wait).
    """
    from mentorflow.deployment import DeploymentError, set_current_version

    settings = Settings.from_env()
    build = build_id or settings.build_id
    if not build:
        raise Problem("give a BUILD_ID or set MENTORFLOW_BUILD_ID", 2)

    async def apply() -> str | None:
        client = await _connect(settings, wait=wait)
        with reported_as_problem(DeploymentError):
            return await set_current_version(client, settings.deployment_name, build, wait=wait)

    previous = run(apply())
    out.print(escape(f"{settings.deployment_name}.{build} is the current version (before: {previous or 'unversioned workers'})"))


@deployment_app.command("show")
def deployment_show(as_json: JsonOption = False) -> None:
    """The current and ramping versions of MENTORFLOW_DEPLOYMENT_NAME and every known build."""
    from mentorflow.deployment import describe_deployment

    settings = Settings.from_env()

    async def load() -> Any:
        client = await _connect(settings)
        return await describe_deployment(client, settings.deployment_name)

    view = run(load())
    if view is None:
        raise Problem(f"no versioned worker has polled deployment {settings.deployment_name} yet")
    if as_json:
        out.print_json(
            data={
                "name": view.name,
                "current_build_id": view.current_build_id,
                "ramping_build_id": view.ramping_build_id,
                "ramping_percentage": view.ramping_percentage,
                "versions": [
                    {"build_id": v.build_id, "status": v.status, "created_at": v.created_at.isoformat() if v.created_at else None}
                    for v in view.versions
                ],
            }
        )
        return
    out.print(f"deployment [bold]{escape(view.name)}[/bold]")
    out.print(f"  current   {escape(view.current_build_id or 'unversioned workers')}")
    if view.ramping_build_id:
        out.print(f"  ramping   {escape(view.ramping_build_id)} ({view.ramping_percentage:g}% of new tasks)")
    table = Table("build id", "status", "created")
    for version in view.versions:
        table.add_row(escape(version.build_id), version.status, version.created_at.isoformat() if version.created_at else "")
    out.print(table)
