"""The directory: programmes and participants in PostgreSQL, their activities, their CLI commands."""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from rich.console import Console
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from typer.testing import CliRunner

import mentorflow.cli as cli_module
from activities.directory import (
    Directory,
    DirectoryActivities,
    DirectoryError,
    check_timezone,
    merge_participant,
    participant_from_record,
    programme_from_data,
)
from events.people import Participant, ParticipantStatus, Programme
from events.settings import ProgrammeSettings
from mentorflow.cli import app, directory_database_url
from mentorflow.config import ConfigurationError, Settings
from mentorflow.directory_input import apply_setting_overrides, read_people, read_programme_document
from tests.support.session import project_root
from tests.support.helpers import new_worker

EXAMPLES = project_root() / "examples"
NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


def person(participant_id: str = "emp-1", **fields: Any) -> Participant:
    record = {"participant_id": participant_id, "display_name": f"Person {participant_id}",
              "email": f"{participant_id}@example.com", **fields}  # fmt: skip
    return participant_from_record(record)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the examples ----------------------------------------------------------------------------


def test_the_example_programme_has_every_setting_each_with_a_comment() -> None:
    path = EXAMPLES / "programme.yaml"
    document = read_programme_document(path)
    programme = programme_from_data(document)
    assert programme.programme_id == "spring-2027"
    missing = set(ProgrammeSettings.model_fields) - set(document["settings"])
    assert not missing, f"examples/programme.yaml lacks {sorted(missing)}: add each new setting with a comment"
    for setting in ProgrammeSettings.model_fields:
        line = next(line for line in path.read_text().splitlines() if line.strip().startswith(f"{setting}:"))
        assert re.search(r"\s#\s*\S", line), f"the line of {setting} in examples/programme.yaml has no comment"


def test_the_example_people_file_reads_without_a_rejected_row() -> None:
    people = read_people(EXAMPLES / "people.csv")
    assert people.rejected == []
    assert len(people.participants) >= 3
    grace = next(p for p in people.participants if p.participant_id == "emp-311")
    assert [c.kind for c in grace.channels] == ["email", "webhook"]
    assert grace.muted_templates == ("meeting_reminder",)


# -- validation, without a database ----------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"proposal_ttl_days": 0}, "settings.proposal_ttl_days: Input should be greater than or equal to 1"),
        ({"minimum_meeting_frequency": "yearly"}, "settings.minimum_meeting_frequency"),
        ({"proposal_ttl": 7}, "settings.proposal_ttl: Extra inputs are not permitted"),
        ({"at_risk_after_days": 60, "stalled_after_days": 30}, "at_risk_after_days must be less than stalled_after_days"),
    ],
)
def test_invalid_settings_are_refused_naming_the_setting(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(DirectoryError) as refused:
        programme_from_data({"programme_id": "p", "name": "P", "settings": settings})
    assert named in str(refused.value)


def test_a_bad_time_zone_is_named_and_a_near_miss_suggested() -> None:
    assert check_timezone("Europe/Berlin") == "Europe/Berlin"
    for bad in ("Mars/Olympus_Mons", "../etc/passwd", "Europe", ""):
        with pytest.raises(DirectoryError, match=re.escape(f"timezone: {bad!r} is not a time zone")):
            check_timezone(bad)
    with pytest.raises(DirectoryError, match="did you mean 'Europe/Berlin'"):
        check_timezone("europe/berlin")


def test_records_are_read_loosely_but_checked_strictly() -> None:
    participant = participant_from_record(
        {"participant_id": " emp-1 ", "display_name": "Ada", "email": "ada@example.com", "timezone": "",
         "channels": "email; webhook=https://hooks.example.com/a", "muted_templates": "a;b"}  # fmt: skip
    )
    assert participant.participant_id == "emp-1" and participant.timezone == "UTC"
    assert [(c.kind, c.address) for c in participant.channels] == [("email", None), ("webhook", "https://hooks.example.com/a")]
    assert participant.muted_templates == ("a", "b")
    assert "status" not in participant.model_fields_set
    for record, named in [
        ({"email": "not-an-address"}, "email: not an email address"),
        ({"participant_id": "emp 1"}, "participant_id: use letters, digits"),
        ({"channels": "pigeon"}, "unknown channel 'pigeon'"),
        ({"channels": "webhook"}, "channels.0: a webhook channel needs an http(s) URL"),
        ({"left_at": "2027-01-01T00:00:00Z"}, "left_at: only allowed together with status: left"),
        ({"status": "retired"}, "status: Input should be 'active' or 'left'"),
    ]:
        with pytest.raises(DirectoryError, match=re.escape(named)):
            participant_from_record({"participant_id": "emp-1", "display_name": "Ada", "email": "a@example.com", **record})


def test_setting_overrides_take_json_or_bare_words_and_refuse_unknown_names() -> None:
    overridden = apply_setting_overrides(
        {"proposal_ttl_days": 7},
        ["proposal_ttl_days=10", "minimum_meeting_frequency=weekly", "coordinator_ids=coord-1, coord-2",
         "agreement_reminder_days=[5, 2]", "midpoint_review=false"],  # fmt: skip
    )
    settings = ProgrammeSettings.model_validate(overridden)
    assert settings.proposal_ttl_days == 10 and settings.minimum_meeting_frequency == "weekly"
    assert settings.coordinator_ids == ("coord-1", "coord-2") and settings.agreement_reminder_days == (5, 2)
    assert settings.midpoint_review is False
    with pytest.raises(DirectoryError, match="--set proposal_ttl: there is no such setting"):
        apply_setting_overrides({}, ["proposal_ttl=3"])
    with pytest.raises(DirectoryError, match="write it as NAME=VALUE"):
        apply_setting_overrides({}, ["proposal_ttl_days"])


CSV_WITH_BAD_ROWS = """\
participant_id,display_name,email,timezone,channels
emp-1,Ada,ada@example.com,Europe/Berlin,email
emp-2,Bad Mail,no-at-sign,UTC,email

emp-3,"Multi
Line",m@example.com,UTC,log
emp-4,Lost,l@example.com,Mars/Base,email
emp-1,Again,again@example.com,UTC,email
emp-5,Too,many@example.com,UTC,email,extra
emp-6,Grace,grace@example.com,,
"""


def test_bad_csv_rows_are_reported_by_line_and_good_rows_kept(tmp_path: Path) -> None:
    people = read_people(write(tmp_path / "people.csv", CSV_WITH_BAD_ROWS))
    assert [p.participant_id for p in people.participants] == ["emp-1", "emp-3", "emp-6"]
    assert people.participants[1].display_name == "Multi\nLine"
    rejected = {row.line: row.reason for row in people.rejected}
    assert sorted(rejected) == [3, 7, 8, 9]
    assert rejected[3] == "email: not an email address"
    assert "'Mars/Base' is not a time zone" in rejected[7]
    assert "'emp-1' is already on line 2" in rejected[8]
    assert "6 values, but the header names 5 columns" in rejected[9]


def test_json_and_yaml_rows_are_reported_by_the_line_they_start_on(tmp_path: Path) -> None:
    rows = [
        {"participant_id": "emp-1", "display_name": "Ada", "email": "ada@example.com"},
        {"participant_id": "emp-2", "display_name": "Bad", "email": "bad", "timezone": "UTC"},
        "not an object",
        {"participant_id": "emp-3", "display_name": "Cy", "email": "cy@example.com", "channels": ["email", {"kind": "log"}]},
    ]
    as_json = write(tmp_path / "people.json", json.dumps(rows, indent=2))
    as_yaml = write(tmp_path / "people.yaml", yaml.safe_dump(rows, sort_keys=False))
    json_lines = [i + 1 for i, line in enumerate(as_json.read_text().splitlines()) if line.startswith(("  {", '  "'))]
    yaml_lines = [i + 1 for i, line in enumerate(as_yaml.read_text().splitlines()) if line.startswith("- ")]
    for path, starts in [(as_json, json_lines), (as_yaml, yaml_lines)]:
        people = read_people(path)
        assert [p.participant_id for p in people.participants] == ["emp-1", "emp-3"], path
        assert [(row.line, row.reason.split(":")[0]) for row in people.rejected] == [
            (starts[1], "email"),
            (starts[2], "expected an object with participant_id, display_name and email"),
        ], path


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("people.json", '[\n  {"participant_id": "emp-1",\n  oops}\n]', "line 3: not valid JSON"),
        ("people.json", '{"participant_id": "emp-1"}', "a participant file holds a list"),
        ("people.yaml", "- participant_id: emp-1\n  email: [unclosed\n", "not valid YAML"),
        ("people.csv", "participant_id,name,email\n", "line 1: unknown column 'name'"),
        ("people.csv", "participant_id,email\n", "the header lacks the column 'display_name'"),
        ("people.txt", "", "name it .json, .yaml, .yml, .csv"),
    ],
)
def test_a_file_that_is_wrong_as_a_whole_is_refused(tmp_path: Path, name: str, text: str, problem: str) -> None:
    with pytest.raises(DirectoryError, match=re.escape(problem)):
        read_people(write(tmp_path / name, text))


def test_leaving_is_sticky_unless_a_record_says_otherwise() -> None:
    left = person(status="left", left_at=NOW - timedelta(days=3))
    assert merge_participant(left, person(), NOW) is None  # an old export brings nobody back
    assert merge_participant(left, person(status="left"), NOW) is None  # keeps the first date
    back = merge_participant(left, person(status="active"), NOW)
    assert back is not None and back.status == "active" and back.left_at is None
    new = merge_participant(None, person(status="left"), NOW)
    assert new is not None and new.left_at == NOW


# -- the repository, on PostgreSQL -----------------------------------------------------------


async def test_a_programme_round_trips_from_yaml_and_json_files(pool: asyncpg.Pool, tmp_path: Path) -> None:
    directory = Directory(pool)
    from_yaml = programme_from_data(read_programme_document(EXAMPLES / "programme.yaml"))
    as_json = write(tmp_path / "programme.json", from_yaml.model_dump_json())
    from_json = programme_from_data(read_programme_document(as_json))
    assert from_json == from_yaml

    assert await directory.create_or_update_programme(from_yaml) == "created"
    assert await directory.get_programme("spring-2027") == from_yaml
    stamp = await pool.fetchval("SELECT updated_at FROM programmes")
    assert await directory.create_or_update_programme(from_json) == "unchanged"
    assert await pool.fetchval("SELECT updated_at FROM programmes") == stamp

    changed = from_yaml.model_copy(update={"settings": from_yaml.settings.model_copy(update={"proposal_ttl_days": 9})})
    assert await directory.create_or_update_programme(changed) == "updated"
    stored = await directory.get_programme("spring-2027")
    assert stored is not None and stored.settings.proposal_ttl_days == 9
    assert [listing.programme_id for listing in await directory.list_programmes()] == ["spring-2027"]
    assert await directory.get_programme("nope") is None


async def test_no_personal_data_leaves_the_participants_table(pool: asyncpg.Pool) -> None:
    # The directory's other table holds programme settings only: ids, numbers, words.
    columns = await pool.fetch(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_name IN ('programmes', 'participants')"
    )
    personal = {"display_name", "email", "timezone", "channels"}
    assert {c["column_name"] for c in columns if c["table_name"] == "participants"} >= personal
    assert not personal & {c["column_name"] for c in columns if c["table_name"] == "programmes"}


async def test_importing_the_same_participants_again_changes_nothing(pool: asyncpg.Pool, tmp_path: Path) -> None:
    directory = Directory(pool)
    people = read_people(write(tmp_path / "people.csv", CSV_WITH_BAD_ROWS))
    first = await directory.upsert_participants(people.participants)
    assert (first.created, first.updated, first.unchanged) == (3, 0, 0)
    stamps = await pool.fetch("SELECT participant_id, updated_at FROM participants ORDER BY 1")

    again = await directory.upsert_participants(read_people(tmp_path / "people.csv").participants)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    assert await pool.fetch("SELECT participant_id, updated_at FROM participants ORDER BY 1") == stamps

    assert await directory.get_participant("emp-3") == people.participants[1]
    assert await directory.upsert_participant(person("emp-3", display_name="Renamed")) == "updated"
    renamed = await directory.get_participant("emp-3")
    assert renamed is not None and renamed.display_name == "Renamed"


async def test_large_imports_go_in_batches(pool: asyncpg.Pool) -> None:
    directory = Directory(pool)
    many = [person(f"emp-{n}") for n in range(1201)]
    batches: list[int] = []
    counts = await directory.upsert_participants(many, batch_size=500, on_batch=batches.append)
    assert batches == [500, 500, 201]
    assert counts.created == 1201
    assert await pool.fetchval("SELECT count(*) FROM participants") == 1201


async def test_an_invalid_participant_stops_a_save_before_anything_is_written(pool: asyncpg.Pool) -> None:
    directory = Directory(pool)
    sneaky = Participant(participant_id="emp-9", display_name="Tz", email="tz@example.com", timezone="Mars/Base")
    with pytest.raises(DirectoryError, match=r"participant 'emp-9': timezone: 'Mars/Base' is not a time zone"):
        await directory.upsert_participants([person("emp-1"), sneaky])
    with pytest.raises(DirectoryError, match="appears more than once"):
        await directory.upsert_participants([person("emp-1"), person("emp-1")])
    assert await pool.fetchval("SELECT count(*) FROM participants") == 0


async def test_a_participant_leaves_once_and_stays_left(pool: asyncpg.Pool) -> None:
    directory = Directory(pool)
    await directory.upsert_participants([person("emp-1"), person("emp-2")])
    left, changed = await directory.mark_left("emp-1", NOW)
    assert changed and left.status == "left" and left.left_at == NOW
    again, changed = await directory.mark_left("emp-1")
    assert not changed and again.left_at == NOW

    assert await directory.upsert_participant(person("emp-1")) == "unchanged"
    statuses = await directory.check_participants(["emp-1", "emp-2", "ghost", "emp-1"])
    assert statuses == [
        ParticipantStatus(participant_id="emp-1", known=True, active=False),
        ParticipantStatus(participant_id="emp-2", known=True, active=True),
        ParticipantStatus(participant_id="ghost", known=False, active=False),
    ]
    with pytest.raises(LookupError, match="'ghost' is not in the directory"):
        await directory.mark_left("ghost")
    # The table itself refuses a status without its date.
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE participants SET status = 'left' WHERE participant_id = 'emp-2'")


# -- the activities --------------------------------------------------------------------------


async def test_the_activities_load_settings_check_people_and_refuse_an_unknown_programme(pool: asyncpg.Pool) -> None:
    directory = Directory(pool)
    activities, env = DirectoryActivities(directory), ActivityEnvironment()
    settings = ProgrammeSettings(proposal_ttl_days=5)
    await directory.create_or_update_programme(Programme(programme_id="p-1", name="P", settings=settings))
    await directory.upsert_participants([person("emp-1"), person("emp-2", status="left")])

    assert await env.run(activities.load_programme, "p-1") == settings
    with pytest.raises(ApplicationError) as refused:
        await env.run(activities.load_programme, "p-missing")
    assert refused.value.type == "UnknownProgramme" and refused.value.non_retryable
    assert "programme 'p-missing' does not exist" in refused.value.message

    assert [s.active for s in await env.run(activities.check_participants, ["emp-1", "emp-2"])] == [True, False]


async def test_stored_settings_that_no_longer_fit_the_model_fail_without_retries(pool: asyncpg.Pool) -> None:
    await pool.execute("""INSERT INTO programmes (programme_id, name, settings) VALUES ('old', 'Old', '{"renamed_setting": 1}')""")
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(DirectoryActivities(Directory(pool)).load_programme, "old")
    assert refused.value.type == "InvalidProgrammeSettings" and refused.value.non_retryable
    assert "settings.renamed_setting" in refused.value.message


@workflow.defn(name="DirectoryProbe", sandboxed=False)
class DirectoryProbe:
    """Calls the directory activities by name on another task queue, as the Relationship workflow would."""

    @workflow.run
    async def run(self, programme_id: str, activity_queue: str) -> list[Any]:
        options: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=10), "task_queue": activity_queue}
        settings = await workflow.execute_activity(
            "load_programme", programme_id, result_type=ProgrammeSettings, retry_policy=RetryPolicy(maximum_attempts=5), **options
        )
        statuses = await workflow.execute_activity(
            "check_participants", ["emp-1", "ghost"], result_type=list[ParticipantStatus], **options
        )
        return [settings, statuses]


async def test_the_worker_serves_the_directory_activities(time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    env = time_skipping_env
    directory = Directory(pool)
    await directory.create_or_update_programme(Programme(programme_id="p-1", name="P", settings=ProgrammeSettings(max_match_attempts=4)))
    await directory.upsert_participant(person("emp-1"))
    # The probe runs on a worker of its own; the activities come from build_worker's.
    activity_worker = new_worker(env.client, pool)
    probe_queue = f"probe-{uuid.uuid4()}"
    probe_worker = Worker(env.client, task_queue=probe_queue, workflows=[DirectoryProbe], workflow_runner=UnsandboxedWorkflowRunner())

    async def probe(programme_id: str) -> Any:
        return await env.client.start_workflow(
            "DirectoryProbe", args=[programme_id, activity_worker.task_queue], id=f"probe-{uuid.uuid4()}", task_queue=probe_queue
        )

    async with activity_worker, probe_worker:
        result = await (await probe("p-1")).result()
        settings, statuses = ProgrammeSettings.model_validate(result[0]), result[1]
        assert settings.max_match_attempts == 4
        assert [(s["participant_id"], s["known"]) for s in statuses] == [("emp-1", True), ("ghost", False)]

        handle = await probe("p-missing")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    activity_error = failed.value.cause
    assert isinstance(activity_error, ActivityError) and isinstance(activity_error.cause, ApplicationError)
    assert activity_error.cause.type == "UnknownProgramme"
    assert activity_error.retry_state is not None and activity_error.retry_state.name == "NON_RETRYABLE_FAILURE"


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> str:
    monkeypatch.setenv("MENTORFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("MENTORFLOW_STATE_DIR", str(tmp_path / "state"))
    return database_url


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(app, list(arguments))


def error_lines(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    return lines


def test_cli_programme_create_show_list(cli_env: str, tmp_path: Path) -> None:
    created = invoke("programme", "create", "--file", str(EXAMPLES / "programme.yaml"))
    assert created.exit_code == 0, created.stderr
    assert "Created programme spring-2027" in created.stdout
    again = invoke("programme", "create", "--file", str(EXAMPLES / "programme.yaml"))
    assert "unchanged" in again.stdout

    shown = invoke("programme", "show", "spring-2027", "--json")
    assert shown.exit_code == 0, shown.stderr
    exported = write(tmp_path / "exported.json", shown.stdout)
    assert programme_from_data(json.loads(shown.stdout)) == programme_from_data(read_programme_document(EXAMPLES / "programme.yaml"))

    copied = invoke("programme", "create", "-f", str(exported), "--id", "autumn-2027", "--name", "Autumn",
                    "--set", "proposal_ttl_days=10", "--json")  # fmt: skip
    assert json.loads(copied.stdout) == {"outcome": "created", "programme_id": "autumn-2027", "changed": []}
    edited = invoke("programme", "create", "--id", "autumn-2027", "--set", "at_risk_after_days=21", "--json")
    assert json.loads(edited.stdout)["changed"] == ["at_risk_after_days"]
    autumn = json.loads(invoke("programme", "show", "autumn-2027", "--json").stdout)
    assert autumn["name"] == "Autumn"
    assert (autumn["settings"]["proposal_ttl_days"], autumn["settings"]["at_risk_after_days"]) == (10, 21)

    bare = invoke("programme", "create", "--id", "demo")
    assert bare.exit_code == 0 and "Created programme demo (demo)" in bare.stdout
    human = invoke("programme", "show", "autumn-2027")
    assert re.search(r"proposal_ttl_days\s+10\s+default 7", human.stdout), human.stdout

    listed = invoke("programme", "list", "--json")
    assert [p["programme_id"] for p in json.loads(listed.stdout)] == ["autumn-2027", "demo", "spring-2027"]
    assert "spring-2027" in invoke("programme", "list").stdout


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--id", "p", "--set", "proposal_ttl_days=0"], "programme: settings.proposal_ttl_days: Input should be greater"),
        (["--id", "p", "--set", "nonsense=1"], "--set nonsense: there is no such setting"),
        (["--id", "p q"], "programme_id: use letters, digits"),
        (["--name", "No id"], "name the programme: --file FILE or --id ID"),
        (["--file", "missing.yaml"], "missing.yaml: no such file"),
    ],
)
def test_cli_programme_create_refuses_bad_input_in_one_line_with_exit_2(cli_env: str, arguments: list[str], named: str) -> None:
    result = invoke("programme", "create", *arguments)
    assert result.exit_code == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and named in lines[0], result.stderr


def test_cli_programme_create_names_the_bad_line_of_a_file(cli_env: str, tmp_path: Path) -> None:
    broken = write(tmp_path / "p.yaml", "programme_id: p\nname: P\nsettings:\n  proposal_ttl_days: [1\n")
    result = invoke("programme", "create", "--file", str(broken))
    assert result.exit_code == 2 and "p.yaml: line 5: not valid YAML" in result.stderr, result.stderr
    bad_value = write(tmp_path / "p.json", '{"programme_id": "p", "name": "P", "settings": {"stalled_after_days": 10}}')
    result = invoke("programme", "create", "--file", str(bad_value))
    assert result.exit_code == 2
    assert "settings: at_risk_after_days must be less than stalled_after_days" in result.stderr
    missing = invoke("programme", "show", "p")
    assert missing.exit_code == 1 and "programme 'p' does not exist" in missing.stderr


def test_cli_people_add_import_show_leave(cli_env: str, tmp_path: Path) -> None:
    added = invoke("people", "add", "--id", "emp-1", "--name", "Ada", "--email", "ada@example.com",
                   "--timezone", "Europe/Berlin", "--channel", "email", "--channel", "webhook=https://hooks.example.com/a")  # fmt: skip
    assert added.exit_code == 0 and "Created participant emp-1" in added.stdout, added.stderr
    # Only the given details change; the time zone and channels stay.
    renamed = invoke("people", "add", "--id", "emp-1", "--name", "Ada L.")
    assert renamed.exit_code == 0 and "Updated participant emp-1" in renamed.stdout
    shown = json.loads(invoke("people", "show", "emp-1", "--json").stdout)
    assert (shown["display_name"], shown["timezone"], len(shown["channels"])) == ("Ada L.", "Europe/Berlin", 2)

    bad_zone = invoke("people", "add", "--id", "emp-2", "--name", "B", "--email", "b@example.com", "--timezone", "Mars/Base")
    assert bad_zone.exit_code == 2
    assert error_lines(bad_zone.stderr) == [
        "error: participant emp-2: timezone: 'Mars/Base' is not a time zone in the IANA database "
        "(e.g. Europe/Berlin, America/New_York or UTC)"
    ]
    newcomer = invoke("people", "add", "--id", "emp-3")
    assert newcomer.exit_code == 2 and "display_name: Field required" in newcomer.stderr

    file = write(tmp_path / "people.csv", CSV_WITH_BAD_ROWS)
    imported = invoke("people", "import", str(file))
    assert imported.exit_code == 2
    assert [line.split(": ", 2)[1] for line in error_lines(imported.stderr)] == [f"{file} line {n}" for n in (3, 7, 8, 9)]
    assert "Imported 3 participants from people.csv: 2 new, 1 updated, 0 unchanged; 4 rejected" in imported.stdout
    again = invoke("people", "import", str(file), "--json")
    assert again.exit_code == 2
    report = json.loads(again.stdout)
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 0, 3)
    assert [row["line"] for row in report["rejected"]] == [3, 7, 8, 9]

    left = invoke("people", "leave", "emp-3", "--at", "2027-02-01")
    assert left.exit_code == 0 and "emp-3 has left" in left.stdout and "2027-02-01 00:00 UTC" in left.stdout
    assert "already left on 2027-02-01" in invoke("people", "leave", "emp-3").stdout
    assert "Status" in invoke("people", "show", "emp-3").stdout and "left since 2027-02-01" in invoke("people", "show", "emp-3").stdout
    ghost = invoke("people", "leave", "ghost")
    assert ghost.exit_code == 1 and error_lines(ghost.stderr) == ["error: participant 'ghost' is not in the directory"]
    naive = invoke("people", "leave", "emp-1", "--at", "2027-02-01T10:00")
    assert naive.exit_code == 2 and "give the offset" in naive.stderr


def test_cli_import_shows_progress_on_a_terminal(cli_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(cli_module, "err", Console(file=screen, force_terminal=True, width=100))
    monkeypatch.setattr(cli_module, "IMPORT_BATCH_SIZE", 2)
    rows = "participant_id,display_name,email\n" + "".join(f"emp-{n},P {n},p{n}@example.com\n" for n in range(5))
    result = invoke("people", "import", str(write(tmp_path / "people.csv", rows)))
    assert result.exit_code == 0, result.stderr
    assert "importing people.csv" in screen.getvalue()
    assert "5 new" in result.stdout


# -- which database the CLI uses -------------------------------------------------------------


def test_without_a_database_url_or_a_running_dev_the_cli_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MENTORFLOW_DATABASE_URL", raising=False)
    # Under ./run the hint names the launcher instead; this checks the plain command.
    monkeypatch.delenv("MENTORFLOW_LAUNCHER", raising=False)
    monkeypatch.setenv("MENTORFLOW_STATE_DIR", str(tmp_path / "state"))
    result = invoke("programme", "list")
    assert result.exit_code == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "MENTORFLOW_DATABASE_URL" in lines[0] and "mentorflow dev" in lines[0]


def test_under_dev_the_cli_finds_the_embedded_database_from_its_data_folder(tmp_path: Path) -> None:
    data_dir = tmp_path / "state" / "postgres"
    data_dir.mkdir(parents=True)
    # What PostgreSQL writes when it listens on a unix socket; our own pid stands in for it.
    lines = [str(os.getpid()), str(data_dir), "1700000000", "5432", str(data_dir), "", "  1  2", "ready"]
    (data_dir / "postmaster.pid").write_text("\n".join(lines) + "\n")
    url = directory_database_url(Settings(state_dir=tmp_path / "state"))
    assert url == f"postgresql://postgres:@/mentorflow?host={data_dir}"
    assert directory_database_url(Settings(database_url="postgresql://db/x", state_dir=tmp_path / "state")) == "postgresql://db/x"
    (data_dir / "postmaster.pid").unlink()
    with pytest.raises(ConfigurationError, match="no database"):
        directory_database_url(Settings(state_dir=tmp_path / "state"))


async def test_programme_create_works_while_dev_runs(tmp_path: Path) -> None:
    """The newcomer's path: `./run dev` in one terminal, `./run programme create …` in another."""
    from tests.support.dev_stack import DevProcess, cli, dev_environment

    env = dev_environment(tmp_path / "state")
    dev = DevProcess(env, tmp_path, "dev")
    try:
        await dev.wait_until_ready()
        assert directory_database_url(Settings(state_dir=tmp_path / "state")) == dev.database_url
        created = await cli(env, "programme", "create", "--file", str(EXAMPLES / "programme.yaml"))
        assert created.returncode == 0, created.stderr
        imported = await cli(env, "people", "import", str(EXAMPLES / "people.csv"), "--json")
        assert imported.returncode == 0, imported.stderr
        connection = await asyncpg.connect(dev.database_url)
        try:
            # Besides the demo programme `mentorflow dev` creates:
            assert await connection.fetchval("SELECT count(*) FROM programmes WHERE programme_id <> 'demo'") == 1
            assert await connection.fetchval("SELECT count(*) FROM participants") == json.loads(imported.stdout)["created"]
        finally:
            await connection.close()
        assert await dev.terminate() == 0
    finally:
        dev.kill()
