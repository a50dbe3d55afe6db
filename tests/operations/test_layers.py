"""The layers point down: read every product module's imports and fail on one that points up.

From the bottom: the pure core (events/, pairing/) → the platform pieces in mentorflow/
(settings, keys, codec, client, metrics, start options) → activities/ and workflows/ (which
never import each other) → worker.py → the CLI, the dev stack and the HTTP API on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PRODUCT = ("events", "pairing", "activities", "workflows", "mentorflow", "migrations")
# The top of the house: nothing below may import these.
TOP = ("mentorflow.cli", "mentorflow.dev", "mentorflow.dev_servers", "mentorflow.api", "mentorflow.pages", "worker")
IO_LIBRARIES = {"temporalio", "asyncpg", "aiosmtplib", "httpx", "starlette", "fastapi", "uvicorn", "aiohttp"}


def modules() -> dict[str, Path]:
    found = {"worker": ROOT / "worker.py"}
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imports_of(path: Path) -> set[str]:
    """Every module imported, at any depth (lazy imports in functions count: they still point)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def within(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def wrong_turns(name: str, imported: str) -> str | None:
    if within(name, "events", "pairing"):
        if within(imported, "workflows", "activities", "mentorflow", "worker", "migrations"):
            return "the pure core imports nothing of the layers above it"
        if imported.split(".")[0] in IO_LIBRARIES:
            return "the pure core does no I/O and knows no Temporal"
    if within(name, "activities") and within(imported, "workflows"):
        return "activities never import workflows (start them by name with events.relationship_io)"
    if within(name, "workflows") and within(imported, "activities"):
        return "workflows call activities through workflows/activity_refs.py, never import them"
    if not within(name, *TOP) and within(imported, *TOP) and not within(name, "mentorflow.cli", "mentorflow.api", "mentorflow.pages"):
        return "nothing below the top imports the CLI, the dev stack, the API or the worker"
    return None


def test_no_layer_points_up() -> None:
    problems = [
        f"{name} imports {imported}: {why}"
        for name, path in sorted(modules().items())
        for imported in sorted(imports_of(path))
        if (why := wrong_turns(name, imported))
    ]
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_module_that_points_up() -> None:
    assert wrong_turns("activities.matching_round", "workflows.relationship")
    assert wrong_turns("events.decider", "temporalio.workflow")
    assert wrong_turns("mentorflow.keyring", "mentorflow.cli")
    assert wrong_turns("activities.matching_round", "events.relationship_io") is None
