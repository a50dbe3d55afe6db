"""A year of one relationship answered from the inbox: every participant command that a link
in an email (or a page it leads to) can send is sent that way, through the real core, and
the rest are counted. The numbers are docs/people.md's "How much needs no other system".

Pure (the core's decide/evolve/deadlines, tests/support/domain_story.py's driver): the emails are
the notifications the core sends, their links `links_for`'s, each press `command_for`'s.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from datetime import timedelta
from zoneinfo import ZoneInfo

from events.commands import COMMAND_TYPES, ProposeMatch
from events.notifications import Notification
from events.people import Participant
from events.settings import ProgrammeSettings
from events.state import Phase
from mentorflow.action_links import LinkSpec, Purpose, links_for, new_link
from mentorflow.pages.actions import command_for, page_for
from mentorflow.pages.views import Reader
from tests.support.relationship_phases import COORDINATOR, MENTEE, MENTOR, PROGRAMME, STREAM, Relationship, agreement_terms

PEOPLE = {
    person: Participant(participant_id=person, display_name=person.title(), email=f"{person}@example.org",
                        timezone="Europe/Berlin")  # fmt: skip
    for person in (MENTEE, MENTOR)
}


# What the mentee types into the agreement's form (the rest as the form fills it in): the
# terms tests/support/relationship_phases.py's agreement_terms has, for a 12-month term.
AGREEMENT: dict[str, Any] = {"objective": "Grow into a tech lead", "goal1:title": "Run a design review", "goal1:milestones": "First draft",
             "goal2:title": "Mentor a junior engineer", "meeting_frequency": "biweekly", "meeting_minutes": "60",
             "term_months": "12"}  # fmt: skip


class Inbox:
    """The relationship, the emails its parties got, and what they sent (from pages or not)."""

    def __init__(self) -> None:
        self.story = Relationship(ProgrammeSettings(coordinator_ids=(COORDINATOR,), delivery_window=None))
        self.unread: list[Notification] = []
        self.from_pages: Counter[str] = Counter()
        self.elsewhere: Counter[str] = Counter()
        # Per action from a page: its clicks (open the link, press the button) plus the fields filled in.
        self.clicks: dict[str, set[int]] = {}

    def read(self, events: list[object]) -> None:
        told = self.story.notifications_of(events)  # type: ignore[arg-type]
        self.unread += [n for n in told if n.recipient_id in PEOPLE]

    def directly(self, command_type: type, actor: str, **fields: object) -> None:
        """A command from another system (or the CLI): what no link offers."""
        self.read(self.story.do(command_type, actor, **fields))
        if actor != COORDINATOR:
            self.elsewhere[command_type.message_name] += 1  # type: ignore[attr-defined]

    def press(self, person: str, spec: LinkSpec, choice: str, via: int = 0, **typed: str) -> bool:
        """Open `spec`'s link as `person` and press `choice`, if the page offers it, sending the
        form as a browser does: every box as the page filled it in, with what was `typed` over it.
        `via`: the clicks to reach the page from the email's link (a link on "My relationship")."""
        story = self.story
        link = new_link(person, PROGRAMME, STREAM, spec.purpose, now=story.now, subject=spec.subject)
        reader = Reader(PEOPLE[person], ZoneInfo("Europe/Berlin"), PEOPLE)
        page = page_for(link, story.state, reader, dict(part.split("=") for part in filter(None, [spec.query])), story.now)
        form = next((f for f in page.forms if f.choice == choice), None)
        if form is None:
            return False
        shown = {f.name: f.value for f in form.fields if f.kind != "heading" and (f.kind != "checkbox" or f.value)}
        message, fields = command_for(link, story.state, reader, {**shown, **typed, "choice": choice}, story.now)
        self.read(story.do(COMMAND_TYPES[message], person, **fields))
        self.from_pages[message] += 1
        # Open, then press (the score chosen in the email is the first click), plus each box
        # filled in or changed (a button's value, like the score, is no box).
        boxes = {f.name for f in form.fields}
        changed = sum(1 for name, value in typed.items() if name in boxes and shown.get(name, "") != value)
        self.clicks.setdefault(message, set()).add(2 + via + changed)
        return True

    def answer_emails(self) -> None:
        """Each party answers what their emails ask, from the emails' links."""
        while self.unread:
            email = self.unread.pop(0)
            person, state = email.recipient_id, self.story.state
            for spec in links_for(email.template, email.data):
                if spec.purpose is Purpose.PROPOSE_AGREEMENT and person == MENTEE and email.template == "match_confirmed":
                    self.press(person, spec, "propose", **AGREEMENT)  # the mentee writes down what they agreed
                elif spec.purpose is Purpose.MATCH_ANSWER:
                    self.press(person, spec, "accept")
                elif spec.purpose is Purpose.SIGN_AGREEMENT and state.agreement is not None:
                    self.press(person, spec, f"sign:{state.agreement.agreement_version}")
                elif spec.purpose is Purpose.FEEDBACK and spec.query == "score=4":
                    self.press(person, spec, "feedback", score="4")
                elif spec.purpose is Purpose.GOAL_REVISION:
                    self.press(person, spec, "acknowledge")
                elif spec.purpose is Purpose.REVIEW:
                    outcome = "close" if spec.subject == "final" else "continue"
                    self.press(person, spec, "review", outcome=outcome)
                elif spec.purpose is Purpose.REFLECTION:
                    self.press(person, spec, "reflect", text="What I take with me")
                elif spec.purpose is Purpose.MEETING_OUTCOME and email.template == "meeting_missed_check":
                    self.press(person, spec, "met")

    def meeting_link(self) -> LinkSpec:
        meeting = self.story.state.next_meeting
        assert meeting is not None
        return LinkSpec("We moved it", Purpose.MEETING_OUTCOME, str(meeting.meeting_number), "choice=moved")


def test_a_year_of_one_relationship_from_the_inbox() -> None:
    inbox = Inbox()
    story = inbox.story
    inbox.directly(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    inbox.answer_emails()
    # The mentee writes the agreement from the match's email; the mentor signs from the agreement's
    # email, the mentee from the reminder (below).
    assert story.state.agreement is not None and story.state.agreement.terms == agreement_terms(
        meeting_frequency="biweekly", term_months=12)  # fmt: skip
    held = 0
    while story.state.phase is not Phase.CLOSED and story.now < story.state.started_at + timedelta(days=450):
        meeting = story.state.next_meeting
        if meeting is None or story.state.phase not in (Phase.ACTIVE, Phase.REVIEW):
            inbox.read(story.advance(timedelta(days=1)))
            inbox.answer_emails()
            continue
        if held == 2 and meeting.revision == 0:  # moved once, two days later, from its invitation
            local = (meeting.starts_at + timedelta(days=2)).astimezone(ZoneInfo("Europe/Berlin"))
            inbox.press(MENTOR, inbox.meeting_link(), "moved", starts_at=f"{local:%Y-%m-%dT%H:%M}")
            continue
        inbox.read(story.advance(to=meeting.ends_at))
        if held == 4:  # reported as not held by mistake, then corrected from the same email
            spec = inbox.meeting_link()
            assert inbox.press(MENTEE, spec, "not_met")
            assert inbox.press(MENTEE, spec, "met")
        elif not inbox.press(MENTEE if held % 2 else MENTOR, inbox.meeting_link(), "met"):
            inbox.answer_emails()
            continue
        held += 1
        if held % 4 == 0:  # goal progress every other month, from "My relationship"
            inbox.press(MENTEE, LinkSpec("My relationship", Purpose.MY_RELATIONSHIP), "progress:g1",
                        progress=str(min(100, held * 5)))  # fmt: skip
        if held == 6:  # from "My relationship", its link "Propose a change to a goal"
            mine = page_for(new_link(MENTOR, PROGRAMME, STREAM, Purpose.MY_RELATIONSHIP, now=story.now), story.state,
                            Reader(PEOPLE[MENTOR], ZoneInfo("Europe/Berlin"), PEOPLE), {}, story.now)  # fmt: skip
            label, purpose, subject = next(link for link in mine.links if link[1] is Purpose.CHANGE_GOAL)
            assert inbox.press(MENTOR, LinkSpec(label, purpose, subject), "change:g2", via=1,
                               title="Mentor two junior engineers")  # fmt: skip
        if held == 8:
            inbox.press(MENTEE, LinkSpec("Raise a concern privately", Purpose.CONCERN), "concern", text="Too rushed")
        inbox.answer_emails()
    assert story.state.phase is Phase.CLOSED, story.state.phase

    pages, other = sum(inbox.from_pages.values()), sum(inbox.elsewhere.values())
    # Every participant command of the year came from a link or a page it leads to.
    assert not inbox.elsewhere and other == 0
    assert {"accept_match", "propose_agreement", "sign_agreement", "record_meeting", "reschedule_meeting",
            "report_meeting_not_held", "correct_meeting_report", "submit_feedback", "propose_goal_revision",
            "acknowledge_goal_revision", "record_goal_progress", "raise_concern", "submit_review",
            "submit_reflection"} <= set(inbox.from_pages)  # fmt: skip
    assert story.state.goals["g2"].goal.title == "Mentor two junior engineers"  # acknowledged by the mentee
    writing = {"propose_agreement", "propose_goal_revision"}
    assert all(clicks <= {2, 3} for message, clicks in inbox.clicks.items() if message not in writing)
    # The agreement: open, press, and the seven boxes typed (objective, two goals and a milestone, how
    # often, how long, the term); a goal change: "My relationship", its link, press, and the new words.
    assert inbox.clicks["propose_agreement"] == {2 + len(AGREEMENT)} and inbox.clicks["propose_goal_revision"] == {4}
    print(f"\nfrom links and pages: {pages} of {pages + other} participant commands; {dict(inbox.from_pages)}; "
          f"elsewhere: {dict(inbox.elsewhere)}; clicks (plus fields typed) per action: "
          f"{ {m: sorted(c) for m, c in inbox.clicks.items()} }")
