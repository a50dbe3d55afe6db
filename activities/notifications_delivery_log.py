"""The delivery log: every delivery of a notification, claimed before it is sent and
marked right after, in `notification_deliveries` (migrations/0003_deliveries.sql).

A delivery is recorded under (notification id, channel, destination), where the
destination is a digest of the address (so a participant with two webhooks gets both, and
an address changed between two attempts gets what the old one did not). Because a delivery
is claimed before it is sent and marked delivered right after, an activity retry never
sends again what was recorded as delivered. A claim is a lease: a retry that finds a live
claim of an attempt that may still be running leaves it alone and asks Temporal to retry
later.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

import asyncpg

from events.notifications import Notification


@dataclass(frozen=True)
class DeliveryKey:
    notification_id: str
    channel: str
    destination: str  # a digest of the address, so the log holds no addresses


@dataclass(frozen=True)
class Claim:
    # claimed: ours to send. delivered/rejected: settled earlier. busy: another attempt
    # holds a live claim.
    state: Literal["claimed", "delivered", "rejected", "busy"]
    first_attempt_at: datetime | None = None
    attempts: int = 0
    # An earlier attempt claimed it and never reported back: it may have gone out.
    interrupted: bool = False


class DeliveryLog(Protocol):
    async def claim(self, key: DeliveryKey, notification: Notification, token: str) -> Claim: ...

    async def delivered(self, key: DeliveryKey) -> None: ...

    async def failed(self, key: DeliveryKey, token: str, error: str, *, permanent: bool) -> None: ...


class PostgresDeliveryLog:
    """The delivery log in `notification_deliveries`; see migrations/0003_deliveries.sql."""

    def __init__(self, pool: asyncpg.Pool, *, lease: timedelta = timedelta(minutes=2)):
        # Longer than one send can take (SEND_TIMEOUT, activities/notifications.py), so a live
        # claim means a live attempt.
        self._pool = pool
        self._lease = lease

    async def claim(self, key: DeliveryKey, notification: Notification, token: str) -> Claim:
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                """SELECT status, claimed_until > clock_timestamp() AS leased, first_attempt_at, attempts
                     FROM notification_deliveries
                    WHERE notification_id = $1 AND channel = $2 AND destination = $3
                      FOR UPDATE""",
                key.notification_id,
                key.channel,
                key.destination,
            )
            if row is None:
                first = await connection.fetchval(
                    """INSERT INTO notification_deliveries
                           (notification_id, channel, destination, relationship_id, recipient_id, template,
                            status, claim_token, claimed_until)
                       VALUES ($1, $2, $3, $4, $5, $6, 'sending', $7, clock_timestamp() + $8::interval)
                       ON CONFLICT DO NOTHING
                       RETURNING first_attempt_at""",
                    key.notification_id,
                    key.channel,
                    key.destination,
                    notification.relationship_id,
                    notification.recipient_id,
                    notification.template,
                    uuid.UUID(token),
                    self._lease,
                )
                # Nothing inserted: another attempt claimed it between our read and our insert.
                return Claim("claimed", first, 1) if first is not None else Claim("busy")
            if row["status"] in ("delivered", "rejected"):
                return Claim(row["status"], row["first_attempt_at"], row["attempts"])
            if row["status"] == "sending" and row["leased"]:
                return Claim("busy", row["first_attempt_at"], row["attempts"])
            await connection.execute(
                """UPDATE notification_deliveries
                      SET status = 'sending', claim_token = $4, claimed_until = clock_timestamp() + $5::interval,
                          attempts = attempts + 1, last_attempt_at = clock_timestamp()
                    WHERE notification_id = $1 AND channel = $2 AND destination = $3""",
                key.notification_id,
                key.channel,
                key.destination,
                uuid.UUID(token),
                self._lease,
            )
            return Claim("claimed", row["first_attempt_at"], row["attempts"] + 1, row["status"] == "sending")

    async def delivered(self, key: DeliveryKey) -> None:
        # Whoever holds the claim now: the message went out, that is what counts.
        await self._pool.execute(
            """UPDATE notification_deliveries
                  SET status = 'delivered', delivered_at = clock_timestamp(), claim_token = NULL,
                      claimed_until = NULL, last_error = NULL
                WHERE notification_id = $1 AND channel = $2 AND destination = $3""",
            key.notification_id,
            key.channel,
            key.destination,
        )

    async def failed(self, key: DeliveryKey, token: str, error: str, *, permanent: bool) -> None:
        await self._pool.execute(
            """UPDATE notification_deliveries
                  SET status = $5, claim_token = NULL, claimed_until = NULL, last_error = $6
                WHERE notification_id = $1 AND channel = $2 AND destination = $3 AND claim_token = $4
                  AND status = 'sending'""",
            key.notification_id,
            key.channel,
            key.destination,
            uuid.UUID(token),
            "rejected" if permanent else "failed",
            error[:500],
        )
