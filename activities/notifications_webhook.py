"""The `webhook` channel: an HTTP POST per Standard Webhooks, signed with HMAC-SHA256."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from datetime import UTC

import httpx

from activities.notifications_channels import Delivery, DeliveryRejected
from events.people import ChannelKind


class WebhookChannel:
    """Webhooks signed per the Standard Webhooks spec (https://www.standardwebhooks.com/).

    POSTs a JSON body with `webhook-id` (the same on every retry), `webhook-timestamp`
    (Unix seconds of this attempt) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of
    "{id}.{timestamp}.{body}">` under each signing secret (several while rotating).
    """

    kind: ChannelKind = "webhook"

    def __init__(self, secrets: Sequence[str], *, timeout: float = 10.0):
        if not secrets:
            raise ValueError("a webhook channel needs at least one signing secret")
        self._keys = [webhook_key(secret) for secret in secrets]
        self._timeout = timeout
        # httpx's own default trust, built once: a client per delivery keeps one broken
        # connection from touching the next, but building the context with it cost each
        # delivery about 25 ms of CPU reading the certificate bundle.
        self._tls = httpx.create_ssl_context()

    def body(self, delivery: Delivery) -> bytes:
        notification, rendered = delivery.notification, delivery.message
        payload = {
            "type": f"mentoring.{notification.template}",
            "timestamp": delivery.first_attempt_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": {
                "notification_id": notification.notification_id,
                "relationship_id": notification.relationship_id,
                "recipient_id": notification.recipient_id,
                "template": notification.template,
                "parameters": notification.data,
                "subject": rendered.subject,
                "text": rendered.body,
            },
        }
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

    def headers(self, delivery_id: str, body: bytes, timestamp: int) -> dict[str, str]:
        signed = f"{delivery_id}.{timestamp}.".encode() + body
        signatures = " ".join(
            "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in self._keys
        )
        return {
            "content-type": "application/json",
            "user-agent": "mentorflow-webhooks",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures,
        }

    async def deliver(self, delivery: Delivery) -> None:
        if not delivery.address.startswith(("https://", "http://")):
            raise DeliveryRejected("the webhook address is not an http(s) URL")
        body = self.body(delivery)
        headers = self.headers(delivery.delivery_id, body, int(time.time()))
        try:
            async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, verify=self._tls) as client:
                response = await client.post(delivery.address, content=body, headers=headers)
        except httpx.InvalidURL:
            raise DeliveryRejected("the webhook address is not a valid URL") from None
        except httpx.UnsupportedProtocol:
            raise DeliveryRejected("the webhook address is not an http(s) URL") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in (408, 425, 429) or status >= 500:
            raise WebhookUnavailable(status)
        raise DeliveryRejected(f"HTTP {status}")


class WebhookUnavailable(Exception):
    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` signing secret."""
    encoded = secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if len(key) < 16:
        raise ValueError("a webhook secret needs at least 16 bytes (24 to 64 recommended)")
    return key
