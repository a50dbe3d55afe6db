"""The words of the coordinators' digest (`coordinator_digest`): one section per kind of item,
one line per item, and what the coordinator can do about it.

`activities/templates.py` renders it like any other notification and calls `digest_text`
with the notification's data and the filled-in context: every `itemN_<role>_id` there has
its `itemN_<role>_name` (the directory's display name), and every date-time is already in
the coordinator's time zone. Plain text; ids only where a coordinator needs them to find
the relationship; never a concern's text (the digest only knows how many and how old).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from events.digest import DigestItem, ItemKind, item_key, items_of, sections

# Each section: its heading, and what the coordinator can do about its items.
SECTIONS: dict[ItemKind, tuple[str, str]] = {
    "stalled": ("Stalled: these stopped meeting", "Talk to both about how to go on, or close the relationship."),
    "at_risk": ("At risk", "Nudge them to meet, or ask how it is going."),
    "concerns": (
        "Open concerns (only how many and how old; what they say stays with the relationship)",
        "Follow each one up, and resolve it once it is settled.",
    ),
    "proposal_unanswered": (
        "Match proposals nobody has answered",
        "Remind whoever has not answered, or propose another mentor.",
    ),
    "waiting_for_mentor": ("Mentees waiting for a mentor", "Propose a mentor."),
    "review_due": ("Reviews closing before your next digest", "Remind whoever has not answered yet."),
    "review_unanswered": ("Reviews that closed without an answer", "Ask them how it is going."),
    "reflections_due": ("Closing reflections due before your next digest", "Remind whoever has not written theirs."),
    "reflections_missing": ("Closed without a closing reflection", "Ask them how it went, if you would like to know."),
    "mentor_at_capacity": (
        "Mentors at capacity",
        "No new mentee can be proposed to them until a place frees up or their capacity is raised.",
    ),
}

_REASONS: dict[str, str] = {
    "quiet": "no meeting for {days}",
    "missed_meetings": "{missed} or more meetings missed in a row",
    "concern_open": "a concern is open",
    "low_feedback": "a low feedback score",
}


def _plural(count: int | str, word: str) -> str:
    return f"{count} {word}" if str(count) == "1" else f"{count} {word}s"


def _ago(days: int) -> str:
    return "today" if days == 0 else f"{_plural(days, 'day')} ago"


def _parties(parties: tuple[str, ...]) -> str:
    return " and the ".join(parties)


def digest_text(data: Mapping[str, str], context: Mapping[str, str]) -> tuple[str, str]:
    """The subject and body (between greeting and signature) of a digest."""
    items = items_of(data)
    title = context["programme_title"]
    subject = f"Mentoring digest for {title}: {_plural(len(items), 'thing')} to look at"
    paragraphs = [f"This is what needs you in {title} ({data['programme_id']}), as of {context['day']}."]
    for kind, numbered in sections(items):
        heading, action = SECTIONS[kind]
        lines = [f"{heading}:"]
        lines += [f"- {_line(number, item, context)}" for number, item in numbered]
        paragraphs.append("\n".join([*lines, f"What you can do: {action[:1].lower()}{action[1:]}"]))
    paragraphs.append(
        f"You get this digest at most every {_plural(data['every_days'], 'day')}, when something needs you. "
        "To stop it, mute coordinator_digest for yourself in the directory "
        f"(mentorflow people add --id {data['coordinator_id']} --mute coordinator_digest, "
        "with a --mute for each message you muted before)."
    )
    return subject, "\n\n".join(paragraphs)


def _line(number: int, item: DigestItem, context: Mapping[str, str]) -> str:
    def value(field: str) -> str:
        return context.get(item_key(number, field), "")

    mentee, mentor = value("mentee_name"), value("mentor_name")
    pair = f"{mentee} and {mentor}" if item.mentor_id and item.mentee_id else mentee
    where = f"{pair} (relationship {item.relationship_id})" if item.relationship_id else pair
    waiting = _parties(item.waiting_for)
    lines: dict[ItemKind, Callable[[], str]] = {
        "stalled": lambda: f"{where}: stalled since {value('since')}. {_why(item, context)}",
        "at_risk": lambda: f"{where}: at risk since {value('since')}. {_why(item, context)}",
        "concerns": lambda: (
            f"{where}: {_plural(item.count or 0, 'open concern')}, the oldest raised {_ago(item.days or 0)}."
        ),
        "proposal_unanswered": lambda: (
            f"{mentor} was proposed as the mentor of {mentee} {_plural(item.days or 0, 'day')} ago "
            f"(relationship {item.relationship_id}); no answer yet from the {waiting}. "
            f"The proposal expires {value('due')}."
        ),
        "waiting_for_mentor": lambda: (
            f"{mentee} (relationship {item.relationship_id}) has had no mentor for {_plural(item.days or 0, 'day')}"
            f"{_ended(item, mentor)}."
        ),
        "review_due": lambda: f"{where}: the {value('what')} review closes {value('due')}; no answer yet from the {waiting}.",
        "review_unanswered": lambda: (
            f"{where}: the {value('what')} review closed {value('due')} without an answer from the {waiting}."
        ),
        "reflections_due": lambda: (
            f"{where}: closing; the closing reflections are due {value('due')}, none yet from the {waiting}."
        ),
        "reflections_missing": lambda: f"{where}: closed {value('due')} without a closing reflection from the {waiting}.",
        "mentor_at_capacity": lambda: f"{mentor}: {item.count} of {_plural(item.capacity or 0, 'place')} taken.",
    }
    return lines[item.kind]()


def _why(item: DigestItem, context: Mapping[str, str]) -> str:
    facts = {"days": _plural(item.days or 0, "day"), "missed": context.get("missed_meetings_at_risk", "")}
    reasons = [_REASONS[code].format(**facts) for code in item.reasons if code in _REASONS]
    return f"Why: {', '.join(reasons)}." if reasons else ""


def _ended(item: DigestItem, mentor: str) -> str:
    if item.what == "expired":
        return f": the proposal of {mentor} expired unanswered"
    if item.what is not None and item.what.startswith("declined_by_"):
        return f": {mentor} was declined by the {item.what.removeprefix('declined_by_')}"
    return ""
