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
        # One statement, one round trip (issue #16: every email is claimed): `before` locks and
        # reads the row as it is, if there is one; `taken` inserts it, or takes over a failed
        # delivery or a claim whose lease has run out. Nothing taken: settled, or busy (also
        # when another attempt inserted the row between our read and our insert).
        row = await self._pool.fetchrow(
            """WITH before AS (
                   SELECT status, first_attempt_at, attempts FROM notification_deliveries
                    WHERE notification_id = $1 AND channel = $2 AND destination = $3
                      FOR UPDATE
               ), taken AS (
                   INSERT INTO notification_deliveries AS d
                          (notification_id, channel, destination, relationship_id, recipient_id, template,
                           status, claim_token, claimed_until)
                   VALUES ($1, $2, $3, $4, $5, $6, 'sending', $7, clock_timestamp() + $8::interval)
                   ON CONFLICT (notification_id, channel, destination) DO UPDATE
                      SET status = 'sending', claim_token = EXCLUDED.claim_token,
                          claimed_until = EXCLUDED.claimed_until, attempts = d.attempts + 1,
                          last_attempt_at = clock_timestamp()
                    WHERE d.status NOT IN ('delivered', 'rejected')
                      AND (d.status <> 'sending' OR (d.claimed_until > clock_timestamp()) IS NOT TRUE)
                   RETURNING d.first_attempt_at, d.attempts
               )
               SELECT before.status, before.first_attempt_at AS first_before, before.attempts AS attempts_before,
                      taken.first_attempt_at, taken.attempts
                 FROM (SELECT 1) AS one
                 LEFT JOIN before ON true
                 LEFT JOIN taken ON true""",
            key.notification_id,
            key.channel,
            key.destination,
            notification.relationship_id,
            notification.recipient_id,
            notification.template,
            uuid.UUID(token),
            self._lease,
        )
        assert row is not None
        if row["attempts"] is not None:
            # Claimed: a new row, or taken over (a 'sending' one was interrupted: it may have gone out).
            return Claim("claimed", row["first_attempt_at"], row["attempts"], row["status"] == "sending")
        if row["status"] in ("delivered", "rejected"):
            return Claim(row["status"], row["first_before"], row["attempts_before"])
        if row["status"] is None:
            return Claim("busy")  # another attempt claimed it between our read and our insert
        return Claim("busy", row["first_before"], row["attempts_before"])

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
