"""What operators read about a relationship in the Temporal Web UI: pure text builders.

The start summary and details (`static_summary`/`static_details`), the memo, the current
details (`workflow.set_current_details`) and the summaries of notification activities.
Everything here is ids, codes, numbers and dates: never names, notes, concern texts,
feedback comments or reflections, because the Web UI shows it to anyone who may list
workflows. Markdown, as the Web UI renders it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from events.deadlines import Deadline, next_deadline, next_due
from events.notifications import Notification
from events.settings import ProgrammeSettings
from events.state import Phase, RelationshipState

# Temporal's limits: a summary 400 bytes, details 20 KB. Ours stay well below.
SUMMARY_LIMIT = 200
DETAILS_LIMIT = 16_000


def _utc(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- at start --------------------------------------------------------------------------------


def relationship_summary(programme_id: str, mentee_id: str, round_id: str | None = None) -> str:
    """The one line the workflow list and page show for a relationship."""
    line = f"Mentee {mentee_id} in programme {programme_id}"
    return _cut(line + (f", round {round_id}" if round_id else ""), SUMMARY_LIMIT)


def relationship_start_details(
    *,
    relationship_id: str,
    programme_id: str,
    mentee_id: str,
    started_by: str,
    settings: ProgrammeSettings | None,
    settings_source: str,
    ask_pool_first: bool,
) -> str:
    """The static details: who and what the relationship is, and the rules it started with."""
    lines = [
        f"**Relationship** `{relationship_id}` · programme `{programme_id}` · mentee `{mentee_id}`",
        "",
        f"- Started by: {started_by}",
        "- First mentor: " + ("asked of the mentor pool" if ask_pool_first else "proposed by the starter"),
        f"- Settings: {settings_source}",
        "",
        "Live phase, health and what is due next: **Current Details**. "
        "Everything else: the `state` query (Queries tab).",
    ]
    if settings is not None:
        lines += ["", "**Settings**", ""]
        for name, value in settings.model_dump(mode="json").items():
            shown = ", ".join(str(item) for item in value) if isinstance(value, list) else str(value)
            lines.append(f"- {name}: {shown or '–'}")
    return _cut("\n".join(lines), DETAILS_LIMIT)


def relationship_memo(
    *,
    relationship_id: str,
    programme_id: str,
    mentee_id: str,
    started_by: str,
    start_parameters: Mapping[str, Any],
) -> dict[str, Any]:
    """The memo: ids and how it was started (carried across continue-as-new by Temporal)."""
    return {
        "programme_id": programme_id,
        "relationship_id": relationship_id,
        "mentee_id": mentee_id,
        "started_by": started_by,
        "start_parameters": dict(start_parameters),
    }


def round_summary(programme_id: str, round_id: str) -> str:
    return _cut(f"Matching round {round_id} of programme {programme_id}", SUMMARY_LIMIT)


def round_start_details(
    *,
    programme_id: str,
    round_id: str,
    coordinator_id: str,
    objective: str | None,
    mentee_ids: Sequence[str] | None,
    batch_size: int,
    started_by: str,
) -> str:
    mentees = "every active mentee without a mentor" if mentee_ids is None else f"{len(mentee_ids)} named mentees"
    lines = [
        f"**Matching round** `{round_id}` · programme `{programme_id}`",
        "",
        f"- Started by: {started_by}",
        f"- Proposals come from: `{coordinator_id}`",
        f"- Objective: {objective or 'the programme setting'}",
        f"- Mentees: {mentees}",
        f"- Proposals per batch: {batch_size}",
        "",
        "Progress: **Current Details**, or the `progress` query.",
    ]
    return _cut("\n".join(lines), DETAILS_LIMIT)


# -- while it runs ---------------------------------------------------------------------------


def current_details(state: RelationshipState, *, continued_from_run: str | None = None) -> str:
    """The Web UI's "Current Details" of a relationship, kept current by the workflow.

    Besides the live picture it repeats the ids: after continue-as-new a run has no start
    summary or details (Temporal does not carry them over), so this is what identifies it.
    """
    mentor = state.mentor_id or (f"{state.candidate.mentor_id} (proposed)" if state.candidate else "none yet")
    health = state.health.value + (f" ({', '.join(state.health_reasons)})" if state.health_reasons else "")
    lines = [
        f"**Phase** {state.phase.value} since {_utc(state.phase_entered_at)} · **health** {health}",
        "",
        f"- Relationship `{state.relationship_id}` · programme `{state.programme_id}` · "
        f"mentee `{state.mentee_id}` · mentor `{mentor}`",
    ]
    due = next_due(state)
    if state.phase is Phase.CLOSED:
        closed = f"{_utc(state.closed_at)}" if state.closed_at else "closed"
        lines.append(f"- Closed {closed}: {state.closure_reason.value if state.closure_reason else 'closed'}")
    elif due is not None and due.at is not None:
        lines.append(f"- Next due: {due.what}, by {_utc(due.at)}")
    timer: Deadline | None = next_deadline(state)
    if timer is not None:
        lines.append(f"- Next timer: {timer.summary}, {_utc(timer.at)}")
    if state.activated_at is not None:
        lines.append(
            f"- Meetings: {state.meetings_held} held, {state.meetings_missed} missed, "
            f"{state.meetings_cancelled} cancelled"
        )
    if state.paused_until is not None:
        lines.append(f"- Paused until {_utc(state.paused_until)}")
    concerns = sorted(state.open_concerns)
    if concerns:
        shown = ", ".join(f"`{concern_id}`" for concern_id in concerns[:10])
        more = f" and {len(concerns) - 10} more" if len(concerns) > 10 else ""
        lines.append(f"- Open concerns: {len(concerns)} ({shown}{more})")
    else:
        lines.append("- Open concerns: none")
    for goal_id, progress in sorted(state.goals.items()):
        # Ids and numbers only: a goal's title may be personal.
        line = f"- Goal `{goal_id}`: {progress.progress_percent}%"
        if progress.goal.milestones:
            line += f", milestones {len(progress.milestones_reached)}/{len(progress.goal.milestones)}"
        if progress.achieved_at:
            line += f", achieved {progress.achieved_at:%Y-%m-%d}"
        lines.append(line)
    if state.rejected_commands:
        last = state.rejected_commands[-1]
        lines += ["", f"Rejected commands: {len(state.rejected_commands)} recent (last: `{last.command_name}`); "
                  "the reasons are in the `state` query."]  # fmt: skip
    if continued_from_run is not None:
        lines += ["", f"Continued as new from run `{continued_from_run}`: the start summary and details are on the first run."]
    return _cut("\n".join(lines), DETAILS_LIMIT)


# -- activity summaries ----------------------------------------------------------------------

# What each notification template is, for a person reading the workflow's history.
_TEMPLATE_LABELS = {
    "match_proposed": "Match proposal",
    "match_declined": "Match declined",
    "match_proposal_expired": "Match proposal expired",
    "match_confirmed": "Match confirmed",
    "agreement_proposed": "Agreement to sign",
    "agreement_reminder": "Agreement reminder",
    "relationship_activated": "Relationship active",
    "meeting_scheduled": "Invite",
    "meeting_rescheduled": "Updated invite",
    "meeting_cancelled": "Cancellation",
    "meeting_withdrawn": "Withdrawn invite",
    "agenda_request": "Agenda request",
    "meeting_reminder": "Reminder",
    "meeting_missed_check": "What happened? question",
    "milestone_celebration": "Milestone reached",
    "goal_achieved": "Goal achieved",
    "goal_revision_to_acknowledge": "Goal revision to acknowledge",
    "goal_revised": "Goal revised",
    "feedback_request": "Feedback request",
    "feedback_received": "Feedback received",
    "low_feedback": "Low feedback alert",
    "concern_raised": "Concern raised",
    "concern_resolved": "Concern resolved",
    "relationship_paused": "Paused",
    "relationship_resumed": "Resumed",
    "nudge": "Nudge: no meeting for a while",
    "health_at_risk": "At-risk alert",
    "health_stalled": "Stalled alert",
    "health_healthy": "Healthy again",
    "midpoint_review_opened": "Midpoint review",
    "final_review_opened": "Final review",
    "on_demand_review_opened": "Requested review",
    "review_completed": "Review completed",
    "term_extended": "Term extended",
    "reflection_request": "Closing reflection request",
    "relationship_summary": "Final summary",
    "relationship_closed_early": "Early-closure alert",
}


def _role(recipient_id: str, state: RelationshipState) -> str:
    party = state.party_of(recipient_id)
    if party is not None:
        return party
    if recipient_id in state.settings.coordinator_ids:
        return "coordinators"
    return "others"


def _join(words: Iterable[str]) -> str:
    items = list(dict.fromkeys(words))
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe_notifications(notifications: Sequence[Notification], state: RelationshipState) -> str:
    """An activity summary such as "Reminder to mentee and mentor for meeting 4"; roles and
    numbers only (≤ 200 characters)."""
    order = {"mentee": 0, "mentor": 1, "coordinators": 2, "others": 3}
    groups: dict[tuple[str, str], set[str]] = {}
    for notification in notifications:
        label = _TEMPLATE_LABELS.get(notification.template, notification.template.replace("_", " ").capitalize())
        number = notification.data.get("meeting_number")
        if number:
            label += f" for meeting {number}"
        elif notification.data.get("feedback_round"):
            label += f" (round {notification.data['feedback_round']})"
        elif notification.data.get("goal_id"):
            label += f" (goal {notification.data['goal_id']})"
        groups.setdefault((notification.template, label), set()).add(_role(notification.recipient_id, state))
    parts = []
    for (_, label), roles in groups.items():
        head, _, tail = label.partition(" for meeting ")
        who = _join(sorted(roles, key=order.__getitem__))
        parts.append(f"{head} to {who}" + (f" for meeting {tail}" if tail else ""))
    return _cut("; ".join(parts) or "Notify", SUMMARY_LIMIT)
