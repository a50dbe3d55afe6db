"""`mentorflow profiles settings / import / explain` with a programme's own rules (issue #17),
on a real database: settings from a programme's YAML file, errors that name the rule,
attributes imported from CSV columns, explanations that name every rule."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mentorflow.cli import app
from mentorflow.keyring import format_key

PROGRAMME = "prog-cli"

PROGRAMME_FILE = """
programme_id: prog-cli
name: Public-sector mentoring
settings:
  proposal_ttl_days: 7
matching:
  require_common_language: false
  attributes:
    organisation: {kind: text, confidential: false}
    grade: {kind: number, confidential: false}
    profession: {kind: text}
    characteristics: {kind: set}
  rules:
    - {name: other organisation, require: different, attribute: organisation}
    - {name: one or two grades above, require: window, attribute: grade, min: 1, max: 2}
    - {name: same profession, score: same, attribute: profession, points: 10}
    - {name: shared characteristic, score: shared, attribute: characteristics, points: 6}
  rule_sets:
    last round:
      rules: [{name: still unmatched, score: unmatched, points: 6}]
"""

PROFILES = """participant_id,role,capacity,attr:organisation,attr:grade,attr:profession,attr:characteristics
m-1,mentor,2,DWP,5,Policy,carer
m-2,mentor,1,HMRC,5,policy,
m-3,mentor,1,MoJ,9,digital,
e-1,mentee,,HMRC,3,policy,carer; lgbt+
"""


@pytest.fixture
def cli_env(pool: Any, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("MENTORFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("MENTORFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MENTORFLOW_ENCRYPTION_KEYS", format_key("cli-1", os.urandom(32)))
    return tmp_path


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(app, list(arguments), env={"COLUMNS": "200"})


def test_rules_from_a_programme_file_attributes_from_csv_and_explanations_that_name_every_rule(cli_env: Path) -> None:
    settings_file = cli_env / "programme.yaml"
    settings_file.write_text(PROGRAMME_FILE)
    saved = invoke("profiles", "settings", "--programme", PROGRAMME, "--set", str(settings_file))
    assert saved.exit_code == 0, saved.output
    assert [r["name"] for r in json.loads(saved.stdout)["rules"]] == [
        "other organisation", "one or two grades above", "same profession", "shared characteristic"]  # fmt: skip

    profiles = cli_env / "profiles.csv"
    profiles.write_text(PROFILES)
    imported = invoke("profiles", "import", str(profiles), "--programme", PROGRAMME, "--json")
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["inserted"] == 4
    shown = invoke("profiles", "show", "e-1", "--programme", PROGRAMME)
    assert json.loads(shown.stdout)["attributes"]["characteristics"] == ["carer", "lgbt+"]

    explained = invoke("profiles", "explain", "e-1", "m-1", "--programme", PROGRAMME)
    assert explained.exit_code == 0, explained.output
    lines = explained.stdout.splitlines()
    assert lines[0].endswith("same profession +10; shared characteristic +6")
    assert lines[1:] == [
        "  rule other organisation (different organisation): met",
        "  rule one or two grades above (1 ≤ mentor − mentee grade ≤ 2): met",
        "  rule same profession (same profession): met +10",
        "  rule shared characteristic (shared characteristics): met +6",
    ]
    excluded = invoke("profiles", "explain", "e-1", "m-2", "--programme", PROGRAMME)
    assert "never proposed: rule 'other organisation'" in excluded.stdout
    as_json = json.loads(invoke("profiles", "explain", "e-1", "m-1", "--programme", PROGRAMME, "--rule-set",
                                "last round", "--json").stdout)  # fmt: skip
    assert as_json["terms"] == {"same profession": 10, "shared characteristic": 6, "still unmatched": 6}

    why = invoke("profiles", "explain", "e-1", "--programme", PROGRAMME)
    assert why.stdout.strip() == "of 3 mentors ruled out: 1 rule 'one or two grades above', 1 rule 'other organisation'"


def test_bad_settings_and_bad_attributes_are_refused_naming_the_rule_and_the_line(cli_env: Path) -> None:
    bad = cli_env / "bad.yaml"
    bad.write_text(PROGRAMME_FILE.replace("min: 1, max: 2", "min: 3, max: 2"))
    refused = invoke("profiles", "settings", "--programme", PROGRAMME, "--set", str(bad))
    assert refused.exit_code == 2
    assert "rules.1: rule 'one or two grades above': min (3) is above max (2)" in refused.output

    good = cli_env / "good.yaml"
    good.write_text(PROGRAMME_FILE)
    assert invoke("profiles", "settings", "--programme", PROGRAMME, "--set", str(good)).exit_code == 0
    profiles = cli_env / "profiles.csv"
    profiles.write_text("participant_id,role,attr:grade,attr:shoe_size\ne-1,mentee,three,\ne-2,mentee,2,41\n")
    imported = invoke("profiles", "import", str(profiles), "--programme", PROGRAMME)
    assert imported.exit_code == 2
    assert "line 2 (e-1): attributes.grade: must be a number (a number attribute)" in imported.output
    assert "line 3 (e-2): attributes.shoe_size: not declared in the programme's matching settings" in imported.output


def test_round_show_says_why_a_mentee_was_left_unmatched(cli_env: Path, database_url: str) -> None:
    import asyncio
    from datetime import date

    from activities.database import create_pool
    from activities.matching import MatchingActivities, RoundRequest
    from mentorflow.config import Settings

    (cli_env / "programme.yaml").write_text(PROGRAMME_FILE)
    assert invoke("profiles", "settings", "--programme", PROGRAMME, "--set", str(cli_env / "programme.yaml")).exit_code == 0
    (cli_env / "profiles.csv").write_text(PROFILES + "e-2,mentee,,DWP,9,policy,\n")
    assert invoke("profiles", "import", str(cli_env / "profiles.csv"), "--programme", PROGRAMME).exit_code == 0

    async def solve() -> int | None:
        pool = await create_pool(database_url, max_size=2)
        try:
            # The confidential attributes are read with the keys the CLI stored them with.
            activities = MatchingActivities(pool, keyring=Settings.from_env().keyring())
            request = RoundRequest(programme_id=PROGRAMME, round_id="r-1", week_of=date(2027, 1, 11))
            await activities.collect_round_members(request)
            return (await activities.solve_round(request)).mentees_matched
        finally:
            await pool.close()

    assert asyncio.run(solve()) == 1
    shown = invoke("round", "show", "--programme", PROGRAMME, "--round", "r-1")
    assert shown.exit_code == 0, shown.output
    assert "Round r-1: 1 of 2 mentees matched (1 pair) with 3 mentors (max_total)" in shown.stdout
    assert ("unmatched e-2: of 3 mentors ruled out: 3 rule 'one or two grades above', 1 rule 'other organisation'"
            in shown.stdout)  # fmt: skip
    report = json.loads(invoke("round", "show", "--programme", PROGRAMME, "--round", "r-1", "--json").stdout)
    assert report["unmatched"] == [{"mentee_id": "e-2", "mentors": 3, "allowed": 0, "excluded": {
        "rule 'one or two grades above'": 3, "rule 'other organisation'": 1}}]  # fmt: skip


def test_programme_create_takes_the_matching_section_of_a_programme_file(cli_env: Path) -> None:
    bad = cli_env / "bad.yaml"
    bad.write_text(PROGRAMME_FILE.replace("min: 1, max: 2", "min: 3, max: 2"))
    refused = invoke("programme", "create", "--file", str(bad))
    assert refused.exit_code == 2
    assert "rules.1: rule 'one or two grades above': min (3) is above max (2)" in refused.output
    assert invoke("programme", "show", PROGRAMME).exit_code != 0, "a refused file creates nothing"

    good = cli_env / "programme.yaml"
    good.write_text(PROGRAMME_FILE)
    created = invoke("programme", "create", "--file", str(good), "--json")
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["outcome"] == "created"
    shown = json.loads(invoke("profiles", "settings", "--programme", PROGRAMME).stdout)
    assert [rule["name"] for rule in shown["rules"]][:2] == ["other organisation", "one or two grades above"]
    assert invoke("programme", "create", "--file", str(good), "--json").stdout.count('"unchanged"') == 1

    good.write_text(PROGRAMME_FILE.replace("points: 10", "points: 12"))
    updated = json.loads(invoke("programme", "create", "--file", str(good), "--json").stdout)
    assert (updated["outcome"], updated["changed"]) == ("updated", ["matching"])
