"""A year of one relationship answered from the inbox: every participant command that a link
in an email (or a page it leads to) can send is sent that way, through the real core, and
the rest are counted. The numbers are docs/people.md's "How much needs no other system".

Pure (the core's decide/evolve/deadlines, tests/support/domain_story.py's driver): the emails are
the notifications the core sends, their links `links_for`'s, each press `command_for`'s.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from zoneinfo import ZoneInfo

from events.commands import COMMAND_TYPES, ProposeAgreement, ProposeGoalRevision, ProposeMatch
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

    def press(self, person: str, spec: LinkSpec, choice: str, typed: int = 0, **form: str) -> bool:
        """Open `spec`'s link as `person` and press `choice`, if the page offers it."""
        story = self.story
        link = new_link(person, PROGRAMME, STREAM, spec.purpose, now=story.now, subject=spec.subject)
        reader = Reader(PEOPLE[person], ZoneInfo("Europe/Berlin"), PEOPLE)
        page = page_for(link, story.state, reader, dict(part.split("=") for part in filter(None, [spec.query])), story.now)
        if not any(f.choice == choice for f in page.forms):
            return False
        message, fields = command_for(link, story.state, reader, {"choice": choice, **form}, story.now)
        self.read(story.do(COMMAND_TYPES[message], person, **fields))
        self.from_pages[message] += 1
        # The score chosen in the email is the first click; everything else: open, then press.
        self.clicks.setdefault(message, set()).add(2 + typed)
        return True

    def answer_emails(self) -> None:
        """Each party answers what their emails ask, from the emails' links."""
        while self.unread:
            email = self.unread.pop(0)
            person, state = email.recipient_id, self.story.state
            for spec in links_for(email.template, email.data):
                if spec.purpose is Purpose.MATCH_ANSWER:
                    self.press(person, spec, "accept")
                elif spec.purpose is Purpose.SIGN_AGREEMENT and state.agreement is not None:
                    self.press(person, spec, f"sign:{state.agreement.agreement_version}")
                elif spec.purpose is Purpose.FEEDBACK and spec.query == "score=4":
                    self.press(person, spec, "feedback", score="4")
                elif spec.purpose is Purpose.GOAL_REVISION:
                    self.press(person, spec, "acknowledge")
                elif spec.purpose is Purpose.REVIEW:
                    outcome = "close" if spec.subject == "final" else "continue"
                    self.press(person, spec, "review", typed=1, outcome=outcome)  # typed: the outcome chosen
                elif spec.purpose is Purpose.REFLECTION:
                    self.press(person, spec, "reflect", typed=1, text="What I take with me")
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
    inbox.directly(ProposeAgreement, MENTEE, terms=agreement_terms(meeting_frequency="biweekly", term_months=12))
    inbox.answer_emails()  # the mentor signs from the agreement's email, the mentee from the reminder (below)
    held = 0
    while story.state.phase is not Phase.CLOSED and story.now < story.state.started_at + timedelta(days=450):
        meeting = story.state.next_meeting
        if meeting is None or story.state.phase not in (Phase.ACTIVE, Phase.REVIEW):
            inbox.read(story.advance(timedelta(days=1)))
            inbox.answer_emails()
            continue
        if held == 2 and meeting.revision == 0:  # moved once, two days later, from its invitation
            local = (meeting.starts_at + timedelta(days=2)).astimezone(ZoneInfo("Europe/Berlin"))
            inbox.press(MENTOR, inbox.meeting_link(), "moved", typed=1, starts_at=f"{local:%Y-%m-%dT%H:%M}")
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
            inbox.press(MENTEE, LinkSpec("My relationship", Purpose.MY_RELATIONSHIP), "progress:g1", typed=1,
                        progress=str(min(100, held * 5)))  # fmt: skip
        if held == 6:
            inbox.directly(ProposeGoalRevision, MENTOR, goal={"goal_id": "g2", "title": "Mentor two junior engineers"})
        if held == 8:
            inbox.press(MENTEE, LinkSpec("Raise a concern privately", Purpose.CONCERN), "concern", typed=1, text="Too rushed")
        inbox.answer_emails()
    assert story.state.phase is Phase.CLOSED, story.state.phase

    pages, other = sum(inbox.from_pages.values()), sum(inbox.elsewhere.values())
    assert set(inbox.elsewhere) == {"propose_agreement", "propose_goal_revision"}
    assert {"accept_match", "sign_agreement", "record_meeting", "reschedule_meeting", "report_meeting_not_held",
            "correct_meeting_report", "submit_feedback", "acknowledge_goal_revision", "record_goal_progress",
            "raise_concern", "submit_review", "submit_reflection"} <= set(inbox.from_pages)  # fmt: skip
    assert pages / (pages + other) > 0.9
    assert all(clicks <= {2, 3} for clicks in inbox.clicks.values())
    print(f"\nfrom links and pages: {pages} of {pages + other} participant commands; {dict(inbox.from_pages)}; "
          f"elsewhere: {dict(inbox.elsewhere)}; clicks (plus fields typed) per action: "
          f"{ {m: sorted(c) for m, c in inbox.clicks.items()} }")
