"""Agreement: the parties write the agreement, sign the same version, and the cadence begins;
unsigned by its deadline, the relationship ends."""

from __future__ import annotations

from events.commands import Party, ProposeAgreement, SignAgreement
from events.deadlines import add_months
from events.decision import PARTIES, Changes, Emitter, Stage
from events.ending import close
from events.model import (
    AgreementExpired,
    AgreementProposed,
    AgreementReminderIssued,
    AgreementSigned,
    ClosureReason,
    RelationshipActivated,
)
from events.refusals import FieldProblem, RefusalCode, Rejection, limits, refuse
from events.settings import FREQUENCY_ORDER
from events.state import AgreementDraft, GoalProgress, Phase, RelationshipState, joined

stage = Stage("agreement")


@stage.command(ProposeAgreement, phases=(Phase.AGREEMENT,), senders=PARTIES)
def propose_agreement(command: ProposeAgreement, emit: Emitter, party: Party) -> Rejection | None:
    state = emit.current
    settings, terms = state.settings, command.terms
    problems: list[FieldProblem] = []
    if FREQUENCY_ORDER.index(terms.meeting_frequency) > FREQUENCY_ORDER.index(settings.minimum_meeting_frequency):
        problems.append(
            FieldProblem(
                field="terms.meeting_frequency",
                message=f"is less often than the programme minimum ({settings.minimum_meeting_frequency})",
            )
        )
    if not settings.min_meeting_minutes <= terms.meeting_minutes <= settings.max_meeting_minutes:
        problems.append(
            FieldProblem(
                field="terms.meeting_minutes",
                message=f"must be between {settings.min_meeting_minutes} and {settings.max_meeting_minutes}",
            )
        )
    if not settings.min_term_months <= terms.term_months <= settings.max_term_months:
        problems.append(
            FieldProblem(
                field="terms.term_months",
                message=f"must be between {settings.min_term_months} and {settings.max_term_months}",
            )
        )
    if rejection := limits(problems):
        return rejection
    version = state.agreement.agreement_version + 1 if state.agreement else 1
    emit(AgreementProposed, agreement_version=version, terms=terms, proposed_by=command.actor_id)
    return None


@stage.command(SignAgreement, phases=(Phase.AGREEMENT,), senders=PARTIES)
def sign_agreement(command: SignAgreement, emit: Emitter, party: Party) -> Rejection | None:
    agreement = emit.current.agreement
    if agreement is None:
        return refuse(RefusalCode.NOT_FOUND, "no agreement has been proposed yet")
    if command.agreement_version != agreement.agreement_version:
        return refuse(
            RefusalCode.NOT_FOUND,
            f"agreement_version is not the current version ({agreement.agreement_version}); read it and sign that one",
            FieldProblem(field="agreement_version", message=f"should be {agreement.agreement_version}"),
        )
    if party in agreement.signed_by:
        return refuse(RefusalCode.CONFLICT, f"the {party} has already signed version {agreement.agreement_version}")
    emit(AgreementSigned, agreement_version=agreement.agreement_version, party=party, signed_by=command.actor_id)
    if len(agreement.signed_by) == 1:
        emit(
            RelationshipActivated,
            agreement_version=agreement.agreement_version,
            meeting_frequency=agreement.terms.meeting_frequency,
            term_ends_at=add_months(emit.now, agreement.terms.term_months),
        )
    return None


@stage.deadline("agreement_reminder")
def remind_to_sign(emit: Emitter) -> None:
    state = emit.current
    assert state.agreement_due_at is not None
    reminders = sorted(state.settings.agreement_reminder_days, reverse=True)
    days_left = next(days for days in reminders if days not in state.agreement_reminders_sent)
    emit(AgreementReminderIssued, days_left=days_left, agreement_due_at=state.agreement_due_at)


@stage.deadline("agreement_expiry")
def agreement_expired(emit: Emitter) -> None:
    emit(AgreementExpired)
    close(emit, ClosureReason.AGREEMENT_EXPIRED, None)


# -- state changes ---------------------------------------------------------------------------


@stage.evolves(AgreementProposed)
def _proposed(event: AgreementProposed, state: RelationshipState) -> Changes:
    draft = AgreementDraft(
        agreement_version=event.agreement_version, terms=event.terms, proposed_by=event.proposed_by, proposed_at=event.occurred_at
    )
    return {"agreement": draft}


@stage.evolves(AgreementSigned)
def _signed(event: AgreementSigned, state: RelationshipState) -> Changes:
    assert state.agreement is not None
    return {"agreement": state.agreement.model_copy(update={"signed_by": joined(state.agreement.signed_by, event.party)})}


@stage.evolves(AgreementReminderIssued)
def _reminded(event: AgreementReminderIssued, state: RelationshipState) -> Changes:
    return {"agreement_reminders_sent": (*state.agreement_reminders_sent, event.days_left)}


@stage.evolves(AgreementExpired)
def _expired(event: AgreementExpired, state: RelationshipState) -> Changes:
    # The closure that follows it changes the state.
    return {}


@stage.evolves(RelationshipActivated)
def _activated(event: RelationshipActivated, state: RelationshipState) -> Changes:
    assert state.agreement is not None
    return {
        "phase": Phase.ACTIVE,
        "activated_at": event.occurred_at,
        "term_ends_at": event.term_ends_at,
        "meeting_frequency": event.meeting_frequency,
        "goals": {goal.goal_id: GoalProgress(goal=goal) for goal in state.agreement.terms.goals},
    }
