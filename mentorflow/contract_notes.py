"""What docs/contract.md says about each entry of the contract: its purpose and an example
payload. Who may send a relationship's command and in which phases is not written here: it
is read from the command's declaration in its lifecycle stage (`events.decider.SPECS`), the
same one the decider enforces.

`mentorflow contract` renders this into docs/contract.md, next to a table of fields read
from each schema. The tests check that every exported name has notes here (and nothing
else does) and that every example is valid against its schema and its model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from events.decider import SPECS
from mentorflow.contract import Contract, Entry


@dataclass(frozen=True)
class Notes:
    purpose: str
    # Who may start it (workflow inputs) or read it (queries); a command's senders are declared
    # with its rules.
    who: str = ""
    example: dict[str, Any] | None = None


AGREEMENT_TERMS: dict[str, Any] = {
    "objective": "Grow into a tech lead",
    "goals": [
        {
            "goal_id": "review",
            "title": "Run a design review",
            "measure": "two reviews led",
            "target_date": "2027-06-30",
            "milestones": [{"milestone_id": "m1", "title": "Shadow one review"}],
        },
        {"title": "Mentor a new joiner"},
    ],
    "formats": ["video", "in_person"],
    "meeting_frequency": "biweekly",
    "meeting_minutes": 60,
    "term_months": 6,
    "availability": [
        {"party": "mentee", "timezone": "Europe/Berlin", "windows": [{"weekday": 1, "start": "15:00", "end": "17:00"}]},
        {"party": "mentor", "timezone": "America/New_York", "windows": [{"weekday": 1, "start": "09:00", "end": "12:00"}]},
    ],
    "agenda_policy": "both_share",
}

# Keyed by (workflow type, name); a workflow's own input and result use its type as name.
NOTES: dict[tuple[str, str], Notes] = {
    ("Relationship", "Relationship"): Notes(
        purpose="Starts one mentor–mentee relationship. Use the workflow id "
        "`relationship/<programme_id>/<relationship_id>` and the worker's task queue (`mentorflow` by default). "
        "Only the three ids are needed; the programme's settings are read from the directory as it starts "
        "(`settings` given here win). `state`, `pending_notifications` and the other fields are carried "
        "across continue-as-new: leave them out.",
        who="the HR platform, a coordinator's tool, `mentorflow relationship start`; a matching round starts them too",
        example={"relationship_id": "r-1042", "programme_id": "spring-2027", "mentee_id": "emp-1042"},
    ),
    ("Relationship", "propose_match"): Notes(
        purpose="Proposes a mentor to the mentee. The proposal expires after the programme's `proposal_ttl_days`.",
        example={
            "command_id": "hr-7781",
            "actor_id": "coord-7",
            "mentor_id": "emp-311",
            "explanation": "shares 3 of 4 goals; 5 h/week overlap",
            "score": 0.82,
        },
    ),
    ("Relationship", "accept_match"): Notes(
        purpose="Accepts the pending proposal. Once both the mentee and the proposed mentor accepted, the match is "
        "confirmed and the agreement phase begins.",
        example={"command_id": "hr-7782", "actor_id": "emp-1042"},
    ),
    ("Relationship", "decline_match"): Notes(
        purpose="Declines the pending proposal; that mentor is never proposed to this mentee again.",
        example={"command_id": "hr-7783", "actor_id": "emp-311", "reason": "I am at capacity this quarter"},
    ),
    ("Relationship", "propose_agreement"): Notes(
        purpose="Proposes the written agreement, or amends it: each proposal is a new version and voids earlier "
        "signatures. Goals without a `goal_id` get `g1`, `g2`, … by position.",
        example={"command_id": "hr-7790", "actor_id": "emp-1042", "terms": AGREEMENT_TERMS},
    ),
    ("Relationship", "sign_agreement"): Notes(
        purpose="Signs the current agreement version. When both parties signed the same version the relationship "
        "becomes active and its first meeting is scheduled.",
        example={"command_id": "hr-7791", "actor_id": "emp-1042", "agreement_version": 1},
    ),
    ("Relationship", "record_meeting"): Notes(
        purpose="Records that the scheduled meeting was held (and schedules the next one); with `meeting_number` of "
        "a meeting marked missed, corrects that record. `held_at` needs an offset and may not be in the future.",
        example={
            "command_id": "cal-20270309-1",
            "actor_id": "emp-311",
            "held_at": "2027-03-09T15:00:00+01:00",
            "duration_minutes": 60,
            "notes": "Walked through the design review checklist.",
        },
    ),
    ("Relationship", "cancel_meeting"): Notes(
        purpose="Cancels the scheduled meeting; later than the agreed `cancellation_notice_hours` counts as late.",
        example={"command_id": "cal-20270323-x", "actor_id": "emp-1042", "meeting_number": 2, "reason": "ill"},
    ),
    ("Relationship", "reschedule_meeting"): Notes(
        purpose="Moves the scheduled meeting to a new start (in the future, at most a year ahead).",
        example={
            "command_id": "cal-20270323-m",
            "actor_id": "emp-311",
            "meeting_number": 2,
            "starts_at": "2027-03-25T16:00:00+01:00",
        },
    ),
    ("Relationship", "report_meeting_not_held"): Notes(
        purpose="Says that a meeting did not take place. The scheduled meeting, once it has begun, counts as missed "
        "at once (health, misses in a row and the next meeting follow, as when nobody reports it in time); a "
        "meeting already counted missed gets the party's word. The other party is told and may correct it. "
        "A meeting recorded as held is refused (`conflict`): send `correct_meeting_report`.",
        example={"command_id": "mail-m3-didnt-meet-emp-1042", "actor_id": "emp-1042", "meeting_number": 3,
                 "reason": "My mentor was ill."},  # fmt: skip
    ),
    ("Relationship", "correct_meeting_report"): Notes(
        purpose="Corrects the report of a past meeting: `outcome` `held` (at `held_at`, for `duration_minutes`; "
        "by default its planned start and the agreed length) or `not_held`. Counts, health, the misses in a row "
        "and the last meeting become what the right report would have made them (a feedback round already asked "
        "for stays). Either party, within 30 days of the meeting's planned start.",
        example={"command_id": "mail-m3-we-met-emp-1042", "actor_id": "emp-1042", "meeting_number": 3,
                 "outcome": "held", "duration_minutes": 45, "reason": "Clicked the wrong button."},  # fmt: skip
    ),
    ("Relationship", "record_goal_progress"): Notes(
        purpose="Records progress on a goal of the agreement; 100 marks it achieved.",
        example={
            "command_id": "hr-7801",
            "actor_id": "emp-1042",
            "goal_id": "review",
            "progress_percent": 50,
            "milestones_reached": ["m1"],
        },
    ),
    ("Relationship", "propose_goal_revision"): Notes(
        purpose="Proposes to change a goal (an existing `goal_id`) or add one (a new id). It takes effect when the "
        "other party acknowledges it; the revision's id is this message's `command_id`.",
        example={
            "command_id": "rev-1",
            "actor_id": "emp-1042",
            "goal": {"goal_id": "talk", "title": "Give a conference talk", "target_date": "2027-09-30"},
            "rationale": "The design reviews are going well; I want a stretch goal.",
        },
    ),
    ("Relationship", "acknowledge_goal_revision"): Notes(
        purpose="Acknowledges a proposed goal revision, which then takes effect.",
        example={"command_id": "hr-7810", "actor_id": "emp-311", "revision_id": "rev-1"},
    ),
    ("Relationship", "submit_feedback"): Notes(
        purpose="Answers a feedback round the relationship asked for (after every few meetings).",
        example={"command_id": "fb-1-mentee", "actor_id": "emp-1042", "feedback_round": 1, "score": 4,
                 "comment": "Very useful sessions."},  # fmt: skip
    ),
    ("Relationship", "raise_concern"): Notes(
        purpose="Raises a concern with the coordinators; the relationship is at risk while it is open. The concern's "
        "id is this message's `command_id`.",
        example={"command_id": "concern-1", "actor_id": "emp-1042", "text": "We keep missing our slot."},
    ),
    ("Relationship", "resolve_concern"): Notes(
        purpose="Resolves an open concern.",
        example={"command_id": "hr-7820", "actor_id": "coord-7", "concern_id": "concern-1",
                 "resolution": "Agreed a fixed slot."},  # fmt: skip
    ),
    ("Relationship", "record_introduction"): Notes(
        purpose="Records that the mentor introduced the mentee to someone in their network.",
        example={"command_id": "hr-7830", "actor_id": "emp-311", "introduced_to": "the platform team's lead"},
    ),
    ("Relationship", "share_resource"): Notes(
        purpose="Records a resource one party shared with the other.",
        example={"command_id": "hr-7831", "actor_id": "emp-311", "title": "Design review checklist",
                 "url": "https://wiki.example.org/design-reviews"},  # fmt: skip
    ),
    ("Relationship", "pause_relationship"): Notes(
        purpose="Pauses the relationship until a moment at most `max_pause_days` ahead: no meetings, reminders or "
        "health checks meanwhile; the term is lengthened by the pause.",
        example={"command_id": "hr-7840", "actor_id": "emp-1042", "until": "2027-05-01T00:00:00Z",
                 "reason": "parental leave"},  # fmt: skip
    ),
    ("Relationship", "resume_relationship"): Notes(
        purpose="Ends a pause early.",
        example={"command_id": "hr-7841", "actor_id": "emp-1042"},
    ),
    ("Relationship", "request_review"): Notes(
        purpose="Opens an on-demand review (reviews also open by themselves at the middle and the end of the term).",
        example={"command_id": "hr-7850", "actor_id": "coord-7"},
    ),
    ("Relationship", "submit_review"): Notes(
        purpose="Answers the open review: `continue`, `recalibrate`, `extend` (with `extension_months`) or `close`; "
        "`goal_assessments` set each goal's progress.",
        example={
            "command_id": "review-1-mentee",
            "actor_id": "emp-1042",
            "outcome": "extend",
            "extension_months": 2,
            "goal_assessments": [{"goal_id": "review", "progress_percent": 80}],
            "comment": "Two more months to finish the second goal.",
        },
    ),
    ("Relationship", "nudge_relationship"): Notes(
        purpose="Sends again the reminder of what the relationship waits for, to whoever has yet to act: the match "
        "proposal's answers, the agreement's signatures, the next meeting (or, once it has begun, its report), the "
        "review's answers, the closing reflections. Refused (`not_found`) when nothing waits for the parties, and "
        "(`limit`) within a day of the last nudge.",
        example={"command_id": "digest-2027-w11-rel-42", "actor_id": "coord-7"},
    ),
    ("Relationship", "close_relationship"): Notes(
        purpose="Ends the relationship early. One that was active goes to the closing phase (both are asked for a "
        "reflection); one that never was closes at once.",
        example={"command_id": "hr-7860", "actor_id": "emp-1042", "note": "Changed teams; agreed with my mentor."},
    ),
    ("Relationship", "participant_left"): Notes(
        purpose="Reports that the mentee or the mentor left the organisation: the relationship closes (a mentor who "
        "was only proposed counts as a decline instead).",
        example={"command_id": "dir-left-emp-311", "actor_id": "directory", "participant_id": "emp-311"},
    ),
    ("Relationship", "submit_reflection"): Notes(
        purpose="The closing reflection; when both sides wrote one (or after `reflection_days`) the relationship "
        "closes with its summary as the workflow's result.",
        example={"command_id": "reflect-mentee", "actor_id": "emp-1042", "text": "I run design reviews now."},
    ),
    ("Relationship", "state"): Notes(
        purpose="The relationship's whole current state: phase, health, the candidate or mentor, the agreement, the "
        "next meeting, goals, open concerns, the last rejected commands (`rejected_commands`: what a signal that was "
        "refused left behind) and more. `null` only in the moment before the programme's settings are read. "
        "It holds the agreement and goals, which are confidential (encrypted in Temporal like every payload); "
        "notes, concerns, comments, reasons and reflections are never in it.",
        who="anyone with access to the namespace",
    ),
    ("MatchingRound", "MatchingRound"): Notes(
        purpose="Matches a programme's whole cohort at once and proposes every pair to its mentee's relationship "
        "(starting it if needed). Workflow id `matching-round/<programme_id>/<round_id>`; running a round again proposes "
        "nothing twice.",
        who="a coordinator's tool, `mentorflow round start`",
        example={"programme_id": "spring-2027", "round_id": "2027-03", "coordinator_id": "coord-7"},
    ),
    ("MatchingRound", "progress"): Notes(
        purpose="Where the round is: `collecting`, `solving`, `proposing` or `done`, with counts.",
        who="anyone with access to the namespace",
    ),
}

KIND_WORDS = {
    ("signal", "update"): "signal and update",
    ("signal",): "signal",
    ("update",): "update",
    ("query",): "query",
    ("workflow_input", "workflow_result"): "workflow",
}


def notes_for(entry: Entry) -> Notes:
    try:
        return NOTES[(entry.workflow_type, entry.name)]
    except KeyError:
        raise KeyError(
            f"{entry.workflow_type} {entry.name} has no notes in mentorflow/contract_notes.py: add its purpose, "
            "and an example"
        ) from None


# -- rendering -------------------------------------------------------------------------------


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/$defs/"):
        resolved: dict[str, Any] = root["$defs"][reference.removeprefix("#/$defs/")]
        return resolved
    return schema


def describe_type(schema: dict[str, Any], root: dict[str, Any]) -> str:
    """A short human name for a schema: `string`, `integer 1–5`, `list of Goal`, …"""
    if "$ref" in schema:
        target = _resolve(schema, root)
        if "enum" in target:
            return " \\| ".join(f"`{value}`" for value in target["enum"])
        return f"object ({target.get('title', 'object')})"
    if "anyOf" in schema:
        options = [describe_type(option, root) for option in schema["anyOf"]]
        return " or ".join(option for option in options)
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type", "any")
    if kind == "array":
        items = schema.get("items", {})
        text = f"list of {describe_type(items, root)}" if items else "list"
        bounds = _bounds(schema.get("minItems"), schema.get("maxItems"), "items")
        return f"{text}{bounds}"
    if kind == "string":
        if "format" in schema:
            return {"date-time": "date-time (ISO 8601 with offset)", "date": "date (YYYY-MM-DD)",
                    "time": "time (HH:MM)", "uri": "URI"}.get(schema["format"], f"string ({schema['format']})")  # fmt: skip
        if schema.get("pattern") == r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$":
            return "identifier"
        return "string" + _bounds(schema.get("minLength"), schema.get("maxLength"), "characters")
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if low is not None and high is not None:
            return f"{kind} {low}–{high}"
        if low is not None:
            return f"{kind} ≥ {low}"
        if high is not None:
            return f"{kind} ≤ {high}"
        return str(kind)
    if kind == "null":
        return "null"
    return str(kind)


def _bounds(low: int | None, high: int | None, unit: str) -> str:
    if low and high:
        return f", {low}–{high} {unit}"
    if low:
        return f", at least {low} {unit[:-1] if low == 1 else unit}"
    if high:
        return f", at most {high} {unit}"
    return ""


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The object a result is (`X | None` is `anyOf: [X, null]`), with the root's definitions."""
    for option in schema.get("anyOf", [schema]):
        target = _resolve(option, schema)
        if target.get("type") == "object":
            return {**target, "$defs": schema.get("$defs", {})}
    return schema


def field_table(schema: dict[str, Any]) -> str:
    """A markdown table of an object schema's properties."""
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        return "_no fields_"
    required = set(schema.get("required", []))
    rows = ["| field | type | required | default |", "| --- | --- | --- | --- |"]
    for name, prop in properties.items():
        default = "" if name in required or "default" not in prop else f"`{json.dumps(prop['default'])}`"
        rows.append(f"| `{name}` | {describe_type(prop, schema)} | {'yes' if name in required else 'no'} | {default} |")
    return "\n".join(rows)


def _link(path: str) -> str:
    return f"[`contract/{path}`](../contract/{path})"


def _example_block(example: dict[str, Any]) -> str:
    return "```json\n" + json.dumps(example, indent=2, ensure_ascii=False) + "\n```"


def render_entry(entry: Entry, contract: Contract) -> str:
    notes = notes_for(entry)
    kind_words = KIND_WORDS.get(entry.kinds, ", ".join(entry.kinds))
    if entry.kinds == ("workflow_input", "workflow_result"):
        lines = [f"### `{entry.name}` workflow", ""]
    else:
        lines = [f"### `{entry.name}` — {kind_words}", ""]
    lines += [notes.purpose, ""]
    facts = []
    spec = SPECS.get(entry.name) if entry.workflow_type == "Relationship" else None
    if who := (spec.who if spec else notes.who):
        facts.append(f"**Who:** {who}.")
    if spec is not None:
        facts.append(f"**When:** {spec.when(quote=lambda phase: f'`{phase}`')}.")
    if facts:
        lines += [" ".join(facts), ""]
    if entry.schema is not None:
        lines += [field_table(contract.schemas[entry.schema]), ""]
    elif entry.result_schema is not None:
        # A query: what its answer holds.
        lines += ["The answer's fields:", "", field_table(_object_schema(contract.schemas[entry.result_schema])), ""]
    if notes.example is not None:
        lines += ["Example:", "", _example_block(notes.example), ""]
    schemas = []
    if entry.schema is not None:
        label = "input" if entry.kinds[0] == "workflow_input" else "payload"
        schemas.append(f"{label}: {_link(entry.schema)}")
    if entry.result_schema is not None:
        label = {"query": "result", "workflow_input": "result"}.get(entry.kinds[0], "update result")
        schemas.append(f"{label}: {_link(entry.result_schema)}")
    lines += ["Schema — " + "; ".join(schemas) + "."]
    return "\n".join(lines)


def render_reference(contract: Contract) -> str:
    sections: list[str] = []
    for workflow_type in dict.fromkeys(entry.workflow_type for entry in contract.entries):
        entries = [entry for entry in contract.entries if entry.workflow_type == workflow_type]
        # In the order of NOTES (a relationship's lifecycle), not alphabetical as in the index.
        order = {key: position for position, key in enumerate(NOTES)}
        messages = sorted((e for e in entries if "signal" in e.kinds or "update" in e.kinds),
                          key=lambda e: order.get((e.workflow_type, e.name), len(order)))  # fmt: skip
        queries = [e for e in entries if "query" in e.kinds]
        sections.append(f"## {workflow_type}")
        summary = ["| name | kind | schema |", "| --- | --- | --- |"]
        for entry in entries:
            kind_words = KIND_WORDS.get(entry.kinds, ", ".join(entry.kinds))
            path = entry.schema or entry.result_schema
            assert path is not None
            summary.append(f"| [`{entry.name}`](#{_anchor(entry, kind_words)}) | {kind_words} | {_link(path)} |")
        sections.append("\n".join(summary))
        for group in ([e for e in entries if "workflow_input" in e.kinds], messages, queries):
            if not group:
                continue
            sections.extend(render_entry(entry, contract) for entry in group)
    return "\n\n".join(sections)


def _anchor(entry: Entry, kind_words: str) -> str:
    """GitHub's anchor for the entry's heading."""
    if entry.kinds == ("workflow_input", "workflow_result"):
        heading = f"{entry.name} workflow"
    else:
        heading = f"{entry.name} — {kind_words}"
    slug = "".join(ch for ch in heading.lower() if ch.isalnum() or ch in " _-").replace(" ", "-")
    return slug
