"""API keys for the HTTP API, in PostgreSQL (migrations/0010_api_keys_and_audit.sql).

A key reads `mfk_<key id>_<secret>`. Only HMAC-SHA256(server secret, key) is stored: the
key is shown once, when it is made, and never again. `verify` finds the row by the key id
and compares the keyed hash in constant time; an unknown key id costs the same HMAC, so the
answer's timing does not tell whether a key id exists.

A store made with `cache_seconds` (the API's, per replica) trusts a key it verified for that
long without asking PostgreSQL again: a key revoked, or rotated out, elsewhere (the CLI,
another replica) is refused at most that long after the change; through the same store, at
once. Expiry is checked on every request, and a key is still compared in constant time.

Rotation without downtime: `rotate` makes a new key with the same name and scopes and lets
the old one expire after a grace period, so both are valid while the caller switches over.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg

KEY_PREFIX = "mfk_"
_KEY_ID_LENGTH = 16  # hex characters
ALL_PROGRAMMES = "*"
Role = Literal["participants", "coordinators"]
ROLES: tuple[Role, ...] = ("participants", "coordinators")
# last_used_at is written at most this often per key: a write per request would cost more
# than the request.
LAST_USE_RESOLUTION = timedelta(minutes=1)
# Verified keys kept per store (least recently used dropped first), so memory stays bounded.
MAX_CACHED_KEYS = 10_000

_COLUMNS = "key_id, name, programmes, may_act_as, created_at, expires_at, revoked_at, last_used_at, rotated_from"


class ApiKeyError(ValueError):
    """A request the key store refuses (unknown key, bad scope); the message says which."""


@dataclass(frozen=True)
class ApiKey:
    """A key's record, without its secret."""

    key_id: str
    name: str
    programmes: tuple[str, ...]
    may_act_as: tuple[Role, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_from: str | None

    def valid_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "valid"

    def to_json(self, now: datetime) -> dict[str, object]:
        def moment(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "key_id": self.key_id,
            "name": self.name,
            "programmes": list(self.programmes),
            "may_act_as": list(self.may_act_as),
            "status": self.status(now),
            "created_at": moment(self.created_at),
            "expires_at": moment(self.expires_at),
            "revoked_at": moment(self.revoked_at),
            "last_used_at": moment(self.last_used_at),
            "rotated_from": self.rotated_from,
        }


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        name=row["name"],
        programmes=tuple(row["programmes"]),
        may_act_as=tuple(row["may_act_as"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        rotated_from=row["rotated_from"],
    )


def key_id_of(presented: str) -> str | None:
    """The key id of something that looks like one of our keys, else None."""
    if not presented.startswith(KEY_PREFIX):
        return None
    rest = presented[len(KEY_PREFIX) :]
    key_id, separator, secret = rest[:_KEY_ID_LENGTH], rest[_KEY_ID_LENGTH : _KEY_ID_LENGTH + 1], rest[_KEY_ID_LENGTH + 1 :]
    if separator != "_" or len(secret) < 32 or any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id


def _check_scopes(programmes: Sequence[str], may_act_as: Sequence[str]) -> None:
    if not programmes:
        raise ApiKeyError("a key needs at least one programme (or * for every programme)")
    for programme in programmes:
        if programme != ALL_PROGRAMMES and (not programme or any(c.isspace() or c in "'\\," for c in programme)):
            raise ApiKeyError(f"programme {programme!r} is not a programme id")
    unknown = [role for role in may_act_as if role not in ROLES]
    if unknown:
        raise ApiKeyError(f"may act as: {', '.join(unknown)} is not one of {', '.join(ROLES)} (none: read only)")


@dataclass
class _Verified:
    """A key this store verified: its keyed hash, its record, and when (time.monotonic())
    PostgreSQL last confirmed it and this store last recorded its use."""

    secret_hash: bytes
    key: ApiKey
    confirmed: float
    use_recorded: float


class ApiKeyStore:
    def __init__(self, pool: asyncpg.Pool, server_secret: bytes, *, cache_seconds: float = 0.0):
        if len(server_secret) < 32:
            raise ApiKeyError("the server secret needs at least 32 bytes")
        self._pool = pool
        self._secret = server_secret
        self._cache_seconds = cache_seconds
        self._verified: OrderedDict[str, _Verified] = OrderedDict()

    def _hash(self, presented: str) -> bytes:
        return hmac.new(self._secret, presented.encode(), hashlib.sha256).digest()

    async def create(
        self,
        name: str,
        programmes: Sequence[str],
        may_act_as: Sequence[str] = (),
        *,
        expires_at: datetime | None = None,
        rotated_from: str | None = None,
        connection: asyncpg.Connection | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key: its record and the key itself (shown once, stored only as a keyed hash)."""
        if not name.strip() or len(name) > 200:
            raise ApiKeyError("a key needs a name of 1 to 200 characters (who uses it, e.g. hr-portal)")
        _check_scopes(programmes, may_act_as)
        if expires_at is not None and expires_at.tzinfo is None:
            raise ApiKeyError("an expiry needs a time zone")
        key_id = secrets.token_hex(_KEY_ID_LENGTH // 2)
        presented = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        row = await (connection or self._pool).fetchrow(
            f"""INSERT INTO api_keys (key_id, name, secret_hash, programmes, may_act_as, expires_at, rotated_from)
                VALUES ($1, $2, $3, $4::text[], $5::text[], $6, $7) RETURNING {_COLUMNS}""",
            key_id, name, self._hash(presented), list(dict.fromkeys(programmes)),
            [role for role in ROLES if role in may_act_as], expires_at, rotated_from,
        )  # fmt: skip
        assert row is not None
        return _key(row), presented

    async def get(self, key_id: str) -> ApiKey | None:
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = $1", key_id)
        return None if row is None else _key(row)

    async def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM api_keys {where} ORDER BY name, created_at")
        return [_key(row) for row in rows]

    async def revoke(self, key_id: str) -> tuple[ApiKey, bool]:
        """Revoke at once; returns the key and whether this call revoked it (False: it already was)."""
        self._verified.pop(key_id, None)
        row = await self._pool.fetchrow(
            f"UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL RETURNING {_COLUMNS}",
            key_id,
        )
        if row is not None:
            return _key(row), True
        key = await self.get(key_id)
        if key is None:
            raise ApiKeyError(f"there is no API key {key_id}")
        return key, False

    async def rotate(self, key_id: str, *, grace: timedelta) -> tuple[ApiKey, str, ApiKey]:
        """A new key with the old one's name and scopes; the old one stays valid for `grace`
        (or until its own earlier expiry). Returns (new key, its secret, old key)."""
        if grace < timedelta(0):
            raise ApiKeyError("the grace period cannot be negative")
        self._verified.pop(key_id, None)
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = $1 FOR UPDATE", key_id)
            if row is None:
                raise ApiKeyError(f"there is no API key {key_id}")
            old = _key(row)
            now = datetime.now(UTC)
            if not old.valid_at(now):
                raise ApiKeyError(f"API key {key_id} is {old.status(now)}: create a new one instead")
            new, presented = await self.create(
                old.name, old.programmes, old.may_act_as, expires_at=None, rotated_from=old.key_id, connection=connection
            )
            ends = now + grace if old.expires_at is None else min(old.expires_at, now + grace)
            row = await connection.fetchrow(
                f"UPDATE api_keys SET expires_at = $2 WHERE key_id = $1 RETURNING {_COLUMNS}", key_id, ends
            )
            assert row is not None
            return new, presented, _key(row)

    async def verify(self, presented: str) -> ApiKey | None:
        """The key's record if `presented` is a valid key now (known, not revoked, not
        expired), else None. Also records its use (at most once a minute)."""
        key_id = key_id_of(presented)
        expected = self._hash(presented)  # computed whatever the key id, for even timing
        if key_id is None:
            return None
        now = time.monotonic()
        known = self._verified.get(key_id)
        if known is not None and now - known.confirmed < self._cache_seconds and hmac.compare_digest(
            known.secret_hash, expected
        ):
            self._verified.move_to_end(key_id)
        else:
            # A wrong secret for a cached key id is looked up too: its answer takes as long as
            # an unknown key id's, whatever this replica has seen.
            known = await self._confirm(key_id, expected, now)
            if known is None:
                return None
        if not known.key.valid_at(datetime.now(UTC)):
            self._verified.pop(key_id, None)
            return None
        if now - known.use_recorded >= LAST_USE_RESOLUTION.total_seconds():
            known.use_recorded = now
            await self._pool.execute(
                """UPDATE api_keys SET last_used_at = now()
                    WHERE key_id = $1 AND (last_used_at IS NULL OR last_used_at < now() - $2::interval)""",
                key_id, LAST_USE_RESOLUTION,
            )  # fmt: skip
        return known.key

    async def _confirm(self, key_id: str, expected: bytes, now: float) -> _Verified | None:
        """The key's row, if its keyed hash is `expected` (kept for `cache_seconds`)."""
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE key_id = $1", key_id)
        stored = bytes(row["secret_hash"]) if row is not None else hmac.new(b"\x00" * 32, b"", hashlib.sha256).digest()
        if not hmac.compare_digest(stored, expected) or row is None:
            if row is None:
                self._verified.pop(key_id, None)
            return None
        key = _key(row)
        # Its last use as stored (by any replica): recorded again once that is a minute old.
        age = (datetime.now(UTC) - key.last_used_at).total_seconds() if key.last_used_at else float("inf")
        known = _Verified(stored, key, confirmed=now, use_recorded=now - age)
        if self._cache_seconds > 0:
            self._verified[key_id] = known
            while len(self._verified) > MAX_CACHED_KEYS:
                self._verified.popitem(last=False)
        return known
