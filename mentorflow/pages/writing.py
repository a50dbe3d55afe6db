"""The pages where people write at length: the mentoring agreement (`propose_agreement`) and a
change to one goal (`propose_goal_revision`).

The agreement's form holds every term the agreement has: objective, goals (each with how it
is measured, a target date and milestones), how often, how long and how the two meet, the
term, cancellation notice, agenda, what is not confidential and the plan for ending early.
It starts from the version it changes (or, for the first, from the agreement's own defaults),
offers only what the programme allows, and a bad box is named in plain words on the same form
with everything kept (`views.refilled`). A link to write it names the version it changes: once
someone proposed another, it shows that version instead of overwriting it unseen.

The goal page has one form per goal, filled in with it, and one for a new goal; the other
person acknowledges the change through its own page. Pure, like `actions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from events.commands import AgreementTerms, Confidentiality, Goal, Milestone
from events.goals import MAX_GOALS
from events.settings import FREQUENCY_ORDER
from events.state import Phase, RelationshipState
from mentorflow.action_links import SIGN_LABEL, ActionLink, Purpose
from mentorflow.pages.forms import (
    FormProblem,
    Problems,
    form_date,
    form_int,
    form_lines,
    form_text,
)
from mentorflow.pages.views import (
    AGENDA_WORDS,
    FORMAT_WORDS,
    FREQUENCY_WORDS,
    Field,
    Form,
    Page,
    Reader,
    over,
)

Command = tuple[str, dict[str, Any]]


def _bound(model: type[BaseModel], field: str, kind: str = "max_length") -> int:
    """A limit the command's model sets on `field` (its `max_length`, or `le`): the form names
    the same limits in plain words before the model would refuse the command."""
    limits = (getattr(item, kind, None) for item in model.model_fields[field].metadata)
    return int(next(value for value in limits if value is not None))


LONGEST = {
    "title": _bound(Goal, "title"), "measure": _bound(Goal, "measure"), "milestone": _bound(Milestone, "title"),
    "objective": _bound(AgreementTerms, "objective"), "early_exit_plan": _bound(AgreementTerms, "early_exit_plan"),
}  # fmt: skip
MAX_MILESTONES = _bound(Goal, "milestones")
MAX_NOTICE_HOURS = _bound(AgreementTerms, "cancellation_notice_hours", "le")
_DEFAULTS = AgreementTerms.model_fields


# -- goals, in both forms -------------------------------------------------------------------------


def goal_fields(prefix: str, label: str, goal: Goal | None, *, heading: bool) -> tuple[Field, ...]:
    """A goal's boxes: what, how it is measured, by when, and the milestones on the way."""
    fields = [Field("heading", f"{prefix}heading", label)] if heading else []
    target = f"{goal.target_date:%Y-%m-%d}" if goal is not None and goal.target_date is not None else ""
    fields += [
        Field("text", f"{prefix}title", f"{label}: what you want to reach", goal.title if goal else ""),
        Field("text", f"{prefix}measure", f"{label}: how you will know it is reached (optional)", goal.measure if goal else ""),
        Field("date", f"{prefix}target_date", f"{label}: target date (optional)", target),
        Field("textarea", f"{prefix}milestones", f"{label}: milestones on the way, one a line (optional)",
              "\n".join(m.title for m in goal.milestones) if goal else ""),
    ]  # fmt: skip
    return tuple(fields)


def _fresh(used: set[str], letter: str) -> str:
    return next(f"{letter}{n}" for n in range(1, len(used) + 2) if f"{letter}{n}" not in used)


def read_goal(form: Mapping[str, str], prefix: str, label: str, goal_id: str, before: Goal | None,
              problems: Problems) -> Goal | None:  # fmt: skip
    """The goal the boxes describe (None: left empty). Milestones keep their place: the first
    line is the goal's first milestone, changed or not."""
    title, measure = form_text(form, f"{prefix}title"), form_text(form, f"{prefix}measure")
    lines = form_lines(form, f"{prefix}milestones")
    try:
        target = form_date(form, f"{prefix}target_date")
    except ValueError:
        problems.add(f"{label}: please give the target date as a date.")
        target = None
    if not title:
        if measure or lines or form.get(f"{prefix}target_date", "").strip():
            problems.add(f"{label} has no words for the goal itself: write it, or clear its other boxes.")
        return None
    if len(title) > LONGEST["title"] or len(measure) > LONGEST["measure"]:
        problems.add(f"{label}: please keep the goal under {LONGEST['title']} characters and how it is measured "
                     f"under {LONGEST['measure']}.")  # fmt: skip
    if len(lines) > MAX_MILESTONES or any(len(line) > LONGEST["milestone"] for line in lines):
        problems.add(f"{label}: at most {MAX_MILESTONES} milestones, each under {LONGEST['milestone']} characters.")
    ids = [m.milestone_id for m in before.milestones] if before else []
    while len(ids) < len(lines):
        ids.append(_fresh(set(ids), "m"))
    try:
        milestones = tuple(Milestone(milestone_id=i, title=line) for i, line in zip(ids, lines, strict=False))
        return Goal(goal_id=goal_id, title=title, measure=measure, target_date=target, milestones=milestones)
    except ValidationError:
        problems.add(f"{label}: please check its text.")
        return None


# -- the agreement --------------------------------------------------------------------------------


def _frequencies(state: RelationshipState) -> tuple[tuple[str, str], ...]:
    """Only as often as the programme allows, or more often."""
    allowed = FREQUENCY_ORDER[: FREQUENCY_ORDER.index(state.settings.minimum_meeting_frequency) + 1]
    return tuple((f, FREQUENCY_WORDS[f]) for f in allowed)


def _agreement_fields(state: RelationshipState) -> tuple[Field, ...]:
    settings, current = state.settings, state.agreement.terms if state.agreement else None
    confidential = current.confidentiality if current else _DEFAULTS["confidentiality"].default
    formats = current.formats if current else _DEFAULTS["formats"].default
    slots = min(MAX_GOALS, max(3, len(current.goals) + 1 if current else 0))
    goals = list(current.goals) if current else []
    fields = [Field("textarea", "objective", "What the mentee wants to achieve", current.objective if current else "",
                    required=True)]  # fmt: skip
    for n in range(1, slots + 1):
        fields += goal_fields(f"goal{n}:", f"Goal {n}", goals[n - 1] if n <= len(goals) else None, heading=True)
    fields += [
        Field("heading", "meetings", "How you meet"),
        Field("radio", "meeting_frequency", "How often", current.meeting_frequency if current else "",
              options=_frequencies(state), required=True),
        Field("number", "meeting_minutes", f"How long, in minutes ({settings.min_meeting_minutes} to "
              f"{settings.max_meeting_minutes})", str(current.meeting_minutes) if current else "",
              minimum=settings.min_meeting_minutes, maximum=settings.max_meeting_minutes),
        Field("number", "term_months", f"For how many months ({settings.min_term_months} to {settings.max_term_months})",
              str(current.term_months) if current else "", minimum=settings.min_term_months,
              maximum=settings.max_term_months),
        *(Field("checkbox", f"format:{f}", f"We meet {words}", "on" if f in formats else "") for f, words in FORMAT_WORDS.items()),
        Field("number", "cancellation_notice_hours", "Cancel at least this many hours before",
              str(current.cancellation_notice_hours if current else _DEFAULTS["cancellation_notice_hours"].default),
              minimum=0, maximum=MAX_NOTICE_HOURS),
        Field("radio", "agenda_policy", "Agenda", current.agenda_policy if current else _DEFAULTS["agenda_policy"].default,
              options=tuple(AGENDA_WORDS.items())),
        Field("heading", "confidential", "Confidentiality"),
        Field("checkbox", "private_by_default", "What we say stays between us", "on" if confidential.private_by_default else ""),
        Field("textarea", "not_private", "Except, one a line", "\n".join(confidential.not_private)),
        Field("heading", "ending", "If we end early"),
        Field("textarea", "early_exit_plan", "The plan for ending early",
              current.early_exit_plan if current else _DEFAULTS["early_exit_plan"].default, required=True),
    ]  # fmt: skip
    return tuple(fields)


def agreement_form_page(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str],
                        now: datetime) -> Page:  # fmt: skip
    current = state.agreement
    title = "Write your mentoring agreement" if current is None else "Propose changes to your agreement"
    version = current.agreement_version if current else 0
    if state.phase is not Phase.AGREEMENT:
        if state.phase is Phase.MATCHING:
            return over(title, "There is no confirmed match yet: the agreement is written once both of you accepted.")
        if state.is_closed:
            return over(title, "This relationship has closed.")
        return over(title, "Both of you signed the agreement, so it is no longer changed here. To change a goal, use "
                           "“Propose a change to a goal” on “My relationship”.")  # fmt: skip
    sign = ((SIGN_LABEL, Purpose.SIGN_AGREEMENT, str(version)),)
    if link.subject != str(version):
        mine = current is not None and current.proposed_by == reader.person.participant_id
        if mine and link.subject == str(version - 1):
            return Page(title, note=f"You proposed version {version}. The other person is asked to read and sign it; "
                                    "sign it yourself too.", links=sign)  # fmt: skip
        return Page(title, note=f"The agreement was proposed or changed after this link was sent: it is now version "
                                f"{version}. Read it first; you can propose changes from there.", links=sign,
                    status=409)  # fmt: skip
    intro = ("Agree together on what you want to achieve and how you meet; then one of you writes it here. The other "
             "person gets an email to read and sign it, and it counts once you both signed it.")  # fmt: skip
    if current is not None:
        intro = (f"This is version {version}, to change. A new version needs both signatures again, also from whoever "
                 "signed this one.")  # fmt: skip
    button = "Propose the agreement" if current is None else f"Propose it as version {version + 1}"
    return Page(title, intro=(intro,), forms=(Form("propose", button, fields=_agreement_fields(state)),))


def _number(form: Mapping[str, str], name: str, low: int, high: int, problem: str, problems: Problems) -> int:
    try:
        value = form_int(form, name, low, high)
    except FormProblem:
        value = None
    if value is None:
        problems.add(problem)
    return value or 0


def agreement_command(link: ActionLink, state: RelationshipState, reader: Reader, form: Mapping[str, str]) -> Command:
    """`propose_agreement` with the terms the form holds, or `FormProblem` naming every box to fix."""
    current, settings = state.agreement, state.settings
    version = current.agreement_version if current else 0
    problems = Problems()
    objective, exit_plan = form_text(form, "objective"), form_text(form, "early_exit_plan")
    if not objective:
        problems.add("Please write what the mentee wants to achieve.")
    if not exit_plan:
        problems.add("Please write the plan for ending early.")
    if len(objective) > LONGEST["objective"] or len(exit_plan) > LONGEST["early_exit_plan"]:
        problems.add(f"Please keep the objective and the plan for ending early under {LONGEST['objective']} characters each.")
    before = list(current.terms.goals) if current else []
    used = {g.goal_id for g in before}
    goals: list[Goal] = []
    for n in range(1, MAX_GOALS + 1):
        earlier = before[n - 1] if n <= len(before) else None
        goal_id = earlier.goal_id if earlier else _fresh(used | {g.goal_id for g in goals}, "g")
        goal = read_goal(form, f"goal{n}:", f"Goal {n}", goal_id, earlier, problems)
        if goal is not None:
            goals.append(goal)
    if not goals:
        problems.add("Please write at least one goal.")
    frequency = form.get("meeting_frequency", "")
    if frequency not in dict(_frequencies(state)):
        problems.add("Please choose how often you meet.")
    low, high = settings.min_meeting_minutes, settings.max_meeting_minutes
    minutes = _number(form, "meeting_minutes", low, high, f"Please give how long you meet, {low} to {high} minutes.", problems)
    low, high = settings.min_term_months, settings.max_term_months
    months = _number(form, "term_months", low, high, f"Please give the term, {low} to {high} months.", problems)
    notice = _number(form, "cancellation_notice_hours", 0, MAX_NOTICE_HOURS,
                     f"Please give the cancellation notice, 0 to {MAX_NOTICE_HOURS} hours.", problems)  # fmt: skip
    formats = [f for f in FORMAT_WORDS if form.get(f"format:{f}")]
    if not formats:
        problems.add("Please choose at least one way to meet.")
    agenda = form.get("agenda_policy", "")
    if agenda not in AGENDA_WORDS:
        problems.add("Please choose what happens with the agenda.")
    problems.raise_any()
    try:
        terms = AgreementTerms(
            objective=objective, goals=tuple(goals), formats=tuple(formats), meeting_frequency=frequency,  # type: ignore[arg-type]
            meeting_minutes=minutes, term_months=months, cancellation_notice_hours=notice,
            agenda_policy=agenda, early_exit_plan=exit_plan,  # type: ignore[arg-type]
            # Not on the form (another system's scheduling data): kept as the version it changes has it.
            availability=current.terms.availability if current else (),
            confidentiality=Confidentiality(private_by_default=bool(form.get("private_by_default")),
                                            not_private=tuple(form_lines(form, "not_private"))),
        )  # fmt: skip
    except ValidationError:
        raise FormProblem("Please check what you entered: one of the texts cannot be taken as it is. Nothing was sent "
                          "yet: your text is kept below.") from None  # fmt: skip
    if current is not None and terms == current.terms:
        # Sent twice from the same page: the same command again (a replay); else nothing changed.
        if link.subject != str(version - 1) or current.proposed_by != reader.person.participant_id:
            raise FormProblem(f"This is version {version} as it stands: change something before proposing it, or "
                              "sign it as it is.")  # fmt: skip
    elif link.subject != str(version):
        raise FormProblem(f"The agreement changed while you were writing: it is now version {version}. Nothing was "
                          "sent. Read the new version first; you can propose changes from there.")  # fmt: skip
    return "propose_agreement", {"terms": terms.model_dump(mode="json")}


# -- a change to a goal ----------------------------------------------------------------------------


def goal_change_page(link: ActionLink, state: RelationshipState, reader: Reader, query: Mapping[str, str],
                     now: datetime) -> Page:  # fmt: skip
    title = "Propose a change to a goal"
    if not state.in_cadence:
        return over(title, "Goals are changed while you meet regularly, and your relationship is not meeting now. "
                           "“My relationship” shows where it stands.")  # fmt: skip
    waiting = {p.goal.goal_id for p in state.pending_goal_revisions.values()}
    intro = [("Change one of your goals, or add one. The other person is asked to acknowledge the change; until then "
              "your goals stay as they are.")]  # fmt: skip
    if state.needs_recalibration:
        intro.insert(0, "At your review you agreed to change your goals.")
    why = Field("textarea", "rationale", "Why (optional)")
    forms = []
    for n, (goal_id, progress) in enumerate(state.goals.items(), 1):
        if goal_id in waiting:
            intro.append(f"Goal {n} ({progress.goal.title}): a change waits for acknowledgement.")
            continue
        forms.append(Form(f"change:{goal_id}", "Propose this change", heading=f"Goal {n}: {progress.goal.title}",
                          fields=(*goal_fields("", f"Goal {n}", progress.goal, heading=False), why)))  # fmt: skip
    if len(state.goals) < MAX_GOALS:
        forms.append(Form("change:new", "Propose the new goal", heading="Or add a new goal",
                          fields=(*goal_fields("", "New goal", None, heading=False), why)))  # fmt: skip
    return Page(title, intro=tuple(intro), forms=tuple(forms))


def goal_change_command(state: RelationshipState, reader: Reader, choice: str, form: Mapping[str, str]) -> Command:
    """`propose_goal_revision` of the goal the form is about (a new goal: the first free id)."""
    goal_id = choice.removeprefix("change:")
    current = state.goals.get(goal_id)
    if goal_id == "new":
        # Not counting waiting changes: the same new goal sent twice is the same change.
        goal_id = _fresh(set(state.goals), "g")
    elif current is None:
        raise FormProblem("That goal is no longer in your plan.")
    label = "The goal" if current is None else "The changed goal"
    problems = Problems()
    goal = read_goal(form, "", label, goal_id, current.goal if current else None, problems)
    rationale = form_text(form, "rationale")
    if goal is None and not problems.found:
        problems.add("Please write the goal.")
    if len(rationale) > 10_000:
        problems.add("Please keep why under 10000 characters.")
    problems.raise_any()
    assert goal is not None
    if current is not None and goal == current.goal:
        raise FormProblem("That is the goal as it stands: change something before proposing it.")
    party = state.party_of(reader.person.participant_id)
    for pending in state.pending_goal_revisions.values():
        if pending.goal.goal_id == goal_id and (pending.goal != goal or pending.party != party):
            raise FormProblem("A change to this goal already waits for acknowledgement; once it is acknowledged, you "
                              "can propose another. Nothing was sent.")  # fmt: skip
    return "propose_goal_revision", {"goal": goal.model_dump(mode="json"), "rationale": rationale}
