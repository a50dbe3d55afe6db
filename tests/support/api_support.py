"""The HTTP API under test: a real uvicorn server on a loopback port, in front of a real
Temporal dev server, a real worker and a real PostgreSQL (a helper module, not a test module).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.worker import Worker

from activities.api_keys import ApiKeyStore
from activities.directory import Directory
from events.people import Programme
from events.settings import ProgrammeSettings
from mentorflow.api.app import ApiContext, create_app
from mentorflow.api.serving import serving
from mentorflow.api.settings import ApiSettings
from mentorflow.config import Settings
from tests.support.helpers import new_worker
from tests.support.session import TEST_KEYRING

KEY_SECRET = "test-api-key-secret-" + "0123456789abcdef" * 2
COORDINATOR = "coord-7"


@dataclass
class ApiStack:
    url: str
    client: Client
    pool: asyncpg.Pool
    context: ApiContext
    programme: str
    worker: Worker | None
    keys: dict[str, str] = field(default_factory=dict)
    _http: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def store(self) -> ApiKeyStore:
        return ApiKeyStore(self.pool, KEY_SECRET.encode())

    async def key(self, name: str, programmes: list[str] | None = None, may_act_as: tuple[str, ...] = (), **options: Any) -> str:
        _, secret = await self.store.create(name, programmes or [self.programme], list(may_act_as), **options)
        self.keys[name] = secret
        return secret

    def http(self, credential: str | None = None, **headers: str) -> httpx.AsyncClient:
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
        client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)
        self._http.append(client)
        return client

    async def programme_with(self, programme_id: str | None = None, **settings: Any) -> str:
        programme_id = programme_id or f"prog-{uuid.uuid4().hex[:6]}"
        await Directory(self.pool).create_or_update_programme(
            Programme(programme_id=programme_id, name="API", settings=ProgrammeSettings(coordinator_ids=(COORDINATOR,), **settings))
        )
        return programme_id


@asynccontextmanager
async def api_stack(
    client: Client, pool: asyncpg.Pool, *, worker: bool = True, **api_options: Any
) -> AsyncIterator[ApiStack]:
    """A programme (coordinator coord-7), a worker on its own task queue and the API in front."""
    task_queue = f"tq-{uuid.uuid4()}"
    # Made only when it runs: a worker object registers its task queue as it is made.
    running = new_worker(client, pool, task_queue=task_queue) if worker else None
    settings = Settings(task_queue=task_queue, trust_start_settings=False)
    options: dict[str, Any] = {"key_secret": SecretStr(KEY_SECRET), "rate_limit": 0, "command_timeout": 15}
    api = ApiSettings(**(options | api_options))
    context = ApiContext.build(settings, api, client, pool, TEST_KEYRING)
    async with serving(create_app(context)) as url:
        stack = ApiStack(url, client, pool, context, "", running)
        stack.programme = await stack.programme_with()
        try:
            if running is not None:
                async with running:
                    yield stack
            else:
                yield stack
        finally:
            for http in stack._http:
                await http.aclose()


# -- people through single sign-on: bearer JWTs signed with a real RSA key, whose JWKS the
# `jwks_url` fixture (tests/conftest.py) serves -------------------------------------------

ISSUER, AUDIENCE = "https://sso.example.org", "mentorflow-api"
MENTEE, MENTOR = "emp-1042", "emp-311"


def key_pair() -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    return private, jwk | {"kid": uuid.uuid4().hex[:8], "use": "sig", "alg": "RS256"}


SIGNING, SIGNING_JWK = key_pair()
STRANGER, STRANGER_JWK = key_pair()


def token(person: str, *, key: Any = SIGNING, kid: str | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": person, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300} | claims
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid or SIGNING_JWK["kid"]})
