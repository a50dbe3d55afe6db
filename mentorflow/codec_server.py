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

Tokens are compared in constant time and never logged (uvicorn's access log, which would
show the path, is off; the log lines of this module name no path).

Served with Starlette on uvicorn (mentorflow/embedded_http.py), the same stack as the HTTP API.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads

from mentorflow.codec import EncryptionCodec, PayloadDecodeError, PayloadTooLargeError
from mentorflow.config import ConfigurationError, Settings
from mentorflow.embedded_http import RunningServer, bind, start_serving
from mentorflow.keyring import DecryptionError, Keyring, UnknownKeyError

log = logging.getLogger("mentorflow.codec_server")

# The Web UI decodes whole histories; Temporal's own limit per payload is 2 MB (base64: more).
MAX_REQUEST_BYTES = 16 * 1024 * 1024
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
# How much past the cap is still read (and dropped) before answering 413.
DRAIN_LIMIT = 4 * 1024 * 1024

# A started codec server: `.url`, `.host`, `.port`; `stop()` closes it.
RunningCodecServer = RunningServer


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


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    """The request body, or _TooLarge once it passes MAX_REQUEST_BYTES. The rest of a body not
    much over the cap is read (and dropped) first, so that the client, still sending, gets the
    answer rather than a reset connection."""
    body, size = bytearray(), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= MAX_REQUEST_BYTES:
            body += chunk
        elif size > MAX_REQUEST_BYTES + DRAIN_LIMIT:
            break
    if size > MAX_REQUEST_BYTES:
        raise _TooLarge
    return bytes(body)


class CodecServer:
    def __init__(self, config: CodecServerConfig) -> None:
        self.config = config
        self._tokens = [token.encode() for token in config.tokens]

    def app(self) -> ASGIApp:
        async def http_error(request: Request, error: Exception) -> Response:
            assert isinstance(error, HTTPException)
            return _error(error.status_code, error.detail, error.headers)

        app = Starlette(
            routes=[Route("/{prefix:path}", self._route, methods=["POST", "OPTIONS"])],
            exception_handlers={HTTPException: http_error},
        )
        return self._cors(app)

    # -- CORS ------------------------------------------------------------------------------

    def _origin_allowed(self, origin: str | None) -> bool:
        return origin is not None and origin in self.config.cors_origins

    def _cors(self, app: ASGIApp) -> ASGIApp:
        """Refuse browsers on other origins outright; add the CORS headers for allowed ones."""

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            origin = Request(scope).headers.get("Origin")
            if origin is None:
                await app(scope, receive, send)
                return
            if not self._origin_allowed(origin):
                # A browser on another origin: refuse outright (no CORS headers, nothing decoded).
                log.warning("codec server: refused a request from origin %s", origin[:200])
                await _error(403, "origin not allowed")(scope, receive, send)
                return

            async def send_with_cors(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"access-control-allow-origin", origin.encode("latin-1")),
                        (b"access-control-allow-credentials", b"true"),
                        (b"vary", b"Origin"),
                    ]
                await send(message)

            await app(scope, receive, send_with_cors)

        return middleware

    async def _route(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return self._preflight(request)
        return await self._convert(request)

    def _preflight(self, request: Request) -> Response:
        if request.headers.get("Origin") is None:
            return _error(400, "not a CORS preflight (no Origin)")
        return Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )

    # -- the protocol ----------------------------------------------------------------------

    def _authenticated(self, request: Request, prefix: str) -> bool:
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

    async def _convert(self, request: Request) -> Response:
        prefix, _, operation = request.path_params["prefix"].rpartition("/")
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
            body = (await _read_body(request)).decode("utf-8")
            payloads = json_format.Parse(body, Payloads(), ignore_unknown_fields=True)
        except _TooLarge:
            return _error(413, f"the request body is larger than {MAX_REQUEST_BYTES} bytes", {"Connection": "close"})
        except ClientDisconnect:
            return _error(400, "the request body ended early")
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
        return Response(json_format.MessageToJson(Payloads(payloads=converted)), media_type="application/json")


async def start_codec_server(config: CodecServerConfig, host: str = "127.0.0.1", port: int = 0) -> RunningCodecServer:
    """Listen on host:port (0: any free port) in the running event loop."""
    try:
        sock = bind(host, port, any_port_if_taken=False)
    except OSError as error:
        raise OSError(error.errno, f"the codec server {error.strerror}") from None
    # No access log: the Web UI's endpoint path carries the token.
    return await start_serving(CodecServer(config).app(), sock, access_log=False, lifespan="off")


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
    try:
        running = await start_codec_server(config, settings.codec_host, settings.codec_port)
    except OSError as error:  # the port is taken, or the address is not this machine's
        raise ConfigurationError(f"{error.strerror} (MENTORFLOW_CODEC_HOST, MENTORFLOW_CODEC_PORT)") from None
    stack.push_async_callback(running.stop)
    log.info(
        "codec server on %s for namespace %s; browser origins allowed: %s",
        running.url, config.namespace, ", ".join(config.cors_origins) or "none (set MENTORFLOW_CODEC_CORS_ORIGINS)",
    )  # fmt: skip
    await asyncio.Future()  # until cancelled
