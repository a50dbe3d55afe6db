"""The FastAPI application and what every request needs (`ApiContext`).

`create_app(context)` serves an existing context (tests pass their own Temporal client and
pool); `create_app()` builds one from the environment when the server starts
(`mentorflow api`) and closes it when it stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import Client, WorkflowHandle

from activities.api_audit import ApiAuditLog, AuditEntry
from activities.api_keys import ApiKeyStore
from activities.directory import Directory
from activities.event_store import PostgresEventStore
from activities.matching_store import ProfileStore
from events.refusals import FieldProblem, RefusalCode
from events.state import RelationshipState
from mentorflow.api.auth import Credential, TokenVerifier, authenticate
from mentorflow.api.limits import BodySizeLimit, RateLimiter
from mentorflow.api.problems import ApiProblem, meaning_of, status_of, title_of
from mentorflow.api.settings import ApiSettings
from mentorflow.api.temporal import bounded, unavailable
from mentorflow.config import Settings
from mentorflow.keyring import Keyring
from events.relationship_io import relationship_workflow_id

log = logging.getLogger("mentorflow.api")

API_VERSION = "1"
# A relationship's coordinators never change once its settings are read: cached per
# workflow id (bounded), so a single-role key's command costs a query only once per replica.
MAX_CACHED_RELATIONSHIPS = 50_000


@dataclass
class ApiContext:
    settings: Settings
    api: ApiSettings
    client: Client
    pool: asyncpg.Pool
    keys: ApiKeyStore
    tokens: TokenVerifier | None
    limiter: RateLimiter
    # Failed authentications per client address: keeps floods of bad credentials off the database.
    failures: RateLimiter
    # The workers' keys: what decrypts confidential text read from the event store.
    keyring: Keyring | None = None
    # Signs the page tokens of lists (derived from the key secret): a token the API did not
    # give out for that very query is refused at once, without asking Temporal.
    page_token_key: bytes = b""
    _coordinators: OrderedDict[str, frozenset[str]] = field(default_factory=OrderedDict)

    @classmethod
    def build(
        cls, settings: Settings, api: ApiSettings, client: Client, pool: asyncpg.Pool, keyring: Keyring | None = None
    ) -> ApiContext:
        return cls(
            settings=settings,
            api=api,
            client=client,
            pool=pool,
            keys=ApiKeyStore(pool, api.key_secret_bytes(), cache_seconds=api.key_cache_seconds),
            tokens=TokenVerifier(api) if api.tokens_enabled else None,
            limiter=RateLimiter(api.rate_limit, api.rate_burst),
            failures=RateLimiter(max(api.rate_limit, 5.0), max(api.rate_burst, 20)),
            keyring=keyring or settings.keyring(),
            page_token_key=hmac.new(api.key_secret_bytes(), b"mentorflow api page tokens", hashlib.sha256).digest(),
        )

    @property
    def audit(self) -> ApiAuditLog:
        return ApiAuditLog(self.pool)

    @property
    def directory(self) -> Directory:
        return Directory(self.pool)

    @property
    def profiles(self) -> ProfileStore:
        return ProfileStore(self.pool)

    def event_store(self, *, decrypting: bool) -> PostgresEventStore:
        """Decrypting: with the keys, confidential text readable. Else it reads as "[encrypted]"."""
        return PostgresEventStore(self.pool, self.keyring if decrypting else None)

    @property
    def timeout(self) -> float:
        return self.api.command_timeout

    def relationship(self, programme_id: str, relationship_id: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(relationship_workflow_id(programme_id, relationship_id))

    async def state_of(self, programme_id: str, relationship_id: str) -> RelationshipState:
        handle = self.relationship(programme_id, relationship_id)
        what = f"relationship {relationship_id} of programme {programme_id}"
        state: RelationshipState = await bounded(handle.query("state", result_type=RelationshipState), self.timeout, what)
        if state.version > 0:
            self._remember(handle.id, frozenset(state.settings.coordinator_ids))
        return state

    async def coordinators_of(self, programme_id: str, relationship_id: str) -> frozenset[str]:
        workflow_id = relationship_workflow_id(programme_id, relationship_id)
        if (known := self._coordinators.get(workflow_id)) is not None:
            self._coordinators.move_to_end(workflow_id)
            return known
        # Right after its start a relationship reports version 0 and default settings until
        # it has read its programme's: wait for that (within the same bound as any answer).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while (state := await self.state_of(programme_id, relationship_id)).version == 0:
            if loop.time() >= deadline:
                raise unavailable("the relationship is still starting (reading its programme); try again in a moment")
            await asyncio.sleep(0.1)
        return frozenset(state.settings.coordinator_ids)

    def _remember(self, workflow_id: str, coordinators: frozenset[str]) -> None:
        self._coordinators[workflow_id] = coordinators
        self._coordinators.move_to_end(workflow_id)
        while len(self._coordinators) > MAX_CACHED_RELATIONSHIPS:
            self._coordinators.popitem(last=False)

    async def record(self, credential: Credential, **entry: Any) -> None:
        """Append an audit row; a failure to write it is logged, never the caller's problem."""
        try:
            await self.audit.record(
                AuditEntry(credential_kind=credential.kind, credential_id=credential.id,
                           credential_name=credential.name, **entry)  # fmt: skip
            )
        except (asyncpg.PostgresError, OSError) as error:
            log.error("could not write the audit row for %s %s: %s", entry.get("message"), entry.get("command_id"), error)


def context_of(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


async def credential_of(request: Request) -> Credential:
    """The caller's credential (401 without a valid one), after the rate limit."""
    context = context_of(request)
    client = request.client.host if request.client else "unknown"
    try:
        credential = await authenticate(request.headers.get("authorization"), context.keys, context.tokens)
    except ApiProblem as problem:
        if problem.code == "unauthenticated":
            context.failures.check(f"address:{client}")
        raise
    context.limiter.check(credential.rate_key)
    return credential


# -- the application ----------------------------------------------------------------------------


def create_app(context: ApiContext | None = None, *, api_settings: ApiSettings | None = None) -> FastAPI:
    from mentorflow.api.openapi import install_openapi
    from mentorflow.api.routes import directory, programmes, relationships
    from mentorflow.pages.routes import router as pages_router

    api = context.api if context is not None else api_settings or ApiSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if context is not None:
            app.state.context = context
            yield
            return
        built, close = await _context_from_env(api)
        app.state.context = built
        try:
            yield
        finally:
            await close()

    app = FastAPI(
        title="mentorflow API",
        version=API_VERSION,
        description="The message contract of docs/contract.md over HTTPS and JSON. See docs/api.md.",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.include_router(relationships.router)
    app.include_router(programmes.router)
    app.include_router(directory.router)
    app.include_router(pages_router)  # the pages people open from their emails (docs/people.md)

    @app.get("/v1/problems/{code}", tags=["problems"], summary="What a problem code means")
    async def problem_type(code: str) -> JSONResponse:
        meaning = meaning_of(code)
        if meaning is None:
            raise ApiProblem(RefusalCode.NOT_FOUND, "no such problem code")
        return JSONResponse({"code": code, "title": title_of(code), "status": status_of(code), "meaning": meaning})

    @app.get("/v1/health", tags=["problems"], summary="Liveness: the process serves (no credential needed)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    _install_error_handlers(app)
    install_openapi(app)
    if api.cors_origins.split():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=api.cors_origins.split(),
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    max_bytes = context.settings.max_payload_bytes if context is not None else Settings.from_env().max_payload_bytes
    app.add_middleware(BodySizeLimit, limit=max_bytes)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def problem(request: Request, error: ApiProblem) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            FieldProblem(field=".".join(str(part) for part in detail["loc"]), message=str(detail["msg"]))
            for detail in error.errors()
        ]
        reason = "invalid request: " + "; ".join(f"{p.field}: {p.message}" for p in problems)
        return ApiProblem(RefusalCode.INVALID_PAYLOAD, reason, problems).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            return ApiProblem(RefusalCode.NOT_FOUND, "no such resource").response()
        if error.status_code == 405:
            return ApiProblem("method_not_allowed", "this resource does not take that method").response()
        return ApiProblem("bad_request", str(error.detail), status=error.status_code).response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        if isinstance(error, (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
            log.error("database unreachable: %s", error)
            return unavailable("the database is unreachable; try again later").response()
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return ApiProblem(RefusalCode.INTERNAL_ERROR, "the API failed to handle the request (internal error)").response()


async def _context_from_env(api: ApiSettings) -> tuple[ApiContext, Any]:
    from activities.database import create_pool, migrate
    from mentorflow.client import connect, converter_for

    settings = Settings.from_env()
    keyring = settings.keyring()
    client = await connect(
        settings.temporal_address,
        settings.temporal_namespace,
        data_converter=converter_for(settings, sends_commands=True, keyring=keyring),
        tls=settings.temporal_tls(),
    )
    # Nothing the API runs sets session state: its connections skip the reset query.
    pool = await create_pool(settings.require_database_url(), max_size=20, session_state=False)
    await migrate(pool)
    context = ApiContext.build(settings, api, client, pool, keyring)

    async def close() -> None:
        await pool.close()

    return context, close
