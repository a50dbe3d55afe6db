"""The `MatchingRound` workflow: one programme's cohort matched at once.

It collects the round's mentees and mentors, solves the assignment for the whole cohort
(an activity: CPU-heavy, and its result — thousands of pairs with explanations — is stored
in PostgreSQL rather than carried through workflow history), then proposes each pair to
its mentee's `Relationship` in batches.

Proposals go out from an activity with the Temporal client, as update-with-start
(USE_EXISTING, REJECT_DUPLICATE): one call starts the relationship if needed and delivers
`propose_match`, and answers whether it was accepted. Child workflows would not do here:
a relationship outlives the round by months (it would need ABANDON), a child cannot be
"started or found running" (a second run of the round would fail on every existing id),
and thousands of children would fill the round's history. Every id is derived from the
round and the mentee — relationship id, workflow id, command id, update id — so a batch
that is retried, or a round that is run again after a crash, proposes nothing twice.
"""

from __future__ import annotations

from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.activity_refs import COLLECT_ROUND_MEMBERS, PROPOSE_ROUND_PAIRS, SOLVE_ROUND
from workflows.calls import call

with workflow.unsafe.imports_passed_through():
    from pairing.rounds import (
        ProposalOptions,
        ProposeRequest,
        RoundMembers,
        RoundRequest,
        RoundScope,
        RoundSolution,
    )

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


class MatchingRoundInput(RoundScope, ProposalOptions):
    # The week whose calendar availability is compared in (default: the round's start).
    week_of: date | None = None


class MatchingRoundResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    programme_id: str
    round_id: str
    mentees: int
    mentors: int
    matched: int
    total_points: int
    mean_score: float
    proposed: int
    already_proposed: int
    not_proposed: int


class RoundProgress(BaseModel):
    model_config = ConfigDict(frozen=True)

    stage: str
    members: RoundMembers | None = None
    solution: RoundSolution | None = None
    proposed: int = 0
    already_proposed: int = 0
    not_proposed: int = 0


@workflow.defn(name="MatchingRound")
class MatchingRound:
    @workflow.init
    def __init__(self, input: MatchingRoundInput) -> None:
        self._progress = RoundProgress(stage="collecting")

    @workflow.run
    async def run(self, input: MatchingRoundInput) -> MatchingRoundResult:
        request = RoundRequest(
            **input.model_dump(include=set(RoundScope.model_fields)), week_of=input.week_of or workflow.now().date()
        )
        members = await call(
            COLLECT_ROUND_MEMBERS,
            request,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RETRY,
            summary="Collect the round's mentees and mentors",
        )
        self._set(stage="solving", members=members)
        workflow.set_current_details(f"Solving: {members.mentees} mentees, {members.mentors} mentors")
        solution = await call(
            SOLVE_ROUND,
            request,
            # A 100,000 × 25,000 round solves for 4 to 14 minutes on 2 busy cores, before its
            # profiles are read and its pairs written (bench/README.md, "The largest cohorts");
            # it heartbeats every 5 s, so a dead worker is still found within the minute.
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=RETRY,
            summary=f"Solve the assignment for {members.mentees} mentees",
        )
        self._set(stage="proposing", solution=solution)
        totals = {"proposed": 0, "already_proposed": 0, "not_proposed": 0}
        while True:
            workflow.set_current_details(f"Proposing: {sum(totals.values())} of {solution.matched} pairs done")
            batch = await call(
                PROPOSE_ROUND_PAIRS,
                ProposeRequest(
                    programme_id=input.programme_id,
                    round_id=input.round_id,
                    **input.model_dump(include=set(ProposalOptions.model_fields)),
                ),
                start_to_close_timeout=timedelta(minutes=10),
                # It heartbeats after each proposal: a batch whose worker died is tried again
                # within a minute, not after the 10 minutes (tests/matching/test_cohort_round_restart.py).
                heartbeat_timeout=timedelta(minutes=1),
                retry_policy=RETRY,
                summary=f"Propose up to {input.batch_size} pairs",
            )
            totals["proposed"] += batch.proposed
            totals["already_proposed"] += batch.already_proposed
            totals["not_proposed"] += batch.not_proposed
            self._set(**totals)
            if batch.remaining == 0 or batch.proposed + batch.already_proposed + batch.not_proposed == 0:
                break
        self._set(stage="done")
        workflow.set_current_details(
            f"Done: {solution.matched} of {solution.mentees} mentees matched, mean score {solution.mean_score}"
        )
        return MatchingRoundResult(
            programme_id=input.programme_id,
            round_id=input.round_id,
            **solution.model_dump(include={"mentees", "mentors", "matched", "total_points", "mean_score"}),
            **totals,
        )

    @workflow.query(name="progress")
    def progress(self) -> RoundProgress:
        return self._progress

    def _set(self, **changes: object) -> None:
        self._progress = self._progress.model_copy(update=changes)
