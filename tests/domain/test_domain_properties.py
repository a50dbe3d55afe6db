"""Properties: a hypothesis state machine throws plausible commands and time at the core and
checks the invariants the workflow shell relies on.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from events.commands import (
    COMMAND_TYPES, DIRECTORY_ACTOR, AcceptMatch, AcknowledgeGoalRevision, AgreementTerms, CancelMeeting,
    CloseRelationship, Command, CorrectMeetingReport, DeclineMatch, Goal, GoalAssessment, Milestone, NudgeRelationship,
    PartyAvailability, PauseRelationship, ProposeAgreement, ProposeGoalRevision, ProposeMatch, RaiseConcern,
    RecordGoalProgress, RecordIntroduction, RecordMeeting, ReportMeetingNotHeld, ReportParticipantLeft, RequestReview, RescheduleMeeting, ResolveConcern, ResumeRelationship,
    ShareResource, SignAgreement, SubmitFeedback, SubmitReflection, SubmitReview,
)
from events.deadlines import next_deadline
from events.decider import Rejection, catch_up, decide, decide_deadline, reject, start_relationship
from events.health import assess_health
from events.cadence import plan_next_meeting
from events.model import (
    AnyEvent, CommandRejected, Health, HealthChanged, MeetingHeld, MeetingMissed, MeetingReportCorrected,
    ReflectionSubmitted,
)
from events.store import load_event
from events.notifications import notifications_for
from events.commands import command_digest
from events.refusals import RefusalCode
from events.settings import FREQUENCY_ORDER, ProgrammeSettings
from events.state import Phase, RelationshipState
from events.decider import evolve, fold
from tests.support.domain_story import (
    COORDINATOR, MENTEE, MENTEE_IN_KOLKATA, MENTOR, MENTOR_IN_NEW_YORK, MONDAY, OTHER_MENTOR, PROGRAMME, SECRET,
    STRANGER, STREAM, T0, THIRD_MENTOR, available, programme, terms, window,
)

# --- properties ---------------------------------------------------------------------------

ACTORS = (MENTEE, MENTOR, OTHER_MENTOR, COORDINATOR, STRANGER, DIRECTORY_ACTOR)
MENTORS = (MENTOR, OTHER_MENTOR, THIRD_MENTOR)
# Repeats weight the draw: closing is rare so that relationships get to live a while.
COMMAND_KINDS: tuple[type[Command], ...] = (
    ProposeMatch, ProposeMatch, AcceptMatch, AcceptMatch, AcceptMatch, DeclineMatch,
    ProposeAgreement, ProposeAgreement, SignAgreement, SignAgreement, SignAgreement,
    RecordMeeting, RecordMeeting, RecordMeeting, CancelMeeting, RescheduleMeeting, ReportMeetingNotHeld,
    CorrectMeetingReport, NudgeRelationship, RecordGoalProgress, ProposeGoalRevision, AcknowledgeGoalRevision, SubmitFeedback, SubmitFeedback,
    RaiseConcern, ResolveConcern, RecordIntroduction, ShareResource, PauseRelationship, ResumeRelationship,
    RequestReview, SubmitReview, SubmitReview, SubmitReview, SubmitReflection, SubmitReflection,
    CloseRelationship, ReportParticipantLeft,
)  # fmt: skip

# What the parties of each phase usually send; closing is left to the unplanned commands.
FITTING_KINDS: dict[Phase, tuple[type[Command], ...]] = {
    Phase.MATCHING: (ProposeMatch, AcceptMatch, AcceptMatch),
    Phase.AGREEMENT: (ProposeAgreement, SignAgreement, SignAgreement),
    Phase.ACTIVE: (
        RecordMeeting, RecordMeeting, RecordMeeting, RecordMeeting, CancelMeeting, RescheduleMeeting,
        ReportMeetingNotHeld, CorrectMeetingReport, RecordGoalProgress, ProposeGoalRevision, AcknowledgeGoalRevision, SubmitFeedback, SubmitFeedback,
        RaiseConcern, ResolveConcern, RecordIntroduction, ShareResource, PauseRelationship, ResumeRelationship,
        RequestReview,
    ),  # fmt: skip
    Phase.REVIEW: (SubmitReview, SubmitReview, SubmitReview, RecordMeeting, SubmitFeedback),
    Phase.CLOSING: (SubmitReflection, SubmitReflection, NudgeRelationship),
    Phase.CLOSED: COMMAND_KINDS,
}

AVAILABILITIES: tuple[tuple[PartyAvailability, ...], ...] = (
    (),
    (MENTEE_IN_KOLKATA, MENTOR_IN_NEW_YORK),
    (available("mentor", "Europe/Berlin", window(2, "16:00", "18:00"), window(4, "08:00", "08:30")),),
    # Never overlapping: the due time itself.
    (
        available("mentee", "Asia/Kolkata", window(MONDAY, "19:00", "20:00")),
        available("mentor", "America/New_York", window(MONDAY, "17:00", "18:00")),
    ),
)

agreement_terms = st.builds(
    terms,
    meeting_frequency=st.sampled_from(FREQUENCY_ORDER),
    meeting_minutes=st.sampled_from((10, 15, 60, 120, 121)),
    term_months=st.integers(min_value=1, max_value=14),
)


@st.composite
def programme_settings(draw: st.DrawFn) -> ProgrammeSettings:
    at_risk = draw(st.integers(min_value=2, max_value=30))
    min_term = draw(st.integers(min_value=1, max_value=3))
    ttl = draw(st.integers(min_value=2, max_value=20))
    return ProgrammeSettings(
        proposal_ttl_days=draw(st.integers(min_value=1, max_value=10)),
        matching_timeout_days=draw(st.integers(min_value=5, max_value=40)),
        max_match_attempts=draw(st.integers(min_value=1, max_value=4)),
        agreement_ttl_days=ttl,
        agreement_reminder_days=tuple(draw(st.sets(st.integers(min_value=1, max_value=ttl - 1), max_size=2))),
        minimum_meeting_frequency=draw(st.sampled_from(FREQUENCY_ORDER)),
        min_term_months=min_term,
        max_term_months=draw(st.integers(min_value=min_term, max_value=12)),
        meeting_reminder_lead_hours=draw(st.integers(min_value=0, max_value=72)),
        agenda_request_lead_hours=draw(st.integers(min_value=0, max_value=72)),
        missed_meeting_grace_hours=draw(st.integers(min_value=1, max_value=72)),
        feedback_every_sessions=draw(st.integers(min_value=1, max_value=3)),
        low_feedback_score=draw(st.integers(min_value=1, max_value=3)),
        max_pause_days=draw(st.integers(min_value=1, max_value=60)),
        nudge_before_at_risk_days=draw(st.integers(min_value=0, max_value=at_risk - 1)),
        at_risk_after_days=at_risk,
        stalled_after_days=draw(st.integers(min_value=at_risk + 1, max_value=at_risk + 40)),
        close_stalled_after_days=draw(st.sampled_from((0, 1, 10, 30))),
        missed_meetings_at_risk=draw(st.integers(min_value=1, max_value=3)),
        midpoint_review=draw(st.booleans()),
        review_response_days=draw(st.integers(min_value=1, max_value=20)),
        max_extensions=draw(st.integers(min_value=0, max_value=2)),
        max_extension_months=draw(st.integers(min_value=1, max_value=3)),
        reflection_days=draw(st.integers(min_value=1, max_value=20)),
        coordinator_ids=draw(st.sampled_from(((COORDINATOR,), ()))),
    )


def waiting_for(state: RelationshipState, kind: type[Command]) -> tuple[str, ...]:
    """The parties who have yet to answer what the current phase asks of them."""
    mentor = state.mentor_id or (state.candidate.mentor_id if state.candidate else None)
    answered: tuple[str, ...] = ()
    if kind is AcceptMatch and state.candidate is not None:
        answered = state.candidate.accepted_by
    elif kind is SignAgreement and state.agreement is not None:
        answered = state.agreement.signed_by
    elif kind is SubmitReview and state.review is not None:
        answered = tuple(state.review.submissions)
    elif kind is SubmitReflection and state.phase is Phase.CLOSING:
        answered = state.reflections_from
    else:
        return ()
    parties = {"mentee": MENTEE, "mentor": mentor}
    return tuple(actor for party, actor in parties.items() if party not in answered and actor is not None)


def terms_within(programme: ProgrammeSettings) -> st.SearchStrategy[AgreementTerms]:
    allowed = FREQUENCY_ORDER[: FREQUENCY_ORDER.index(programme.minimum_meeting_frequency) + 1]
    return st.builds(
        terms,
        meeting_frequency=st.sampled_from(allowed),
        meeting_minutes=st.integers(min_value=programme.min_meeting_minutes, max_value=programme.max_meeting_minutes),
        # Short terms more often, so that runs get to their reviews and closure.
        term_months=st.sampled_from(
            (programme.min_term_months, programme.min_term_months, programme.max_term_months)
        ),
        availability=st.sampled_from(AVAILABILITIES),
        cancellation_notice_hours=st.sampled_from((0, 24, 72)),
        agenda_policy=st.sampled_from(("mentee_shares", "both_share", "no_agenda")),
    )


time_steps = st.one_of(
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
    st.sampled_from([timedelta(hours=1), timedelta(days=6), timedelta(days=13), timedelta(days=29)]),
)


class RelationshipMachine(RuleBasedStateMachine):
    """Plausible senders and a clock that only moves forward, against the pure core."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[AnyEvent] = []
        self.states: list[RelationshipState] = []
        self.state: RelationshipState
        self.now = T0
        self.command_ids = itertools.count(1)
        self.sent_ids: list[str] = []
        self.applied_ids: set[str] = set()

    @initialize(programme=programme_settings(), head_start=st.sampled_from(("none", "matched", "active", "active")), data=st.data())
    def start(self, programme: ProgrammeSettings, head_start: str, data: st.DataObject) -> None:
        self.history = start_relationship(STREAM, PROGRAMME, MENTEE, programme, self.now)
        state = fold(self.history)
        assert state is not None
        self.state = state
        self.states = [state]
        # Most runs skip ahead (through the same rules) to spend their steps in the cadence.
        if head_start == "none":
            return
        proposer = programme.coordinator_ids[0] if programme.coordinator_ids else "matching-engine"
        self.send(ProposeMatch(command_id="head-1", actor_id=proposer, mentor_id=MENTOR), False)
        self.send(AcceptMatch(command_id="head-2", actor_id=MENTEE), False)
        self.send(AcceptMatch(command_id="head-3", actor_id=MENTOR), False)
        if head_start == "active":
            agreed = data.draw(terms_within(programme))
            self.send(ProposeAgreement(command_id="head-4", actor_id=MENTOR, terms=agreed), False)
            self.send(SignAgreement(command_id="head-5", actor_id=MENTEE, agreement_version=1), False)
            self.send(SignAgreement(command_id="head-6", actor_id=MENTOR, agreement_version=1), False)
            assert self.state.phase is Phase.ACTIVE

    def apply(self, events: list[AnyEvent]) -> None:
        for expected_version, event in enumerate(events, start=self.state.version + 1):
            assert event.version == expected_version and event.stream_id == STREAM
            assert event.occurred_at == self.now
            self.state = evolve(self.state, event)
            self.states.append(self.state)
        self.history.extend(events)

    def draw_command(self, data: st.DataObject, fitting: bool, kind: type[Command] | None = None) -> Command:
        """Any command from anyone, or (`fitting`) one the current phase expects from a party."""
        state, programme = self.state, self.state.settings
        mentor = state.mentor_id or (state.candidate.mentor_id if state.candidate else MENTOR)
        reused = self.sent_ids and data.draw(st.integers(min_value=0, max_value=9)) == 0
        command_id = data.draw(st.sampled_from(self.sent_ids)) if reused else f"cmd-{next(self.command_ids)}"
        if fitting:
            kind = kind or data.draw(st.sampled_from(FITTING_KINDS[state.phase]))
            actor = data.draw(st.sampled_from(waiting_for(state, kind) or (MENTEE, mentor)))
        else:
            kind = data.draw(st.sampled_from(COMMAND_KINDS))
            actor = data.draw(st.sampled_from((MENTEE, mentor, *ACTORS)))

        def pick(options: Any) -> Any:
            return data.draw(st.sampled_from(tuple(options)))

        secret = f"{SECRET} {kind.message_name}"
        meeting_number = state.next_meeting.meeting_number if state.next_meeting else 1
        fields: dict[str, Any] = {}
        if kind is ProposeMatch:
            proposers = programme.coordinator_ids or ("matching-engine",)
            actor = pick(proposers if fitting else (*proposers, STRANGER, MENTEE))
            fields["mentor_id"] = pick(MENTORS if fitting else (*MENTORS, MENTEE))
        elif kind is DeclineMatch:
            fields["reason"] = pick(("", secret))
        elif kind is ProposeAgreement:
            fields["terms"] = data.draw(terms_within(programme) if fitting else agreement_terms)
        elif kind is SignAgreement:
            current = state.agreement.agreement_version if state.agreement else 1
            fields["agreement_version"] = pick((current,) if fitting else (current, current + 1, max(current - 1, 1)))
        elif kind is RecordMeeting:
            # At the meeting, up to skew in the future, reported weeks late, or correcting a miss.
            offset = data.draw(st.timedeltas(min_value=timedelta(days=-40), max_value=timedelta(hours=2)))
            fields["held_at"] = pick((self.now, self.now + offset))
            fields["duration_minutes"] = data.draw(st.integers(min_value=1, max_value=480))
            fields["notes"] = secret
            corrections: tuple[int, ...] = state.missed_meeting_numbers if fitting else (*state.missed_meeting_numbers, 1, 99)
            correcting = data.draw(st.booleans())
            if corrections and correcting:
                fields["meeting_number"] = pick(corrections)
        elif kind is CancelMeeting:
            fields["meeting_number"] = meeting_number if fitting else pick((meeting_number, meeting_number + 1))
            fields["reason"] = secret
        elif kind is RescheduleMeeting:
            fields["meeting_number"] = meeting_number if fitting else pick((meeting_number, meeting_number + 1))
            fields["starts_at"] = self.now + data.draw(st.timedeltas(min_value=timedelta(hours=-1), max_value=timedelta(days=20)))
        elif kind in (ReportMeetingNotHeld, CorrectMeetingReport):
            # The scheduled meeting (once it has begun, or too early), a past one, or none.
            past = tuple(m.meeting_number for m in state.past_meetings)
            fields["meeting_number"] = pick((meeting_number, *past) if fitting else (meeting_number, *past, 99))
            fields["reason"] = secret
            if kind is CorrectMeetingReport:
                outcome = fields["outcome"] = pick(("held", "not_held"))
                if outcome == "held" or not fitting:
                    offset = data.draw(st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(hours=2)))
                    fields["held_at"] = pick((None, self.now + offset))
                    fields["duration_minutes"] = pick((None, 30, 90))
            actor = pick((MENTEE, mentor) if fitting else (actor, COORDINATOR))
        elif kind is NudgeRelationship:
            actor = pick((COORDINATOR, COORDINATOR, actor))
        elif kind is RecordGoalProgress:
            fields["goal_id"] = pick((tuple(state.goals) or ("g1",)) if fitting else ("g1", "g2", "g9"))
            fields["progress_percent"] = pick((0, 30, 60, 100))
            milestones = ("m1", "m2") if fitting else ("m1", "m2", "m9")
            fields["milestones_reached"] = tuple(data.draw(st.lists(st.sampled_from(milestones), max_size=2)))
        elif kind is ProposeGoalRevision:
            fields["goal"] = pick((Goal(goal_id="g1", title="Run two reviews"), Goal(goal_id="g3", title="Give a talk")))
            fields["rationale"] = secret
        elif kind is AcknowledgeGoalRevision:
            pending = tuple(state.pending_goal_revisions)
            fields["revision_id"] = pick(pending if fitting and pending else (*pending, "r-unknown"))
        elif kind is SubmitFeedback:
            fields["feedback_round"] = data.draw(st.integers(min_value=1, max_value=state.feedback_round + 1))
            fields["score"] = data.draw(st.integers(min_value=1, max_value=5))
            fields["comment"] = secret
        elif kind is RaiseConcern:
            actor = pick((actor, COORDINATOR))
            fields["text"] = secret
        elif kind is ResolveConcern:
            actor = pick((actor, COORDINATOR))
            fields["concern_id"] = pick((*state.open_concerns, "c-unknown"))
            fields["resolution"] = secret
        elif kind is RecordIntroduction:
            fields["introduced_to"] = "a staff engineer"
            fields["note"] = secret
        elif kind is ShareResource:
            fields["title"] = "a book"
        elif kind is PauseRelationship:
            fields["until"] = self.now + data.draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=70)))
            fields["reason"] = secret
        elif kind in (ResumeRelationship, RequestReview):
            actor = pick((actor, COORDINATOR))
        elif kind is SubmitReview:
            outcome = pick(("continue", "continue", "recalibrate", "extend", "close"))
            fields["outcome"] = outcome
            if outcome == "extend" or not fitting:
                fields["extension_months"] = pick((None, 1, 2, 4))
            if data.draw(st.booleans()):
                goal_id = pick((*state.goals, "g1") if fitting else ("g1", "g9"))
                fields["goal_assessments"] = (GoalAssessment(goal_id=goal_id, progress_percent=50, comment=secret),)
            fields["comment"] = secret
        elif kind is CloseRelationship:
            fields["note"] = secret
        elif kind is ReportParticipantLeft:
            actor = pick((DIRECTORY_ACTOR, COORDINATOR, actor))
            fields["participant_id"] = pick((MENTEE, mentor, STRANGER))
        elif kind is SubmitReflection:
            fields["text"] = secret
        return kind(command_id=command_id, actor_id=actor, **fields)

    def send(self, command: Command, record_rejection: bool) -> None:
        before = self.state.model_dump_json()
        decision = decide(self.state, command, self.now)
        # A decision is either events or a rejection, never both, and never a mutation.
        assert isinstance(decision, (list, Rejection))
        assert self.state.model_dump_json() == before
        assert decide(self.state, command, self.now) == decision
        if command.command_id in self.state.processed_command_ids:
            # A retry decides nothing; the same id with other content is refused as reused.
            first = self.state.applied_commands[command.command_id]
            if first.digest == command_digest(command):
                assert decision == []
            else:
                assert isinstance(decision, Rejection) and decision.code is RefusalCode.COMMAND_ID_REUSED
        if isinstance(decision, Rejection):
            # A rejection emits nothing and says why, without confidential text.
            assert decision.reason and SECRET not in decision.reason
            if record_rejection:
                self.apply([reject(self.state, command.message_name, command.command_id, decision, self.now)])
        else:
            assert all(event.command_id == command.command_id for event in decision)
            assert command.command_id in self.state.processed_command_ids or decision
            self.apply(decision)
            if decision:
                self.applied_ids.add(command.command_id)
        self.sent_ids.append(command.command_id)

    @rule(data=st.data(), record_rejection=st.booleans())
    def send_any_command(self, data: st.DataObject, record_rejection: bool) -> None:
        self.send(self.draw_command(data, fitting=False), record_rejection)

    @rule(data=st.data(), record_rejection=st.booleans())
    def send_a_command_the_phase_expects(self, data: st.DataObject, record_rejection: bool) -> None:
        self.send(self.draw_command(data, fitting=True), record_rejection)

    @rule(data=st.data())
    def send_another_command_the_phase_expects(self, data: st.DataObject) -> None:
        self.send(self.draw_command(data, fitting=True), record_rejection=False)

    @precondition(lambda self: self.state.phase in (Phase.MATCHING, Phase.AGREEMENT, Phase.REVIEW, Phase.CLOSING))
    @rule(data=st.data())
    def both_sides_answer_at_once(self, data: st.DataObject) -> None:
        """Everything the current phase still waits for, sent in a row (it may still be refused)."""
        state = self.state
        if state.phase is Phase.MATCHING and state.candidate is None:
            self.send(self.draw_command(data, fitting=True, kind=ProposeMatch), record_rejection=False)
        elif state.phase is Phase.AGREEMENT and state.agreement is None:
            self.send(self.draw_command(data, fitting=True, kind=ProposeAgreement), record_rejection=False)
        answers: dict[Phase, type[Command]] = {
            Phase.MATCHING: AcceptMatch, Phase.AGREEMENT: SignAgreement, Phase.REVIEW: SubmitReview, Phase.CLOSING: SubmitReflection
        }  # fmt: skip
        kind = answers.get(self.state.phase)
        if kind is None:
            return
        for _ in waiting_for(self.state, kind):
            self.send(self.draw_command(data, fitting=True, kind=kind), record_rejection=False)

    @precondition(lambda self: self.state.in_cadence and not self.state.is_paused and self.state.next_meeting is not None)
    @rule(data=st.data())
    def meet_as_scheduled(self, data: st.DataObject) -> None:
        """Wait for the scheduled meeting (firing what falls due first) and report it held."""
        meeting = self.state.next_meeting
        assert meeting is not None
        self.live_until(meeting.starts_at)
        if self.state.next_meeting == meeting:
            actor = data.draw(st.sampled_from((MENTEE, MENTOR)))
            self.send(RecordMeeting(command_id=f"cmd-{next(self.command_ids)}", actor_id=actor, held_at=self.now, duration_minutes=60), False)

    @precondition(lambda self: self.state.is_paused)
    @rule(actor=st.sampled_from((MENTEE, MENTOR, COORDINATOR)))
    def resume_early(self, actor: str) -> None:
        self.send(ResumeRelationship(command_id=f"cmd-{next(self.command_ids)}", actor_id=actor), False)

    @precondition(lambda self: self.state.phase is Phase.ACTIVE and not self.state.is_paused)
    @rule(data=st.data())
    def meet_until_the_next_review(self, data: st.DataObject) -> None:
        """Keep the rhythm until a review opens (or for a while), then answer it or not."""
        for _ in range(30):
            if self.state.phase is not Phase.ACTIVE or self.state.is_paused or self.state.next_meeting is None:
                break
            self.meet_as_scheduled(data)
        if self.state.phase is Phase.REVIEW:
            answer = data.draw(st.sampled_from(("each their own", "agree", "agree", "leave it")))
            if answer == "each their own":
                self.both_sides_answer_at_once(data)
            elif answer == "agree":
                self.agree_on_a_review_outcome(data.draw(st.sampled_from(("continue", "recalibrate", "extend", "close"))))

    @precondition(lambda self: self.state.phase is Phase.ACTIVE and not self.state.is_paused)
    @rule(data=st.data())
    def pause_for_a_while(self, data: st.DataObject) -> None:
        longest = self.state.settings.max_pause_days
        until = self.now + timedelta(days=data.draw(st.integers(min_value=1, max_value=longest)))
        actor = data.draw(st.sampled_from((MENTEE, MENTOR, COORDINATOR)))
        self.send(PauseRelationship(command_id=f"cmd-{next(self.command_ids)}", actor_id=actor, until=until), False)

    @precondition(lambda self: bool(self.state.open_concerns) and self.state.phase not in (Phase.CLOSING, Phase.CLOSED))
    @rule(data=st.data())
    def resolve_a_concern(self, data: st.DataObject) -> None:
        concern_id = data.draw(st.sampled_from(sorted(self.state.open_concerns)))
        raised_by = self.state.open_concerns[concern_id].party
        actor = COORDINATOR if raised_by is None else data.draw(st.sampled_from((COORDINATOR, self.state.id_of(raised_by) or MENTEE)))
        self.send(ResolveConcern(command_id=f"cmd-{next(self.command_ids)}", actor_id=actor, concern_id=concern_id), False)

    @precondition(lambda self: bool(self.state.missed_meeting_numbers) and self.state.in_cadence)
    @rule(data=st.data())
    def correct_a_missed_meeting(self, data: st.DataObject) -> None:
        """It did take place after all: the record of a missed meeting is corrected."""
        number = data.draw(st.sampled_from(self.state.missed_meeting_numbers))
        held_at = max(self.now - timedelta(days=data.draw(st.integers(min_value=0, max_value=20))), self.state.activated_at)  # type: ignore[type-var]
        correction = RecordMeeting(
            command_id=f"cmd-{next(self.command_ids)}", actor_id=MENTOR, held_at=held_at, duration_minutes=45, meeting_number=number
        )
        self.send(correction, False)

    @precondition(lambda self: self.state.in_cadence and not self.state.is_paused and self.state.next_meeting is not None)
    @rule(data=st.data(), late=st.sampled_from((timedelta(0), timedelta(minutes=30), timedelta(days=3))))
    def say_the_meeting_did_not_take_place(self, data: st.DataObject, late: timedelta) -> None:
        """Once it has begun (or after the deadline counted it missed), a party says it did not happen."""
        meeting = self.state.next_meeting
        assert meeting is not None
        self.live_until(meeting.starts_at + late)
        actor = data.draw(st.sampled_from((MENTEE, MENTOR)))
        report = ReportMeetingNotHeld(command_id=f"cmd-{next(self.command_ids)}", actor_id=actor, meeting_number=meeting.meeting_number)
        self.send(report, False)

    @precondition(lambda self: self.state.in_cadence and any(m.outcome != "cancelled" for m in self.state.past_meetings))
    @rule(data=st.data())
    def correct_a_report(self, data: st.DataObject) -> None:
        """A party got a report wrong: the latest reported meeting is turned the other way."""
        past = [m for m in self.state.past_meetings if m.outcome != "cancelled"]
        meeting = data.draw(st.sampled_from(past[-3:]))
        outcome = "not_held" if meeting.outcome == "held" else "held"
        actor = data.draw(st.sampled_from((MENTEE, MENTOR)))
        correction = CorrectMeetingReport(
            command_id=f"cmd-{next(self.command_ids)}", actor_id=actor, meeting_number=meeting.meeting_number, outcome=outcome
        )
        self.send(correction, False)

    @precondition(lambda self: bool(self.state.settings.coordinator_ids) and not self.state.is_closed)
    @rule()
    def a_coordinator_nudges(self) -> None:
        self.send(NudgeRelationship(command_id=f"cmd-{next(self.command_ids)}", actor_id=COORDINATOR), False)

    @precondition(lambda self: self.state.in_cadence and self.state.feedback_round > 0)
    @rule(actor=st.sampled_from((MENTEE, MENTOR)), score=st.integers(min_value=1, max_value=5))
    def give_feedback_for_the_latest_round(self, actor: str, score: int) -> None:
        feedback = SubmitFeedback(
            command_id=f"cmd-{next(self.command_ids)}", actor_id=actor, feedback_round=self.state.feedback_round, score=score
        )
        self.send(feedback, False)

    @precondition(lambda self: self.state.in_cadence)
    @rule(proposer=st.sampled_from((MENTEE, MENTOR)), goal_id=st.sampled_from(("g1", "g3")))
    def revise_a_goal_in_writing(self, proposer: str, goal_id: str) -> None:
        goal = Goal(goal_id=goal_id, title="Revised", milestones=(Milestone(milestone_id="m2", title="Review held"),))
        command_id = f"cmd-{next(self.command_ids)}"
        self.send(ProposeGoalRevision(command_id=command_id, actor_id=proposer, goal=goal), False)
        if command_id in self.state.pending_goal_revisions:
            other = MENTOR if proposer == MENTEE else MENTEE
            self.send(AcknowledgeGoalRevision(command_id=f"cmd-{next(self.command_ids)}", actor_id=other, revision_id=command_id), False)

    @precondition(lambda self: self.state.phase is Phase.REVIEW)
    @rule(outcome=st.sampled_from(("continue", "recalibrate", "extend", "close")))
    def agree_on_a_review_outcome(self, outcome: str) -> None:
        for actor in waiting_for(self.state, SubmitReview):
            review = SubmitReview(command_id=f"cmd-{next(self.command_ids)}", actor_id=actor, outcome=outcome)
            self.send(review, False)

    @rule(step=time_steps)
    def let_time_pass(self, step: timedelta) -> None:
        self.now += step

    @rule()
    def check_deadline_now(self) -> None:
        events = decide_deadline(self.state, self.now)
        deadline = next_deadline(self.state)
        # Every due deadline yields events; one that is not due yields none.
        assert bool(events) == (deadline is not None and deadline.at <= self.now)
        assert decide_deadline(self.state, self.now) == events
        assert all(event.command_id is None for event in events)
        self.apply(events)

    @rule(days=st.sampled_from((0, 1, 30, 400)))
    def catch_up_after_a_gap(self, days: int) -> None:
        # What the workflow does when a command arrives: apply whatever is overdue first.
        self.now += timedelta(days=days)
        present, events = catch_up(self.state, self.now)
        assert fold(events, self.state) == present
        assert decide_deadline(present, self.now) == []
        deadline = next_deadline(present)
        assert deadline is None or deadline.at > self.now
        assert catch_up(present, self.now) == (present, [])
        self.apply(events)

    @precondition(lambda self: not self.state.is_closed)
    @rule()
    def sleep_until_next_deadline(self) -> None:
        deadline = next_deadline(self.state)
        assert deadline is not None
        self.now = max(self.now, deadline.at)
        events = decide_deadline(self.state, self.now)
        assert events, f"a due {deadline.kind} deadline must change something"
        self.apply(events)

    def live_until(self, target: datetime) -> None:
        # What the workflow does while nobody writes: wake at each deadline, decide, sleep again.
        while (deadline := next_deadline(self.state)) is not None and deadline.at <= target:
            self.now = max(self.now, deadline.at)
            events = decide_deadline(self.state, self.now)
            assert events, f"a due {deadline.kind} deadline must change something"
            self.apply(events)
        self.now = max(self.now, target)

    # Long quiet spells once active; matching and agreement move at the pace of the rules above.
    @precondition(lambda self: self.state.phase in (Phase.ACTIVE, Phase.REVIEW, Phase.CLOSING))
    @rule(days=st.integers(min_value=1, max_value=120))
    def live_through_the_deadlines_of_the_coming_days(self, days: int) -> None:
        self.live_until(self.now + timedelta(days=days))

    @invariant()
    def folding_the_history_rebuilds_the_state(self) -> None:
        # The fold of the whole history == the state built step by step, deterministically.
        assert fold(self.history) == self.state

    @invariant()
    def an_open_relationship_always_has_a_next_deadline(self) -> None:
        if self.state.is_closed:
            assert next_deadline(self.state) is None
            assert self.state.closure_reason is not None and self.state.closed_at is not None
            assert self.state.summary is not None and self.state.summary.closure_reason is self.state.closure_reason
        else:
            assert next_deadline(self.state) is not None

    @invariant()
    def versions_are_contiguous_and_event_ids_unique(self) -> None:
        assert self.state.version == len(self.history) == self.history[-1].version
        ids = {event.event_id for event in self.history}
        assert len(ids) == len(self.history)

    @invariant()
    def every_applied_command_id_is_processed(self) -> None:
        assert self.applied_ids <= self.state.processed_command_ids
        applied = {e.command_id for e in self.history if e.command_id is not None and not isinstance(e, CommandRejected)}
        assert self.state.processed_command_ids == applied == set(self.state.applied_commands)

    @invariant()
    def the_state_matches_its_phase(self) -> None:
        state = self.state
        assert (state.phase is Phase.REVIEW) == (state.review is not None)
        # A correction to "not held" takes a held meeting back (its MeetingMissed counts it missed).
        unheld = len([e for e in self.history if isinstance(e, MeetingReportCorrected) and e.outcome == "not_held"])
        assert state.meetings_held == len([e for e in self.history if isinstance(e, MeetingHeld)]) - unheld
        assert state.meeting_minutes_total >= 0
        corrections = len([e for e in self.history if isinstance(e, MeetingHeld) and e.correction])
        assert state.meetings_missed == len(state.missed_meeting_numbers) == len(
            [e for e in self.history if isinstance(e, MeetingMissed)]
        ) - corrections
        assert 0 <= state.consecutive_missed <= state.meetings_missed
        assert state.reflections_from == tuple(sorted({e.party for e in self.history if isinstance(e, ReflectionSubmitted)}))
        if state.phase in (Phase.CLOSING, Phase.CLOSED):
            assert state.closure_reason is not None and state.next_meeting is None and not state.is_paused
            return
        assert state.match_attempts < state.settings.max_match_attempts or state.phase is not Phase.MATCHING
        if state.phase is Phase.MATCHING:
            assert state.mentor_id is None and state.agreement is None
        if state.phase is Phase.AGREEMENT:
            assert state.mentor_id is not None and state.agreement_due_at is not None and state.candidate is None
        if state.in_cadence:
            assert state.activated_at is not None and state.term_ends_at is not None
            assert state.agreement is not None and set(state.agreement.signed_by) == {"mentee", "mentor"}
            if state.is_paused:
                assert state.phase is Phase.ACTIVE and state.next_meeting is None
                assert next_deadline(state).kind == "pause_ends"  # type: ignore[union-attr]
            elif state.next_meeting is None:
                # In its cadence a relationship has its next meeting, unless none fits in the
                # term any more (as of its last decision; a rejection decides nothing).
                decided_at = next(e.occurred_at for e in reversed(self.history) if not isinstance(e, CommandRejected))
                assert plan_next_meeting(state, decided_at) is None
            else:
                # The latest one numbered, and never past the end of the term.
                assert state.next_meeting.meeting_number == state.last_meeting_number
                assert state.next_meeting.starts_at < state.next_meeting.ends_at <= state.term_ends_at

    @invariant()
    def health_is_what_assess_health_says_until_the_next_deadline(self) -> None:
        state = self.state
        deadline = next_deadline(state)
        if state.in_cadence and not state.is_paused and deadline is not None and deadline.at > self.now:
            assert assess_health(state, self.now) == (state.health, state.health_reasons)

    @invariant()
    def closure_is_final(self) -> None:
        phases = [state.phase for state in self.states]
        if Phase.CLOSING in phases or Phase.CLOSED in phases:
            first = next(i for i, phase in enumerate(phases) if phase in (Phase.CLOSING, Phase.CLOSED))
            assert all(phase in (Phase.CLOSING, Phase.CLOSED) for phase in phases[first:])
            allowed = {"ReflectionSubmitted", "RelationshipClosed", "CommandRejected", "RelationshipNudged"}
            assert {event.type for event in self.history[first + 1 :]} <= allowed
        if Phase.CLOSED in phases:
            closed_at = phases.index(Phase.CLOSED)
            assert {event.type for event in self.history[closed_at + 1 :]} <= {"CommandRejected"}

    @invariant()
    def nothing_confidential_is_in_the_state(self) -> None:
        assert SECRET not in self.state.model_dump_json()

    def teardown(self) -> None:
        if not self.history:
            return
        # What the event store hands back must fold to the same state.
        loaded = [load_event(json.loads(json.dumps(event.model_dump(mode="json")))) for event in self.history]
        assert fold(loaded) == self.state
        for before, event, after in zip(self.states[:-1], self.history[1:], self.states[1:], strict=True):
            notifications = notifications_for(event, after, before)
            assert len({n.notification_id for n in notifications}) == len(notifications)
            for notification in notifications:
                assert SECRET not in notification.model_dump_json()
                assert notification.notification_id in (
                    f"{event.event_id}:{notification.recipient_id}",
                    f"{event.event_id}:{notification.template}:{notification.recipient_id}",
                )
        # Each change of health is a change, told from the health it replaced.
        health, reasons = Health.HEALTHY, tuple[str, ...]()
        for change in (event for event in self.history if isinstance(event, HealthChanged)):
            assert change.previous is health and (change.health, change.reasons) != (health, reasons)
            health, reasons = change.health, change.reasons


RelationshipMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_relationship_invariants_hold_for_any_plausible_sequence = RelationshipMachine.TestCase


def test_the_machine_sends_every_command() -> None:
    assert {command_type.message_name for command_type in COMMAND_KINDS} == set(COMMAND_TYPES)
