"""Whether a link may be used now, and what for: checked on every request, GET or POST.

In this order, each answered with a page that says what to do instead (never an id, never a
stack trace): the token itself (shape, key, signature, expiry: `mentorflow.action_links`),
the person (still in the directory and not left), the relationship (not forgotten, still
there, and the person still one of its two people). Only then is the link's page shown.

A link to stop a kind of email (`Purpose.MUTE`) is about its person alone, who may be a
coordinator and not a party, or get the programme's digest: it is checked for the token, the
person and a forgotten relationship (`open_mute`), not against the relationship's state.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from activities.templates import recipient_zone
from events.people import Participant
from events.refusals import RefusalCode
from events.state import RelationshipState
from mentorflow.action_links import ActionLink, LinkRefused, Purpose, verify
from mentorflow.api.app import ApiContext
from mentorflow.api.problems import ApiProblem
from mentorflow.pages.views import Reader

CSRF_PURPOSE = "mentorflow page forms v1"
NONCE_BYTES = 24
# What `new_nonce` makes: anything else in the cookie is replaced, never echoed into a page.
_NONCE = re.compile(rf"[A-Za-z0-9_-]{{{(NONCE_BYTES * 4 + 2) // 3}}}")
ASK_FOR_NEW = "Every new email about your mentoring carries fresh links; your programme coordinator can help too."


class Refusal(Exception):
    """A link that cannot be used: the page's title, what to do instead, the status, and a
    short reason (for the audit and the logs)."""

    def __init__(self, title: str, message: str, status: int, reason: str) -> None:
        super().__init__(title)
        self.title, self.message, self.status, self.reason = title, message, status, reason

    def again(self) -> Refusal:
        return Refusal(self.title, self.message, self.status, self.reason)


@dataclass(frozen=True)
class Opened:
    token: str
    link: ActionLink
    state: RelationshipState
    reader: Reader


_TOKEN_REFUSALS = {
    "malformed": Refusal("This link is incomplete", "It may have been cut when it was copied. Open it from the email "
                         "again, or copy all of it.", 400, "malformed"),  # fmt: skip
    "unknown_key": Refusal("This link is no longer valid", ASK_FOR_NEW, 403, "unknown_key"),
    "bad_signature": Refusal("This link is not valid", "It was changed after it was sent. Open it from the email "
                             "itself. " + ASK_FOR_NEW, 403, "bad_signature"),  # fmt: skip
    "expired": Refusal("This link has expired", "Links in emails work for a limited time. " + ASK_FOR_NEW, 410, "expired"),
}
GONE = Refusal("This link is no longer valid", "It belongs to someone who is no longer in the programme, or to a "
               "relationship that has been removed. Your programme coordinator can help.", 410, "revoked")  # fmt: skip
NOT_YOURS = Refusal("This link is no longer valid", "This page is only for the mentee and the mentor of the "
                    "relationship, and you are not (or no longer) one of them. Your programme coordinator can help.",
                    410, "not_a_party")  # fmt: skip
NOT_COORDINATOR = Refusal("This link is no longer valid", "This page is only for the coordinators of the "
                          "relationship's programme, and you are not (or no longer) one of them.", 410,
                          "not_a_coordinator")  # fmt: skip
BUSY = Refusal("Please try again in a minute", "We could not reach your mentoring relationship just now. Nothing "
               "was changed.", 503, "unavailable")  # fmt: skip


def check_token(context: ApiContext, token: str, now: datetime) -> ActionLink:
    assert context.keyring is not None
    try:
        return verify(context.keyring, token, now=now)
    except LinkRefused as refused:
        raise _TOKEN_REFUSALS[refused.reason].again() from None


@dataclass(frozen=True)
class OpenedMute:
    """A link to stop one kind of email (its template is the link's subject), and its person."""

    token: str
    link: ActionLink
    person: Participant


async def _person(context: ApiContext, link: ActionLink) -> Participant:
    """The link's person, still in the directory, of a relationship not forgotten."""
    person = await context.directory.get_participant(link.person_id)
    if person is None or person.status == "left":
        raise GONE.again()
    forgotten = await context.pool.fetchval(
        "SELECT forgotten_at IS NOT NULL FROM data_keys WHERE stream_id = $1", link.relationship_id
    )
    if forgotten:
        raise GONE.again()
    return person


async def open_any(context: ApiContext, token: str, now: datetime) -> Opened | OpenedMute:
    """`open_link`, or for a link to stop a kind of email, its person alone."""
    link = check_token(context, token, now)
    if link.purpose is Purpose.MUTE:
        return OpenedMute(token, link, await _person(context, link))
    return await open_link(context, token, now, link)


async def open_link(context: ApiContext, token: str, now: datetime, link: ActionLink | None = None) -> Opened:
    """The link, its relationship's state and its reader; `Refusal` when it may not be used."""
    link = link or check_token(context, token, now)
    person = await _person(context, link)
    try:
        state = await context.state_of(link.programme_id, link.relationship_id)
    except ApiProblem as problem:
        if problem.code == RefusalCode.NOT_FOUND:
            raise GONE.again() from None
        raise BUSY.again() from None
    if state.version == 0:
        raise BUSY.again()
    if link.purpose is Purpose.NUDGE:
        # A coordinator's link (from the digest): the relationship's coordinators, as it knows them.
        if link.person_id not in state.settings.coordinator_ids:
            raise NOT_COORDINATOR.again()
    elif link.person_id not in state.participant_ids():
        raise NOT_YOURS.again()
    others = [p for p in state.participant_ids() if p != link.person_id]
    people: dict[str, Participant] = {p.participant_id: p for p in await context.directory.get_participants(others)}
    return Opened(token, link, state, Reader(person, recipient_zone(person), people))


def csrf_key(context: ApiContext) -> bytes:
    assert context.keyring is not None
    return context.keyring.derived_key(context.keyring.active_key_id, CSRF_PURPOSE)


def csrf_field(context: ApiContext, token: str, nonce: str) -> str:
    """The form's CSRF value: bound to the link and to the nonce in the browser's cookie."""
    return hmac.new(csrf_key(context), f"{token}\x00{nonce}".encode(), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(NONCE_BYTES)


def kept_nonce(cookie: str | None) -> str | None:
    """The nonce of the browser's form cookie, when it is one `new_nonce` made: reused, so that
    opening the link again (another tab, a reload) keeps a form already open valid."""
    return cookie if cookie is not None and _NONCE.fullmatch(cookie) else None


def csrf_cookie_name(token: str) -> str:
    return "mf_form_" + hashlib.sha256(token.encode()).hexdigest()[:16]


def csrf_valid(context: ApiContext, token: str, nonce: str | None, given: str | None) -> bool:
    if not nonce or not given:
        return False
    return hmac.compare_digest(given, csrf_field(context, token, nonce))
