"""The pages people open from their emails (mentorflow/pages/), without servers: each kind of
link shows its question, and the command its button sends is one the real core applies; an
answered or replaced question shows a note instead; pages carry no ids and escape every text.
The same pages against real servers: tests/api/test_pages_server.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from events.commands import COMMAND_TYPES, NudgeRelationship, ProposeGoalRevision, RecordMeeting, SignAgreement
from events.model import GoalRevisionProposed
from events.notifications import Notification
from events.people import Participant
from mentorflow.action_links import ActionLink, LinkMaker, Purpose, links_for, new_link, verify
from mentorflow.keyring import Keyring
from mentorflow.pages.access import kept_nonce, new_nonce
from mentorflow.pages.actions import CHOICES, command_for, page_for, with_reason
from mentorflow.pages.forms import FormProblem
from mentorflow.pages.views import Page, Reader, Section
from tests.support.domain_story import available, window
from tests.support.relationship_phases import (
    COORDINATOR,
    MENTEE,
    MENTOR,
    PROGRAMME,
    SETTINGS,
    STREAM,
    Relationship,
    active,
    agreeing,
    closing,
    in_review,
    matching,
    proposed,
)

BERLIN = ZoneInfo("Europe/Berlin")
PEOPLE = {
    MENTEE: Participant(participant_id=MENTEE, display_name="Ada Mentee", email="ada@example.org", timezone="Europe/Berlin"),
    MENTOR: Participant(participant_id=MENTOR, display_name="Grace Mentor", email="grace@example.org",
                        timezone="America/New_York"),  # fmt: skip
}


def reader(person: str = MENTEE) -> Reader:
    me = PEOPLE[person]
    return Reader(me, ZoneInfo(me.timezone), {p: PEOPLE[p] for p in PEOPLE if p != person})


def link_of(story: Relationship, purpose: Purpose, subject: str = "", person: str = MENTEE) -> ActionLink:
    return new_link(person, PROGRAMME, STREAM, purpose, now=story.now, subject=subject)


def show(story: Relationship, link: ActionLink, query: dict[str, str] | None = None) -> Page:
    return page_for(link, story.state, reader(link.person_id), query or {}, story.now)


def press(story: Relationship, link: ActionLink, choice: str, **form: str) -> tuple[str, dict[str, Any]]:
    """The command the button sends, applied by the real core (decide, evolve) as its person."""
    message, fields = command_for(link, story.state, reader(link.person_id), {"choice": choice, **form}, story.now)
    story.do(COMMAND_TYPES[message], link.person_id, **fields)
    return message, fields


def words(page: Page) -> str:
    from mentorflow.pages.routes import _templates

    return _templates.get_template("page.html").render(css="", page=page, title=page.title, action="/p/x", csrf="c",
                                                       downloads=[], problem="")  # fmt: skip


def test_a_match_is_accepted_once_and_then_says_so() -> None:
    story = matching()
    link = link_of(story, Purpose.MATCH_ANSWER, MENTOR)
    page = show(story, link)
    assert [form.choice for form in page.forms] == ["accept", "decline"]
    assert "Grace Mentor has been proposed as your mentor." in page.intro
    assert press(story, link, "accept") == ("accept_match", {})
    after = show(story, link)
    assert after.status == 200 and not after.forms and "You accepted" in after.note


def test_a_decline_carries_its_reason_and_another_mentors_link_is_over() -> None:
    story = matching()
    link = link_of(story, Purpose.MATCH_ANSWER, MENTOR, person=MENTOR)
    assert "You have been proposed as the mentor of Ada Mentee." in show(story, link).intro
    assert press(story, link, "decline", reason="no time this term") == ("decline_match", {"reason": "no time this term"})
    assert show(story, link_of(story, Purpose.MATCH_ANSWER, "mentor-other")).status == 409


def test_the_agreement_page_shows_the_terms_and_signs_that_version() -> None:
    story = proposed()
    link = link_of(story, Purpose.SIGN_AGREEMENT, "1")
    page = show(story, link)
    text = words(page)
    assert "Run a design review" in text and "every week" in text and "If we end early" in text
    assert press(story, link, "sign:1") == ("sign_agreement", {"agreement_version": 1})
    assert "You signed version 1" in show(story, link).note
    assert show(story, link_of(story, Purpose.SIGN_AGREEMENT, "2")).status == 409


def test_a_meeting_is_moved_to_a_time_given_in_the_persons_zone() -> None:
    story = active()
    meeting = story.state.next_meeting
    assert meeting is not None
    link = link_of(story, Purpose.MEETING_OUTCOME, str(meeting.meeting_number))
    page = show(story, link, {"choice": "moved"})
    assert [form.choice for form in page.forms] == ["moved"]  # not yet held: only moving it
    assert "(Europe/Berlin)" in page.intro[0]
    new_local = (meeting.starts_at + timedelta(days=1)).astimezone(BERLIN).replace(tzinfo=None)
    message, fields = press(story, link, "moved", starts_at=new_local.isoformat(timespec="minutes"))
    assert message == "reschedule_meeting"
    assert story.state.next_meeting is not None
    assert story.state.next_meeting.starts_at == meeting.starts_at + timedelta(days=1)


def test_we_met_records_the_meeting_once_its_time_has_come() -> None:
    story = active()
    meeting = story.state.next_meeting
    assert meeting is not None
    story.now = meeting.ends_at + timedelta(hours=1)
    link = link_of(story, Purpose.MEETING_OUTCOME, str(meeting.meeting_number), person=MENTOR)
    assert [form.choice for form in show(story, link).forms] == ["met", "not_met", "moved"]
    message, fields = press(story, link, "met")
    assert message == "record_meeting" and fields["meeting_number"] == meeting.meeting_number
    assert story.state.meetings_held == 1
    held = show(story, link)
    assert "is recorded as held" in held.intro[0] and [form.choice for form in held.forms] == ["not_met"]


def test_a_mistaken_answer_is_corrected_from_the_same_email() -> None:
    story = active()
    meeting = story.state.next_meeting
    assert meeting is not None
    story.now = meeting.ends_at + timedelta(hours=1)
    link = link_of(story, Purpose.MEETING_OUTCOME, str(meeting.meeting_number))
    assert press(story, link, "not_met")[0] == "report_meeting_not_held"
    assert story.state.meetings_held == 0 and story.state.meetings_missed == 1
    assert "counted as not held" in show(story, link).intro[0]
    assert press(story, link, "met") == ("correct_meeting_report", {"meeting_number": meeting.meeting_number, "outcome": "held"})
    assert story.state.meetings_held == 1
    assert press(story, link, "not_met")[1]["outcome"] == "not_held"
    assert story.state.meetings_held == 0


def test_feedback_takes_a_score_and_a_comment_and_checks_the_score() -> None:
    story = active()
    for _ in range(story.state.settings.feedback_every_sessions):
        story.meet()
    link = link_of(story, Purpose.FEEDBACK, "1")
    page = show(story, link, {"score": "4"})
    assert "You chose 4 in the email" in page.intro[0]
    with pytest.raises(FormProblem):
        command_for(link, story.state, reader(), {"choice": "feedback", "score": "9"}, story.now)
    assert press(story, link, "feedback", score="4", comment="good")[1] == {"feedback_round": 1, "score": 4, "comment": "good"}
    assert "you gave your feedback" in show(story, link).note


def test_a_goal_change_is_shown_side_by_side_and_acknowledged() -> None:
    story = active()
    changed = {"goal_id": "g1", "title": "Run two design reviews"}
    [proposal] = story.do(ProposeGoalRevision, MENTOR, goal=changed, rationale="more ambitious")
    assert isinstance(proposal, GoalRevisionProposed)
    revision_id = proposal.revision_id
    link = link_of(story, Purpose.GOAL_REVISION, revision_id)
    page = show(story, link)
    text = words(page)
    assert "Run a design review" in text and "Run two design reviews" in text
    # Why, in the proposer's words: from the event (the routes read it from the event store).
    reasoned = with_reason(page, link, story.state, reader(), proposal.rationale)
    assert reasoned.sections[1:] == (Section("Why, in Grace Mentor's words", paragraphs=("more ambitious",)),)
    assert "more ambitious" in words(reasoned)
    assert with_reason(page, link, story.state, reader(), " \n ") == page  # none given: no "why" at all
    proposer = link_of(story, Purpose.GOAL_REVISION, revision_id, person=MENTOR)
    assert with_reason(show(story, proposer), proposer, story.state, reader(MENTOR), "more ambitious") == show(story, proposer)
    press(story, link, "acknowledge")
    assert show(story, link).status == 409
    assert with_reason(show(story, link), link, story.state, reader(), "more ambitious") == show(story, link)


def test_a_review_is_a_short_form() -> None:
    story = in_review()
    link = link_of(story, Purpose.REVIEW, "midpoint")
    with pytest.raises(FormProblem):
        command_for(link, story.state, reader(), {"choice": "review", "outcome": "extend"}, story.now)
    message, fields = press(story, link, "review", outcome="continue", **{"progress:g1": "40"}, comment="on track")
    assert message == "submit_review" and {"goal_id": "g1", "progress_percent": 40} in fields["goal_assessments"]
    assert "you submitted your review" in show(story, link).note


def test_a_reflection_and_a_concern() -> None:
    story = closing()
    reflection = link_of(story, Purpose.REFLECTION)
    with pytest.raises(FormProblem):
        command_for(reflection, story.state, reader(), {"choice": "reflect", "text": "  "}, story.now)
    press(story, reflection, "reflect", text="I learnt to say no")
    assert "Thank you for your reflection" in show(story, reflection).note
    story = active()
    concern = link_of(story, Purpose.CONCERN)
    assert press(story, concern, "concern", text="meetings keep slipping")[0] == "raise_concern"
    assert story.state.concerns_raised == 1


def test_a_link_gives_only_its_own_answers() -> None:
    story = proposed()
    for purpose, choice in [(Purpose.MATCH_ANSWER, "concern"), (Purpose.MY_RELATIONSHIP, "accept"),
                            (Purpose.SIGN_AGREEMENT, "sign:2"), (Purpose.CONCERN, "sign:1"),
                            (Purpose.SIGN_AGREEMENT, "propose"), (Purpose.MY_RELATIONSHIP, "propose"),
                            (Purpose.CHANGE_GOAL, "propose"), (Purpose.PROPOSE_AGREEMENT, "sign:1"),
                            (Purpose.PROPOSE_AGREEMENT, "change:g1"), (Purpose.GOAL_REVISION, "change:g1"),
                            (Purpose.MY_RELATIONSHIP, "change:new"), (Purpose.CONCERN, "change:new"),
                            (Purpose.CHANGE_GOAL, "acknowledge"), (Purpose.FEEDBACK, "propose")]:  # fmt: skip
        with pytest.raises(FormProblem):
            command_for(link_of(story, purpose, "1"), story.state, reader(), {"choice": choice, "text": "x"}, story.now)


@pytest.mark.parametrize("purpose", list(CHOICES))
def test_no_link_gives_another_kinds_answers(purpose: Purpose) -> None:
    """Every answer of every other kind of link, pressed on this one, is refused before any command."""
    story = active()
    others = {choice for kind, choices in CHOICES.items() if kind is not purpose for choice in choices} - set(CHOICES[purpose])
    for choice in sorted(others):
        for sent in (choice, f"{choice}:g1", f"{choice}:1"):
            with pytest.raises(FormProblem):
                command_for(link_of(story, purpose, "1"), story.state, reader(), {"choice": sent, **AGREEMENT}, story.now)


def test_my_relationship_names_people_and_times_and_no_ids() -> None:
    story = active()
    story.meet()
    page = show(story, link_of(story, Purpose.MY_RELATIONSHIP))
    text = words(page)
    assert "Grace Mentor" in text and "(Europe/Berlin)" in text and "Run a design review" in text
    assert page.downloads == (("Add the next meeting to your calendar (.ics)", "/meeting.ics"),)
    for hidden in (STREAM, PROGRAMME, MENTEE, MENTOR, "active", "phase"):
        assert hidden not in text


def test_text_from_people_is_escaped() -> None:
    story = proposed(objective="<script>alert(1)</script>")
    text = words(show(story, link_of(story, Purpose.SIGN_AGREEMENT, "1")))
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_messages_get_the_links_they_ask_for() -> None:
    assert [spec.label for spec in links_for("meeting_missed_check", {"meeting_number": "3"})] == [
        "We met", "We didn't meet", "We moved it", "My relationship", "Raise a concern privately"]  # fmt: skip
    scores = [spec for spec in links_for("feedback_request", {"feedback_round": "2"}) if spec.purpose is Purpose.FEEDBACK]
    assert [(spec.subject, spec.query) for spec in scores] == [("2", f"score={n}") for n in range(1, 6)]
    assert links_for("concern_raised", {"concern_id": "c1"}) == ()
    assert [spec.purpose for spec in links_for("relationship_summary", {})] == []
    assert [spec.purpose for spec in links_for("match_confirmed", {})] == [
        Purpose.PROPOSE_AGREEMENT, Purpose.MY_RELATIONSHIP, Purpose.CONCERN]  # fmt: skip
    assert [spec.purpose for spec in links_for("goal_revised", {})] == [Purpose.MY_RELATIONSHIP, Purpose.CONCERN]


def test_link_paragraphs_sign_each_link_for_its_person() -> None:
    keyring = Keyring.generate("links-1")
    story = matching()
    maker = LinkMaker(keyring, "https://mentoring.example.org")
    specs = links_for("match_proposed", {"mentor_id": MENTOR})
    asked, always = maker.paragraphs(MENTEE, PROGRAMME, STREAM, specs, now=story.now)
    assert asked.startswith("Answer here") and always.startswith("My relationship: https://mentoring.example.org/p/")
    tokens = [line.split("/p/")[1] for line in (asked + "\n" + always).splitlines() if "/p/" in line]
    links = [verify(keyring, token, now=story.now) for token in tokens]
    assert [(link.person_id, link.relationship_id, link.purpose, link.subject) for link in links] == [
        (MENTEE, STREAM, Purpose.MATCH_ANSWER, MENTOR), (MENTEE, STREAM, Purpose.MY_RELATIONSHIP, ""),
        (MENTEE, STREAM, Purpose.CONCERN, "")]  # fmt: skip


def test_a_record_meeting_from_a_link_is_the_contracts_command() -> None:
    story = active()
    meeting = story.state.next_meeting
    assert meeting is not None
    story.now = meeting.ends_at
    message, fields = command_for(link_of(story, Purpose.MEETING_OUTCOME, str(meeting.meeting_number)), story.state,
                                  reader(), {"choice": "met"}, story.now)  # fmt: skip
    RecordMeeting.model_validate({"command_id": "c", "actor_id": MENTEE, **fields})


def test_goal_progress_and_milestones_are_updated_from_my_relationship() -> None:
    story = active()
    link = link_of(story, Purpose.MY_RELATIONSHIP)
    forms = {form.choice: form for form in show(story, link).forms}
    assert set(forms) == {"progress:g1", "progress:g2"}
    assert [field.label for field in forms["progress:g1"].fields] == [
        "Goal 1: Run a design review — progress in %", "Milestone reached: First draft"]  # fmt: skip
    message, fields = press(story, link, "progress:g1", progress="60", **{"milestone:m1": "on"})
    assert fields == {"goal_id": "g1", "progress_percent": 60, "milestones_reached": ["m1"]}
    assert story.state.goals["g1"].milestones_reached == ("m1",)
    assert [field.value for field in {f.choice: f for f in show(story, link).forms}["progress:g1"].fields] == ["60", "on"]
    with pytest.raises(FormProblem):
        command_for(link, story.state, reader(), {"choice": "progress:g1", "progress": "140"}, story.now)


def test_the_pages_style_is_the_one_their_content_security_policy_allows() -> None:
    """No scripts at all, and only the page's own stylesheet: its hash is the policy's."""
    import base64
    import hashlib
    import re

    from mentorflow.pages.routes import _html

    response = _html("message.html", 200, title="t", message="m", kind="note")
    style = re.search(r"<style>(.*)</style>", bytes(response.body).decode(), re.DOTALL)
    assert style is not None and '"Segoe UI"' in style[1]
    digest = base64.b64encode(hashlib.sha256(style[1].encode()).digest()).decode()
    policy = response.headers["content-security-policy"]
    assert f"style-src 'sha256-{digest}'" in policy and "default-src 'none'" in policy and "script-src" not in policy


# -- writing: the agreement and a change to a goal ----------------------------------------------


def filled(page: Page, choice: str, **typed: str) -> dict[str, str]:
    """What a browser sends for the form `choice` of `page`: every box as the page filled it in
    (a checkbox only when ticked), with what the person typed over it."""
    form = next(form for form in page.forms if form.choice == choice)
    sent = {f.name: f.value for f in form.fields if f.kind != "heading" and (f.kind != "checkbox" or f.value)}
    return {**sent, **typed}


AGREEMENT: dict[str, Any] = {"objective": "Grow into a tech lead", "goal1:title": "Lead a design review",
             "goal1:measure": "two reviews led", "goal1:target_date": "2027-09-30", "goal1:milestones": "Shadow one\nLead one",
             "goal2:title": "Mentor a new hire", "meeting_frequency": "biweekly", "meeting_minutes": "45",
             "term_months": "6", "format:in_person": "on"}  # fmt: skip


def test_the_agreement_is_written_from_the_match_confirmed_email() -> None:
    story = agreeing()
    spec = next(s for s in links_for("match_confirmed", {"mentor_id": MENTOR}) if s.purpose is Purpose.PROPOSE_AGREEMENT)
    assert (spec.label, spec.subject) == ("Write the agreement", "0")
    link = link_of(story, spec.purpose, spec.subject)
    page = show(story, link)
    text = words(page)
    assert page.title == "Write your mentoring agreement" and [form.choice for form in page.forms] == ["propose"]
    for label in ("What the mentee wants to achieve", "Goal 3: target date (optional)", "every two weeks",
                  "How long, in minutes (15 to 120)", "We meet by video", "What we say stays between us",
                  "risk of harm to anyone", "The plan for ending early"):  # fmt: skip
        assert label in text, label
    sent = filled(page, "propose", **AGREEMENT)
    message, fields = press(story, link, "propose", **sent)
    assert message == "propose_agreement"
    agreement = story.state.agreement
    assert agreement is not None and agreement.agreement_version == 1 and agreement.proposed_by == MENTEE
    terms = agreement.terms
    assert [(g.goal_id, g.title) for g in terms.goals] == [("g1", "Lead a design review"), ("g2", "Mentor a new hire")]
    assert [m.title for m in terms.goals[0].milestones] == ["Shadow one", "Lead one"]
    assert str(terms.goals[0].target_date) == "2027-09-30" and terms.goals[0].measure == "two reviews led"
    assert (terms.meeting_frequency, terms.meeting_minutes, terms.term_months) == ("biweekly", 45, 6)
    assert terms.formats == ("in_person", "video") and terms.confidentiality.private_by_default
    # Sent again from the same page: the same command (the core answers it as a replay).
    assert command_for(link, story.state, reader(), {**sent, "choice": "propose"}, story.now) == (message, fields)
    assert "You proposed version 1" in show(story, link).note
    # The mentor's link from the same email now shows version 1 to read, and cannot overwrite it.
    theirs = link_of(story, spec.purpose, spec.subject, person=MENTOR)
    stale = show(story, theirs)
    assert stale.status == 409 and "it is now version 1" in stale.note and not stale.forms
    assert stale.links == (("Read and sign the agreement", Purpose.SIGN_AGREEMENT, "1"),)
    with pytest.raises(FormProblem, match="changed while you were writing"):
        command_for(theirs, story.state, reader(MENTOR), {**sent, "choice": "propose", "objective": "Mine"}, story.now)


def test_a_bad_agreement_is_refused_in_plain_words_and_keeps_what_was_typed() -> None:
    from mentorflow.pages.views import refilled

    story = agreeing()
    link = link_of(story, Purpose.PROPOSE_AGREEMENT, "0")
    page = show(story, link)
    bad = filled(page, "propose", **{**AGREEMENT, "objective": "   ", "goal2:title": "", "goal2:measure": "a new hire onboarded",
                                     "goal1:target_date": "next spring", "meeting_minutes": "300", "format:video": ""})  # fmt: skip
    bad.pop("format:video")
    bad["choice"] = "propose"
    with pytest.raises(FormProblem) as refused:
        command_for(link, story.state, reader(), bad, story.now)
    problem = str(refused.value)
    for words_of_it in ("Please write what the mentee wants to achieve.", "Goal 1: please give the target date as a date.",
                        "Goal 2 has no words for the goal itself", "Please give how long you meet, 15 to 120 minutes.",
                        "Nothing was sent yet"):  # fmt: skip
        assert words_of_it in problem, words_of_it
    assert "goal2" not in problem and "meeting_minutes" not in problem
    with pytest.raises(FormProblem, match="^Please choose at least one way to meet. Nothing was sent yet"):
        command_for(link, story.state, reader(), {**filled(page, "propose", **AGREEMENT), "format:in_person": "",
                                                  "format:video": "", "choice": "propose"}, story.now)  # fmt: skip
    assert story.state.agreement is None
    kept = {f.name: f.value for f in refilled(page, bad).forms[0].fields}
    assert kept["goal2:measure"] == "a new hire onboarded" and kept["goal1:target_date"] == "next spring"
    assert kept["meeting_frequency"] == "biweekly" and kept["format:in_person"] == "on" and kept["format:video"] == ""
    assert 'value="biweekly" checked' in words(refilled(page, bad))


def test_the_agreement_is_changed_from_the_version_it_changes() -> None:
    weekdays = (available("mentee", "Europe/Berlin", window(1, "09:00", "17:00")),)
    story = proposed(programme_settings := SETTINGS.model_copy(update={"minimum_meeting_frequency": "biweekly"}),
                     meeting_frequency="biweekly", availability=weekdays)  # fmt: skip
    story.do(SignAgreement, MENTEE, agreement_version=1)
    spec = next(s for s in links_for("agreement_proposed", {"agreement_version": "1"}) if s.purpose is Purpose.PROPOSE_AGREEMENT)
    assert (spec.label, spec.subject) == ("Propose changes to the agreement", "1")
    link = link_of(story, spec.purpose, spec.subject, person=MENTOR)
    page = show(story, link)
    frequency = next(f for f in page.forms[0].fields if f.name == "meeting_frequency")
    assert [value for value, _ in frequency.options] == ["weekly", "biweekly"]  # never less often than the programme's minimum
    assert programme_settings.minimum_meeting_frequency == "biweekly"
    as_it_stands = filled(page, "propose")
    assert as_it_stands["goal1:title"] == "Run a design review" and as_it_stands["goal1:milestones"] == "First draft"
    with pytest.raises(FormProblem, match="as it stands"):
        command_for(link, story.state, reader(MENTOR), {**as_it_stands, "choice": "propose"}, story.now)
    assert story.state.agreement is not None
    version_1 = story.state.agreement.terms.goals
    press(story, link, "propose", **{**as_it_stands, "term_months": "9", "goal3:title": "Give a talk"})
    agreement = story.state.agreement
    assert agreement is not None and agreement.agreement_version == 2 and agreement.signed_by == ()
    assert [g.goal_id for g in agreement.terms.goals] == ["g1", "g2", "g3"] and agreement.terms.term_months == 9
    assert agreement.terms.goals[:2] == version_1  # unchanged goals keep their ids and milestones
    assert agreement.terms.availability == weekdays  # not on the form: kept


def test_a_goal_change_is_proposed_on_its_page_and_acknowledged_by_the_other() -> None:
    story = active()
    mine = show(story, link_of(story, Purpose.MY_RELATIONSHIP))
    assert mine.links == (("Propose a change to a goal", Purpose.CHANGE_GOAL, ""),)
    link = link_of(story, Purpose.CHANGE_GOAL)
    page = show(story, link)
    assert [(form.choice, form.heading) for form in page.forms] == [
        ("change:g1", "Goal 1: Run a design review"), ("change:g2", "Goal 2: Mentor a junior engineer"),
        ("change:new", "Or add a new goal")]  # fmt: skip
    with pytest.raises(FormProblem, match="as it stands"):
        command_for(link, story.state, reader(), {**filled(page, "change:g1"), "choice": "change:g1"}, story.now)
    sent = filled(page, "change:g1", title="Run two design reviews", rationale="The first went well")
    message, fields = press(story, link, "change:g1", **sent)
    assert message == "propose_goal_revision" and fields["goal"]["milestones"] == [{"milestone_id": "m1", "title": "First draft"}]
    again = {**sent, "choice": "change:g1"}
    assert command_for(link, story.state, reader(), again, story.now) == (message, fields)  # sent twice: the same change
    assert [form.choice for form in show(story, link).forms] == ["change:g2", "change:new"]
    with pytest.raises(FormProblem, match="already waits"):
        command_for(link, story.state, reader(), {**again, "title": "Run three design reviews"}, story.now)
    # The mentor acknowledges it from the email the change sends, on the existing page.
    revision_id = next(iter(story.state.pending_goal_revisions))
    spec = next(s for s in links_for("goal_revision_to_acknowledge", {"revision_id": revision_id})
                if s.purpose is Purpose.GOAL_REVISION)  # fmt: skip
    acknowledge = link_of(story, spec.purpose, spec.subject, person=MENTOR)
    assert "Run two design reviews" in words(show(story, acknowledge))
    press(story, acknowledge, "acknowledge")
    assert story.state.goals["g1"].goal.title == "Run two design reviews" and not story.state.pending_goal_revisions
    new = filled(show(story, link), "change:new", title="Give a talk", target_date="2027-11-30")
    press(story, link, "change:new", **new)
    assert [p.goal.goal_id for p in story.state.pending_goal_revisions.values()] == ["g3"]


def test_the_match_confirmed_email_leads_to_writing_the_agreement() -> None:
    keyring = Keyring.generate("links-2")
    story = agreeing()
    maker = LinkMaker(keyring, "https://mentoring.example.org")
    asked, always = maker.paragraphs(MENTOR, PROGRAMME, STREAM, links_for("match_confirmed", {}), now=story.now)
    assert asked.startswith("Write it down on one page (nothing is sent until you press its button):\nWrite the agreement: ")
    link = verify(keyring, asked.split("/p/")[1], now=story.now)
    assert (link.person_id, link.purpose, link.subject) == (MENTOR, Purpose.PROPOSE_AGREEMENT, "0")
    assert show(story, link).forms[0].button == "Propose the agreement"


def reminded(story: Relationship, keyring: Keyring, reminder: Notification) -> tuple[list[str], list[ActionLink]]:
    """The labels and links of what an agreement reminder asks its recipient, as its email carries them."""
    assert reminder.template == "agreement_reminder"
    maker = LinkMaker(keyring, "https://mentoring.example.org")
    asked = maker.paragraphs(reminder.recipient_id, PROGRAMME, STREAM, links_for(reminder.template, reminder.data),
                             now=story.now)[0].splitlines()[1:]  # fmt: skip
    return [line.split(": ")[0] for line in asked], [verify(keyring, line.split("/p/")[1], now=story.now) for line in asked]


def test_an_agreement_reminder_leads_to_the_version_it_is_about_like_the_agreements_email() -> None:
    keyring = Keyring.generate("links-3")
    story = proposed()
    story.do(SignAgreement, MENTEE, agreement_version=1)
    assert story.state.agreement_due_at is not None
    [reminder] = story.notifications_of(story.advance(to=story.state.agreement_due_at - timedelta(days=3)))
    labels, (sign, change) = reminded(story, keyring, reminder)
    assert labels == ["Read and sign the agreement", "Propose changes to the agreement"]
    emailed = next(n for n in story.notifications() if n.template == "agreement_proposed")
    assert [(link.purpose, link.subject) for link in (sign, change)] == [
        (spec.purpose, spec.subject) for spec in links_for(emailed.template, emailed.data)[:2]]  # fmt: skip
    assert (change.person_id, change.purpose, change.subject) == (MENTOR, Purpose.PROPOSE_AGREEMENT, "1")
    assert show(story, change).forms[0].button == "Propose it as version 2"  # the form, filled in with version 1
    assert [form.choice for form in show(story, sign).forms] == ["sign:1"]
    # A coordinator's nudge sends the same reminder, with the same links.
    story.advance(timedelta(days=1, hours=12))
    [nudged] = story.notifications_of(story.do(NudgeRelationship, COORDINATOR))
    assert [(link.purpose, link.subject) for link in reminded(story, keyring, nudged)[1]] == [
        (Purpose.SIGN_AGREEMENT, "1"), (Purpose.PROPOSE_AGREEMENT, "1")]  # fmt: skip


def test_an_agreement_reminder_before_anything_is_proposed_leads_to_writing_it() -> None:
    keyring = Keyring.generate("links-4")
    story = agreeing()
    assert story.state.agreement_due_at is not None
    reminders = story.notifications_of(story.advance(to=story.state.agreement_due_at - timedelta(days=3)))
    assert [n.recipient_id for n in reminders] == [MENTEE, MENTOR] and "agreement_version" not in reminders[0].data
    labels, [write] = reminded(story, keyring, reminders[1])
    assert labels == ["Write the agreement"] and (write.purpose, write.subject) == (Purpose.PROPOSE_AGREEMENT, "0")
    assert show(story, write).forms[0].button == "Propose the agreement"


def test_a_recalibrating_review_and_my_relationship_lead_to_the_writing_pages() -> None:
    specs = links_for("review_completed", {"kind": "midpoint", "outcome": "recalibrate"})
    assert (specs[0].label, specs[0].purpose) == ("Propose a change to a goal", Purpose.CHANGE_GOAL)
    assert Purpose.CHANGE_GOAL not in {s.purpose for s in links_for("review_completed", {"outcome": "continue"})}
    story = agreeing()
    assert show(story, link_of(story, Purpose.MY_RELATIONSHIP)).links == (
        ("Write the agreement", Purpose.PROPOSE_AGREEMENT, "0"),)  # fmt: skip
    story = proposed()
    assert show(story, link_of(story, Purpose.MY_RELATIONSHIP)).links == (
        ("Read and sign the agreement", Purpose.SIGN_AGREEMENT, "1"),
        ("Propose changes to the agreement", Purpose.PROPOSE_AGREEMENT, "1"))  # fmt: skip
    assert show(story, link_of(story, Purpose.SIGN_AGREEMENT, "1")).links[0][1] is Purpose.PROPOSE_AGREEMENT
    story = active()
    assert show(story, link_of(story, Purpose.PROPOSE_AGREEMENT, "1")).status == 409
    story = closing()
    assert show(story, link_of(story, Purpose.CHANGE_GOAL)).status == 409
    assert show(story, link_of(story, Purpose.MY_RELATIONSHIP)).links == ()


def test_a_browser_keeps_its_form_nonce_and_anything_else_in_the_cookie_is_replaced() -> None:
    made = new_nonce()
    assert kept_nonce(made) == made and new_nonce() != made
    for wrong in (None, "", "nonce-1", made[:-1], made + "A", made[:-1] + "=", made[:-1] + '"', made[:-1] + "\u00e9"):
        assert kept_nonce(wrong) is None, wrong
