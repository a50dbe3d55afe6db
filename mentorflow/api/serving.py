"""Serving the API inside a process that runs other things too (`mentorflow dev`, tests,
benchmarks): `serving` (mentorflow/embedded_http.py) runs uvicorn on a socket of our own, in
the running event loop, without touching the process's signal handlers.

`start_dev_api` is what `./run dev` calls: the API on 127.0.0.1 (MENTORFLOW_API_PORT, 8080 by
default, or a free port if that one is taken), a server secret and one API key for every
programme that may act as anyone (never as an internal actor) kept in the state folder.
"""

from __future__ import annotations

import os
import secrets
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from temporalio.client import Client

from activities.api_keys import ApiKeyStore
from mentorflow.api.app import ApiContext, create_app
from mentorflow.api.settings import ApiSettings
from mentorflow.config import Settings
from mentorflow.embedded_http import bind, serving

__all__ = ["DevApi", "bind", "serving", "start_dev_api"]

DEV_SECRET_FILE = "api-key-secret"
DEV_KEY_FILE = "api-key"


@dataclass(frozen=True)
class DevApi:
    url: str
    # Holds the dev API key (mode 0600), for `curl -H "Authorization: Bearer $(cat …)"`.
    key_file: Path


def _private_file(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)


async def start_dev_api(
    stack: AsyncExitStack, settings: Settings, client: Client, pool: asyncpg.Pool, state_dir: Path
) -> DevApi:
    """The API for `./run dev`, stopped when `stack` closes."""
    api = ApiSettings.from_env()
    if api.key_secret is None and api.key_secret_file is None:
        secret_file = state_dir / DEV_SECRET_FILE
        if not secret_file.exists():
            _private_file(secret_file, secrets.token_hex(32))
        api = api.model_copy(update={"key_secret_file": secret_file})
    store = ApiKeyStore(pool, api.key_secret_bytes())
    key_file = state_dir / DEV_KEY_FILE
    known = key_file.read_text(encoding="utf-8").strip() if key_file.exists() else ""
    if not known or await store.verify(known) is None:
        _, key = await store.create("mentorflow-dev", ["*"], ["participants", "coordinators"])
        _private_file(key_file, key + "\n")
    context = ApiContext.build(settings, api, client, pool, settings.keyring(dev_key_file=True))
    url = await stack.enter_async_context(serving(create_app(context), "127.0.0.1", api.port))
    return DevApi(url=url, key_file=key_file)
