"""The wording of every notification: a subject, a body and optional paragraphs per template.

One place for the words people read (activities/templates.py fills them in for one
recipient; the people's pages reuse the same texts). `$name` is the recipient, every data
key is a variable; a paragraph in `extras` appears only when every parameter it names is
there and not empty.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MessageTemplate:
    subject: str
    body: str
    # Paragraphs shown only when all their parameters are there (and not empty).
    extras: tuple[str, ...] = ()


_MEETING = "Mentoring meeting $meeting_number"

TEMPLATES: dict[str, MessageTemplate] = {
    # Matching
    "match_proposed": MessageTemplate(
        "Mentoring match proposed",
        "$mentor_name has been proposed as the mentor in a new mentoring relationship. "
        "Mentee and mentor each accept or decline the match; the proposal expires on $respond_by.",
        ("Why this match: $explanation",),
    ),
    "match_declined": MessageTemplate(
        "Mentoring match declined",
        "The proposed match with $mentor_name as the mentor was declined by the $declined_by. "
        "A programme coordinator can propose another mentor.",
    ),
    "match_proposal_expired": MessageTemplate(
        "Mentoring match proposal expired",
        "The proposal of $mentor_name as the mentor expired before both sides answered. "
        "A programme coordinator can propose another mentor.",
    ),
    "match_confirmed": MessageTemplate(
        "Mentoring match confirmed",
        "Mentee and mentor have both accepted: $mentor_name is the mentor. Next, write your "
        "mentoring agreement together (objective, goals, how often you meet) and both sign it "
        "by $agreement_due_at.",
    ),
    # Agreement
    "agreement_proposed": MessageTemplate(
        "Mentoring agreement to review",
        "Version $agreement_version of your mentoring agreement has been proposed. Please read "
        "it and sign it if you agree, or propose changes.",
    ),
    "agreement_reminder": MessageTemplate(
        "Reminder: sign your mentoring agreement",
        "Your mentoring agreement still needs your signature. It must be signed by both of you "
        "by $agreement_due_at ($days_left days left), or the relationship closes.",
    ),
    "relationship_activated": MessageTemplate(
        "Your mentoring relationship has started",
        "Both of you have signed the agreement, so the relationship is now active. You agreed "
        "to meet $meeting_frequency; the term ends on $term_ends_at.",
    ),
    # Meetings
    "meeting_scheduled": MessageTemplate(f"{_MEETING} scheduled", f"{_MEETING} has been scheduled."),
    "meeting_rescheduled": MessageTemplate(f"{_MEETING} moved", f"{_MEETING} has been moved to a new time."),
    "agenda_request": MessageTemplate(
        "Agenda for mentoring meeting $meeting_number",
        f"{_MEETING} is coming up. Please share an agenda beforehand: what you want to talk "
        "about, and what has happened since you last met.",
    ),
    "meeting_reminder": MessageTemplate(
        "Reminder: mentoring meeting $meeting_number",
        "This is a reminder of mentoring meeting $meeting_number.",
        ("It is due by $due_at. If it is not planned yet, agree on a time now, and share an "
         "agenda before you meet.",),
    ),
    "meeting_cancelled": MessageTemplate(
        f"{_MEETING} cancelled",
        f"{_MEETING} was cancelled by the $cancelled_by. Agree on a new time soon.",
    ),
    "meeting_withdrawn": MessageTemplate(
        f"{_MEETING} is off",
        f"{_MEETING} is off because $because; its calendar entry is withdrawn.",
    ),
    "meeting_missed_check": MessageTemplate(
        "Did mentoring meeting $meeting_number take place?",
        f"{_MEETING} was due, but nobody has recorded it. If you met, please record the "
        "meeting; if not, agree on a new time.",
    ),
    "meeting_reported_not_held": MessageTemplate(
        f"{_MEETING} did not take place",
        "The $party reported that mentoring meeting $meeting_number did not take place, so it "
        "counts as missed. If you did meet, please correct the report; if not, agree on a new time.",
        ("It was planned for $meeting_planned_for.",),
    ),
    "meeting_report_corrected": MessageTemplate(
        f"{_MEETING}: report corrected",
        "The $party corrected the report of mentoring meeting $meeting_number: it is now "
        "recorded as $outcome.",
        ("It was planned for $meeting_planned_for.",),
    ),
    # Goals
    "milestone_celebration": MessageTemplate(
        "Milestone reached: $goal_title",
        "Congratulations! You reached a milestone on the way to your goal “$goal_title”. "
        "Take a moment to celebrate it.",
    ),
    "goal_achieved": MessageTemplate(
        "Goal achieved: $goal_title",
        "Congratulations! The goal “$goal_title” is achieved.",
    ),
    "goal_revision_to_acknowledge": MessageTemplate(
        "A goal change to acknowledge",
        "A change to one of your mentoring goals has been proposed. Please read it and "
        "acknowledge it, so that the change is agreed in writing.",
    ),
    "goal_revised": MessageTemplate(
        "Mentoring goal changed",
        "A change to one of your mentoring goals has been acknowledged and is now part of "
        "your plan.",
    ),
    # Feedback and concerns
    "feedback_request": MessageTemplate(
        "Time for mentoring feedback",
        "After meeting $after_meeting it is time for feedback (round $feedback_round): tell "
        "each other what works well and what could be better.",
    ),
    "feedback_received": MessageTemplate(
        "Mentoring feedback received",
        "The $party submitted feedback for round $feedback_round.",
    ),
    "low_feedback": MessageTemplate(
        "Low feedback score in a mentoring relationship",
        "The $party gave a low score in feedback round $feedback_round of relationship "
        "$relationship_id. You may want to check in with them.",
    ),
    "concern_raised": MessageTemplate(
        "A concern was raised in a mentoring relationship",
        "A concern ($concern_id) was raised by the $raised_by_party in relationship "
        "$relationship_id. Please follow it up promptly.",
    ),
    "concern_resolved": MessageTemplate(
        "Mentoring concern resolved",
        "The concern $concern_id has been resolved.",
    ),
    # Pauses and health
    "relationship_paused": MessageTemplate(
        "Mentoring relationship paused",
        "Your mentoring relationship is paused until $until. Reminders and health checks wait "
        "until then.",
    ),
    "relationship_resumed": MessageTemplate(
        "Mentoring relationship resumed",
        "Your mentoring relationship has resumed; the term now ends on $term_ends_at.",
    ),
    "nudge": MessageTemplate(
        "Time to meet again?",
        "You have not met since $quiet_since. Relationships that stop meeting fizzle out: "
        "agree on a time for your next meeting now.",
    ),
    "health_healthy": MessageTemplate(
        "Mentoring relationship back on track",
        "A meeting has been recorded and the relationship is healthy again. Keep it up!",
    ),
    "health_at_risk": MessageTemplate(
        "Your mentoring relationship has gone quiet",
        "The relationship is now marked as at risk. A short meeting soon keeps it going.",
        ("Why: $reasons.",),
    ),
    "health_stalled": MessageTemplate(
        "Mentoring relationship stalled",
        "The relationship is now marked as stalled and a programme coordinator has been told. "
        "Meet, or talk to your coordinator about how to go on.",
        ("Why: $reasons.",),
    ),
    # Reviews and closure
    "midpoint_review_opened": MessageTemplate(
        "Mentoring midpoint review",
        "You are halfway through the term: time to review progress against each goal and "
        "decide how to go on. Please submit your review by $respond_by.",
    ),
    "final_review_opened": MessageTemplate(
        "Final mentoring review",
        "The term is ending: time to review what you achieved against each goal and decide "
        "how to finish. Please submit your review by $respond_by.",
    ),
    "on_demand_review_opened": MessageTemplate(
        "Mentoring review requested",
        "A review of your mentoring relationship was asked for: time to review progress against "
        "each goal and decide how to go on. Please submit your review by $respond_by.",
    ),
    "review_completed": MessageTemplate(
        "Mentoring review completed",
        "The $kind review is complete. The outcome: $outcome.",
    ),
    "term_extended": MessageTemplate(
        "Mentoring term extended",
        "The mentoring term has been extended by $months months; it now ends on $term_ends_at.",
    ),
    "reflection_request": MessageTemplate(
        "Reflect on your mentoring",
        "Your mentoring relationship is coming to a close ($reason). Please write a short "
        "closing reflection by $respond_by: what did you achieve, and what will you take with you?",
    ),
    "relationship_summary": MessageTemplate(
        "Mentoring relationship closed: your summary",
        "The mentoring relationship has been closed ($reason). Over $duration_days days you "
        "held $meetings_held meetings and achieved $goals_achieved of $goals_total goals. "
        "Thank you for taking part.",
        ("Meetings missed: $meetings_missed.", "Feedback scores, round by round: $feedback_trend."),
    ),
    # To the coordinators, at once, when a relationship ends before its term (never with the
    # note whoever closed it wrote: that stays in the event store).
    "relationship_closed_early": MessageTemplate(
        "Mentoring relationship closed early",
        "The mentoring relationship $relationship_id of $mentee_name has been closed early "
        "($reason). You may want to talk to both sides about how it went and what comes next.",
        (
            "Mentor: $mentor_name.",
            "Closed by: $closed_by_name.",
            "Both have been asked for a closing reflection by $respond_by; the final summary "
            "follows when the relationship has closed.",
            "Summary: $meetings_held meetings held and $goals_achieved of $goals_total goals "
            "achieved over $duration_days days.",
        ),
    ),
    "relationship_closed": MessageTemplate(
        "Mentoring relationship closed",
        "The mentoring relationship has been closed ($reason). Thank you for taking part; "
        "take a moment to reflect on what you achieved.",
    ),
}
