"""Running the system: `dev`, `worker`, `migrate`, `codec-server`, and `replay-check` before a deploy."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from mentorflow.cli.shared import JsonOption, Problem, _connect, app, err, launcher_name, out, run
from mentorflow.config import Settings

log = logging.getLogger("mentorflow.cli")


@app.command()
def dev() -> None:
    """Start Temporal (Web UI on :8233), PostgreSQL and a worker, all local; Ctrl-C stops them."""
    from mentorflow.dev import run_dev

    run_dev(Settings.from_env(), out, launcher=launcher_name())


@app.command()
def worker() -> None:
    """Run a production worker: needs MENTORFLOW_DATABASE_URL, MENTORFLOW_ENCRYPTION_KEYS and a Temporal server; stops on SIGTERM."""
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


@app.command("replay-check")
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
