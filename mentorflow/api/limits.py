"""Limits at the edge: a cap on request bodies and a per-credential rate limit.

The rate limit is kept **per replica**, in memory (a token bucket per credential): with N
replicas behind a load balancer a credential gets up to N times the configured rate. That
keeps the API stateless and PostgreSQL out of every request; docs/api.md says so.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mentorflow.api.problems import ApiProblem

# Buckets of credentials not seen for a while are dropped, so memory stays bounded.
MAX_BUCKETS = 10_000
# How much of an oversized body is still read (and dropped) before answering 413.
DRAIN_LIMIT = 4 * 1024 * 1024


class RateLimiter:
    def __init__(self, rate: float, burst: int):
        self._rate = rate
        self._burst = burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, key: str) -> None:
        """Take one token for `key`, or raise 429 rate_limited with Retry-After."""
        if self._rate <= 0:
            return
        now = time.monotonic()
        tokens, last = self._buckets.pop(key, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - last) * self._rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1 - tokens) / self._rate)
            raise ApiProblem(
                "rate_limited",
                f"more than {self._rate:g} requests per second (burst {self._burst}) for this credential",
                headers={"Retry-After": str(max(1, wait))},
            )
        self._buckets[key] = (tokens - 1, now)
        while len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)


class BodySizeLimit:
    """Refuse request bodies over `limit` bytes with 413, before the application reads them.

    A declared Content-Length over the limit is refused at once; a body without one
    (chunked) is read up to the limit and refused as soon as it goes past it."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.limit
            except ValueError:
                too_large = False
            if too_large:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Read (and drop) the rest of a body not much over the limit, so that the client,
        # still sending, gets the answer rather than a reset connection; beyond that the
        # connection is closed.
        drained, more = 0, True
        while more and drained <= DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        headers = {"Connection": "close"} if more else {}
        problem = ApiProblem("payload_too_large", f"the request body is larger than {self.limit} bytes", headers=headers)
        await problem.response()(scope, receive, send)
