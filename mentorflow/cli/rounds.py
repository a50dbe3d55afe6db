"""`mentorflow round start`, `run` and `show`: a programme's matching round (the MatchingRound workflow)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table
from temporalio.client import WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from mentorflow.cli.profiles import _with_matching
from mentorflow.cli.shared import (
    JsonOption, Problem, ProgrammeOption, _connect, command_group, err, launcher_name, out, run,
)
from mentorflow.config import Settings
from mentorflow.start_options import round_start_options
from workflows.relationship import describe_validation_error

if TYPE_CHECKING:
    from workflows.matching_round import MatchingRoundResult

round_app = command_group("round", "Programme matching rounds: match a whole cohort at once and propose every pair.")

# The options of `round start` and `round run` (a `start --wait`).
RoundOption = Annotated[str, typer.Option("--round", help="Round id; running the same round again proposes nothing twice.")]
CoordinatorOption = Annotated[str, typer.Option("--coordinator", help="Who the proposals come from.")]
ObjectiveOption = Annotated[str | None, typer.Option("--objective", help="max_total or max_matched (default: the programme's).")]
MenteesOption = Annotated[list[str] | None, typer.Option("--mentee", help="Only these mentees (repeat the option).")]
RuleSetOption = Annotated[str | None, typer.Option("--rule-set", help="One of the programme's rule sets (default: its rules).")]


@round_app.command("start")
def start_round(
    programme: ProgrammeOption,
    round_id: RoundOption,
    coordinator: CoordinatorOption = "matching-round",
    objective: ObjectiveOption = None,
    mentees: MenteesOption = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the round to finish and print its result.")] = False,
    as_json: JsonOption = False,
    rule_set: RuleSetOption = None,
) -> None:
    """Start a programme's matching round (the MatchingRound workflow); prints its workflow id."""
    from activities.matching import round_workflow_id
    from workflows.matching_round import MatchingRound, MatchingRoundInput

    try:
        round_input = MatchingRoundInput(programme_id=programme, round_id=round_id, coordinator_id=coordinator,
                                         objective=objective, mentee_ids=tuple(mentees) if mentees else None,
                                         rule_set=rule_set)  # fmt: skip
    except ValidationError as error:
        raise Problem(describe_validation_error(error), exit_code=2) from None
    workflow_id = round_workflow_id(programme, round_id)
    settings = Settings.from_env()

    async def start() -> MatchingRoundResult | None:
        client = await _connect(settings)
        try:
            handle = await client.start_workflow(
                MatchingRound.run, round_input, id=workflow_id, task_queue=settings.task_queue,
                **round_start_options(round_input, started_by="the mentorflow CLI"),
            )  # fmt: skip
        except WorkflowAlreadyStartedError:
            raise Problem(f"{workflow_id} is already running") from None
        except RPCError as error:
            raise Problem(f"Temporal refused to start {workflow_id}: {error.message}") from None
        if not wait:
            return None
        if not err.is_terminal:
            return await handle.result()
        return await _with_round_progress(handle)

    result = run(start())
    if as_json:
        print(json.dumps({"workflow_id": workflow_id, "result": result.model_dump() if result else None}))
    elif result is None:
        print(workflow_id)
        err.print(f"Started. See it with: {escape(launcher_name())} round show --programme {escape(programme)} --round {escape(round_id)}")
    else:
        out.print(f"{escape(workflow_id)}: {result.matched} of {result.mentees} mentees matched "
                  f"(mean score {result.mean_score}); {result.proposed} proposed, "
                  f"{result.already_proposed} already proposed, {result.not_proposed} not proposed")  # fmt: skip


async def _with_round_progress(handle: WorkflowHandle[Any, Any]) -> MatchingRoundResult:
    """The round's result, with a progress bar on stderr fed by its `progress` query."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from workflows.matching_round import MatchingRound, MatchingRoundResult, RoundProgress

    result = asyncio.ensure_future(handle.result())
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err, transient=True) as bar:
        task = bar.add_task("starting the round", total=None)
        while not result.done():
            with contextlib.suppress(RPCError):
                progress: RoundProgress = await handle.query(MatchingRound.progress)
                done = progress.proposed + progress.already_proposed + progress.not_proposed
                total = progress.solution.matched if progress.solution else None
                bar.update(task, description=progress.stage, completed=done, total=total)
            await asyncio.wait({result}, timeout=0.5)
    return MatchingRoundResult.model_validate(await result)


def _options_but(option: str, of: Callable[..., None]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command every option of the command `of` but `option` (Typer reads a command's
    options from its signature): one that runs `of` with that option set."""
    signature = inspect.signature(of, eval_str=True)
    parameters = [parameter for parameter in signature.parameters.values() if parameter.name != option]

    def give(command: Callable[..., None]) -> Callable[..., None]:
        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return command

    return give


@round_app.command("run")
@_options_but("wait", of=start_round)
def run_round(**options: Any) -> None:
    """Run a programme's matching round to the end, with a progress bar: `round start --wait`."""
    start_round(**options, wait=True)


@round_app.command("show")
def show_round(
    programme: ProgrammeOption,
    round_id: Annotated[str, typer.Option("--round", help="Round id.")],
    as_json: JsonOption = False,
) -> None:
    """Show a round's result, every pair it settled on with why, and why each mentee it left
    unmatched was (how many of the round's mentors each reason ruled out)."""
    from mentorflow.cli.profiles import describe_exclusions

    async def load(matching: Any) -> Any:
        summary, pairs = await matching.round_report(programme, round_id)
        return summary, pairs, await matching.round_unmatched(programme, round_id)

    summary, pairs, unmatched = _with_matching(load)
    if summary is None:
        raise Problem(f"round {round_id} of {programme} has not been solved (is it running? is a worker?)")
    if as_json:
        print(json.dumps({"summary": summary, "pairs": pairs, "unmatched": unmatched}))
        return
    solution = summary
    mentees_matched = solution.get("mentees_matched", solution["matched"])
    rules = f", rule set {solution['rule_set']}" if solution.get("rule_set") else ""
    out.print(f"Round {escape(round_id)}: {mentees_matched} of {solution['mentees']} mentees matched "
              f"({solution['matched']} pair{'' if solution['matched'] == 1 else 's'}) with {solution['mentors']} mentors ({solution['objective']}{escape(rules)}), "
              f"mean score {solution['mean_score']}")  # fmt: skip
    table = Table()
    for column in ("mentee", "mentor", "score", "why", "proposal"):
        table.add_column(column)
    for pair in pairs:
        table.add_row(escape(pair["mentee_id"]), escape(pair["mentor_id"]), f"{pair['score']:g}",
                      escape(pair["explanation"]), escape(pair["outcome"] or "pending"))  # fmt: skip
    out.print(table)
    for left in unmatched:
        why = describe_exclusions(left["mentors"], left["excluded"])
        taken = f"; {left['allowed']} allowed, all given to others" if left["allowed"] else ""
        out.print(f"unmatched {escape(left['mentee_id'])}: {escape(why)}{escape(taken)}")
