"""`mentorflow projections status` and `rebuild`: the read models behind `report`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import asyncpg
import typer
from rich.markup import escape

from mentorflow.cli.shared import JsonOption, _with_database, command_group, err, out, reported_as_problem

projections_app = command_group(
    "projections", "The read models behind `report`: how far they are, and rebuilding them from the events.", on_database=True
)


def _progress_to_head(description: str) -> Any:
    """A progress bar on stderr (on a terminal) from position 0 to the store's head."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True, disable=not err.is_terminal)  # fmt: skip


async def _catch_up_with_progress(follower: Any, pool: asyncpg.Pool, description: str, *, rebuild: bool = False) -> int:
    from activities.projections import head_position

    with _progress_to_head(description) as progress:
        task = progress.add_task(description, total=max(await head_position(pool), 1))

        def advance(position: int) -> None:
            progress.update(task, completed=position)

        return int(await (follower.rebuild(advance) if rebuild else follower.catch_up(advance)))


@projections_app.command("status")
def projections_status(as_json: JsonOption = False) -> None:
    """Each projection's checkpoint against the event store's head (behind > 0: not caught up yet)."""
    from activities.projections import ProjectionFollower
    from mentorflow.reports import print_status

    statuses = _with_database(lambda pool: ProjectionFollower(pool).status())
    if as_json:
        print(json.dumps([{"projection": s.name, "table": s.table, "position": s.position, "head": s.head,
                           "behind": s.behind} for s in statuses]))  # fmt: skip
        return
    print_status(statuses, out)


@projections_app.command("rebuild")
def rebuild_projections(
    projection: Annotated[
        list[str] | None,
        typer.Option("--projection", help="Only this one: relationships, meetings or feedback (repeatable; default: all)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Empty the read models and replay every event into them (safe while workers run)."""
    import time

    from activities.projections import ProjectionFollower, UnknownProjection, projections_named

    with reported_as_problem(UnknownProjection, exit_code=2):
        chosen = projections_named(projection)
    names = ", ".join(p.name for p in chosen)
    started = time.monotonic()

    async def rebuild(pool: asyncpg.Pool) -> tuple[int, list[Any]]:
        follower = ProjectionFollower(pool, projections=chosen)
        events = await _catch_up_with_progress(follower, pool, f"rebuilding {names}", rebuild=True)
        return events, await follower.status()

    events, statuses = _with_database(rebuild)
    seconds = time.monotonic() - started
    if as_json:
        print(json.dumps({"projections": [s.name for s in statuses], "events": events,
                          "position": min(s.position for s in statuses), "seconds": round(seconds, 3)}))  # fmt: skip
    else:
        out.print(f"Rebuilt {escape(names)} from {events} events in {seconds:.1f} s "
                  f"(at position {min(s.position for s in statuses)}).")  # fmt: skip
