"""The pages people open from their emails (mentorflow/pages/), without servers: each kind of
link shows its question, and the command its button sends is one the real core applies; an
answered or replaced question shows a note instead; pages carry no ids and escape every text.
The same pages against real servers: tests/api/test_pages_server.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from events.commands import COMMAND_TYPES, ProposeGoalRevision, RecordMeeting
from events.people import Participant
from mentorflow.action_links import ActionLink, LinkMaker, Purpose, links_for, new_link, verify
from mentorflow.keyring import Keyring
from mentorflow.pages.actions import FormProblem, command_for, page_for
from mentorflow.pages.views import Page, Reader
from tests.support.relationship_phases import (
    MENTEE,
    MENTOR,
    PROGRAMME,
    STREAM,
    Relationship,
    active,
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
    events = story.do(ProposeGoalRevision, MENTOR, goal=changed, rationale="more ambitious")
    revision_id = events[0].revision_id  # type: ignore[attr-defined]
    link = link_of(story, Purpose.GOAL_REVISION, revision_id)
    text = words(show(story, link))
    assert "Run a design review" in text and "Run two design reviews" in text
    press(story, link, "acknowledge")
    assert show(story, link).status == 409


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
                            (Purpose.SIGN_AGREEMENT, "sign:2"), (Purpose.CONCERN, "sign:1")]:  # fmt: skip
        with pytest.raises(FormProblem):
            command_for(link_of(story, purpose, "1"), story.state, reader(), {"choice": choice, "text": "x"}, story.now)


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
    assert [spec.purpose for spec in links_for("match_confirmed", {})] == [Purpose.MY_RELATIONSHIP, Purpose.CONCERN]


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
