"""The payload codec: every Temporal payload mentorflow writes is encrypted with the keyring.

Format (see docs/confidentiality.md, so that clients in other languages can do the same):
an encrypted payload has the metadata ``encoding: binary/encrypted`` and
``encryption-key-id: <key id>``, and its data is ``nonce (12 bytes) || AES-256-GCM
ciphertext+tag`` of the serialized inner ``temporal.api.common.v1.Payload`` protobuf (no
associated data). Decoding passes every payload without ``binary/encrypted`` through
unchanged, so a plain-JSON client can still send commands — unless the codec refuses plain
payloads (`refuse_plain`, a worker's MENTORFLOW_REFUSE_PLAIN_PAYLOADS): it then hands over,
in place of each one, the plain JSON ``{"$plain_payload_refused": true}``
(`events.refusals.PLAIN_PAYLOAD_REFUSED`), which the Relationship workflow refuses as
``invalid_payload``. It never raises for them: a start input that cannot be decoded would
fail the workflow task for ever, and a signal would be dropped with only a log line.

The size limit refuses an outbound payload whose serialized inner payload is larger than
`max_payload_bytes`, before anything is sent. Only clients that send commands set it: a
limit in a worker would turn a large result or continue-as-new state into a workflow task
that fails and retries forever (see docs/confidentiality.md, "Size limit").
"""

from __future__ import annotations

import json
from typing import Any
from collections.abc import Iterable, Sequence

from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent
from temporalio.converter import PayloadCodec

from events.refusals import PLAIN_PAYLOAD_REFUSED
from mentorflow.keyring import Keyring

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
def plain_payload_refused(original: Payload | None = None) -> Payload:
    """The plain JSON payload `{"$plain_payload_refused": true, "payload": …}`: the marker, and
    the original JSON (null when it was not JSON). The workflow refuses it in new runs, and
    goes on with the original where a run accepted it before refusing began (replay)."""
    data: Any = None
    if original is not None and original.metadata.get("encoding") == b"json/plain":
        try:
            data = json.loads(original.data)
        except ValueError:
            data = None
    marker = json.dumps({PLAIN_PAYLOAD_REFUSED: True, "payload": data}, separators=(",", ":")).encode()
    return Payload(metadata={"encoding": b"json/plain"}, data=marker)


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
    """AES-GCM with key ids from a `Keyring`; optionally refuses payloads over a size limit
    (a client's, on encode) and payloads that arrive unencrypted (a worker's, on decode)."""

    def __init__(
        self, keyring: Keyring, *, max_payload_bytes: int | None = None, refuse_plain: bool = False
    ) -> None:
        if max_payload_bytes is not None and max_payload_bytes <= 0:
            raise ValueError("max_payload_bytes must be positive")
        self.keyring = keyring
        self.max_payload_bytes = max_payload_bytes
        self.refuse_plain = refuse_plain

    def refusing_plain(self) -> EncryptionCodec:
        """The same codec, decoding every payload that arrived unencrypted to the refusal marker."""
        return EncryptionCodec(self.keyring, max_payload_bytes=self.max_payload_bytes, refuse_plain=True)

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
            # Not ours: a plain client's payload, as it was sent (and as Temporal stored it).
            return plain_payload_refused(payload) if self.refuse_plain else payload
        raw_key_id = payload.metadata.get(KEY_ID_METADATA)
        if not raw_key_id:
            raise PayloadDecodeError(f"an encrypted payload has no {KEY_ID_METADATA} metadata")
        # UnknownKeyError / DecryptionError name the key id; neither shows key material.
        inner = Payload()
        inner.ParseFromString(self.keyring.decrypt(raw_key_id.decode("utf-8", "replace"), payload.data))
        return inner


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING


def plain_payload_events(events: Iterable[HistoryEvent]) -> list[tuple[int, str]]:
    """(event id, what) of every command in a history that arrived unencrypted: the start
    input, signals, accepted updates. A worker that refuses plain payloads decides these
    differently from one that accepts them, also on replay: a run holding one must be
    replayed by workers with the setting it ran with (docs/confidentiality.md)."""
    found: list[tuple[int, str]] = []
    for event in events:
        if event.HasField("workflow_execution_started_event_attributes"):
            payloads, what = event.workflow_execution_started_event_attributes.input.payloads, "start input"
        elif event.HasField("workflow_execution_signaled_event_attributes"):
            attributes = event.workflow_execution_signaled_event_attributes
            payloads, what = attributes.input.payloads, f"signal {attributes.signal_name}"
        elif event.HasField("workflow_execution_update_accepted_event_attributes"):
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            payloads, what = request.input.args.payloads, f"update {request.input.name}"
        else:
            continue
        if any(not is_encrypted(payload) for payload in payloads):
            found.append((event.event_id, what))
    return found
