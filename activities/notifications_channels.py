"""What a notification channel is, and the two that need no configuration: the log.

A `DeliveryChannel` (email, webhook, log) delivers one rendered message to one recipient's
address; a `NotificationChannel` sees every notification as it is, whoever it is for (the
development log, the tests' recorders). `activities/notifications.py` hands each delivery to
its channel; the email and webhook channels are in `notifications_email.py` and
`notifications_webhook.py`. Logs never show confidential parameters (`redacted`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from activities.templates import RenderedMessage, render
from events.notifications import Notification
from events.people import ChannelKind, Participant

log = logging.getLogger("mentorflow.notifications")


class DeliveryRejected(Exception):
    """The destination refused this message for good; sending it again cannot help."""


@dataclass(frozen=True)
class Delivery:
    """One message for one recipient on one channel, ready to go."""

    notification: Notification
    recipient: Participant
    # The email address or the webhook URL; empty for the log.
    address: str
    message: RenderedMessage
    # Stable across retries: the webhook-id, and the local part of the email's Message-ID.
    delivery_id: str
    # When this delivery was first attempted (from the delivery log): stable across retries.
    first_attempt_at: datetime
    # Other participants the notification names, for the texts.
    people: Mapping[str, Participant] = field(default_factory=dict)
    # The recipient's channel this message is for: the log delivers it in place of a channel
    # this worker has not configured ("email", "webhook"), and says so.
    meant_for: str = "log"


class DeliveryChannel(Protocol):
    """Delivers rendered messages to the participants' addresses of one kind.

    `deliver` returns once the destination has accepted the message, raises
    `DeliveryRejected` when it never will, and anything else when it may later.
    """

    kind: ChannelKind

    async def deliver(self, delivery: Delivery) -> None: ...


class NotificationChannel(Protocol):
    """Sees every notification as it is, whoever it is for: the development log, test recorders."""

    name: str

    async def send(self, notification: Notification) -> None: ...


# Template parameters that hold confidential text (security issue #12): the two parties see
# them in their messages, logs never do. events/notifications.py fills them from the state.
CONFIDENTIAL_PARAMETERS = frozenset({"explanation", "goal_title"})
REDACTED = "[confidential]"


def redacted(notification: Notification) -> Notification:
    """The notification with its confidential parameters replaced by REDACTED, for logs."""
    hidden = {key: REDACTED for key, value in notification.data.items() if key in CONFIDENTIAL_PARAMETERS and value}
    return notification.model_copy(update={"data": {**notification.data, **hidden}}) if hidden else notification


class LogChannel:
    """Writes each notification as one structured line (ids and parameters, confidential ones redacted)."""

    name = "log"

    async def send(self, notification: Notification) -> None:
        log.info("notification %s", json.dumps(redacted(notification).model_dump(mode="json"), sort_keys=True))


class LogDeliveryChannel:
    """The `log` channel: writes the rendered message to the log, for development. In place
    of a channel the worker has not configured it names that channel, so a message to someone
    with both email and a webhook reads as two deliveries, not as one sent twice."""

    kind: ChannelKind = "log"

    async def deliver(self, delivery: Delivery) -> None:
        notification = delivery.notification
        via = "log" if delivery.meant_for == "log" else f"{delivery.meant_for} (not configured: logged)"
        # Rendered again without the confidential parameters: a log is not the recipient.
        hidden = redacted(notification)
        message = delivery.message if hidden is notification else render(hidden, delivery.recipient, delivery.people)
        log.info(
            "message %s to %s via %s (%s): %s\n%s",
            notification.notification_id,
            notification.recipient_id,
            via,
            notification.template,
            message.subject,
            message.body,
        )
