"""What each kind of link asks, and the command a button press sends.

`page_for` is what GET shows: the question, in the reader's words, with its forms — or, when
there is nothing (more) to answer, a note saying so (already done: 200; answered elsewhere,
replaced or over: 409). `command_for` turns a submitted form into the relationship's command
(message name and payload, without `command_id` and `actor_id`, which the caller adds), or
`FormProblem` naming what to fix. Pure: the relationship decides for itself whether the
command is allowed, as for any other sender.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from events.health import NUDGE_EVERY, waiting_reminder
from events.refusals import Rejection
from events.state import Phase, RelationshipState
from mentorflow.action_links import CHANGE_AGREEMENT_LABEL, ActionLink, Purpose
from mentorflow.pages.forms import FormProblem
from mentorflow.pages.forms import form_int as _int
from mentorflow.pages.forms import form_text as _text
from mentorflow.pages.views import (
    Field,
    Form,
    Page,
    Reader,
    Section,
    agreement_sections,
    done,
    goal_items,
    other_party,
    over,
    relationship_page,
)
from mentorflow.pages.writing import (
    Command,
    agreement_command,
    agreement_form_page,
    goal_change_command,
    goal_change_page,
)

OUTCOME_WORDS = (
    ("continue", "Go on as we are"),
    ("recalibrate", "Change our goals"),
    ("extend", "Extend the term"),
    ("close", "Finish the relationship"),
)


# -- the pages -------------------------------------------------------------------------------


def _match(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str], now: datetime) -> Page:
    title = "Your mentoring match"
    candidate = state.candidate
    if candidate is None or candidate.mentor_id != link.subject:
        if state.mentor_id == link.subject:
            return done(title, "The match is confirmed: both of you accepted. Nothing more to do here.")
        return over(title, "This proposal is no longer open: it was answered, it expired, or another mentor was "
                           "proposed. Your coordinator will be in touch; \"My relationship\" in any newer email shows "
                           "where things stand.")  # fmt: skip
    party = state.party_of(reader.person.participant_id)
    if party in candidate.accepted_by:
        return done(title, "You accepted this match. When the other person accepts too, you will get an email.")
    other = reader.name_of(other_party(state, reader.person.participant_id))
    intro = (f"{other} has been proposed as your mentor." if party == "mentee"
             else f"You have been proposed as the mentor of {other}.")  # fmt: skip
    return Page(
        title,
        intro=(intro, f"Please answer by {reader.when(candidate.expires_at)}."),
        forms=(
            Form("accept", "Accept the match"),
            Form("decline", "Decline the match", heading="Or decline", secondary=True, fields=(
                Field("textarea", "reason", "Why (optional)"),)),
        ),
    )  # fmt: skip


def _agreement(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str], now: datetime) -> Page:
    title = "Your mentoring agreement"
    agreement = state.agreement
    if agreement is None:
        return over(title, "There is no agreement to sign yet. Write it together; you will get an email when it is proposed.")
    version = agreement.agreement_version
    if link.subject and link.subject != str(version):
        return over(title, f"This agreement was replaced by a newer version ({version}). Use the link in the newer "
                           "email to read and sign it.")  # fmt: skip
    if state.phase is not Phase.AGREEMENT:
        return done(title, "The agreement is signed by both of you. Nothing more to do here.")
    party = state.party_of(reader.person.participant_id)
    if party in agreement.signed_by:
        return done(title, f"You signed version {version}. When the other person signs it too, your relationship starts.")
    return Page(
        title,
        intro=(f"Version {version}, proposed on {reader.when(agreement.proposed_at)}. Read it; sign it if you agree. "
               f"If you want changes, talk to each other first, then use “{CHANGE_AGREEMENT_LABEL}”.",),  # fmt: skip
        sections=agreement_sections(state),
        forms=(Form(f"sign:{version}", f"Sign version {version}", fields=(Field("hidden", "version", value=str(version)),)),),
        links=((CHANGE_AGREEMENT_LABEL, Purpose.PROPOSE_AGREEMENT, str(version)),),
    )


def _meeting(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str], now: datetime) -> Page:
    title = "Your mentoring meeting"
    number = int(link.subject) if link.subject.isdigit() else 0
    scheduled = state.next_meeting if state.next_meeting and state.next_meeting.meeting_number == number else None
    past = next((m for m in state.past_meetings if m.meeting_number == number), None)
    if state.phase not in (Phase.ACTIVE, Phase.REVIEW) or (scheduled is None and (past is None or past.outcome == "cancelled")):
        return over(title, "This meeting is no longer planned. \"My relationship\" shows your next meeting.")
    if past is not None:
        # Reported already, or counted as missed: the other answer is a correction.
        when = reader.when(past.starts_at)
        if past.outcome == "held":
            return Page(title, intro=(f"The meeting of {when} is recorded as held. Nothing more to do, unless that "
                                      "was a mistake:",),
                        forms=(Form("not_met", "We didn't meet after all", secondary=True),))  # fmt: skip
        return Page(title, intro=(f"The meeting of {when} is counted as not held.",),
                    forms=(Form("met", "We did meet"), Form("not_met", "We didn't meet", secondary=True)))  # fmt: skip
    assert scheduled is not None
    forms = []
    if scheduled.starts_at <= now:
        forms.append(Form("met", "We met", heading="Did you meet?"))
        forms.append(Form("not_met", "We didn't meet", secondary=True))
    local = max(scheduled.starts_at, now + timedelta(hours=1)).astimezone(reader.zone)
    new_time = Field("datetime", "starts_at", f"New time ({reader.zone.key})", f"{local:%Y-%m-%dT%H:%M}", required=True)
    forms.append(Form("moved", "We moved it", heading="Moved to another time?", fields=(new_time,)))
    if query.get("choice") == "moved":
        forms.insert(0, forms.pop())
    when = reader.when(scheduled.starts_at)
    planned = f"The meeting was planned for {when}." if scheduled.starts_at <= now else f"The meeting is planned for {when}."
    return Page(title, intro=(planned,), forms=tuple(forms))


def _feedback(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str], now: datetime) -> Page:
    title = "Mentoring feedback"
    number = int(link.subject) if link.subject.isdigit() else 0
    party = state.party_of(reader.person.participant_id)
    if any(s.feedback_round == number and s.party == party for s in state.feedback_scores):
        return done(title, "Thank you: you gave your feedback for this round. Nothing more to do here.")
    if not 1 <= number <= state.feedback_round or state.is_closed:
        return over(title, "This feedback round is not open.")
    chosen = query.get("score", "")
    intro = ["How well is your mentoring relationship working for you? 1 is poorly, 5 is very well.",
             "Add a comment if you like, then press your score. Your programme coordinators hear of a low "
             "score, not of your comment."]
    if chosen in {"1", "2", "3", "4", "5"}:
        intro.insert(0, f"You chose {chosen} in the email. Press {chosen} below to send it, or choose another score.")
    scores = tuple(("score", str(n), str(n)) for n in range(1, 6))
    comment = Field("textarea", "comment", "Comment (optional)")
    return Page(title, intro=tuple(intro), forms=(Form("feedback", "", heading="Your score", buttons=scores, fields=(comment,)),))


def _goal_revision(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str], now: datetime) -> Page:
    title = "A change to one of your goals"
    pending = state.pending_goal_revisions.get(link.subject)
    if pending is None:
        return over(title, "This change is no longer waiting: it was acknowledged already, or replaced by another.")
    if pending.party == state.party_of(reader.person.participant_id):
        return done(title, "You proposed this change; the other person acknowledges it.")
    current = state.goals.get(pending.goal.goal_id)
    columns = ((("Now", goal_items(current.goal)) if current is not None else ("Now", (("Goal", "a new goal"),))),
               ("Proposed", goal_items(pending.goal)))  # fmt: skip
    return Page(
        title,
        intro=(f"Proposed on {reader.when(pending.proposed_at)}. Acknowledging it puts the change in writing.",),
        sections=(Section("The change", columns=columns),),
        forms=(Form("acknowledge", "Acknowledge the change"),),
    )


def with_reason(page: Page, link: ActionLink, state: RelationshipState, reader: Reader, rationale: str) -> Page:
    """The page asking to acknowledge a goal change, with why it was proposed in the proposer's
    words. The reason is confidential text, kept only in its event (never in the state): the
    caller reads it from the event store."""
    pending = state.pending_goal_revisions.get(link.subject)
    why = tuple(line.strip() for line in rationale.splitlines() if line.strip())
    if link.purpose is not Purpose.GOAL_REVISION or pending is None or not page.forms or not why:
        return page
    reason = Section(f"Why, in {reader.name_of(state.id_of(pending.party))}'s words", paragraphs=why)
    return replace(page, sections=(*page.sections, reason))


def _review(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str], now: datetime) -> Page:
    title = "Mentoring review"
    review = state.review
    party = state.party_of(reader.person.participant_id)
    if review is None or review.kind != link.subject:
        return over(title, "This review is no longer open. \"My relationship\" shows what is waiting for you.")
    if party in review.submissions:
        return done(title, "Thank you: you submitted your review. Nothing more to do here.")
    fields = [Field("radio", "outcome", "How do you want to go on?", options=OUTCOME_WORDS, required=True),
              Field("number", "extension_months", "If you extend: by how many months", minimum=1, maximum=24)]  # fmt: skip
    for number, (goal_id, progress) in enumerate(state.goals.items(), 1):
        fields.append(Field("number", f"progress:{goal_id}", f"Goal {number}: {progress.goal.title} — progress in %",
                            value=str(progress.progress_percent), minimum=0, maximum=100))  # fmt: skip
    fields.append(Field("textarea", "comment", "Anything else (optional)"))
    return Page(title, intro=(f"Please submit it by {reader.when(review.respond_by)}.",),
                forms=(Form("review", "Submit my review", fields=tuple(fields)),))  # fmt: skip


def _reflection(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str], now: datetime) -> Page:
    title = "Your closing reflection"
    party = state.party_of(reader.person.participant_id)
    if party in state.reflections_from:
        return done(title, "Thank you for your reflection. Nothing more to do here.")
    if state.reflections_due_at is None or state.is_closed:
        return over(title, "No reflection is being asked for now.")
    return Page(title, intro=("What did you achieve, and what will you take with you?",
                              f"Please write it by {reader.when(state.reflections_due_at)}."),
                forms=(Form("reflect", "Send my reflection", fields=(_required_text("Your reflection"),)),))  # fmt: skip


def _concern(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str], now: datetime) -> Page:
    title = "Raise a concern privately"
    if state.is_closed:
        return over(title, "This relationship has closed. Write to your programme coordinator directly.")
    return Page(title, intro=("Something is not right? Tell your programme coordinators. It goes to them alone: the other "
                              "person is not told.",),
                forms=(Form("concern", "Send to the coordinators", fields=(_required_text("Your concern"),)),))  # fmt: skip


def _required_text(label: str) -> Field:
    return Field("textarea", "text", label, required=True)


REMINDER_WORDS = {
    "match_proposal": "the proposed match waits for an answer",
    "agreement": "the agreement waits for signatures",
    "meeting": "their next meeting is coming up",
    "meeting_report": "their last meeting waits to be reported",
    "review": "the review waits for answers",
    "reflection": "the closing reflections are due",
}


def _nudge(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str], now: datetime) -> Page:
    """A coordinator's: send the reminder of what the relationship waits for again."""
    title = "Nudge a mentoring relationship"
    names = " and ".join(reader.name_of(p) for p in state.participant_ids())
    nudged = state.coordinator_nudged_at
    if nudged is not None and now < nudged + NUDGE_EVERY:
        return done(title, f"{names} were sent the reminder again on {reader.when(nudged)}; they can be nudged once a day.")
    waiting = waiting_reminder(state, now)
    if isinstance(waiting, Rejection) or state.paused_until is not None:
        return over(title, f"Nothing waits for {names} to be reminded of right now.")
    reminder, parties = waiting
    mentor = state.mentor_id or (state.candidate.mentor_id if state.candidate else None)
    to = " and ".join(reader.name_of(state.mentee_id if p == "mentee" else mentor) for p in parties)
    return Page(title, intro=(f"{names}: {REMINDER_WORDS[reminder]}.", f"This sends the reminder again to {to}."),
                forms=(Form("nudge", "Send the reminder again"),))  # fmt: skip


def _mine(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str], now: datetime) -> Page:
    return relationship_page(state, reader.person.participant_id, reader)


# The answers each kind of link gives (the part of a choice before ":").
CHOICES: dict[Purpose, tuple[str, ...]] = {
    Purpose.MATCH_ANSWER: ("accept", "decline"),
    Purpose.SIGN_AGREEMENT: ("sign",),
    Purpose.MEETING_OUTCOME: ("met", "not_met", "moved"),
    Purpose.FEEDBACK: ("feedback",),
    Purpose.GOAL_REVISION: ("acknowledge",),
    Purpose.REVIEW: ("review",),
    Purpose.REFLECTION: ("reflect",),
    Purpose.CONCERN: ("concern",),
    Purpose.MY_RELATIONSHIP: ("progress",),
    Purpose.NUDGE: ("nudge",),
    Purpose.PROPOSE_AGREEMENT: ("propose",),
    Purpose.CHANGE_GOAL: ("change",),
}

PageMaker = Callable[[ActionLink, RelationshipState, Reader, Mapping[str, str], datetime], Page]
PAGES: dict[Purpose, PageMaker] = {
    Purpose.MATCH_ANSWER: _match,
    Purpose.SIGN_AGREEMENT: _agreement,
    Purpose.MEETING_OUTCOME: _meeting,
    Purpose.FEEDBACK: _feedback,
    Purpose.GOAL_REVISION: _goal_revision,
    Purpose.REVIEW: _review,
    Purpose.REFLECTION: _reflection,
    Purpose.CONCERN: _concern,
    Purpose.MY_RELATIONSHIP: _mine,
    Purpose.NUDGE: _nudge,
    Purpose.PROPOSE_AGREEMENT: agreement_form_page,
    Purpose.CHANGE_GOAL: goal_change_page,
}


def page_for(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str], now: datetime) -> Page:
    maker = PAGES.get(link.purpose)
    if maker is None:
        return over("Not available", "This kind of link is not in use. \"My relationship\" in your latest email works.")
    return maker(link, state, reader, query, now)


# -- the commands ------------------------------------------------------------------------------


def command_for(
    link: ActionLink, state: RelationshipState, reader: Reader, form: Mapping[str, str], now: datetime
) -> Command:
    """The command the pressed button (`form["choice"]`) sends, from this link's page.

    Any answer this kind of link gives is turned into its command, even when the page no
    longer offers it: a second press is then the same command (a replay), and anything else
    is for the relationship to refuse, by its own rules."""
    choice = form.get("choice", "")
    if choice.partition(":")[0] not in CHOICES.get(link.purpose, ()):
        raise FormProblem("That answer is not open any more; the page shows what is.")
    if choice.startswith("sign:") and link.subject and choice != f"sign:{link.subject}":
        raise FormProblem("That answer is not open any more; the page shows what is.")
    if choice == "accept":
        return "accept_match", {}
    if choice == "nudge":
        return "nudge_relationship", {}
    if choice == "decline":
        return "decline_match", {"reason": _text(form, "reason")}
    if choice.startswith("sign:"):
        version = choice.removeprefix("sign:")
        if not version.isdigit():
            raise FormProblem("That answer is not open any more; the page shows what is.")
        return "sign_agreement", {"agreement_version": int(version)}
    if choice == "met":
        return _met(link, state, now)
    if choice == "not_met":
        return _not_met(link, state)
    if choice == "moved":
        return _moved(link, state, reader, form)
    if choice == "feedback":
        score = _int(form, "score", 1, 5)
        if score is None:
            raise FormProblem("Please choose a score from 1 to 5.")
        return "submit_feedback", {"feedback_round": int(link.subject), "score": score, "comment": _text(form, "comment")}
    if choice == "acknowledge":
        return "acknowledge_goal_revision", {"revision_id": link.subject}
    if choice == "review":
        return _review_command(state, form)
    if choice == "reflect":
        return "submit_reflection", {"text": _text(form, "text", required=True)}
    if choice == "concern":
        return "raise_concern", {"text": _text(form, "text", required=True)}
    if choice.startswith("progress:"):
        return _progress(state, choice.removeprefix("progress:"), form)
    if choice == "propose":
        return agreement_command(link, state, reader, form)
    if choice.startswith("change:"):
        return goal_change_command(state, reader, choice, form)
    raise FormProblem("That answer is not open any more; the page shows what is.")


def _met(link: ActionLink, state: RelationshipState, now: datetime) -> Command:
    """The scheduled meeting took place (`record_meeting`), or one counted as not held did
    after all (`correct_meeting_report`)."""
    number = int(link.subject) if link.subject.isdigit() else 0
    if state.next_meeting is not None and state.next_meeting.meeting_number == number:
        minutes = state.agreement.terms.meeting_minutes if state.agreement else 60
        held_at = min(state.next_meeting.starts_at, now)
        return "record_meeting", {"held_at": held_at.isoformat(), "duration_minutes": minutes, "meeting_number": number}
    if not any(m.meeting_number == number for m in state.past_meetings):
        raise FormProblem("This meeting is no longer planned.")
    return "correct_meeting_report", {"meeting_number": number, "outcome": "held"}


def _not_met(link: ActionLink, state: RelationshipState) -> Command:
    """The meeting did not take place (`report_meeting_not_held`), or one recorded as held
    did not after all (`correct_meeting_report`)."""
    number = int(link.subject) if link.subject.isdigit() else 0
    past = next((m for m in state.past_meetings if m.meeting_number == number), None)
    if past is not None and past.outcome == "held":
        return "correct_meeting_report", {"meeting_number": number, "outcome": "not_held"}
    return "report_meeting_not_held", {"meeting_number": number}


def _moved(link: ActionLink, state: RelationshipState, reader: Reader, form: Mapping[str, str]) -> Command:
    if not link.subject.isdigit():
        raise FormProblem("This meeting is no longer planned.")
    text = form.get("starts_at", "").strip()
    try:
        local = datetime.fromisoformat(text)
    except ValueError:
        raise FormProblem("Please give the new date and time.") from None
    if local.tzinfo is not None:
        raise FormProblem("Please give the new date and time.")
    starts_at = local.replace(tzinfo=reader.zone)
    return "reschedule_meeting", {"meeting_number": int(link.subject), "starts_at": starts_at.isoformat()}


def _progress(state: RelationshipState, goal_id: str, form: Mapping[str, str]) -> Command:
    progress = state.goals.get(goal_id)
    percent = _int(form, "progress", 0, 100)
    if progress is None:
        raise FormProblem("That goal is no longer in your plan.")
    if percent is None:
        raise FormProblem("Please give the progress in %, from 0 to 100.")
    reached = [m.milestone_id for m in progress.goal.milestones if form.get(f"milestone:{m.milestone_id}")]
    return "record_goal_progress", {"goal_id": goal_id, "progress_percent": percent, "milestones_reached": reached}


def _review_command(state: RelationshipState, form: Mapping[str, str]) -> Command:
    outcome = form.get("outcome", "")
    if outcome not in {value for value, _ in OUTCOME_WORDS}:
        raise FormProblem("Please choose how you want to go on.")
    assessments = []
    for goal_id, progress in state.goals.items():
        percent = _int(form, f"progress:{goal_id}", 0, 100)
        assessments.append({"goal_id": goal_id, "progress_percent": progress.progress_percent if percent is None else percent})
    payload: dict[str, Any] = {"outcome": outcome, "goal_assessments": assessments, "comment": _text(form, "comment")}
    months = _int(form, "extension_months", 1, 24)
    if outcome == "extend":
        if months is None:
            raise FormProblem("Please say by how many months to extend.")
        payload["extension_months"] = months
    return "submit_review", payload

