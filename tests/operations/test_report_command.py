"""`mentorflow report` and `mentorflow projections …` on a real database, and the follower
running inside the worker."""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from rich.console import Console
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

import mentorflow.cli as cli_module
from activities.event_store import PostgresEventStore
from activities.projections import ProjectionFollower
from events.model import MeetingReportCorrected, RelationshipStarted
from events.projections import FEEDBACK, MEETINGS, RELATIONSHIPS, ProgrammeReport, programme_report, project
from mentorflow.cli import app
from mentorflow.config import Settings
from mentorflow.reports import report_html
from tests.support.session import TEST_KEYRING
from tests.support.owners import owner
from tests.support.projection_stories import Driver, caught_up, interleaved, stories
from worker import run_worker


@pytest.fixture(scope="module")
def drivers() -> list[Driver]:
    return stories()


def expected_report(drivers: list[Driver], programme_id: str) -> ProgrammeReport:
    events = [event for driver in drivers for event in driver.events]
    rows = [project(p, {}, events).values() for p in (RELATIONSHIPS, MEETINGS, FEEDBACK)]
    return programme_report(programme_id, *rows)


async def append(pool: asyncpg.Pool, drivers: list[Driver]) -> int:
    store = PostgresEventStore(pool, TEST_KEYRING)
    chunks = interleaved(drivers)
    programmes = {e.stream_id: e.programme_id for d in drivers for e in d.events if isinstance(e, RelationshipStarted)}
    for chunk in chunks:
        stream_id = chunk[0].stream_id
        await store.append(stream_id, chunk[0].version - 1, chunk, owner=owner(stream_id, programmes[stream_id]))
    return sum(len(chunk) for chunk in chunks)


@pytest.fixture
async def stored(pool: asyncpg.Pool, drivers: list[Driver], database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> int:
    """The stories in the store, not yet projected, and the CLI pointed at that database."""
    monkeypatch.setenv("MENTORFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("MENTORFLOW_STATE_DIR", str(tmp_path / "state"))
    return await append(pool, drivers)


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(app, list(arguments))


def test_report_json_catches_up_and_matches_the_computed_report(stored: int, drivers: list[Driver]) -> None:
    result = invoke("report", "--programme", "prog-1", "--json")
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed.pop("projections") == {
        name: {"position": stored, "head": stored, "behind": 0} for name in ("relationships", "meetings", "feedback", "digest")
    }
    assert datetime.fromisoformat(printed.pop("generated_at")).tzinfo is not None
    # The audit view (tests/api/test_audit_trail.py): stored without the API, nothing names a credential.
    assert {row["via"] for row in printed.pop("commands_by_credential")} <= {"direct", "internal"}
    assert printed == expected_report(drivers, "prog-1").model_dump(mode="json")
    assert printed["relationships"] == 4 and printed["closure_reasons"] == {"closed_by_mentee": 1, "unmatched": 1}


def test_report_tables_and_an_unknown_programme(stored: int) -> None:
    result = invoke("report", "--programme", "prog-1")
    assert result.exit_code == 0, result.stderr
    for heading in ("Relationships by phase and health", "Time to match", "Meetings per month",
                    "Goal completion", "Feedback trend", "Closure reasons"):  # fmt: skip
        assert heading in result.stdout
    assert "1 of 6 goals achieved (17%)" in result.stdout

    unknown = invoke("report", "--programme", "no-such-programme")
    assert unknown.exit_code == 1
    assert unknown.stderr.strip().splitlines() == [
        "error: programme 'no-such-programme' does not exist and has no relationships (see `mentorflow programme list`)"
    ]


def parse_page(page: str) -> ElementTree.Element:
    assert page.startswith("<!DOCTYPE html>\n")
    return ElementTree.fromstring(page.removeprefix("<!DOCTYPE html>\n"))


def test_report_html_is_one_well_formed_page_with_its_charts(stored: int, drivers: list[Driver], tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    result = invoke("report", "--programme", "prog-1", "--html", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    page = target.read_text(encoding="utf-8")
    root = parse_page(page)
    charts = {svg.get("id"): svg for svg in root.iter("svg")}
    assert set(charts) == {"meetings-chart", "goals-chart", "feedback-chart", "closure-chart"}
    report = expected_report(drivers, "prog-1")
    held_bars = [rect for rect in charts["meetings-chart"].iter("rect") if rect.get("class") == "held"]
    assert len(held_bars) == len(report.meetings_per_month)
    assert len(list(charts["feedback-chart"].iter("circle"))) == len(report.feedback_per_month)
    assert len([r for r in charts["closure-chart"].iter("rect")]) == len(report.closure_reasons)
    # Self-contained: no scripts, no links, nothing fetched.
    assert not [e for e in root.iter() if e.tag in ("script", "link", "img", "iframe")]
    assert not re.search(r"(src|href)=|https?://|url\(", page)

    bad_target = invoke("report", "--programme", "prog-1", "--html", str(tmp_path / "missing" / "r.html"))
    assert bad_target.exit_code == 1 and "--html" in bad_target.stderr and "Traceback" not in bad_target.stderr


def test_everything_in_the_page_is_escaped(drivers: list[Driver]) -> None:
    report = expected_report(drivers, "prog-1").model_copy(
        update={"programme_id": 'a<b>&"c"', "closure_reasons": {"<script>x</script>": 2}}
    )
    page = report_html(report, [], datetime(2026, 3, 1, tzinfo=UTC))
    root = parse_page(page)
    assert root.find("body/h1") is not None and root.find("body/h1").text == 'Programme a<b>&"c": mentoring report'  # type: ignore[union-attr]
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_projections_status_and_rebuild(stored: int, monkeypatch: pytest.MonkeyPatch) -> None:
    before = json.loads(invoke("projections", "status", "--json").stdout)
    assert [(s["projection"], s["position"], s["behind"]) for s in before] == [
        ("relationships", 0, stored), ("meetings", 0, stored), ("feedback", 0, stored), ("digest", 0, stored)
    ]
    report = invoke("report", "--programme", "prog-1", "--json").stdout
    unknown = invoke("projections", "rebuild", "--projection", "goals")
    assert unknown.exit_code == 2
    assert "unknown projection 'goals'; the projections are relationships, meetings, feedback, digest" in unknown.stderr

    screen = io.StringIO()
    monkeypatch.setattr(cli_module, "err", Console(file=screen, force_terminal=True, width=100))
    rebuilt = invoke("projections", "rebuild", "--json")
    assert rebuilt.exit_code == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["events"] == stored
    assert "rebuilding relationships, meetings, feedback, digest" in screen.getvalue()  # the progress bar

    one = invoke("projections", "rebuild", "--projection", "feedback")
    assert one.exit_code == 0 and "Rebuilt feedback" in one.stdout
    again = json.loads(invoke("report", "--programme", "prog-1", "--json").stdout)
    first = json.loads(report)
    assert {k: v for k, v in again.items() if k != "generated_at"} == {k: v for k, v in first.items() if k != "generated_at"}

    status = invoke("projections", "status")
    assert status.exit_code == 0 and "relationships" in status.stdout


async def test_a_meeting_corrected_to_not_held_is_one_fewer_held_in_the_report(
    pool: asyncpg.Pool, drivers: list[Driver], database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Through the store, the follower and `report --json`: a meeting reported held, then
    corrected to not held, leaves the held meetings and joins the missed ones, as in the
    relationship's own state."""
    monkeypatch.setenv("MENTORFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("MENTORFLOW_STATE_DIR", str(tmp_path / "state"))
    story = next(d for d in drivers if d.state.programme_id == "prog-2")
    correction = next(e for e in story.events if isinstance(e, MeetingReportCorrected))
    # The correction's events: its MeetingMissed, then the MeetingReportCorrected.
    cut = next(i for i, e in enumerate(story.events) if e.command_id == correction.command_id)
    store = PostgresEventStore(pool, TEST_KEYRING)
    who = owner(story.state.relationship_id, "prog-2")

    async def held_and_missed() -> tuple[int, int]:
        await caught_up(ProjectionFollower(pool))  # what the worker's follower does; `report` catches up too
        result = await asyncio.to_thread(invoke, "report", "--programme", "prog-2", "--json")
        assert result.exit_code == 0, result.stderr
        months = json.loads(result.stdout)["meetings_per_month"]
        return sum(m["held"] for m in months), sum(m["missed"] for m in months)

    await store.append(story.state.relationship_id, 0, story.events[:cut], owner=who)
    before = story.states[cut - 1]
    assert await held_and_missed() == (before.meetings_held, before.meetings_missed) == (2, 0)
    await store.append(story.state.relationship_id, cut, story.events[cut:], owner=who)
    assert await held_and_missed() == (story.state.meetings_held, story.state.meetings_missed) == (1, 1)


async def test_the_worker_follows_the_store_in_the_background_and_stops_cleanly(
    pool: asyncpg.Pool, drivers: list[Driver], time_skipping_env: WorkflowEnvironment
) -> None:
    ready = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(time_skipping_env.client, pool, f"tq-{uuid.uuid4()}", ready=ready, settings=Settings())
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        head = await append(pool, drivers)
        for _ in range(300):
            if await pool.fetchval("SELECT min(position) FROM projection_checkpoints") == head:
                break
            await asyncio.sleep(0.05)
        assert await pool.fetchval("SELECT count(*) FROM report_relationships") == len(drivers)
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
