"""Per-relationship data keys for the confidential text in the event store.

Each relationship (event stream) gets a random 256-bit data key the first time one of its
events carries confidential text (`events/sensitivity.py`). The key is stored in
`data_keys` wrapped (AES-GCM) by the active key of `MENTORFLOW_ENCRYPTION_KEYS`, and each
confidential value in a stored payload is replaced by `{"$enc": "<base64>"}`, so the JSON
keeps its shape and every other field stays readable. `mentorflow forget` deletes the
wrapped key: those values can then never be decrypted again (crypto-shredding), and the
store reads them back as "[forgotten]".

Field encryption is deterministic on purpose. The store recognises a retried append by
comparing the stored payload with the new one (migration 0005), so the same text at the
same place must encrypt to the same bytes. The nonce is therefore synthetic, as in SIV
modes: an HMAC of the place (stream, version, field path) and of the text itself, under a
key derived from the data key. The same nonce thus only ever comes with the same text,
which is what AES-GCM needs; the one thing revealed is that a value is a repeat of
itself. The place is also the associated data, so a value moved to another event or field
does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from events.sensitivity import ITEM
from mentorflow.keyring import DecryptionError, Keyring, UnknownKeyError, generate_key

ENCRYPTED = "$enc"
# What a confidential value reads as once its relationship's key is deleted.
FORGOTTEN = "[forgotten]"
# What it reads as through a store that was given no keyring (reports, tools).
SEALED = "[encrypted]"
_NONCE_BYTES = 12


class DataKeyError(RuntimeError):
    """Confidential text cannot be stored or read: no keyring, or data that does not decrypt."""


def field_aad(stream_id: str, version: int, location: Sequence[str | int]) -> bytes:
    """The associated data of one value: where it belongs (stream, event version, field path)."""
    return "\x1f".join([stream_id, str(version), ".".join(str(step) for step in location)]).encode()


class StreamCipher:
    """Deterministic authenticated encryption of one relationship's confidential text."""

    def __init__(self, data_key: bytes):
        # Separate keys for the cipher and the nonce derivation, both from the data key.
        self._aead = AESGCM(hmac.digest(data_key, b"mentorflow field encryption", hashlib.sha256))
        self._nonce_key = hmac.digest(data_key, b"mentorflow field nonce", hashlib.sha256)

    def seal(self, text: str, aad: bytes) -> str:
        plaintext = text.encode()
        nonce = hmac.digest(self._nonce_key, aad + b"\x00" + plaintext, hashlib.sha256)[:_NONCE_BYTES]
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext, aad)).decode("ascii")

    def open(self, token: str, aad: bytes) -> str:
        blob = base64.b64decode(token)
        return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad).decode()


Location = tuple[str | int, ...]


def locations(payload: dict[str, Any], path: Sequence[str]) -> Iterator[tuple[Any, str | int, Location]]:
    """(container, key, concrete location) of every value at `path` ("*" = each list item)."""

    def walk(node: Any, rest: Sequence[str], where: Location) -> Iterator[tuple[Any, str | int, Location]]:
        step, tail = rest[0], rest[1:]
        if step == ITEM:
            if isinstance(node, list):
                for index, item in enumerate(node):
                    if tail:
                        yield from walk(item, tail, (*where, index))
                    else:
                        yield node, index, (*where, index)
        elif isinstance(node, dict) and step in node:
            if tail:
                yield from walk(node[step], tail, (*where, step))
            else:
                yield node, step, (*where, step)

    yield from walk(payload, path, ())


def has_text(event: object, paths: Sequence[Sequence[str]]) -> bool:
    """Whether any confidential place of an event holds a non-empty text (empty ones are
    stored as they are). Reads the model itself: most events with such places have none."""

    def walk(node: Any, rest: Sequence[str]) -> bool:
        if not rest:
            return isinstance(node, str) and bool(node)
        if rest[0] == ITEM:
            return isinstance(node, (list, tuple)) and any(walk(item, rest[1:]) for item in node)
        return walk(getattr(node, rest[0], None), rest[1:])

    return any(walk(event, path) for path in paths)


def seal_payload(
    payload: dict[str, Any], paths: Sequence[Sequence[str]], stream_id: str, version: int, cipher: StreamCipher | None
) -> None:
    """Encrypt every non-empty confidential text in place; None (a forgotten key) stores FORGOTTEN."""
    for path in paths:
        for container, key, where in locations(payload, path):
            text = container[key]
            if isinstance(text, str) and text:
                sealed = cipher.seal(text, field_aad(stream_id, version, where)) if cipher else None
                container[key] = {ENCRYPTED: sealed} if sealed else FORGOTTEN


def open_payload(
    payload: dict[str, Any], stream_id: str, version: int, cipher: StreamCipher | None, unreadable: str
) -> None:
    """Decrypt every sealed value in place, wherever it is; without a cipher they read as `unreadable`.

    Found by shape rather than by the current schema's paths: an event stored under an older
    schema version is decrypted first and upcast afterwards, like any other."""

    def visit(node: Any, where: Location) -> Any:
        if isinstance(node, dict):
            if len(node) == 1 and isinstance(node.get(ENCRYPTED), str):
                return decrypt(node[ENCRYPTED], where)
            for key, value in node.items():
                node[key] = visit(value, (*where, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                node[index] = visit(value, (*where, index))
        return node

    def decrypt(token: str, where: Location) -> str:
        if cipher is None:
            return unreadable
        try:
            return cipher.open(token, field_aad(stream_id, version, where))
        except (InvalidTag, ValueError):
            location = ".".join(str(step) for step in where)
            raise DataKeyError(
                f"{location} of event {stream_id}@{version} does not decrypt with the relationship's "
                "data key: the stored value was altered or moved"
            ) from None

    visit(payload, ())


def _wrap_aad(stream_id: str) -> bytes:
    return b"mentorflow data key\x00" + stream_id.encode()


class DataKeys:
    """Creates, unwraps and caches the data keys of a database's streams."""

    def __init__(self, pool: asyncpg.Pool, keyring: Keyring | None, cache_size: int = 10_000):
        self._pool = pool
        self._keyring = keyring
        self._cache_size = cache_size
        # (stream id, key id, wrapped key) -> cipher: unwrapping once per stream and process.
        self._unwrapped: OrderedDict[tuple[str, str, bytes], StreamCipher] = OrderedDict()
        # stream id -> cipher, for appends (a stream's key never changes, it is only deleted).
        self._for_append: OrderedDict[str, StreamCipher] = OrderedDict()

    @property
    def keyring(self) -> Keyring | None:
        return self._keyring

    def _require_keyring(self) -> Keyring:
        if self._keyring is None:
            raise DataKeyError(
                "the event store was opened without MENTORFLOW_ENCRYPTION_KEYS: it cannot store confidential text"
            )
        return self._keyring

    async def for_append(
        self, stream_id: str, *, before_creating: Callable[[], Awaitable[object]] | None = None
    ) -> StreamCipher | None:
        """The stream's cipher, creating its key if it has none; None once it was forgotten.

        `before_creating` runs first whenever the key is not cached (the event store checks
        there that the stream is the appender's: a refused append must not leave a key)."""
        cached = self._for_append.get(stream_id)
        if cached is not None:
            return cached
        keyring = self._require_keyring()
        if before_creating is not None:
            await before_creating()
        kek_id, wrapped = keyring.encrypt(generate_key(), _wrap_aad(stream_id))
        # Concurrent first appends race here: the insert that loses returns nothing (it
        # waits for the winner to commit), and the select, a new statement, then sees it.
        row = await self._pool.fetchrow(
            """INSERT INTO data_keys (stream_id, wrapped_key, kek_id) VALUES ($1, $2, $3)
               ON CONFLICT (stream_id) DO NOTHING RETURNING wrapped_key, kek_id""",
            stream_id,
            wrapped,
            kek_id,
        )
        if row is None:
            row = await self._pool.fetchrow("SELECT wrapped_key, kek_id FROM data_keys WHERE stream_id = $1", stream_id)
        cipher = self.from_row(stream_id, row["wrapped_key"], row["kek_id"]) if row else None
        if cipher is not None:
            self._remember(self._for_append, stream_id, cipher)
        return cipher

    async def for_rewrite(self, connection: asyncpg.Connection, stream_id: str) -> StreamCipher | None:
        """Inside `connection`'s transaction: the stream's cipher, its `data_keys` row created if
        missing and locked until the transaction ends (a concurrent `mentorflow forget` waits for
        it, and it for `forget`); None when the relationship was forgotten. For the one-off
        re-encryption of text stored in plain (mentorflow/reencrypt.py)."""
        keyring = self._require_keyring()
        query = "SELECT wrapped_key, kek_id FROM data_keys WHERE stream_id = $1 FOR UPDATE"
        row = await connection.fetchrow(query, stream_id)
        if row is None:
            kek_id, wrapped = keyring.encrypt(generate_key(), _wrap_aad(stream_id))
            await connection.execute(
                "INSERT INTO data_keys (stream_id, wrapped_key, kek_id) VALUES ($1, $2, $3) ON CONFLICT (stream_id) DO NOTHING",
                stream_id,
                wrapped,
                kek_id,
            )
            row = await connection.fetchrow(query, stream_id)
        return self.from_row(stream_id, row["wrapped_key"], row["kek_id"])

    def from_row(self, stream_id: str, wrapped: bytes | None, kek_id: str | None) -> StreamCipher | None:
        """The cipher for a stored (wrapped key, key id); None when the key was forgotten."""
        if wrapped is None or kek_id is None:
            return None
        slot = (stream_id, kek_id, bytes(wrapped))
        cached = self._unwrapped.get(slot)
        if cached is not None:
            return cached
        try:
            data_key = self._require_keyring().decrypt(kek_id, slot[2], _wrap_aad(stream_id))
        except (UnknownKeyError, DecryptionError) as error:
            # Not an append's fault: a configuration to fix (the activity retries meanwhile).
            raise DataKeyError(f"the data key of relationship {stream_id} cannot be unwrapped: {error}") from None
        cipher = StreamCipher(data_key)
        self._remember(self._unwrapped, slot, cipher)
        return cipher

    def _remember(self, cache: OrderedDict[Any, StreamCipher], key: Any, cipher: StreamCipher) -> None:
        cache[key] = cipher
        if len(cache) > self._cache_size:
            cache.popitem(last=False)

    def drop(self, stream_id: str) -> None:
        """Forget a stream's cached key in this process (after `mentorflow forget`)."""
        self._for_append.pop(stream_id, None)
