"""Signed action links: what a notification's "We met" or "Sign the agreement" link carries.

A link names one person, one relationship (in one programme), one purpose, and when it
expires; nothing confidential. It is signed with HMAC-SHA256 under a key derived from the
keyring's active key (`Keyring.derived_key`), and names that key, so a rotation keeps older
links working until they expire or their key leaves the keyring. Any change to any field —
another person, relationship, purpose, a later expiry — breaks the signature.

What a link cannot know — that its person was forgotten or left, that what it asks was
already answered — is checked when it is used, against the directory and the relationship.

A token is ``<base64url(JSON claims)>.<base64url(signature)>``; the JSON is compact with
sorted keys, so one set of claims has one token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from events.digest import digest_relationship_id, items_of
from mentorflow.keyring import Keyring

KEY_PURPOSE = "mentorflow action links v1"
DEFAULT_LIFETIME = timedelta(days=14)
MAX_TOKEN_CHARS = 1024


class Purpose(StrEnum):
    """What a link lets its person do; one purpose a link."""

    MEETING_OUTCOME = "meeting_outcome"
    FEEDBACK = "feedback"
    MATCH_ANSWER = "match_answer"
    SIGN_AGREEMENT = "sign_agreement"
    GOAL_REVISION = "goal_revision"
    REVIEW = "review"
    REFLECTION = "reflection"
    CONCERN = "concern"
    MY_RELATIONSHIP = "my_relationship"
    # Writing at length: the agreement (its subject: the version it changes, 0 for none yet) and
    # a change to a goal (`propose_agreement`, `propose_goal_revision`).
    PROPOSE_AGREEMENT = "propose_agreement"
    CHANGE_GOAL = "change_goal"
    MUTE = "mute"
    # A coordinator's, from the digest: send the reminder of what waits again (`nudge_relationship`).
    NUDGE = "nudge"


class LinkRefused(ValueError):
    """A token that must not be acted on. `reason` is one of: malformed, unknown_key,
    bad_signature, expired — each page that shows it says what to do instead."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ActionLink:
    person_id: str
    programme_id: str
    relationship_id: str
    purpose: Purpose
    expires_at: datetime
    # What the link was sent about (a meeting's start, a feedback round, an agreement
    # version): a link answers one question, and a later one gets a new link.
    subject: str = ""

    def command_id(self, choice: str) -> str:
        """The command id an action through this link sends with `choice`: a double click or a
        resubmitted form is the same command; another choice from the same email is another."""
        digest = hashlib.sha256(
            "\x1f".join([self.person_id, self.relationship_id, self.purpose, self.subject, choice]).encode()
        ).hexdigest()
        return f"link-{digest[:32]}"

    def claims(self, key_id: str) -> dict[str, str | int]:
        return {
            "k": key_id,
            "p": self.person_id,
            "g": self.programme_id,
            "r": self.relationship_id,
            "u": self.purpose.value,
            "s": self.subject,
            "e": int(self.expires_at.timestamp()),
        }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(keyring: Keyring, key_id: str, body: str) -> bytes:
    return hmac.new(keyring.derived_key(key_id, KEY_PURPOSE), body.encode(), hashlib.sha256).digest()


def sign(keyring: Keyring, link: ActionLink) -> str:
    """The token for `link`, signed with the keyring's active key."""
    claims = link.claims(keyring.active_key_id)
    body = _b64(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    return f"{body}.{_b64(_sign(keyring, keyring.active_key_id, body))}"


def verify(keyring: Keyring, token: str, *, now: datetime) -> ActionLink:
    """The link a token carries, or `LinkRefused` saying why not (checked in this order:
    shape, key, signature, expiry — nothing from an unsigned token is trusted)."""
    body, dot, signature = token.partition(".")
    if len(token) > MAX_TOKEN_CHARS or not dot or not body or not signature:
        raise LinkRefused("malformed", "this link is incomplete: it may have been cut when copied")
    try:
        claims = json.loads(_unb64(body))
        given = _unb64(signature)
        key_id = claims["k"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise LinkRefused("malformed", "this link is incomplete: it may have been cut when copied") from None
    if not isinstance(key_id, str) or key_id not in keyring:
        raise LinkRefused("unknown_key", "this link is no longer valid")
    if not hmac.compare_digest(given, _sign(keyring, key_id, body)):
        raise LinkRefused("bad_signature", "this link was changed after it was sent")
    try:
        link = ActionLink(
            person_id=str(claims["p"]),
            programme_id=str(claims["g"]),
            relationship_id=str(claims["r"]),
            purpose=Purpose(claims["u"]),
            subject=str(claims["s"]),
            expires_at=datetime.fromtimestamp(int(claims["e"]), UTC),
        )
    except (KeyError, ValueError, TypeError):
        raise LinkRefused("malformed", "this link is incomplete: it may have been cut when copied") from None
    if now >= link.expires_at:
        raise LinkRefused("expired", "this link has expired")
    return link


def new_link(
    person_id: str,
    programme_id: str,
    relationship_id: str,
    purpose: Purpose,
    *,
    now: datetime,
    subject: str = "",
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> ActionLink:
    if lifetime <= timedelta(0):
        raise ValueError("a link's lifetime must be positive")
    # Tokens carry whole seconds; the link says exactly what its token will.
    return ActionLink(person_id, programme_id, relationship_id, purpose, (now + lifetime).replace(microsecond=0), subject)


# -- which links a message carries ------------------------------------------------------------


@dataclass(frozen=True)
class LinkSpec:
    """One link of a message: its words, what it is for, what it is about, and what the page
    should start with (`query`: a choice already made in the email, e.g. ``score=4``)."""

    label: str
    purpose: Purpose
    subject: str = ""
    query: str = ""
    # A link about another relationship than the message's own (a digest's items).
    relationship_id: str = ""


# The words of the links that lead to the agreement and goal pages, in emails and on pages alike.
SIGN_LABEL = "Read and sign the agreement"
WRITE_AGREEMENT_LABEL = "Write the agreement"
CHANGE_AGREEMENT_LABEL = "Propose changes to the agreement"
CHANGE_GOAL_LABEL = "Propose a change to a goal"

# Messages only the coordinators get: the parties' own links make no sense there.
COORDINATOR_TEMPLATES = frozenset({"low_feedback", "concern_raised", "relationship_closed_early", "coordinator_digest"})
# Messages after which there is nothing left to do in the relationship.
FINAL_TEMPLATES = frozenset({"relationship_summary", "relationship_closed"})


def links_for(template: str, data: Mapping[str, str]) -> tuple[LinkSpec, ...]:
    """The links a message of `template` with `data` carries: what it asks its reader to do,
    then "My relationship" and "Raise a concern privately" (every message to a party)."""
    if template == "coordinator_digest":
        return digest_links(data)
    if template in COORDINATOR_TEMPLATES:
        return ()
    asked: list[LinkSpec] = []
    meeting = data.get("meeting_number", "")
    if template == "match_proposed" and data.get("mentor_id"):
        asked.append(LinkSpec("Accept or decline the match", Purpose.MATCH_ANSWER, data["mentor_id"]))
    elif template == "match_confirmed":
        asked.append(LinkSpec(WRITE_AGREEMENT_LABEL, Purpose.PROPOSE_AGREEMENT, "0"))
    elif template in ("agreement_proposed", "agreement_reminder") and (version := data.get("agreement_version", "")):
        asked.append(LinkSpec(SIGN_LABEL, Purpose.SIGN_AGREEMENT, version))
        # "… or propose changes": to the version the email is about.
        asked.append(LinkSpec(CHANGE_AGREEMENT_LABEL, Purpose.PROPOSE_AGREEMENT, version))
    elif template == "agreement_reminder":  # nothing proposed yet: there is only something to write
        asked.append(LinkSpec(WRITE_AGREEMENT_LABEL, Purpose.PROPOSE_AGREEMENT, "0"))
    elif template == "review_completed" and data.get("outcome") == "recalibrate":
        asked.append(LinkSpec(CHANGE_GOAL_LABEL, Purpose.CHANGE_GOAL))
    elif template == "meeting_missed_check" and meeting:
        asked.append(LinkSpec("We met", Purpose.MEETING_OUTCOME, meeting, "choice=met"))
        asked.append(LinkSpec("We didn't meet", Purpose.MEETING_OUTCOME, meeting, "choice=not_met"))
        asked.append(LinkSpec("We moved it", Purpose.MEETING_OUTCOME, meeting, "choice=moved"))
    elif template in ("meeting_scheduled", "meeting_rescheduled", "meeting_reminder", "agenda_request") and meeting:
        asked.append(LinkSpec("We moved it", Purpose.MEETING_OUTCOME, meeting, "choice=moved"))
    elif template == "feedback_request" and data.get("feedback_round"):
        asked.extend(
            LinkSpec(f"{score} of 5", Purpose.FEEDBACK, data["feedback_round"], f"score={score}") for score in range(1, 6)
        )
    elif template == "goal_revision_to_acknowledge" and data.get("revision_id"):
        asked.append(LinkSpec("Read and acknowledge the change", Purpose.GOAL_REVISION, data["revision_id"]))
    elif template.endswith("_review_opened"):
        asked.append(LinkSpec("Write your review", Purpose.REVIEW, template.removesuffix("_review_opened")))
    elif template == "reflection_request":
        asked.append(LinkSpec("Write your closing reflection", Purpose.REFLECTION))
    if template in FINAL_TEMPLATES:
        return tuple(asked)
    return (
        *asked,
        LinkSpec("My relationship", Purpose.MY_RELATIONSHIP),
        LinkSpec("Raise a concern privately", Purpose.CONCERN),
    )


# Digest items whose relationship waits for its parties: a nudge sends them the reminder again.
NUDGED_ITEMS = frozenset({"stalled", "at_risk", "proposal_unanswered", "review_due", "reflections_due"})


def digest_links(data: Mapping[str, str]) -> tuple[LinkSpec, ...]:
    """A coordinator's digest: one "nudge" link per relationship that waits for its parties
    (named by id, as the digest names it), for the digest's day."""
    relationships = dict.fromkeys(
        item.relationship_id for item in items_of(data) if item.kind in NUDGED_ITEMS and item.relationship_id
    )
    return tuple(
        LinkSpec(f"Nudge relationship {relationship_id}", Purpose.NUDGE, data.get("day", ""), relationship_id=relationship_id)
        for relationship_id in relationships
        if relationship_id
    )


# -- "Stop getting these emails" ------------------------------------------------------------------

# Each kind of message (its template) in plain words, for the mute link and its page: "Stop
# getting these emails: reminders of your next meeting".
KIND_WORDS: dict[str, str] = {
    "match_proposed": "proposed mentoring matches to answer",
    "match_declined": "news that a proposed match was declined",
    "match_proposal_expired": "news that a match proposal expired",
    "match_confirmed": "news that a match is confirmed",
    "agreement_proposed": "mentoring agreements to read and sign",
    "agreement_reminder": "reminders to sign your mentoring agreement",
    "relationship_activated": "news that a mentoring relationship has started",
    "meeting_scheduled": "new meetings, with their calendar invitations",
    "meeting_rescheduled": "meetings moved to another time, with the calendar update",
    "agenda_request": "requests to share an agenda before a meeting",
    "meeting_reminder": "reminders of your next meeting",
    "meeting_cancelled": "cancelled meetings, with the calendar update",
    "meeting_withdrawn": "meetings taken off your calendar",
    "meeting_missed_check": "questions whether a meeting took place",
    "meeting_reported_not_held": "news that a meeting was reported as not held",
    "meeting_report_corrected": "corrections to a meeting's record",
    "milestone_celebration": "congratulations on a milestone reached",
    "goal_achieved": "congratulations on a goal achieved",
    "goal_revision_to_acknowledge": "changes to a goal for you to acknowledge",
    "goal_revised": "news that a goal was changed",
    "feedback_request": "requests for feedback on your mentoring",
    "feedback_received": "news that feedback was given",
    "low_feedback": "alerts about a low feedback score",
    "concern_raised": "alerts about a concern raised",
    "concern_resolved": "news that a concern was resolved",
    "relationship_paused": "news that a relationship is paused",
    "relationship_resumed": "news that a relationship is resumed",
    "nudge": "nudges to meet again",
    "health_healthy": "news that a relationship is back on track",
    "health_at_risk": "warnings that a relationship has gone quiet",
    "health_stalled": "warnings that a relationship has stalled",
    "midpoint_review_opened": "requests for the midpoint review",
    "final_review_opened": "requests for the final review",
    "on_demand_review_opened": "requests for a review",
    "review_completed": "news that a review is complete",
    "term_extended": "news that a term was extended",
    "reflection_request": "requests for a closing reflection",
    "relationship_summary": "the summary when a relationship closes",
    "relationship_closed_early": "alerts that a relationship was closed early",
    "relationship_closed": "news that a relationship has closed",
    "coordinator_digest": "the coordinators' digest of what needs you",
}

# Messages nobody can turn off from a link: a match waiting for your answer (unanswered, it
# expires and the mentee waits longer), a concern and an early closure (the coordinators must
# hear), and the calendar updates of a moved, cancelled or withdrawn meeting (muted, they would
# leave a wrong entry in the calendar). Their emails carry no mute link, and a mute link for one
# is refused with a page that says why. (An operator can still mute anything in the directory.)
MUST_HEAR = frozenset(
    {
        "match_proposed",
        "concern_raised",
        "relationship_closed_early",
        "meeting_rescheduled",
        "meeting_cancelled",
        "meeting_withdrawn",
    }
)
MUTE_LABEL = "Stop getting these emails"


def kind_words(template: str) -> str:
    """What a kind of message is, in plain words (a template nobody named yet: its name in words)."""
    return KIND_WORDS.get(template, template.replace("_", " "))


def mute_link_for(template: str) -> LinkSpec | None:
    """The link every email carries to stop that kind of message, unless it is one to hear."""
    if template in MUST_HEAR:
        return None
    return LinkSpec(f"{MUTE_LABEL} ({kind_words(template)})", Purpose.MUTE, template)


def link_scope(relationship_id: str, workflow_id: str) -> tuple[str, str] | None:
    """(programme, relationship) the links of a message name: a relationship's message names
    its programme through the sending workflow's id, `relationship/P/R`; a programme's own
    message (the coordinators' digest, `programme/P`) names the programme as its relationship.
    None: a message whose sender cannot be told (it gets no links)."""
    programme_wide = digest_relationship_id("")
    if relationship_id.startswith(programme_wide):
        return relationship_id.removeprefix(programme_wide), relationship_id
    parts = workflow_id.split("/")
    if len(parts) == 3 and parts[0] == "relationship" and parts[2] == relationship_id:
        return parts[1], parts[2]
    return None


@dataclass(frozen=True)
class LinkMaker:
    """Makes the signed URLs of a message's links: under the public URL of the pages
    (MENTORFLOW_PUBLIC_URL), signed with the keyring's active key."""

    keyring: Keyring
    public_url: str
    lifetime: timedelta = DEFAULT_LIFETIME

    def urls(
        self, person_id: str, programme_id: str, relationship_id: str, specs: tuple[LinkSpec, ...], *, now: datetime,
        lifetime: timedelta | None = None,
    ) -> list[tuple[str, str]]:
        """(label, URL) for each spec; `lifetime`: the relationship's own (else the maker's)."""
        made = []
        for spec in specs:
            link = new_link(person_id, programme_id, spec.relationship_id or relationship_id, spec.purpose, now=now,
                            subject=spec.subject, lifetime=lifetime or self.lifetime)  # fmt: skip
            url = f"{self.public_url}/p/{sign(self.keyring, link)}"
            made.append((spec.label, f"{url}?{spec.query}" if spec.query else url))
        return made

    def paragraphs(
        self, person_id: str, programme_id: str, relationship_id: str, specs: tuple[LinkSpec, ...], *, now: datetime,
        lifetime: timedelta | None = None,
    ) -> list[str]:
        """The links as paragraphs of a plain-text email: what the message asks, then the
        links every message carries, then the one to stop that kind of message."""
        urls = self.urls(person_id, programme_id, relationship_id, specs, now=now, lifetime=lifetime)
        lines = [(f"{label}: {url}", spec.purpose) for (label, url), spec in zip(urls, specs, strict=True)]
        asked = [line for line, purpose in lines if purpose not in _ALWAYS and purpose is not Purpose.MUTE]
        always = [line for line, purpose in lines if purpose in _ALWAYS]
        paragraphs = []
        if asked:
            paragraphs.append("\n".join([_LEADS.get(specs[0].purpose, _LEADS[Purpose.CONCERN]), *asked]))
        if always:
            paragraphs.append("\n".join(always))
        paragraphs.extend(line for line, purpose in lines if purpose is Purpose.MUTE)
        return paragraphs


_ALWAYS = frozenset({Purpose.MY_RELATIONSHIP, Purpose.CONCERN})
# What introduces the links of what a message asks (the concern's: any other question).
_LEADS = {
    Purpose.FEEDBACK: "Your score, 1 (poorly) to 5 (very well):",
    Purpose.NUDGE: "Send the reminder of what waits again (each link opens a page to confirm):",
    Purpose.PROPOSE_AGREEMENT: "Write it down on one page (nothing is sent until you press its button):",
    Purpose.CHANGE_GOAL: "Write the change on a page of its own (nothing is sent until you press its button):",
    Purpose.CONCERN: "Answer here (each link opens a page to confirm):",
}
