"""The payload codec: every Temporal payload mentorflow writes is encrypted with the keyring.

Format (see docs/confidentiality.md, so that clients in other languages can do the same):
an encrypted payload has the metadata ``encoding: binary/encrypted`` and
``encryption-key-id: <key id>``, and its data is ``nonce (12 bytes) || AES-256-GCM
ciphertext+tag`` of the serialized inner ``temporal.api.common.v1.Payload`` protobuf (no
associated data). Decoding passes every payload without ``binary/encrypted`` through
unchanged, so a plain-JSON client can still send commands.

The size limit refuses an outbound payload whose serialized inner payload is larger than
`max_payload_bytes`, before anything is sent. Only clients that send commands set it: a
limit in a worker would turn a large result or continue-as-new state into a workflow task
that fails and retries forever (see docs/confidentiality.md, "Size limit").
"""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from mentorflow.keyring import Keyring

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024


class PayloadTooLargeError(ValueError):
    """An outbound payload over the configured limit; nothing was sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"payload of {size} bytes is over the limit of {limit} bytes (MENTORFLOW_MAX_PAYLOAD_BYTES); "
            "nothing was sent: shorten the command's text fields"
        )
        self.size = size
        self.limit = limit


class PayloadDecodeError(ValueError):
    """An encrypted payload that cannot be decrypted (missing key id, wrong key, corrupted)."""


class EncryptionCodec(PayloadCodec):
    """AES-GCM with key ids from a `Keyring`; optionally refuses payloads over a size limit."""

    def __init__(self, keyring: Keyring, *, max_payload_bytes: int | None = None) -> None:
        if max_payload_bytes is not None and max_payload_bytes <= 0:
            raise ValueError("max_payload_bytes must be positive")
        self.keyring = keyring
        self.max_payload_bytes = max_payload_bytes

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        inner = payload.SerializeToString(deterministic=True)
        if self.max_payload_bytes is not None and len(inner) > self.max_payload_bytes:
            raise PayloadTooLargeError(len(inner), self.max_payload_bytes)
        key_id, blob = self.keyring.encrypt(inner)
        return Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()}, data=blob)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        raw_key_id = payload.metadata.get(KEY_ID_METADATA)
        if not raw_key_id:
            raise PayloadDecodeError(f"an encrypted payload has no {KEY_ID_METADATA} metadata")
        # UnknownKeyError / DecryptionError name the key id; neither shows key material.
        inner = Payload()
        inner.ParseFromString(self.keyring.decrypt(raw_key_id.decode("utf-8", "replace"), payload.data))
        return inner


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING
