"""What the meeting rules decided before the anchored cadence (`cadence_rules` 1), recorded.

Relationships that were running when the anchored cadence shipped replay their own history
on the new code: the workflow re-decides every command and deadline it received, so the
legacy rules must decide exactly what they decided then (tests/domain/test_meeting_cadence.py
checks it against `tests/fixtures/legacy_cadence.json`).

This module drives seeded, plausible relationships (meetings held on time, early, late and
several times over, backfilled, corrected, cancelled, moved past the end of the term,
pauses, extensions, daylight-saving changes) and records each step: the command or
deadline, the time, and the events decided or the refusal. It was run once, on the code
from before the change:

    .venv/bin/python -m tests.support.legacy_cadence      # rewrites tests/fixtures/legacy_cadence.json

Never re-record it to make the check pass: the file is the legacy behaviour.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from events.commands import (
    AcceptMatch,
    AgreementTerms,
    AvailabilityWindow,
    CancelMeeting,
    Command,
    PartyAvailability,
    PauseRelationship,
    ProposeAgreement,
    ProposeMatch,
    RecordMeeting,
    RequestReview,
    RescheduleMeeting,
    ResumeRelationship,
    SignAgreement,
    SubmitReview,
)
from events.deadlines import next_deadline
from events.decider import Rejection, decide, decide_deadline, start_relationship
from events.model import AnyEvent
from events.settings import ProgrammeSettings
from events.state import Phase, RelationshipState
from events.decider import evolve, fold

FIXTURE = Path(__file__).parent.parent / "fixtures" / "legacy_cadence.json"
STREAM, PROGRAMME, MENTEE, MENTOR, COORDINATOR = "rel-legacy", "prog-1", "mentee-1", "mentor-1", "coord-1"
SETTINGS = ProgrammeSettings(coordinator_ids=(COORDINATOR,))


def _window(weekday: int, start: str, end: str) -> AvailabilityWindow:
    return AvailabilityWindow(weekday=weekday, start=time.fromisoformat(start), end=time.fromisoformat(end))


AVAILABILITY: dict[str, tuple[PartyAvailability, ...]] = {
    "none": (),
    "berlin": (
        PartyAvailability(party="mentee", timezone="Europe/Berlin", windows=(_window(0, "09:00", "10:00"), _window(3, "16:00", "18:00"))),
        PartyAvailability(party="mentor", timezone="Europe/Berlin", windows=(_window(0, "08:00", "12:00"), _window(3, "17:00", "19:00"))),
    ),
    "kolkata-new-york": (
        PartyAvailability(party="mentee", timezone="Asia/Kolkata", windows=(_window(0, "18:00", "23:30"),)),
        PartyAvailability(party="mentor", timezone="America/New_York", windows=(_window(0, "08:00", "12:00"),)),
    ),
    "sydney-santiago": (
        PartyAvailability(party="mentee", timezone="Australia/Sydney", windows=(_window(1, "07:00", "10:00"), _window(2, "07:00", "10:00"))),
        PartyAvailability(party="mentor", timezone="America/Santiago", windows=(_window(0, "16:00", "20:00"), _window(1, "16:00", "20:00"))),
    ),
}


def _payload(command: Command) -> dict[str, Any]:
    return command.model_dump(mode="json")


def event_record(event: AnyEvent) -> dict[str, Any]:
    """An event as compared: without defaults (fields added later keep their default) and
    without the command stamp (it fingerprints the command's own schema)."""
    return {"type": event.type, **event.model_dump(mode="json", exclude_defaults=True, exclude={"caused_by"})}


class Recorder:
    def __init__(self, seed: int, frequency: str, term_months: int, availability: str, start: datetime) -> None:
        self.rng = random.Random(seed)
        self.now = start
        self.ids = 0
        self.steps: list[dict[str, Any]] = []
        self.frequency, self.term_months, self.availability = frequency, term_months, availability
        events = start_relationship(STREAM, PROGRAMME, MENTEE, SETTINGS, start)
        self.started = [event_record(e) for e in events]
        state = fold(events)
        assert state is not None
        self.state: RelationshipState = state

    def send(self, command_type: type[Command], actor: str, **fields: Any) -> bool:
        self.ids += 1
        command = command_type(command_id=f"cmd-{self.ids}", actor_id=actor, **fields)
        decision = decide(self.state, command, self.now)
        step: dict[str, Any] = {"at": self.now.isoformat(), "message": command.message_name, "payload": _payload(command)}
        if isinstance(decision, Rejection):
            step["refused"] = decision.code.value
        else:
            step["events"] = [event_record(e) for e in decision]
            self._apply(decision)
        self.steps.append(step)
        return not isinstance(decision, Rejection)

    def _apply(self, events: list[AnyEvent]) -> None:
        for event in events:
            self.state = evolve(self.state, event)

    def advance(self, to: datetime) -> None:
        while (deadline := next_deadline(self.state)) is not None and deadline.at <= to:
            self.now = max(self.now, deadline.at)
            events = decide_deadline(self.state, self.now)
            self.steps.append({"at": self.now.isoformat(), "deadline": deadline.kind, "events": [event_record(e) for e in events]})
            self._apply(events)
        self.now = max(self.now, to)

    def activate(self) -> None:
        self.send(ProposeMatch, COORDINATOR, mentor_id=MENTOR)
        self.send(AcceptMatch, MENTEE)
        self.send(AcceptMatch, MENTOR)
        self.advance(self.now + timedelta(hours=self.rng.randint(1, 72)))
        terms = AgreementTerms(
            objective="Grow",
            goals=({"title": "Lead a review"},),
            meeting_frequency=self.frequency,
            meeting_minutes=self.rng.choice((30, 60, 90)),
            term_months=self.term_months,
            availability=AVAILABILITY[self.availability],
        )
        self.send(ProposeAgreement, MENTEE, terms=terms)
        self.send(SignAgreement, MENTEE, agreement_version=1)
        self.advance(self.now + timedelta(minutes=self.rng.randint(1, 3000)))
        self.send(SignAgreement, MENTOR, agreement_version=1)

    def party(self) -> str:
        return self.rng.choice((MENTEE, MENTOR))

    def step(self) -> None:
        state, rng = self.state, self.rng
        if state.phase is Phase.REVIEW:
            outcome = rng.choice(("continue", "continue", "continue", "extend", "extend", "extend", "close"))
            for actor in (MENTEE, MENTOR):
                self.send(SubmitReview, actor, outcome=outcome)
            return
        if state.is_paused:
            if rng.random() < 0.5:
                self.send(ResumeRelationship, self.party())
            else:
                self.advance(self.now + timedelta(days=rng.randint(1, 20)))
            return
        meeting = state.next_meeting
        action = rng.choice(
            ("meet", "meet", "meet", "meet", "late", "quick", "quick", "backfill", "correct", "cancel", "move", "pause", "wait", "review")
        )
        if meeting is None or action == "wait":
            self.advance(self.now + timedelta(hours=rng.randint(1, 24 * 30)))
        elif action == "meet":
            self.advance(meeting.starts_at + rng.choice((timedelta(0), timedelta(minutes=20), timedelta(hours=-30))))
            self.send(RecordMeeting, self.party(), held_at=self.now, duration_minutes=60)
        elif action == "late":
            # Held as planned, reported days later (the grace period may have passed).
            self.advance(meeting.ends_at + timedelta(hours=rng.randint(1, 96)))
            self.send(RecordMeeting, self.party(), held_at=meeting.starts_at, duration_minutes=45)
        elif action == "quick":
            for _ in range(rng.randint(2, 5)):
                self.send(RecordMeeting, self.party(), held_at=self.now, duration_minutes=30)
                self.now += timedelta(seconds=rng.randint(1, 20))
        elif action == "backfill":
            held_at = max(self.now - timedelta(days=rng.randint(0, 40), hours=rng.randint(0, 23)), state.activated_at or self.now)
            self.send(RecordMeeting, self.party(), held_at=held_at, duration_minutes=60)
        elif action == "correct":
            numbers = (*state.missed_meeting_numbers, state.last_meeting_number, max(state.last_meeting_number - 1, 1), 99)
            held_at = max(self.now - timedelta(days=rng.randint(0, 20)), state.activated_at or self.now)
            self.send(RecordMeeting, self.party(), held_at=held_at, duration_minutes=60, meeting_number=rng.choice(numbers))
        elif action == "cancel":
            self.send(CancelMeeting, self.party(), meeting_number=meeting.meeting_number)
        elif action == "move":
            self.send(
                RescheduleMeeting,
                self.party(),
                meeting_number=meeting.meeting_number,
                starts_at=self.now + timedelta(hours=rng.randint(2, 24 * 70)),
            )
        elif action == "pause":
            self.send(PauseRelationship, self.party(), until=self.now + timedelta(days=rng.randint(3, 50)))
        elif action == "review":
            self.send(RequestReview, self.party())


SCENARIOS: list[dict[str, Any]] = [
    {
        "seed": seed,
        "frequency": ("weekly", "biweekly", "monthly")[seed % 3],
        "term_months": (1, 2, 3, 6)[seed % 4],
        "availability": tuple(AVAILABILITY)[seed % len(AVAILABILITY)],
        # Start dates spread over a year, so daylight-saving changes fall inside the terms.
        "start": (datetime(2025, 1, 4, 7, 30, tzinfo=UTC) + timedelta(days=23 * seed, hours=5 * seed)).isoformat(),
    }
    for seed in range(24)
]
STEPS_PER_SCENARIO = 45


def record(scenario: dict[str, Any]) -> dict[str, Any]:
    recorder = Recorder(
        scenario["seed"], scenario["frequency"], scenario["term_months"], scenario["availability"], datetime.fromisoformat(scenario["start"])
    )
    recorder.activate()
    for _ in range(STEPS_PER_SCENARIO):
        if recorder.state.phase in (Phase.CLOSING, Phase.CLOSED):
            break
        recorder.step()
    return {**scenario, "started": recorder.started, "steps": recorder.steps}


def main() -> None:
    FIXTURE.parent.mkdir(exist_ok=True)
    recorded = [record(scenario) for scenario in SCENARIOS]
    FIXTURE.write_text(json.dumps(recorded, indent=None, separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
    steps = sum(len(r["steps"]) for r in recorded)
    print(f"recorded {len(recorded)} relationships, {steps} steps, {FIXTURE.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
