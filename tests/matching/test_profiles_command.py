"""`mentorflow profiles list` on a real database: a mentor's load is every slot they hold in
`mentor_slots`, so a mentor who holds slots without a profile (matched by hand before the
profiles were imported) is listed too, with no capacity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from activities.matching import MentorSlots, ProfileStore, SlotRequest
from mentorflow.cli import app
from pairing.profiles import MenteeProfile, MentorProfile

PROGRAMME = "prog-1"


@pytest.fixture
async def held(pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """m-1 (a profile, capacity 2) holds one slot; emp-311 and emp-007 (no profile) hold 2 and 1."""
    await ProfileStore(pool).save_profiles(PROGRAMME, [
        MentorProfile.model_validate({"participant_id": "m-1", "capacity": 2, "strengths": [{"topic": "python"}]}),
        MenteeProfile.model_validate({"participant_id": "e-1", "goals": [{"topic": "python"}]}),
    ])  # fmt: skip
    slots = MentorSlots(pool)
    for relationship_id, mentor_id in (("r-1", "m-1"), ("r-2", "emp-311"), ("r-3", "emp-311"), ("r-4", "emp-007")):
        reservation = await slots.reserve(SlotRequest(programme_id=PROGRAMME, relationship_id=relationship_id,
                                                      mentor_id=mentor_id, mentee_id=f"mentee-{relationship_id}"))  # fmt: skip
        assert reservation.outcome in ("reserved", "reserved_without_profile"), reservation
    monkeypatch.setenv("MENTORFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("MENTORFLOW_STATE_DIR", str(tmp_path / "state"))


def invoke(*arguments: str) -> Any:
    return CliRunner().invoke(app, ["profiles", "list", "--programme", PROGRAMME, *arguments], env={"COLUMNS": "120"})


def test_profiles_list_shows_mentors_who_hold_slots_without_a_profile(held: None) -> None:
    result = invoke("--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "mentors": [
            {"participant_id": "m-1", "capacity": 2, "taken": 1, "active": True},
            {"participant_id": "emp-007", "capacity": None, "taken": 1, "active": None},
            {"participant_id": "emp-311", "capacity": None, "taken": 2, "active": None},
        ],
        "mentees": [{"participant_id": "e-1", "active": True}],
    }

    table = invoke()
    assert table.exit_code == 0, table.stderr
    rows = [line.split("│")[1:-1] for line in table.stdout.splitlines() if line.count("│") == 6]
    cells = [[cell.strip() for cell in row] for row in rows]
    assert "slots taken" in table.stdout
    assert cells == [
        ["mentor", "m-1", "1/2", "python", "yes"],
        ["mentor", "emp-007", "1/–", "no profile", ""],
        ["mentor", "emp-311", "2/–", "no profile", ""],
        ["mentee", "e-1", "", "python", "yes"],
    ]
