"""Serving an ASGI application (Starlette, FastAPI) with uvicorn inside a process that runs
other things too (`mentorflow dev`, the codec server, tests, benchmarks): on a socket of our
own, in the running event loop, without touching the process's signal handlers.

The one HTTP stack of the project: the HTTP API (mentorflow/api/) and the codec server
(mentorflow/codec_server.py) are both served this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

STOP_TIMEOUT = 30


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handling: the process it runs in handles signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int, *, any_port_if_taken: bool = True) -> socket.socket:
    """A listening socket on `host:port`; on a free port when `port` is 0, or taken and
    `any_port_if_taken`. Else an OSError that names the address."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            sock.bind((host, port))
        except OSError as error:
            if not any_port_if_taken:
                raise OSError(error.errno, f"cannot listen on {host}:{port}: {error.strerror}") from None
            sock.bind((host, 0))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


class RunningServer:
    """An application being served; `stop()` ends it (open connections get `STOP_TIMEOUT` s)."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], sock: socket.socket):
        self._server, self._task, self._sock = server, task, sock
        self.host: str = sock.getsockname()[0]
        self.port: int = sock.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, STOP_TIMEOUT)
        finally:
            self._sock.close()


async def start_serving(app: Any, sock: socket.socket, **config: Any) -> RunningServer:
    """Serve `app` on the listening `sock` in this event loop; `config`: more uvicorn.Config options."""
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", "server_header": False} | config
    server = _EmbeddedServer(uvicorn.Config(app, **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            sock.close()
            task.result()
            raise RuntimeError("the HTTP server stopped as it started")
        await asyncio.sleep(0.01)
    return RunningServer(server, task, sock)


@contextlib.asynccontextmanager
async def serving(app: Any, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `app` in this event loop until the block ends (on a free port when `port` is
    taken); yields the base URL."""
    running = await start_serving(app, bind(host, port))
    try:
        yield running.url
    finally:
        await running.stop()
