"""Agreement: proposals, amendments, signatures, the programme's bounds, expiry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from events.commands import AcceptMatch, Goal, Milestone, ProposeAgreement, ProposeMatch, SignAgreement
from events.decider import Rejection, decide
from events.model import (
    AgreementExpired, AgreementProposed, ClosureReason, MeetingScheduled, RelationshipActivated, RelationshipClosed,
)
from events.refusals import RefusalCode
from events.state import Phase
from tests.support.domain_story import (
    COORDINATOR, MENTEE, MENTOR, Story, T0, available, matched, programme, terms, types, window,
)

# --- agreement ----------------------------------------------------------------------------


def test_goals_without_ids_are_numbered_and_ids_must_be_unique() -> None:
    agreed = terms(goals=({"title": "A"}, {"goal_id": "custom", "title": "B"}, {"title": "C"}))
    assert [goal.goal_id for goal in agreed.goals] == ["g1", "custom", "g3"]
    with pytest.raises(ValidationError, match="goal ids must be unique"):
        terms(goals=({"goal_id": "g1", "title": "A"}, {"goal_id": "g1", "title": "B"}))
    with pytest.raises(ValidationError, match="milestone ids must be unique"):
        Goal(goal_id="g1", title="A", milestones=(Milestone(milestone_id="m", title="x"),) * 2)
    with pytest.raises(ValidationError, match="at most once per party"):
        terms(availability=(available("mentee", "UTC", window(0, "09:00", "10:00")),) * 2)
    with pytest.raises(ValidationError, match="unknown time zone"):
        available("mentee", "Mars/Olympus_Mons", window(0, "09:00", "10:00"))
    with pytest.raises(ValidationError, match="end after it starts"):
        window(0, "10:00", "09:00")
    # The agreement states its defaults: what is not private, the exit plan, the notice.
    defaults = terms()
    assert defaults.formats == ("video",) and defaults.cancellation_notice_hours == 24
    assert defaults.agenda_policy == "mentee_shares" and defaults.confidentiality.private_by_default
    assert defaults.confidentiality.not_private and defaults.early_exit_plan


def test_an_agreement_never_signed_gets_reminders_then_expires_and_closes_at_once() -> None:
    story = matched()
    story.do(ProposeAgreement, MENTOR, terms=terms())
    story.do(SignAgreement, MENTOR, agreement_version=1)
    due = story.state.agreement_due_at
    assert due == T0 + timedelta(days=14)

    fired = story.advance(timedelta(days=30))
    assert types(fired) == ["AgreementReminderIssued", "AgreementReminderIssued", "AgreementExpired", "RelationshipClosed"]
    first, second, expired, closure = fired
    assert [first.occurred_at, second.occurred_at] == [due - timedelta(days=3), due - timedelta(days=1)]
    assert isinstance(expired, AgreementExpired) and expired.occurred_at == due
    assert isinstance(closure, RelationshipClosed) and closure.reason is ClosureReason.AGREEMENT_EXPIRED
    assert closure.summary.mentor_id == MENTOR and closure.summary.activated_at is None
    assert story.state.phase is Phase.CLOSED
    # The reminder only goes to whoever has not signed yet.
    reminded = [n.recipient_id for n in story.notifications() if n.template == "agreement_reminder"]
    assert reminded == [MENTEE, MENTEE]


def test_an_amendment_voids_signatures_so_a_stale_version_cannot_be_signed() -> None:
    story = matched()
    story.do(ProposeAgreement, MENTEE, terms=terms())
    story.do(SignAgreement, MENTEE, agreement_version=1)
    assert story.state.agreement is not None and story.state.agreement.signed_by == ("mentee",)

    [amended] = story.do(ProposeAgreement, MENTOR, terms=terms(meeting_frequency="weekly"))
    assert isinstance(amended, AgreementProposed) and amended.agreement_version == 2
    amendment = story.state.agreement
    assert amendment is not None and (amendment.signed_by, amendment.proposed_by) == ((), MENTOR)

    assert story.refuse(SignAgreement, MENTOR, agreement_version=1) == (
        "agreement_version is not the current version (2); read it and sign that one"
    )
    assert "not the current version" in story.refuse(SignAgreement, MENTOR, agreement_version=3)
    assert types(story.do(SignAgreement, MENTOR, agreement_version=2)) == ["AgreementSigned"]
    assert story.state.phase is Phase.AGREEMENT  # the mentee's signature of version 1 does not count
    _, activated, scheduled = story.do(SignAgreement, MENTEE, agreement_version=2)
    assert isinstance(activated, RelationshipActivated)
    assert (activated.agreement_version, activated.meeting_frequency) == (2, "weekly")
    assert isinstance(scheduled, MeetingScheduled)


def test_nothing_can_be_signed_before_an_agreement_is_proposed() -> None:
    assert matched().refuse(SignAgreement, MENTEE, agreement_version=1) == "no agreement has been proposed yet"


def test_every_broken_bound_of_an_agreement_is_named_at_once() -> None:
    story = matched()
    reason = story.refuse(ProposeAgreement, MENTEE, terms=terms(meeting_minutes=5, term_months=24))
    assert reason == "terms.meeting_minutes must be between 15 and 120; terms.term_months must be between 1 and 12"
    decision = decide(story.state, story.command(ProposeAgreement, MENTEE, terms=terms(meeting_minutes=5, term_months=24)), story.now)
    assert isinstance(decision, Rejection) and decision.code is RefusalCode.LIMIT
    assert [problem.field for problem in decision.problems] == ["terms.meeting_minutes", "terms.term_months"]


def test_meetings_may_not_be_agreed_less_often_than_the_programme_minimum() -> None:
    story = matched(programme(minimum_meeting_frequency="biweekly"))
    assert story.refuse(ProposeAgreement, MENTEE, terms=terms(meeting_frequency="monthly")) == (
        "terms.meeting_frequency is less often than the programme minimum (biweekly)"
    )
    story.do(ProposeAgreement, MENTEE, terms=terms(meeting_frequency="weekly"))
    story.do(ProposeAgreement, MENTEE, terms=terms(meeting_frequency="biweekly"))


@pytest.mark.parametrize(("minutes", "allowed"), [(14, False), (15, True), (120, True), (121, False)])
def test_meeting_length_must_be_within_programme_bounds(minutes: int, allowed: bool) -> None:
    story = matched()
    if allowed:
        story.do(ProposeAgreement, MENTEE, terms=terms(meeting_minutes=minutes))
    else:
        assert story.refuse(ProposeAgreement, MENTEE, terms=terms(meeting_minutes=minutes)) == (
            "terms.meeting_minutes must be between 15 and 120"
        )


@pytest.mark.parametrize(("months", "allowed"), [(2, False), (3, True), (9, True), (10, False)])
def test_the_term_must_be_within_programme_bounds(months: int, allowed: bool) -> None:
    story = matched(programme(min_term_months=3, max_term_months=9))
    if allowed:
        story.do(ProposeAgreement, MENTOR, terms=terms(term_months=months))
    else:
        assert story.refuse(ProposeAgreement, MENTOR, terms=terms(term_months=months)) == (
            "terms.term_months must be between 3 and 9"
        )


def test_a_party_cannot_accept_or_sign_twice() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    story.do(AcceptMatch, MENTEE)
    assert story.refuse(AcceptMatch, MENTEE) == "the mentee has already accepted this proposal"

    story = matched()
    story.do(ProposeAgreement, MENTEE, terms=terms())
    story.do(SignAgreement, MENTOR, agreement_version=1)
    assert story.refuse(SignAgreement, MENTOR, agreement_version=1) == "the mentor has already signed version 1"
