"""The message contract: the committed `contract/` and docs/contract.md are what the code
exports, names never change by accident, and every documented example is valid."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import TypeAdapter
from temporalio import workflow
from typer.testing import CliRunner

from events.commands import COMMAND_TYPES
from events.decider import SPECS
from mentorflow.cli import app
from mentorflow.contract import CONTRACT_WORKFLOWS, INDEX_FILE, build_contract, compare, write
from mentorflow.contract_notes import NOTES, notes_for
from tests.support.session import project_root

ROOT = project_root()
CONTRACT_DIR = ROOT / "contract"
DOCS = ROOT / "docs" / "contract.md"
REFRESH_HINT = (
    "the committed contract differs from what the code exports. If you changed a message on purpose, "
    "run `./run contract` and commit contract/ and docs/contract.md; a renamed or removed message breaks "
    "every system that sends it."
)


@pytest.fixture(scope="module")
def contract() -> Any:
    return build_contract()


def committed_index() -> dict[str, Any]:
    index: dict[str, Any] = json.loads((CONTRACT_DIR / INDEX_FILE).read_text(encoding="utf-8"))
    return index


def test_the_committed_contract_is_what_the_code_exports(contract: Any) -> None:
    differences = compare(contract, CONTRACT_DIR, DOCS)
    assert not differences, REFRESH_HINT + "\n" + "\n".join(str(d) for d in differences)


def test_message_names_come_from_the_workflow_definitions_and_never_change() -> None:
    """The names Temporal registers, read from the classes, are exactly the committed ones."""
    registered: set[tuple[str, str, str]] = set()
    for cls in CONTRACT_WORKFLOWS:
        definition = workflow._Definition.from_class(cls)
        assert definition is not None and definition.name is not None
        registered |= {(definition.name, "workflow_input", definition.name)}
        registered |= {(definition.name, "signal", str(name)) for name in definition.signals}
        registered |= {(definition.name, "update", str(name)) for name in definition.updates}
        registered |= {(definition.name, "query", str(name)) for name in definition.queries}
    committed = {
        (entry["workflow_type"], kind, entry["name"])
        for entry in committed_index()["entries"]
        for kind in entry["kinds"]
        if kind != "workflow_result"
    }
    assert registered == committed, REFRESH_HINT + f"\nonly in code: {sorted(registered - committed)}" \
        f"\nonly committed: {sorted(committed - registered)}"  # fmt: skip


def test_every_relationship_command_is_both_a_signal_and_an_update() -> None:
    definition = workflow._Definition.from_class(CONTRACT_WORKFLOWS[0])
    assert definition is not None and definition.name == "Relationship"
    assert set(definition.signals) == set(definition.updates) == set(COMMAND_TYPES)


def test_every_entry_has_notes_and_no_notes_are_left_over(contract: Any) -> None:
    for entry in contract.entries:
        notes = notes_for(entry)
        assert notes.purpose.strip(), entry
        if {"signal", "update", "workflow_input"} & set(entry.kinds):
            assert notes.example is not None, f"{entry.name} needs an example"
        if "workflow_input" in entry.kinds:
            assert notes.who, f"{entry.name}: say who may start it"
        elif {"signal", "update"} & set(entry.kinds):
            # A command's senders are declared with its rules, not in the notes.
            assert not notes.who and SPECS[entry.name].who, entry.name
    assert set(NOTES) == {(entry.workflow_type, entry.name) for entry in contract.entries}


def test_every_example_is_valid_against_its_schema_and_its_model(contract: Any) -> None:
    checked = 0
    for entry in contract.entries:
        example = notes_for(entry).example
        if example is None:
            continue
        assert entry.schema is not None
        Draft202012Validator.check_schema(contract.schemas[entry.schema])
        errors = list(Draft202012Validator(contract.schemas[entry.schema]).iter_errors(example))
        assert not errors, f"{entry.name}: {[error.message for error in errors]}"
        TypeAdapter(contract.types[entry.schema]).validate_python(example)
        checked += 1
    assert checked == len(COMMAND_TYPES) + len(CONTRACT_WORKFLOWS)


def test_every_schema_is_a_valid_json_schema(contract: Any) -> None:
    for path, schema in contract.schemas.items():
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", path


def test_an_agreement_may_leave_goal_ids_out_but_a_goal_revision_may_not(contract: Any) -> None:
    terms = {"objective": "Grow", "goals": [{"title": "Run a design review"}], "meeting_frequency": "monthly",
             "meeting_minutes": 60, "term_months": 6}  # fmt: skip
    agreement = Draft202012Validator(contract.schemas["Relationship/messages/propose_agreement.schema.json"])
    assert not list(agreement.iter_errors({"command_id": "c-1", "actor_id": "emp-1", "terms": terms}))
    revision = Draft202012Validator(contract.schemas["Relationship/messages/propose_goal_revision.schema.json"])
    errors = list(revision.iter_errors({"command_id": "c-2", "actor_id": "emp-1", "goal": {"title": "Talk"}}))
    assert ["'goal_id' is a required property"] == [error.message for error in errors]


def command_table(document: Path, header: str) -> dict[str, list[str]]:
    """The rows of every table headed `header` in `document` (a document may split its
    commands over several such tables): message → its other cells."""
    lines = document.read_text(encoding="utf-8").splitlines()
    rows: dict[str, list[str]] = {}
    for start in (index for index, line in enumerate(lines) if line == header):
        for line in itertools.takewhile(lambda line: line.startswith("|"), lines[start + 2 :]):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_docs_tables_say_who_and_when_as_the_commands_declare() -> None:
    """README.md and docs/relationships.md restate each command's senders (and phases): the
    words must be those of its declaration (`events.decider.SPECS`), which the decider enforces."""
    readme = command_table(ROOT / "README.md", "| message | who | payload besides `command_id`, `actor_id` |")
    assert set(readme) == set(SPECS)
    for name, (who, _payload) in readme.items():
        assert who == SPECS[name].who, f"README.md, {name}: write {SPECS[name].who!r}"
    relationships = command_table(ROOT / "docs" / "relationships.md", "| message | who | when | payload |")
    assert set(relationships) == set(SPECS)
    for name, (who, when, _payload) in relationships.items():
        assert (who, when) == (SPECS[name].who, SPECS[name].when()), f"docs/relationships.md, {name}"


# -- mentorflow contract ----------------------------------------------------------------------


def test_contract_check_names_every_difference_and_the_command_that_refreshes(tmp_path: Path) -> None:
    out, docs = tmp_path / "contract", tmp_path / "contract.md"
    shutil.copyfile(DOCS, docs)
    runner = CliRunner()
    written = runner.invoke(app, ["contract", "--out", str(out), "--docs", str(docs)])
    assert written.exit_code == 0, written.stderr
    assert runner.invoke(app, ["contract", "--check", "--out", str(out), "--docs", str(docs)]).exit_code == 0

    (out / "Relationship/messages/accept_match.schema.json").write_text("{}\n")
    (out / "Relationship/messages/renamed_match.schema.json").write_text("{}\n")
    (out / "Relationship/queries/state.schema.json").unlink()
    checked = runner.invoke(app, ["contract", "--check", "--out", str(out), "--docs", str(docs)])
    assert checked.exit_code == 1
    assert "accept_match.schema.json: differs" in checked.stderr
    assert "renamed_match.schema.json: committed, but the code no longer exports it" in checked.stderr
    assert "state.schema.json: not in the committed contract" in checked.stderr
    assert "contract` and commit" in checked.stderr

    again = runner.invoke(app, ["contract", "--out", str(out), "--docs", str(docs)])
    assert again.exit_code == 0
    assert not (out / "Relationship/messages/renamed_match.schema.json").exists()
    assert compare(build_contract(), out, docs) == []


def test_the_export_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write(build_contract(), first, None)
    write(build_contract(), second, None)
    files = sorted(p.relative_to(first) for p in first.rglob("*.json"))
    assert files == sorted(p.relative_to(second) for p in second.rglob("*.json"))
    for relative in files:
        text = (first / relative).read_text()
        assert text == (second / relative).read_text()
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# -- the CLI checks a payload against the contract before sending it (no server needed) -----


@pytest.mark.parametrize("command", ["update", "signal"])
def test_an_unknown_command_lists_the_known_ones(command: str) -> None:
    result = CliRunner().invoke(app, ["relationship", command, "relationship/p/r", "make_tea", "--json"])
    assert result.exit_code == 2
    assert "unknown command 'make_tea'; known: propose_match, accept_match" in result.stderr
    answer = json.loads(result.stdout)
    assert answer["outcome"] == "invalid" and answer["known"] == list(COMMAND_TYPES)


@pytest.mark.parametrize("command", ["update", "signal"])
def test_a_payload_that_fails_the_contract_names_every_field(command: str) -> None:
    payload = json.dumps({"command_id": "c-1", "actor": "emp-1", "agreement_version": 0})
    result = CliRunner().invoke(app, ["relationship", command, "relationship/p/r", "sign_agreement",
                                      "--payload", payload, "--json"])  # fmt: skip
    assert result.exit_code == 2
    assert "sign_agreement: invalid payload: actor_id: Field required" in result.stderr
    answer = json.loads(result.stdout)
    assert answer["outcome"] == "invalid" and answer["command_id"] == "c-1"
    assert {error["field"] for error in answer["errors"]} == {"actor_id", "agreement_version", "(unknown field)"}
    assert answer["code"] == "invalid_payload"


def test_a_payload_file_that_cannot_be_read_is_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["relationship", "update", "relationship/p/r", "accept_match", "--payload", f"@{tmp_path / 'missing.json'}"]
    )
    assert result.exit_code == 2
    assert "missing.json: No such file or directory" in result.stderr


def test_the_exit_codes_are_in_the_help() -> None:
    for command in ("update", "signal", "send"):
        result = CliRunner().invoke(app, ["relationship", command, "--help"], terminal_width=200)
        assert result.exit_code == 0
        text = " ".join(result.stdout.split())
        assert "3 the relationship rejected the command" in text and "refusal code" in text, command
