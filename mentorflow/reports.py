"""`mentorflow report`: a programme's dashboard from the read models, as rich tables, JSON
or one self-contained HTML page with inline SVG charts (no scripts, no network).

The numbers come from `events.projections.programme_report` over the rows the projection
follower keeps (activities/projections.py); this module only loads and draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape as html_escape
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

from activities.audit_trail import CredentialCount
from activities.projections import ProjectionStatus
from events.model import Health
from events.projections import (
    FeedbackRow,
    MeetingRow,
    ProgrammeReport,
    RelationshipRow,
    programme_report,
)
from events.state import Phase

HEALTHS = [health.value for health in Health]

RowT = TypeVar("RowT", bound=BaseModel)


async def load_programme_report(pool: asyncpg.Pool, programme_id: str) -> ProgrammeReport | None:
    """The programme's dashboard, or None when no programme or relationship has that id."""
    async with pool.acquire() as connection:
        in_order = "FROM report_relationships WHERE programme_id = $1 ORDER BY relationship_id"
        relationships = await _rows(connection, RelationshipRow, "", in_order, programme_id)
        if not relationships:
            known = await connection.fetchval("SELECT 1 FROM programmes WHERE programme_id = $1", programme_id)
            if not known:
                return None
        of_programme = "JOIN report_relationships r USING (relationship_id) WHERE r.programme_id = $1"
        meetings = await _rows(connection, MeetingRow, "m.", f"FROM report_meetings m {of_programme}", programme_id)
        feedback = await _rows(connection, FeedbackRow, "f.", f"FROM report_feedback f {of_programme}", programme_id)
    return programme_report(programme_id, relationships, meetings, feedback)


async def _rows(connection: asyncpg.Connection, row: type[RowT], alias: str, source: str, programme_id: str) -> list[RowT]:
    """`SELECT` the row model's fields (prefixed with the table's `alias`) `source`, as rows."""
    columns = ", ".join(alias + column for column in row.model_fields)
    records = await connection.fetch(f"SELECT {columns} {source}", programme_id)
    return [row.model_validate(dict(record)) for record in records]


def report_json(
    report: ProgrammeReport,
    statuses: Sequence[ProjectionStatus],
    generated_at: datetime,
    senders: Sequence[CredentialCount] | None = None,
) -> dict[str, Any]:
    """`senders`: the audit view (activities/audit_trail.py), as `commands_by_credential`."""
    audit = {} if senders is None else {"commands_by_credential": [count.to_json() for count in senders]}
    return {
        **report.model_dump(mode="json"),
        **audit,
        "generated_at": generated_at.isoformat(),
        "projections": {s.name: {"position": s.position, "head": s.head, "behind": s.behind} for s in statuses},
    }


_AUDIT_TITLE = "Commands by credential (who sent them: the HTTP API's record)"
_AUDIT_HEADERS = ("sent by", "via", "commands", "relationships")


def _audit_rows(senders: Sequence[CredentialCount]) -> list[list[str]]:
    return [[c.sent_by.describe(), c.sent_by.via, str(c.commands), str(c.relationships)] for c in senders]


def _fmt(value: float | None, unit: str = "") -> str:
    return "–" if value is None else f"{value:g}{unit}"


def _bar(value: float, largest: float, width: int = 30) -> str:
    return "█" * round(width * value / largest) if largest else ""


def _numbers_right(table: Table, first: int = 1) -> Table:
    for column in table.columns[first:]:
        if column.header:  # the bars stay left
            column.justify = "right"
    return table


def report_renderable(
    report: ProgrammeReport, statuses: Sequence[ProjectionStatus], senders: Sequence[CredentialCount] | None = None
) -> Group:
    """The dashboard as rich tables (and the audit view, given `senders`)."""
    parts: list[Any] = [f"[bold]Programme {escape(report.programme_id)}[/bold]: {report.relationships} relationship{'' if report.relationships == 1 else 's'}"]
    behind = max((s.behind for s in statuses), default=0)
    if behind:
        parts.append(f"[yellow]The read models are {behind} events behind the event store.[/yellow]")

    phases = Table("phase", *HEALTHS, "total", title="Relationships by phase and health", title_justify="left")
    for phase in Phase:
        counts = report.by_phase_and_health[phase.value]
        phases.add_row(phase.value, *(str(counts[h]) for h in HEALTHS), str(sum(counts.values())))
    parts.append(_numbers_right(phases))

    match = report.time_to_match
    matching = Table("matched", "not (yet) matched", "median", "p75", "p90", "longest",
                     title="Time to match (days from start to a confirmed match)", title_justify="left")  # fmt: skip
    matching.add_row(str(match.matched), str(match.unmatched), _fmt(match.median_days), _fmt(match.p75_days),
                     _fmt(match.p90_days), _fmt(match.max_days))  # fmt: skip
    parts.append(_numbers_right(matching, first=0))

    meetings = Table("month", "held", "missed", "", title="Meetings per month", title_justify="left")
    largest = max((m.held for m in report.meetings_per_month), default=0)
    for month in report.meetings_per_month:
        meetings.add_row(month.month, str(month.held), str(month.missed), f"[green]{_bar(month.held, largest)}[/green]")
    parts.append(_numbers_right(meetings) if report.meetings_per_month else "[dim]No meetings held or missed yet.[/dim]")

    goals = report.goal_completion
    rate = "–" if goals.rate is None else f"{goals.rate:.0%}"
    parts.append(f"[bold]Goal completion[/bold]: {goals.achieved} of {goals.goals} goals achieved ({rate})")

    trend = Table("month", "answers", "average (1–5)", "", title="Feedback trend", title_justify="left")
    for answers in report.feedback_per_month:
        trend.add_row(answers.month, str(answers.responses), f"{answers.average_score:.2f}",
                      f"[cyan]{_bar(answers.average_score, 5, 20)}[/cyan]")  # fmt: skip
    parts.append(_numbers_right(trend) if report.feedback_per_month else "[dim]No feedback yet.[/dim]")

    closures = Table("closure reason", "relationships", title="Closure reasons", title_justify="left")
    for reason, count in report.closure_reasons.items():
        closures.add_row(reason, str(count))
    parts.append(_numbers_right(closures) if report.closure_reasons else "[dim]No relationship has closed yet.[/dim]")

    if senders is not None:
        audit = Table(*_AUDIT_HEADERS, title=_AUDIT_TITLE, title_justify="left")
        for row in _audit_rows(senders):
            audit.add_row(*(escape(cell) for cell in row))
        parts.append(_numbers_right(audit, first=2) if senders else "[dim]No commands yet.[/dim]")
    return Group(*parts)


# -- HTML ----------------------------------------------------------------------------------

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #1d2330; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.meta { color: #5b6475; } .warn { color: #9a5b00; }
table { border-collapse: collapse; } th, td { padding: .25rem .7rem; border-bottom: 1px solid #dde2ea; text-align: right; }
th:first-child, td:first-child { text-align: left; }
svg { display: block; margin: .5rem 0; } svg text { font: 12px system-ui, sans-serif; fill: #1d2330; }
.held { fill: #2f7d4f; } .missed { fill: #c2513b; } .score { fill: none; stroke: #2b6cb0; stroke-width: 2; }
.dot { fill: #2b6cb0; } .axis { stroke: #8a93a3; } .reason { fill: #5b6ea8; } .track { fill: #e6e9ef; } .done { fill: #2f7d4f; }
"""


def _e(value: object) -> str:
    return html_escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _svg(chart_id: str, label: str, width: int, height: int, shapes: Sequence[str]) -> str:
    """One chart: an inline SVG with its label as accessible name and title."""
    return (f'<svg class="chart" id="{chart_id}" role="img" aria-label="{_e(label)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}"><title>{_e(label)}</title>{"".join(shapes)}</svg>')  # fmt: skip


def _meetings_chart(report: ProgrammeReport) -> str:
    months = report.meetings_per_month
    if not months:
        return "<p>No meetings held or missed yet.</p>"
    height, top, bottom, step = 190, 20, 30, 56
    width = 40 + step * len(months)
    largest = max(max(m.held, m.missed) for m in months) or 1
    scale = (height - top - bottom) / largest
    base = height - bottom
    shapes = [f'<line class="axis" x1="30" y1="{base}" x2="{width}" y2="{base}"/>']
    for i, month in enumerate(months):
        x = 40 + i * step
        for offset, count, kind in ((0, month.held, "held"), (20, month.missed, "missed")):
            bar = count * scale
            shapes.append(
                f'<rect class="{kind}" x="{x + offset}" y="{base - bar:.1f}" width="18" height="{bar:.1f}">'
                f"<title>{_e(month.month)}: {count} {kind}</title></rect>"
            )
            shapes.append(f'<text x="{x + offset + 9}" y="{base - bar - 3:.1f}" text-anchor="middle">{count}</text>')
        shapes.append(f'<text x="{x + 19}" y="{base + 18}" text-anchor="middle">{_e(month.month)}</text>')
    return _svg("meetings-chart", "Meetings held (green) and missed (red) per month", width, height, shapes)


def _feedback_chart(report: ProgrammeReport) -> str:
    months = report.feedback_per_month
    if not months:
        return "<p>No feedback yet.</p>"
    height, top, bottom, step = 180, 15, 30, 70
    width = 60 + step * max(len(months) - 1, 1)
    base = height - bottom

    def y(score: float) -> float:
        return base - (score - 1) / 4 * (base - top)

    shapes = [f'<line class="axis" x1="30" y1="{base}" x2="{width}" y2="{base}"/>']
    for score in (1, 3, 5):
        shapes.append(f'<text x="20" y="{y(score) + 4:.1f}" text-anchor="end">{score}</text>')
    points = [(40 + i * step, y(m.average_score)) for i, m in enumerate(months)]
    shapes.append('<polyline class="score" points="' + " ".join(f"{x},{py:.1f}" for x, py in points) + '"/>')
    for (x, py), month in zip(points, months, strict=True):
        shapes.append(
            f'<circle class="dot" cx="{x}" cy="{py:.1f}" r="4"><title>{_e(month.month)}: '
            f"{month.average_score:.2f} from {month.responses} answers</title></circle>"
        )
        shapes.append(f'<text x="{x}" y="{base + 18}" text-anchor="middle">{_e(month.month)}</text>')
    return _svg("feedback-chart", "Average feedback score (1 to 5) per month", width + 20, height, shapes)


def _closure_chart(report: ProgrammeReport) -> str:
    reasons = report.closure_reasons
    if not reasons:
        return "<p>No relationship has closed yet.</p>"
    row, label_width, bar_width = 24, 190, 300
    largest = max(reasons.values())
    height = row * len(reasons) + 10
    shapes = []
    for i, (reason, count) in enumerate(reasons.items()):
        y = 5 + i * row
        length = bar_width * count / largest
        shapes.append(f'<text x="0" y="{y + 14}">{_e(reason)}</text>')
        shapes.append(f'<rect class="reason" x="{label_width}" y="{y}" width="{length:.1f}" height="18">'
                      f"<title>{_e(reason)}: {count}</title></rect>")  # fmt: skip
        shapes.append(f'<text x="{label_width + length + 6:.1f}" y="{y + 14}">{count}</text>')
    return _svg("closure-chart", "Closed relationships by closure reason", label_width + bar_width + 40, height, shapes)


def _goal_chart(report: ProgrammeReport) -> str:
    goals = report.goal_completion
    if not goals.goals:
        return "<p>No goals agreed yet.</p>"
    share = goals.achieved / goals.goals
    label = f"{goals.achieved} of {goals.goals} goals achieved ({share:.0%})"
    shapes = ['<rect class="track" x="0" y="4" width="300" height="22"/>',
              f'<rect class="done" x="0" y="4" width="{300 * share:.1f}" height="22"/>',
              f'<text x="310" y="20">{share:.0%}</text>']  # fmt: skip
    return _svg("goals-chart", label, 420, 34, shapes) + f"<p>{_e(label)}</p>"


def report_html(
    report: ProgrammeReport,
    statuses: Sequence[ProjectionStatus],
    generated_at: datetime,
    senders: Sequence[CredentialCount] | None = None,
) -> str:
    """One self-contained page (XHTML-compatible markup, inline SVG, no scripts or links)."""
    behind = max((s.behind for s in statuses), default=0)
    warning = (f'<p class="warn">The read models are {behind} events behind the event store.</p>'
               if behind else "")  # fmt: skip
    phase_rows = [
        [phase.value, *(report.by_phase_and_health[phase.value][h] for h in HEALTHS),
         sum(report.by_phase_and_health[phase.value].values())]
        for phase in Phase
    ]  # fmt: skip
    match = report.time_to_match
    match_table = _table(
        ["matched", "not (yet) matched", "median", "p75", "p90", "longest"],
        [[match.matched, match.unmatched, _fmt(match.median_days), _fmt(match.p75_days), _fmt(match.p90_days),
          _fmt(match.max_days)]],
    )  # fmt: skip
    meetings_table = _table(["month", "held", "missed"], [[m.month, m.held, m.missed] for m in report.meetings_per_month])
    feedback_table = _table(
        ["month", "answers", "average"], [[m.month, m.responses, f"{m.average_score:.2f}"] for m in report.feedback_per_month]
    )
    audit = "" if senders is None else (
        f'<section id="audit"><h2>{_e(_AUDIT_TITLE)}</h2>\n{_table(_AUDIT_HEADERS, _audit_rows(senders))}</section>'
    )
    title = f"Programme {report.programme_id}: mentoring report"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"/>
<title>{_e(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p class="meta">{report.relationships} relationships · generated {_e(generated_at.strftime("%Y-%m-%d %H:%M UTC"))}</p>
{warning}
<section id="phases"><h2>Relationships by phase and health</h2>
{_table(["phase", *HEALTHS, "total"], phase_rows)}</section>
<section id="time-to-match"><h2>Time to match (days from start to a confirmed match)</h2>
{match_table}</section>
<section id="meetings"><h2>Meetings per month</h2>
{_meetings_chart(report)}
<p class="meta"><span style="color: #2f7d4f">■</span> held · <span style="color: #c2513b">■</span> missed</p>
{meetings_table}</section>
<section id="goals"><h2>Goal completion</h2>
{_goal_chart(report)}</section>
<section id="feedback"><h2>Feedback trend</h2>
{_feedback_chart(report)}
{feedback_table}</section>
<section id="closures"><h2>Closure reasons</h2>
{_closure_chart(report)}</section>
{audit}
</body>
</html>
"""


def print_status(statuses: Sequence[ProjectionStatus], console: Console) -> None:
    table = Table("projection", "table", "position", "head", "behind", box=None, header_style="bold")
    for status in statuses:
        table.add_row(status.name, status.table, str(status.position), str(status.head), str(status.behind))
    console.print(table)
