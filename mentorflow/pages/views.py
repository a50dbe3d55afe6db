"""What a page shows, as plain data the templates lay out: words for people, no ids, no
workflow words, every time in the reader's own time zone and named.

Pure: built from the relationship's state, the reader and the people it names, so each page
is tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from activities.templates import format_span, format_time
from events.commands import Goal
from events.people import Participant
from events.state import GoalProgress, Phase, RelationshipState
from mentorflow.action_links import (
    CHANGE_AGREEMENT_LABEL,
    CHANGE_GOAL_LABEL,
    SIGN_LABEL,
    WRITE_AGREEMENT_LABEL,
    Purpose,
)

# "heading": no input, a heading that groups the fields after it (a goal's four boxes).
FieldKind = Literal["textarea", "text", "date", "datetime", "radio", "number", "hidden", "checkbox", "heading"]
SUPERSEDED = 409


@dataclass(frozen=True)
class Field:
    kind: FieldKind
    name: str
    label: str = ""
    value: str = ""
    hint: str = ""
    required: bool = False
    # (value, label) for radio buttons.
    options: tuple[tuple[str, str], ...] = ()
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class Form:
    """One deliberate button press: its choice (sent as `choice`) and the fields it sends."""

    choice: str
    button: str
    fields: tuple[Field, ...] = ()
    heading: str = ""
    # Five score buttons, say: each a button of its own that sends `name=value`.
    buttons: tuple[tuple[str, str, str], ...] = ()
    secondary: bool = False


@dataclass(frozen=True)
class Section:
    heading: str
    # (term, description) pairs; a description may be several lines.
    items: tuple[tuple[str, str], ...] = ()
    paragraphs: tuple[str, ...] = ()
    # Side by side: (column heading, items) — a goal before and after a change.
    columns: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()


@dataclass(frozen=True)
class Page:
    title: str
    intro: tuple[str, ...] = ()
    sections: tuple[Section, ...] = ()
    forms: tuple[Form, ...] = ()
    # Shown instead of forms when the person has nothing (more) to do here.
    note: str = ""
    # Links within the page's own token: (label, path suffix), e.g. the .ics download.
    downloads: tuple[tuple[str, str], ...] = ()
    # Links to the person's other pages of this relationship: (label, purpose, subject).
    links: tuple[tuple[str, Purpose, str], ...] = ()
    status: int = 200


def over(title: str, note: str) -> Page:
    return Page(title, note=note, status=SUPERSEDED)


def done(title: str, note: str) -> Page:
    return Page(title, note=note)


def refilled(page: Page, submitted: Mapping[str, str]) -> Page:
    """The page with the form that was sent filled in as it was sent: a refused answer keeps
    everything the person wrote or chose."""
    choice = submitted.get("choice")

    def kept(item: Field) -> Field:
        if item.kind in ("hidden", "heading"):
            return item
        if item.kind == "checkbox":
            return replace(item, value="on" if submitted.get(item.name) else "")
        return replace(item, value=submitted.get(item.name, ""))

    forms = tuple(replace(f, fields=tuple(kept(i) for i in f.fields)) if f.choice == choice else f for f in page.forms)
    return replace(page, forms=forms)


@dataclass(frozen=True)
class Reader:
    """Who reads the page: the link's person, in their time zone, and the people it names."""

    person: Participant
    zone: ZoneInfo
    people: Mapping[str, Participant] = field(default_factory=dict)

    def name_of(self, person_id: str | None) -> str:
        if person_id is None:
            return "not matched yet"
        known = self.people.get(person_id)
        return known.display_name if known is not None else "the other person"

    def when(self, moment: datetime) -> str:
        return f"{format_time(moment, self.zone)} ({self.zone.key})"

    def span(self, start: datetime, end: datetime) -> str:
        return f"{format_span(start, end, self.zone)} ({self.zone.key})"


FREQUENCY_WORDS = {"weekly": "every week", "biweekly": "every two weeks", "monthly": "every month"}
FORMAT_WORDS = {"in_person": "in person", "phone": "by phone", "video": "by video", "email": "by email", "chat": "by chat"}
AGENDA_WORDS = {
    "mentee_shares": "the mentee shares an agenda before each meeting",
    "both_share": "both share an agenda before each meeting",
    "no_agenda": "no agenda needed",
}
PHASE_WORDS = {
    Phase.MATCHING: "finding a match",
    Phase.AGREEMENT: "writing the agreement",
    Phase.ACTIVE: "meeting regularly",
    Phase.REVIEW: "reviewing progress",
    Phase.CLOSING: "coming to a close",
    Phase.CLOSED: "closed",
}


def other_party(state: RelationshipState, person_id: str) -> str | None:
    mentor = state.mentor_id or (state.candidate.mentor_id if state.candidate else None)
    return mentor if person_id == state.mentee_id else state.mentee_id


def role_words(state: RelationshipState, person_id: str) -> str:
    return "mentee" if person_id == state.mentee_id else "mentor"


def goal_items(goal: Goal, progress: GoalProgress | None = None) -> tuple[tuple[str, str], ...]:
    items = [("Goal", goal.title)]
    if goal.measure:
        items.append(("How we know it is reached", goal.measure))
    if goal.target_date is not None:
        items.append(("Target date", f"{goal.target_date:%A} {goal.target_date.day} {goal.target_date:%B %Y}"))
    if progress is not None:
        items.append(("Progress", f"{progress.progress_percent}%" + (" — achieved" if progress.achieved_at else "")))
    for milestone in goal.milestones:
        reached = progress is not None and milestone.milestone_id in progress.milestones_reached
        items.append(("Milestone", f"{milestone.title}{' (reached)' if reached else ''}"))
    return tuple(items)


def agreement_sections(state: RelationshipState) -> tuple[Section, ...]:
    """The agreement as it reads to the two people: objective, goals, meetings, confidentiality, ending early."""
    if state.agreement is None:
        return ()
    terms = state.agreement.terms
    meetings = (
        ("How often", FREQUENCY_WORDS.get(terms.meeting_frequency, terms.meeting_frequency)),
        ("How long", f"{terms.meeting_minutes} minutes"),
        ("How", ", ".join(FORMAT_WORDS.get(f, f) for f in terms.formats)),
        ("For", f"{terms.term_months} months"),
        ("Cancelling", f"at least {terms.cancellation_notice_hours} hours before"),
        ("Agenda", AGENDA_WORDS.get(terms.agenda_policy, terms.agenda_policy)),
    )
    confidential = terms.confidentiality
    private = "What we say stays between us" if confidential.private_by_default else "Not private by default"
    sections = [
        Section("What we want to achieve", paragraphs=(terms.objective,)),
        *(Section(f"Goal {i}", items=goal_items(g, state.goals.get(g.goal_id))) for i, g in enumerate(terms.goals, 1)),
        Section("How we meet", items=meetings),
        Section("Confidentiality", paragraphs=(private + ", except:", *confidential.not_private)),
        Section("If we end early", paragraphs=(terms.early_exit_plan,)),
    ]
    return tuple(sections)


def waiting_for(state: RelationshipState, person_id: str, reader: Reader) -> tuple[str, ...]:
    """What the relationship waits for from this person, in words."""
    party = state.party_of(person_id)
    waiting = []
    if state.candidate is not None and party is not None and party not in state.candidate.accepted_by:
        waiting.append(f"Your answer to the proposed match, by {reader.when(state.candidate.expires_at)}")
    if state.phase is Phase.AGREEMENT and state.agreement is not None and party not in state.agreement.signed_by:
        waiting.append(f"Your signature on version {state.agreement.agreement_version} of the agreement")
    if state.phase is Phase.AGREEMENT and state.agreement is None:
        waiting.append("An agreement: write it together")
    for pending in state.pending_goal_revisions.values():
        if pending.party != party:
            waiting.append("Your acknowledgement of a change to a goal")
    answered = {(s.feedback_round, s.party) for s in state.feedback_scores}
    for number in range(1, state.feedback_round + 1):
        if (number, party) not in answered:
            waiting.append(f"Your feedback for round {number}")
    if state.review is not None and party not in state.review.submissions:
        waiting.append(f"Your review, by {reader.when(state.review.respond_by)}")
    if state.reflections_due_at is not None and party is not None and party not in state.reflections_from:
        waiting.append(f"Your closing reflection, by {reader.when(state.reflections_due_at)}")
    return tuple(waiting)


def relationship_page(state: RelationshipState, person_id: str, reader: Reader) -> Page:
    """ "My relationship": the other person, the agreement, goals with progress, the next
    meeting, meetings held, and what is waiting for this person."""
    other = other_party(state, person_id)
    about = [
        ("You are the", role_words(state, person_id)),
        ("With", reader.name_of(other)),
        ("Where it stands", PHASE_WORDS.get(state.phase, state.phase.value.replace("_", " "))),
        ("Meetings held", str(state.meetings_held)),
    ]
    if state.term_ends_at is not None:
        about.append(("Term ends", reader.when(state.term_ends_at)))
    if state.paused_until is not None:
        about.append(("Paused until", reader.when(state.paused_until)))
    sections = [Section("Your mentoring relationship", items=tuple(about))]
    downloads: tuple[tuple[str, str], ...] = ()
    meeting = state.next_meeting
    if meeting is not None and not state.is_closed:
        sections.append(Section("Next meeting", paragraphs=(reader.span(meeting.starts_at, meeting.ends_at),)))
        downloads = (("Add the next meeting to your calendar (.ics)", "/meeting.ics"),)
    held = [m for m in state.past_meetings if m.outcome == "held"]
    if held:
        sections.append(Section("Meetings held", paragraphs=tuple(reader.when(m.starts_at) for m in held[-10:])))
    waiting = waiting_for(state, person_id, reader)
    sections.append(Section("Waiting for you", paragraphs=waiting or ("Nothing right now.",)))
    sections.extend(agreement_sections(state))
    return Page("My mentoring relationship", sections=tuple(sections), downloads=downloads, forms=progress_forms(state),
                links=writing_links(state, person_id))  # fmt: skip


def writing_links(state: RelationshipState, person_id: str) -> tuple[tuple[str, Purpose, str], ...]:
    """What "My relationship" leads to while it can be done: writing, signing or changing the
    agreement, and proposing a change to a goal."""
    agreement = state.agreement
    if state.phase is Phase.AGREEMENT and agreement is None:
        return ((WRITE_AGREEMENT_LABEL, Purpose.PROPOSE_AGREEMENT, "0"),)
    if state.phase is Phase.AGREEMENT and agreement is not None:
        version = str(agreement.agreement_version)
        sign = () if state.party_of(person_id) in agreement.signed_by else ((SIGN_LABEL, Purpose.SIGN_AGREEMENT, version),)
        return (*sign, (CHANGE_AGREEMENT_LABEL, Purpose.PROPOSE_AGREEMENT, version))
    if state.in_cadence:
        return ((CHANGE_GOAL_LABEL, Purpose.CHANGE_GOAL, ""),)
    return ()


def progress_forms(state: RelationshipState) -> tuple[Form, ...]:
    """While meeting: each goal's progress and milestones, to update (`record_goal_progress`)."""
    if not state.in_cadence or state.agreement is None:
        return ()
    forms = []
    for number, goal in enumerate(state.agreement.terms.goals, 1):
        progress = state.goals.get(goal.goal_id)
        if progress is None:
            continue
        fields = [Field("number", "progress", f"Goal {number}: {goal.title} — progress in %", str(progress.progress_percent),
                        required=True, minimum=0, maximum=100)]  # fmt: skip
        fields.extend(
            Field("checkbox", f"milestone:{m.milestone_id}", f"Milestone reached: {m.title}",
                  "on" if m.milestone_id in progress.milestones_reached else "")  # fmt: skip
            for m in goal.milestones
        )
        forms.append(Form(f"progress:{goal.goal_id}", "Save progress", heading=f"Update goal {number}",
                          fields=tuple(fields), secondary=True))  # fmt: skip
    return tuple(forms)
