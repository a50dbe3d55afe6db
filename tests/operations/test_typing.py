"""mypy over the code (strict on the core and the workflows, per pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.session import project_root


def test_the_code_type_checks() -> None:
    checked = ["events", "workflows", "activities", "migrations", "mentorflow", "worker.py", "pairing"]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", *checked], cwd=project_root(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
