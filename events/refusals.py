"""Why a relationship refuses a command: a stable code a program can act on, a text a person
reads, and, for an invalid payload, every field at fault.

The codes are a published contract (`contract/refusal-codes.json`, `docs/contract.md`):
SDK callers get them as the `type` of a non-retryable `ApplicationError`, signal senders
find them in the `CommandRejected` event and the `state` query's `rejected_commands`, the
CLI prints them (`--json`: `"code"`) and derives its exit code from them.

Texts name fields and rules, never the values sent: a value may be confidential.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from events.frozen import Frozen
from events.sensitivity import NotConfidential


class RefusalCode(StrEnum):
    INVALID_PAYLOAD = "invalid_payload"
    UNKNOWN_MESSAGE = "unknown_message"
    NOT_ALLOWED = "not_allowed"
    WRONG_PHASE = "wrong_phase"
    COMMAND_ID_REUSED = "command_id_reused"
    NOT_FOUND = "not_found"
    LIMIT = "limit"
    CONFLICT = "conflict"
    INTERNAL_ERROR = "internal_error"


# What each code means, as published in contract/refusal-codes.json and docs/contract.md.
REFUSAL_CODES: dict[RefusalCode, str] = {
    RefusalCode.INVALID_PAYLOAD: "The payload does not match the message's JSON Schema (wrong type, missing or "
    "unknown field, bad format); `problems` names every field at fault. Fix the payload and send it again.",
    RefusalCode.UNKNOWN_MESSAGE: "No message of that name exists in the contract.",
    RefusalCode.NOT_ALLOWED: "The actor may not send this command: not a party, not a coordinator, an internal "
    "actor, or the other party's turn.",
    RefusalCode.WRONG_PHASE: "The command is not accepted in the relationship's current phase (or while it is "
    "paused, closing or closed); `state.phase` says where it is.",
    RefusalCode.COMMAND_ID_REUSED: "The command id was already applied to a different command (another message or "
    "other content). Nothing happened; use a new command id for a new command.",
    RefusalCode.NOT_FOUND: "The command refers to something the relationship does not have: a goal, milestone, "
    "meeting, agreement version, goal revision, concern, feedback round or review.",
    RefusalCode.LIMIT: "A value is outside the bounds the programme or the relationship's rules set (meeting "
    "length, term, pause length, extensions, number of goals, times); `problems` names every field at fault.",
    RefusalCode.CONFLICT: "The command conflicts with what already happened (already accepted, signed, "
    "submitted, proposed or declined).",
    RefusalCode.INTERNAL_ERROR: "The relationship could not process the command because of a fault of its own; "
    "nothing happened. Report it; sending it again after a fix is safe.",
}


class FieldProblem(Frozen):
    """One problem with one field of a payload: where (a dotted path) and what is wrong."""

    field: NotConfidential
    message: NotConfidential


class Rejection(Frozen):
    """Why a command is not allowed now; `reason` is shown to the sender as is."""

    code: RefusalCode
    reason: NotConfidential
    problems: tuple[FieldProblem, ...] = ()

    def details(self) -> dict[str, Any]:
        """The structured details an `ApplicationError` carries to SDK callers."""
        return {
            "code": self.code.value,
            "reason": self.reason,
            "problems": [problem.model_dump() for problem in self.problems],
        }


def refuse(code: RefusalCode, reason: str, *problems: FieldProblem) -> Rejection:
    return Rejection(code=code, reason=reason, problems=problems)


def limit(field: str, problem: str) -> Rejection:
    """One broken bound: `field` and what is wrong with it ("until", "is not in the future")."""
    return refuse(RefusalCode.LIMIT, f"{field} {problem}", FieldProblem(field=field, message=problem))


def limits(problems: list[FieldProblem]) -> Rejection | None:
    """Every broken bound of one payload at once, or None when none is broken."""
    if not problems:
        return None
    return Rejection(
        code=RefusalCode.LIMIT, reason="; ".join(f"{p.field} {p.message}" for p in problems), problems=tuple(problems)
    )


# A field name may come from the sender (an unknown key): it goes into the stored
# rejection, so it is cut short and stripped of anything but plain characters.
MAX_FIELD_NAME = 64


def _printable(part: str) -> str:
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in part)
    return cleaned if len(cleaned) <= MAX_FIELD_NAME else cleaned[:MAX_FIELD_NAME] + "…"


def field_problems(error: ValidationError, *, known: frozenset[str] | None = None) -> tuple[FieldProblem, ...]:
    """Every bad field of a payload, without the values sent (they may be confidential).

    An unknown field's name is sender text: with `known` given (the names the contract
    has), an unknown top-level name is reported as "an unknown field", not echoed.
    """
    problems: list[FieldProblem] = []
    details = error.errors(include_url=False, include_input=False, include_context=False)
    # A bad item of a list also makes the list "too short" (it validates to no items): only
    # the item is at fault.
    bad_items = {detail["loc"][:-1] for detail in details if detail["type"] != "too_short" and detail["loc"]}
    for detail in details:
        if detail["type"] == "too_short" and any(loc[: len(detail["loc"])] == detail["loc"] for loc in bad_items):
            continue
        parts = [str(part) for part in detail["loc"]]
        if detail["type"] == "extra_forbidden":
            parts = [*parts[:-1], "(unknown field)"] if known is None or parts[-1] not in known else parts
        location = ".".join(_printable(part) for part in parts) or "payload"
        # Pydantic's texts for some types name Python classes; callers in other languages send JSON.
        if detail["type"] in ("model_type", "model_attributes_type", "dict_type"):
            message = "should be a JSON object"
        elif detail["type"] == "extra_forbidden":
            message = "is not a field of this message"
        else:
            message = _without_values(detail["msg"])
        problems.append(FieldProblem(field=location, message=message))
    return tuple(problems)


def _without_values(message: str) -> str:
    # Pydantic's messages name types and bounds, not inputs, except a few that quote a
    # rejected value back ("Value error, unknown time zone 'X'"): our own validators' texts
    # never quote values, so only pydantic's prefix is dropped.
    message = message.removeprefix("Value error, ")
    return message.removeprefix("Input ")


def invalid_payload(problems: tuple[FieldProblem, ...], *, prefix: str = "invalid payload") -> Rejection:
    return Rejection(
        code=RefusalCode.INVALID_PAYLOAD,
        reason=f"{prefix}: " + "; ".join(f"{p.field}: {p.message}" for p in problems),
        problems=problems,
    )


def code_of_stored_reason(reason: str) -> RefusalCode:
    """The code of a rejection stored before codes existed, read from its text (the texts
    of that time, see git history of events/decider.py)."""
    text = reason.lower()
    if text.startswith("invalid payload") or "could not be validated" in text:
        return RefusalCode.INVALID_PAYLOAD
    if "internal error" in text:
        return RefusalCode.INTERNAL_ERROR
    if "only allowed in the" in text or "is closed" in text or "is closing" in text or "paused" in text:
        return RefusalCode.WRONG_PHASE
    if text.startswith(("there is no", "no agreement", "meeting ")) or "has not been requested" in text or "no milestone" in text:
        return RefusalCode.NOT_FOUND
    if "already" in text:
        return RefusalCode.CONFLICT
    if "must be between" in text or "at most" in text or "in the future" in text or "before the agreement" in text:
        return RefusalCode.LIMIT
    return RefusalCode.NOT_ALLOWED


def describe_validation_error(error: ValidationError, *, prefix: str = "invalid payload") -> str:
    """One line naming every bad field (no values): for people reading a CLI or a log."""
    return invalid_payload(field_problems(error), prefix=prefix).reason


def cli_exit_code(code: RefusalCode) -> int:
    """The exit code of `mentorflow relationship update/signal/send` for a refusal: 2 for bad
    input (fix the payload), 1 for a fault of the relationship's own, 3 for its rules."""
    if code in (RefusalCode.INVALID_PAYLOAD, RefusalCode.UNKNOWN_MESSAGE):
        return 2
    if code is RefusalCode.INTERNAL_ERROR:
        return 1
    return 3


# What the payload codec hands the workflow in place of a payload that arrived unencrypted,
# when the workers are set to refuse those (MENTORFLOW_REFUSE_PLAIN_PAYLOADS): a message or
# start input carrying it is refused as invalid, like any payload not to the contract.
PLAIN_PAYLOAD_REFUSED = "$plain_payload_refused"


def is_refused_plain(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get(PLAIN_PAYLOAD_REFUSED) is True


def plain_refusal() -> Rejection:
    problem = FieldProblem(field="payload", message="arrived unencrypted; this deployment accepts only encrypted payloads")
    return Rejection(code=RefusalCode.INVALID_PAYLOAD, reason=f"invalid payload: {problem.message}", problems=(problem,))


def refused_as_plain(payload: Any) -> Rejection | None:
    """The refusal of a payload the codec marked as arrived unencrypted (None for any other)."""
    return plain_refusal() if is_refused_plain(payload) else None
