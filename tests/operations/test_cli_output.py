"""What the `mentorflow` command prints, as a person reads it: text from data printed as it is
(never taken for Rich markup or emoji codes), the workflow id never cut at 80 columns, bad
input answered with exit code 2. In-process; a database where the command needs one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import mentorflow.cli as cli
from mentorflow.cli import app
from mentorflow.forgetting import Forgotten
from mentorflow.keyring import format_key, generate_key
from mentorflow.operations import RelationshipRow
from tests.support.dev_stack import assert_one_clean_error_line


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI's consoles as built in a process started with COLUMNS=80 (a default terminal)."""
    monkeypatch.setenv("COLUMNS", "80")
    for name in ("out", "err"):
        console: Console = getattr(cli, name)
        monkeypatch.setattr(cli, name, Console(stderr=console.stderr, soft_wrap=console.soft_wrap,
                                               emoji=console._emoji))  # fmt: skip
    yield


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": os.environ.get("COLUMNS", "80")})


# -- forget ----------------------------------------------------------------------------------


def test_forget_says_what_the_text_now_reads_as(monkeypatch: pytest.MonkeyPatch, terminal: None) -> None:
    done = Forgotten("rel-1", "prog-1", datetime(2027, 1, 2, 3, 4, tzinfo=UTC), "ops-7", True, 12, 5, 0)

    async def forget_relationship(pool: Any, reference: str, **_: Any) -> Forgotten:
        assert reference == "relationship/prog-1/rel-1"
        return done

    async def no_database(action: Any) -> Any:
        return await action(None)

    monkeypatch.setattr("mentorflow.forgetting.forget_relationship", forget_relationship)
    monkeypatch.setattr(cli, "_with_database", lambda action: cli.run(no_database(action)))
    result = invoke("forget", "relationship/prog-1/rel-1", "--yes", "--by", "ops-7")
    assert result.exit_code == 0, result.stderr
    assert "5 confidential texts in its 12 events now read as [forgotten]. Everything else is kept." in " ".join(
        result.stdout.split()
    ), result.stdout


def test_forget_without_yes_outside_a_terminal_is_refused_with_exit_code_2() -> None:
    result = invoke("forget", "rel-1", "--by", "ops-7")
    assert result.exit_code == 2
    assert_one_clean_error_line(result.stderr, "pass --yes to confirm")


# -- relationship list -----------------------------------------------------------------------


def row(workflow_id: str, **fields: Any) -> RelationshipRow:
    values: dict[str, Any] = dict(
        workflow_id=workflow_id, run_id="run-1", status="running", phase="agreement", health="at_risk",
        programme_id="spring-2027", mentee_id="emp-1042", mentor_id="emp-311",
        next_due_at=datetime(2027, 1, 2, 10, 0, tzinfo=UTC), meetings_held=3, started_at=None,
    )  # fmt: skip
    return RelationshipRow(**values | fields)


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> list[RelationshipRow]:
    """`relationship list` answered with these rows (no Temporal server)."""
    rows: list[RelationshipRow] = []

    async def fetch(client: Any, text: str, *, limit: int) -> list[RelationshipRow]:
        return rows

    async def connect(settings: Any) -> None:
        return None

    monkeypatch.setattr("mentorflow.operations.list_relationships", fetch)
    monkeypatch.setattr(cli, "_connect", connect)
    monkeypatch.setenv("MENTORFLOW_ENCRYPTION_KEYS", format_key("k1", generate_key()))
    return rows


WORKFLOW_IDS = ["relationship/spring-2027/0123456789", "relationship/leadership-programme-2027/a-much-longer-id-4f2c"]


def test_the_list_never_cuts_a_workflow_id_at_80_columns(terminal: None, listed: list[RelationshipRow]) -> None:
    listed += [row(workflow_id) for workflow_id in WORKFLOW_IDS]
    result = invoke("relationship", "list")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    for workflow_id in WORKFLOW_IDS:
        assert workflow_id in lines, result.stdout  # whole, on a line of its own, to copy
    assert "emp-1042" in result.stdout and "next due 2027-01-02 10:00 UTC" in " ".join(result.stdout.split())
    assert max(len(line) for line in lines) <= 80, result.stdout


def test_the_list_is_a_table_where_it_fits(
    terminal: None, listed: list[RelationshipRow], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "out", Console(soft_wrap=True, emoji=False, width=160))
    listed += [row(workflow_id) for workflow_id in WORKFLOW_IDS]
    result = invoke("relationship", "list")
    assert result.exit_code == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split()[:3] == ["Workflow", "Status", "Phase"]
    assert [line.split()[0] for line in lines] == WORKFLOW_IDS


def test_the_list_prints_values_as_they_are(terminal: None, listed: list[RelationshipRow]) -> None:
    # Search attributes are whatever someone set: "[bold]" and ":fire:" are text here.
    listed.append(row(WORKFLOW_IDS[0], phase="[bold]odd[/bold]", mentee_id="emp:fire:1"))
    result = invoke("relationship", "list")
    assert result.exit_code == 0, result.stderr
    assert "[bold]odd[/bold]" in result.stdout and "emp:fire:1" in result.stdout, result.stdout


# -- programmes: names and ids from data -----------------------------------------------------


def test_programme_names_print_as_they_are(
    monkeypatch: pytest.MonkeyPatch, terminal: None, database_url: str
) -> None:
    monkeypatch.setenv("MENTORFLOW_DATABASE_URL", database_url)
    name = "Team [red]Alpha[/red] :rocket: 2027"
    created = invoke("programme", "create", "--id", "alpha", "--name", name)
    assert created.exit_code == 0, created.stderr
    assert name in created.stdout, created.stdout
    for command in (["programme", "show", "alpha"], ["programme", "list"]):
        shown = invoke(*command)
        assert shown.exit_code == 0, shown.stderr
        assert name in shown.stdout, shown.stdout


# -- relationship start ----------------------------------------------------------------------


def test_start_in_a_programme_that_does_not_exist_is_bad_input(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("MENTORFLOW_DATABASE_URL", database_url)
    result = invoke("relationship", "start", "--programme", "nope", "--mentee", "emp-1")
    assert result.exit_code == 2
    assert_one_clean_error_line(result.stderr, "programme nope does not exist", "programme create --id nope")


# -- round run -------------------------------------------------------------------------------


def test_round_run_is_round_start_with_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer.main

    rounds = typer.main.get_command(app).commands["round"].commands  # type: ignore[attr-defined]
    assert {p.name for p in rounds["run"].params} == {p.name for p in rounds["start"].params} - {"wait"}
    started: dict[str, Any] = {}
    monkeypatch.setattr("mentorflow.cli.rounds.start_round", lambda **options: started.update(options))
    result = invoke("round", "run", "--programme", "spring", "--round", "r-1", "--coordinator", "coord-7",
                    "--objective", "max_matched", "--mentee", "emp-1", "--mentee", "emp-2", "--json",
                    "--rule-set", "second")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert started == {"programme": "spring", "round_id": "r-1", "coordinator": "coord-7", "objective": "max_matched",
                       "mentees": ["emp-1", "emp-2"], "as_json": True, "rule_set": "second", "wait": True}  # fmt: skip
    assert invoke("round", "run", "--programme", "spring", "--round", "r-1", "--wait").exit_code == 2
