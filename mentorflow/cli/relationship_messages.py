"""`mentorflow relationship update`, `signal` and `send`: a command to a relationship, checked
against the contract first, with the exit codes MESSAGE_EXIT_CODES lists."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, FailureError

from events.commands import COMMAND_TYPES, command_digest, read_command
from events.refusals import RefusalCode, Rejection, cli_exit_code
from events.state import RelationshipState
from mentorflow.cli.relationship import _answer, relationship_app
from mentorflow.cli.shared import (
    EXIT_INVALID,
    EXIT_PROBLEM,
    JsonOption,
    Problem,
    _connect,
    err,
    out,
    run,
)
from mentorflow.config import Settings
from workflows.relationship import CommandResult

MESSAGE_EXIT_CODES = (
    "Exit codes: 0 done (applied, or already applied earlier; a signal: delivered); "
    "1 Temporal unreachable, no such workflow, or no answer in time; "
    "2 bad input: unknown command, payload not JSON or not valid against the contract (every bad field is named; "
    "refusal codes invalid_payload, unknown_message); "
    "3 the relationship rejected the command by its rules (the code and reason are printed: wrong_phase, not_allowed, "
    "not_found, limit, conflict, command_id_reused). docs/contract.md lists every refusal code."
)

WorkflowIdArgument = Annotated[str, typer.Argument(help="The workflow id, e.g. relationship/PROGRAMME/ID.")]
CommandArgument = Annotated[
    str, typer.Argument(metavar="COMMAND", help=f"The message name, one of: {', '.join(COMMAND_TYPES)}.")
]
PayloadOption = Annotated[
    str,
    typer.Option(
        "--payload",
        "-p",
        help="The command as a JSON object, @FILE to read it from a file, or - for stdin. "
        "Without a command_id one is generated (and printed).",
    ),
]
TimeoutOption = Annotated[float, typer.Option(help="Seconds to wait for an answer.")]


class MessageProblem(Problem):
    """A message that could not be delivered or was refused; with --json it is also printed
    on stdout as `{"outcome": …}`."""

    def __init__(self, outcome: str, message: str, exit_code: int, **details: Any):
        super().__init__(message, exit_code)
        self.outcome = outcome
        self.details = details


def _message_outcome(as_json: bool, send: Callable[[], None]) -> None:
    try:
        send()
    except Problem as problem:
        if as_json:
            outcome = problem.outcome if isinstance(problem, MessageProblem) else "error"
            details = problem.details if isinstance(problem, MessageProblem) else {}
            print(json.dumps({"outcome": outcome, "message": str(problem), **details}))
        raise


@relationship_app.command("update", epilog=MESSAGE_EXIT_CODES)
def update_command(
    workflow_id: WorkflowIdArgument,
    command_name: CommandArgument,
    payload: PayloadOption = "{}",
    as_json: JsonOption = False,
    timeout: TimeoutOption = 30,
) -> None:
    """Send a command as an update: it is checked first, and the answer comes once its events are stored.

    Sending the same command (same command id, same content) again is answered with what it did the first time (`already applied`, a replay) instead of applying it twice; the same command id with other content is refused (command_id_reused).
    """
    _message_outcome(as_json, lambda: _send(workflow_id, command_name, _read_payload(payload), "update", as_json, timeout))


@relationship_app.command("signal", epilog=MESSAGE_EXIT_CODES)
def signal_command(
    workflow_id: WorkflowIdArgument,
    command_name: CommandArgument,
    payload: PayloadOption = "{}",
    wait: Annotated[
        bool, typer.Option("--wait", help="Then wait until the relationship has decided, and say what it decided.")
    ] = False,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 30,
) -> None:
    """Send a command as a signal: fire and forget, for systems that cannot wait for an answer.

    The relationship records a refused signal in its state (`rejected_commands`) instead of answering; with --wait this command reads the state until the command shows up there or as applied.
    """
    kind: Literal["signal", "signal-wait"] = "signal-wait" if wait else "signal"
    _message_outcome(as_json, lambda: _send(workflow_id, command_name, _read_payload(payload), kind, as_json, timeout))


@relationship_app.command("send", epilog=MESSAGE_EXIT_CODES)
def send_command(
    workflow_id: WorkflowIdArgument,
    command_name: CommandArgument,
    payload: Annotated[str, typer.Argument(help="The command as a JSON object ('-': read it from stdin).")],
    signal: Annotated[bool, typer.Option("--signal", help="Send as a signal: no answer, no wait.")] = False,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 30,
) -> None:
    """The same as `update` (or, with --signal, `signal`), with the payload as an argument."""
    text = sys.stdin.read() if payload == "-" else payload
    kind: Literal["update", "signal"] = "signal" if signal else "update"
    _message_outcome(as_json, lambda: _send(workflow_id, command_name, text, kind, as_json, timeout))


def _read_payload(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    if source.startswith("@"):
        path = Path(source[1:])
        try:
            return path.read_text(encoding="utf-8-sig")
        except OSError as error:
            raise MessageProblem("invalid", f"--payload {source}: {error.strerror}", EXIT_INVALID) from None
    return source


def _send(
    workflow_id: str,
    command_name: str,
    payload: str,
    kind: Literal["update", "signal", "signal-wait"],
    as_json: bool,
    timeout: float,
) -> None:
    body = _parse_command(command_name, payload)
    command_id: str = body["command_id"]
    settings = Settings.from_env()

    async def send() -> CommandResult | RelationshipState | None:
        client = await _connect(settings)
        handle = client.get_workflow_handle(workflow_id)
        if kind == "update":
            try:
                result: CommandResult = await _answer(
                    # Each send gets an update id of its own (the SDK's): the relationship itself
                    # recognises a retried command id, and tells a reused one apart.
                    handle.execute_update(command_name, body, result_type=CommandResult),
                    workflow_id,
                    timeout,
                )
            except WorkflowUpdateFailedError as error:
                cause = error.cause
                reason = cause.message if isinstance(cause, FailureError) else str(cause or error)
                code = _refusal_code(cause.type if isinstance(cause, ApplicationError) else None)
                raise _refused(command_name, command_id, code, reason) from None
            return result
        await _answer(handle.signal(command_name, body), workflow_id, timeout)
        if kind == "signal":
            return None
        digest = command_digest(COMMAND_TYPES[command_name].model_validate(body))
        return await _decided(handle, workflow_id, command_name, command_id, digest, timeout)

    outcome = run(send())
    if isinstance(outcome, CommandResult):
        _print_result(command_name, outcome, as_json)
    elif isinstance(outcome, RelationshipState):
        if as_json:
            print(json.dumps({"outcome": "applied", "signalled": command_name, "command_id": command_id,
                              "version": outcome.version, "phase": outcome.phase.value}))  # fmt: skip
        else:
            out.print(f"[green]{command_name} applied[/green] (signal, command {escape(command_id)}) "
                      f"→ version {outcome.version}, phase [bold]{outcome.phase.value}[/bold]")  # fmt: skip
    elif as_json:
        print(json.dumps({"outcome": "signalled", "signalled": command_name, "command_id": command_id}))
    else:
        out.print(
            f"Signalled {command_name} (command {escape(command_id)}). A signal gets no answer: if it is "
            "rejected, the rejection shows in `relationship show` (or send it with --wait)."
        )


async def _decided(
    handle: WorkflowHandle[Any, Any], workflow_id: str, command_name: str, command_id: str, digest: str, timeout: float
) -> RelationshipState:
    """The state once the relationship has decided the signalled command (this content under
    this id, told apart by its digest); a rejection raises."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state: RelationshipState = await _answer(
            handle.query("state", result_type=RelationshipState), workflow_id, max(deadline - loop.time(), 1)
        )
        if state is not None:
            applied = state.applied_commands.get(command_id)
            if applied is not None and applied.digest in (digest, None):
                return state
            for rejected in reversed(state.rejected_commands):
                if rejected.command_id == command_id and rejected.payload_digest == digest:
                    raise _refused(command_name, command_id, rejected.code, rejected.reason)
        if loop.time() >= deadline:
            raise MessageProblem(
                "no_answer", f"{workflow_id} has not decided command {command_id} within {timeout:.0f} s: "
                "is a worker running?", EXIT_PROBLEM, command_id=command_id,
            )  # fmt: skip
        await asyncio.sleep(0.2)


def _refusal_code(type_: str | None) -> RefusalCode:
    try:
        return RefusalCode(type_ or "")
    except ValueError:  # a worker running code from before refusal codes
        return RefusalCode.NOT_ALLOWED


def _refused(command_name: str, command_id: str, code: RefusalCode, reason: str) -> MessageProblem:
    """A refusal as the CLI reports it: its exit code derives from the refusal code."""
    exit_code = cli_exit_code(code)
    outcome = "invalid" if exit_code == EXIT_INVALID else "rejected"
    return MessageProblem(outcome, f"{command_name} rejected ({code.value}): {reason}", exit_code,
                          code=code.value, command_id=command_id, reason=reason)  # fmt: skip


def _print_result(command_name: str, result: CommandResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"outcome": "applied" if result.applied else "already_applied", **result.model_dump(mode="json")}))
    elif result.applied:
        out.print(
            f"[green]{command_name} applied[/green]: {', '.join(result.events)} "
            f"→ version {result.version}, phase [bold]{result.phase.value}[/bold]"
        )
    else:
        out.print(
            f"command {escape(result.command_id)} was already applied earlier; nothing changed. When first "
            f"applied: {', '.join(result.events) or 'no events'} → version {result.version}, phase {result.phase.value}"
        )


def _parse_command(command_name: str, payload: str) -> dict[str, Any]:
    """The command as the relationship will see it, checked against the contract first."""
    if command_name not in COMMAND_TYPES:
        raise MessageProblem(
            "invalid", f"unknown command {command_name!r}; known: {', '.join(COMMAND_TYPES)}", EXIT_INVALID,
            known=list(COMMAND_TYPES),
        )  # fmt: skip
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as error:
        raise MessageProblem("invalid", f"the payload is not valid JSON: {error}", EXIT_INVALID) from None
    if not isinstance(body, dict):
        raise MessageProblem(
            "invalid", "the payload must be a JSON object, e.g. '{\"actor_id\": \"coord-1\"}'", EXIT_INVALID
        )
    if not body.get("command_id"):
        body["command_id"] = f"cli-{uuid.uuid4().hex[:12]}"
        err.print(f"[dim]no command_id given; using {body['command_id']}[/dim]")
    read = read_command(COMMAND_TYPES[command_name], body)
    if isinstance(read, Rejection):
        raise MessageProblem(
            "invalid", f"{command_name}: {read.reason}", EXIT_INVALID, code=read.code.value,
            errors=[problem.model_dump() for problem in read.problems],
            command_id=body["command_id"] if isinstance(body["command_id"], str) else None,
        )  # fmt: skip
    return body
