"""Concerns: raised with the coordinators, keeping the relationship at risk until resolved."""

from __future__ import annotations

from datetime import timedelta


from events.commands import AcceptMatch, ProposeAgreement, ProposeMatch, RaiseConcern, ResolveConcern, SignAgreement
from events.model import ConcernRaised, ConcernResolved, Health, HealthChanged
from tests.support.domain_story import COORDINATOR, MENTEE, MENTOR, SECRET, Story, active, terms

# --- concerns -----------------------------------------------------------------------------


def test_a_concern_reaches_the_coordinators_and_keeps_the_relationship_at_risk_until_resolved() -> None:
    story = active()
    story.advance(timedelta(days=2))
    raised, at_risk = story.do(RaiseConcern, MENTEE, text=f"{SECRET} my mentor belittles me")
    assert isinstance(raised, ConcernRaised) and (raised.party, raised.raised_by) == ("mentee", MENTEE)
    concern_id = raised.concern_id
    assert isinstance(at_risk, HealthChanged) and (at_risk.health, at_risk.reasons) == (Health.AT_RISK, ("concern_open",))
    assert set(story.state.open_concerns) == {concern_id} and story.state.concerns_raised == 1
    [alert] = [n for n in story.notifications() if n.template == "concern_raised"]
    assert (alert.recipient_id, alert.data) == (COORDINATOR, {"concern_id": concern_id, "raised_by_party": "mentee"})

    # Meeting well does not outweigh an open concern.
    story.meet()
    assert story.state.health is Health.AT_RISK

    assert story.refuse(ResolveConcern, MENTOR, concern_id=concern_id) == (
        "only a coordinator or whoever raised the concern may resolve it"
    )
    assert story.refuse(ResolveConcern, COORDINATOR, concern_id="c-unknown") == "there is no open concern c-unknown"
    resolved, healthy = story.do(ResolveConcern, COORDINATOR, concern_id=concern_id, resolution=f"{SECRET} talked")
    assert isinstance(resolved, ConcernResolved) and resolved.resolved_by == COORDINATOR
    assert isinstance(healthy, HealthChanged) and healthy.health is Health.HEALTHY
    assert story.state.open_concerns == {} and story.state.concerns_raised == 1
    # Only whoever raised it and the coordinators knew of it.
    assert [n.recipient_id for n in story.notifications() if n.template == "concern_resolved"] == [MENTEE, COORDINATOR]
    assert "no open concern" in story.refuse(ResolveConcern, MENTEE, concern_id=concern_id)


def test_whoever_raised_a_concern_may_resolve_it_and_a_coordinators_concern_only_coordinators() -> None:
    story = active()
    [by_mentor, _] = story.do(RaiseConcern, MENTOR, text=f"{SECRET} no-shows")
    [by_coordinator] = story.do(RaiseConcern, COORDINATOR, text=f"{SECRET} complaint from the team")
    assert isinstance(by_coordinator, ConcernRaised) and by_coordinator.party is None
    assert story.state.health_reasons == ("concern_open",)
    assert [e.type for e in story.do(ResolveConcern, MENTOR, concern_id=by_mentor.concern_id)] == ["ConcernResolved"]  # type: ignore[union-attr]
    assert story.state.health is Health.AT_RISK  # one still open
    for party in (MENTEE, MENTOR):
        assert "only a coordinator" in story.refuse(ResolveConcern, party, concern_id=by_coordinator.concern_id)
    _, healthy = story.do(ResolveConcern, COORDINATOR, concern_id=by_coordinator.concern_id)
    assert isinstance(healthy, HealthChanged) and healthy.health is Health.HEALTHY


def test_a_concern_raised_while_matching_counts_once_the_cadence_starts() -> None:
    story = Story()
    story.do(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
    [raised] = story.do(RaiseConcern, MENTEE, text=f"{SECRET} unsure about this mentor")
    assert isinstance(raised, ConcernRaised) and story.state.health is Health.HEALTHY
    story.do(AcceptMatch, MENTEE)
    story.do(AcceptMatch, MENTOR)
    story.do(ProposeAgreement, MENTOR, terms=terms())
    story.do(SignAgreement, MENTEE, agreement_version=1)
    *_, flagged = story.do(SignAgreement, MENTOR, agreement_version=1)
    assert isinstance(flagged, HealthChanged) and flagged.reasons == ("concern_open",)
