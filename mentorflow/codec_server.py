"""The codec server: decrypts payloads for the Temporal Web UI (and `temporal --codec-endpoint`).

Temporal's codec server protocol: ``POST …/decode`` and ``POST …/encode`` with a JSON
``{"payloads": [...]}`` body (the protobuf JSON form of ``temporal.api.common.v1.Payloads``)
and an ``X-Namespace`` header; only the last path segment selects the operation.

It answers only
- callers that present one of the configured tokens, either as ``Authorization: Bearer
  TOKEN`` (the `temporal` CLI's ``--codec-auth``, scripts) or as the path in front of
  ``/decode`` (``https://codec.example.org/TOKEN``: the Web UI can send no header of its
  own without an OAuth login, so its endpoint URL carries the secret), else 401;
- for the configured namespace, else 403;
- browsers on the allowed Web UI origins (CORS, preflight included); a request from any
  other origin gets 403 and no CORS headers, so no other web page can read an answer.

Tokens are compared in constant time and never logged (aiohttp's access log, which would
show the path, is replaced by a line without it).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from aiohttp import web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from mentorflow.codec import EncryptionCodec, PayloadDecodeError, PayloadTooLargeError
from mentorflow.config import ConfigurationError, Settings
from mentorflow.keyring import DecryptionError, Keyring, UnknownKeyError

log = logging.getLogger("mentorflow.codec_server")

# The Web UI decodes whole histories; Temporal's own limit per payload is 2 MB (base64: more).
MAX_REQUEST_BYTES = 16 * 1024 * 1024
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"


@dataclass(frozen=True)
class CodecServerConfig:
    keyring: Keyring
    namespace: str
    tokens: Sequence[str]
    # Exact origins, e.g. "https://temporal.example.org"; empty: no browser may call.
    cors_origins: Sequence[str] = ()
    max_payload_bytes: int | None = None
    codec: EncryptionCodec = field(init=False)

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ValueError("the codec server needs at least one token")
        object.__setattr__(self, "codec", EncryptionCodec(self.keyring, max_payload_bytes=self.max_payload_bytes))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class CodecServer:
    def __init__(self, config: CodecServerConfig) -> None:
        self.config = config
        self._tokens = [token.encode() for token in config.tokens]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[self._cors])
        app.router.add_route("OPTIONS", "/{prefix:.*}", self._preflight)
        app.router.add_route("POST", "/{prefix:.*}", self._convert)
        return app

    # -- CORS ------------------------------------------------------------------------------

    def _origin_allowed(self, origin: str | None) -> bool:
        return origin is not None and origin in self.config.cors_origins

    @web.middleware
    async def _cors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin):
            # A browser on another origin: refuse outright (no CORS headers, nothing decoded).
            log.warning("codec server: refused a request from origin %s", origin[:200])
            return web.json_response({"error": "origin not allowed"}, status=403)
        response = await handler(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        return response

    async def _preflight(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Origin") is None:
            return _error(400, "not a CORS preflight (no Origin)")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )

    # -- the protocol ----------------------------------------------------------------------

    def _authenticated(self, request: web.Request, prefix: str) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        candidates = []
        if scheme.lower() == "bearer" and credential.strip():
            candidates.append(credential.strip().encode())
        if prefix.strip("/"):
            candidates.append(prefix.strip("/").encode())
        # Check every token against every candidate: the time taken says nothing about which matched.
        matched = False
        for candidate in candidates:
            for token in self._tokens:
                matched |= hmac.compare_digest(candidate, token)
        return matched

    async def _convert(self, request: web.Request) -> web.StreamResponse:
        prefix, _, operation = request.match_info["prefix"].rpartition("/")
        if operation not in {"encode", "decode"}:
            return _error(404, "POST to …/decode or …/encode")
        if not self._authenticated(request, prefix):
            log.warning("codec server: refused an unauthenticated %s", operation)
            return _error(401, "authentication required", {"WWW-Authenticate": "Bearer"})
        namespace = request.headers.get("X-Namespace")
        if namespace != self.config.namespace:
            log.warning("codec server: refused %s for namespace %r", operation, (namespace or "")[:200])
            return _error(403, f"namespace {namespace!r} is not served here")
        try:
            body = await request.text()
            payloads = json_format.Parse(body, Payloads(), ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as error:
            return _error(400, f'the body is not {{"payloads": [...]}} in protobuf JSON: {error}')
        codec = self.config.codec
        try:
            if operation == "decode":
                converted = await codec.decode(payloads.payloads)
            else:
                converted = await codec.encode(payloads.payloads)
        except PayloadTooLargeError as error:
            return _error(413, str(error))
        except (UnknownKeyError, DecryptionError, PayloadDecodeError) as error:
            return _error(422, str(error))
        log.info("codec server: %s %d payloads for %s", operation, len(converted), namespace)
        return web.Response(
            text=json_format.MessageToJson(Payloads(payloads=converted)), content_type="application/json"
        )


class RunningCodecServer:
    """A started codec server; `stop()` closes it."""

    def __init__(self, runner: web.AppRunner) -> None:
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.host: str = host
        self.port: int = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start_codec_server(config: CodecServerConfig, host: str = "127.0.0.1", port: int = 0) -> RunningCodecServer:
    """Listen on host:port (0: any free port) in the running event loop."""
    runner = web.AppRunner(CodecServer(config).app(), access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        await runner.cleanup()
        raise OSError(error.errno, f"the codec server cannot listen on {host}:{port}: {error.strerror}") from None
    return RunningCodecServer(runner)


def config_from_settings(settings: Settings) -> CodecServerConfig:
    """The production configuration; fails fast, naming the variable, on what is missing."""
    keyring = settings.keyring()
    if settings.codec_tokens is None:
        raise ConfigurationError(
            "MENTORFLOW_CODEC_TOKENS is not set: the codec server decrypts only for callers with a token "
            "(space-separated, at least 32 characters each, e.g. `openssl rand -hex 32`)"
        )
    return CodecServerConfig(
        keyring=keyring,
        namespace=settings.temporal_namespace,
        tokens=settings.codec_tokens.get_secret_value().split(),
        cors_origins=settings.codec_cors_origins.split(),
        max_payload_bytes=settings.max_payload_bytes,
    )


async def serve(settings: Settings, stack: AsyncExitStack) -> None:
    """`mentorflow codec-server`: listen on MENTORFLOW_CODEC_HOST:MENTORFLOW_CODEC_PORT until cancelled."""
    config = config_from_settings(settings)
    running = await start_codec_server(config, settings.codec_host, settings.codec_port)
    stack.push_async_callback(running.stop)
    log.info(
        "codec server on %s for namespace %s; browser origins allowed: %s",
        running.url, config.namespace, ", ".join(config.cors_origins) or "none (set MENTORFLOW_CODEC_CORS_ORIGINS)",
    )  # fmt: skip
    await asyncio.Future()  # until cancelled
