"""The README as a newcomer uses it: every shell block that talks to a running `./run dev`,
pasted in order, and the Python client snippet, saved and run many times, against a real
`./run dev`.

The blocks run verbatim (through bash, each command must succeed) in a folder laid out like
a checkout: links to this one's `run`, `pyproject.toml`, `examples/` and `.venv/`. So
`./run dev` keeps its state in that folder's own `.mentorflow/`, and on free ports
(`MENTORFLOW_TEMPORAL_ADDRESS`, `MENTORFLOW_TEMPORAL_UI_PORT` and, for the `temporal` CLI,
`TEMPORAL_ADDRESS`: what the README says to set beside another `./run dev`); nothing here
touches a `./run dev` someone runs on this machine. COLUMNS=80, as in a default terminal.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from mentorflow.dev import EmbeddedPostgres
from tests.support.session import project_root
from tests.support.dev_stack import READY_LINE, START_TIMEOUT, dev_environment

README = project_root() / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Blocks that start something rather than talk to a running `./run dev`: the two commands
# themselves, a throwaway mail server, docker compose (tests/operations/test_dev_command.py runs dev).
STARTS_SOMETHING = re.compile(r"\./run (dev|test)\b|aiosmtpd|docker compose")
BLOCK_TIMEOUT = 300.0
# How often the Python snippet runs: before run_and_exit, one run in ten or so aborted at exit.
SNIPPET_RUNS, SNIPPET_AT_ONCE = 24, 4


@dataclass(frozen=True)
class Block:
    language: str
    text: str


def readme_blocks() -> list[Block]:
    return [Block(match[1], match[2]) for match in FENCE.finditer(README.read_text(encoding="utf-8"))]


def stack_blocks() -> list[Block]:
    """The README's shell blocks and its Python snippet that talk to a running `./run dev`, in order."""
    return [
        block
        for block in readme_blocks()
        if block.language == "python" or (block.language == "sh" and not STARTS_SOMETHING.search(block.text))
    ]


# -- a checkout of our own, and `./run dev` in it ----------------------------------------------


def linked_checkout(folder: Path) -> Path:
    """A folder that `./run` takes for a checkout with an installed .venv (links to ours)."""
    root = project_root()
    venv = root / ".venv"
    if not (venv / "bin" / "mentorflow").exists():
        venv = Path(sys.prefix)
    stamp = venv / ".mentorflow-installed"
    wanted = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != wanted:
        # ./run would install the project again, from the linked folder: never do that.
        pytest.fail(f"{venv} is not installed by ./run for this pyproject.toml: run the tests with ./run test",
                    pytrace=False)  # fmt: skip
    for name in ("run", "pyproject.toml"):
        (folder / name).symlink_to(root / name)
    (folder / ".venv").symlink_to(venv)
    # The examples as they are, but for the programme's delivery window: with it, a
    # notification to someone outside 08:00–20:00 in their zone waits for their morning, and
    # the closed relationship's workflow with it, so the README's `forget` (which waits for the
    # workflow to end) would pass or fail by the time of day the suite runs at.
    shutil.copytree(root / "examples", folder / "examples", symlinks=True)
    programme = folder / "examples" / "programme.yaml"
    text = programme.read_text(encoding="utf-8")
    windowed = re.sub(r"(?m)^(\s*delivery_window:) \{[^}]*\}", r"\1 null", text)
    assert windowed != text, "examples/programme.yaml no longer sets delivery_window: update this test"
    programme.write_text(windowed, encoding="utf-8")
    return folder


def readme_environment(**extra: str) -> dict[str, str]:
    env = dev_environment(Path("unused"))  # free ports for Temporal and its Web UI
    del env["MENTORFLOW_STATE_DIR"]  # the checkout's own .mentorflow/, as the README assumes
    env = {key: value for key, value in env.items() if not key.startswith("TEMPORAL_")}
    env.update(TEMPORAL_ADDRESS=env["MENTORFLOW_TEMPORAL_ADDRESS"], COLUMNS="80", **extra)
    env.pop("VIRTUAL_ENV", None)
    return env


class RunDev:
    """`./run dev` in the checkout, its output in files."""

    def __init__(self, checkout: Path, env: dict[str, str]):
        self.checkout = checkout
        self.stdout_path, self.stderr_path = checkout / "dev.out", checkout / "dev.err"
        self._files: list[IO[bytes]] = [open(self.stdout_path, "wb"), open(self.stderr_path, "wb")]
        self.process = subprocess.Popen(["./run", "dev"], cwd=checkout, env=env, stdin=subprocess.DEVNULL,
                                        stdout=self._files[0], stderr=self._files[1])  # fmt: skip

    def output(self) -> str:
        return f"{self.stdout_path.read_text()}\n{self.stderr_path.read_text()[-4000:]}"

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while READY_LINE not in self.stdout_path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"./run dev was not ready (exit {self.process.poll()}):\n{self.output()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for file in self._files:
            file.close()
        EmbeddedPostgres(self.checkout / ".mentorflow" / "postgres").stop()


@dataclass
class Stack:
    checkout: Path
    env: dict[str, str]
    dev: RunDev

    def bash(self, script: str, timeout: float = BLOCK_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`script` in bash, each command required to succeed; W and NOW carry over to the next."""
        wrapped = (
            "set -euo pipefail\n"
            "if [[ -f .readme-vars ]]; then source .readme-vars; fi\n"
            "set -x\n"
            f"{script}\n"
            "{ set +x; } 2>/dev/null\n"
            "for name in W NOW; do if [[ -v $name ]]; then declare -p $name; fi; done > .readme-vars\n"
        )
        return subprocess.run(["bash", "-c", wrapped], cwd=self.checkout, env=self.env, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip

    def succeeds(self, script: str) -> subprocess.CompletedProcess[str]:
        result = self.bash(script)
        assert result.returncode == 0, (
            f"exit {result.returncode} from:\n{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr[-6000:]}"
        )
        return result

    def variable(self, name: str) -> str:
        return self.succeeds(f'printf %s "${name}"').stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    checkout = linked_checkout(tmp_path_factory.mktemp("checkout"))
    env = readme_environment()
    dev = RunDev(checkout, env)
    try:
        dev.wait_until_ready()
        yield Stack(checkout, env, dev)
    finally:
        dev.stop()


# -- what the README shows, run --------------------------------------------------------------


def run_python_snippet(stack: Stack, snippet: str, workflow_id: str) -> None:
    """Saved as share.py and run as the README says, many times, some at once: every run
    must exit 0 (sdk-python#300 made short scripts abort at exit now and then)."""
    (stack.checkout / "share.py").write_text(snippet)
    command = ["bash", "-c", f".venv/bin/python share.py {shlex.quote(workflow_id)}"]

    def once(_: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, cwd=stack.checkout, env=stack.env, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(SNIPPET_AT_ONCE) as pool:
        runs = list(pool.map(once, range(SNIPPET_RUNS)))
    failed = [run for run in runs if run.returncode != 0]
    assert not failed, (
        f"{len(failed)} of {SNIPPET_RUNS} runs of the README's Python snippet failed; the first "
        f"(exit {failed[0].returncode}):\n{failed[0].stdout}\n{failed[0].stderr[-3000:]}"
    )
    assert "ResourceShared" in runs[0].stdout and "active" in runs[0].stdout, runs[0].stdout
    assert not any("Fatal Python error" in run.stderr for run in runs)


@pytest.mark.timeout(1200)
def test_the_readme_works_as_written_next_to_run_dev(stack: Stack) -> None:
    assert 'codec-endpoint "$(cat ' in stack.dev.stdout_path.read_text()  # dev prints the temporal CLI's flags
    outputs: list[str] = []
    for block in stack_blocks():
        if block.language == "python":
            run_python_snippet(stack, block.text, stack.variable("W"))
            continue
        result = stack.succeeds(block.text)
        outputs.append(result.stdout)
        if "relationship start" in block.text:
            workflow_id = stack.variable("W")
            assert re.fullmatch(r"relationship/spring-2027/[0-9a-f]{10}", workflow_id), workflow_id
            assert "record_meeting applied" in result.stdout, result.stdout
        if "temporal workflow update execute" in block.text:
            # The update's answer, readable through the codec server; the query's state too.
            assert "ResourceShared" in result.stdout and '"phase":"active"' in result.stdout.replace(" ", ""), result.stdout
    workflow_id = stack.variable("W")

    # The operator's list, at 80 columns: the workflow id whole, on one line.
    for _ in range(50):  # the list reads visibility, which follows a moment behind
        listed = stack.succeeds("./run relationship list --programme spring-2027").stdout
        if workflow_id in listed:
            break
        time.sleep(0.2)
    assert any(workflow_id in line for line in listed.splitlines()), listed

    # The README's `forget`, once the relationship has ended, says what its text now reads as.
    forget = re.search(r"`(\./run forget <relationship id>[^`]*)`", README.read_text(encoding="utf-8"))
    assert forget is not None and "--yes" in forget[1], "the README shows `./run forget <relationship id> --yes …`"
    stack.succeeds(
        """./run relationship send $W close_relationship '{"actor_id": "emp-1042"}'
./run relationship send $W submit_reflection '{"actor_id": "emp-1042", "text": "Learned a lot"}'
./run relationship send $W submit_reflection '{"actor_id": "emp-311", "text": "So did I"}'"""
    )
    forgot = stack.succeeds(forget[1].replace("<relationship id>", '"$W"'))
    assert "now read as [forgotten]" in forgot.stdout, forgot.stdout


def test_the_readme_runs_every_block_but_those_that_start_something() -> None:
    """The blocks left out start servers; everything else is run above. A new block is run
    unless it starts something, and then this names it."""
    left_out = [block.text.splitlines()[0] for block in readme_blocks()
                if block.language == "sh" and STARTS_SOMETHING.search(block.text)]  # fmt: skip
    assert left_out == [
        "./run dev     # installs what it needs, then starts Temporal + Web UI, PostgreSQL and a worker",
        ".venv/bin/python -m aiosmtpd -n -l 127.0.0.1:1025",
        "docker compose up -d --build",
    ]
    run = [block.text for block in stack_blocks()]
    assert any("temporal workflow update execute" in text for text in run)
    assert sum(block.language == "python" for block in stack_blocks()) == 1


def test_every_temporal_command_in_the_readme_can_read_encrypted_payloads() -> None:
    """Without the codec, `temporal workflow update execute` applies the update and then exits 1
    ("payload encoding is not supported"): every example carries `./run dev`'s codec endpoint."""
    commands = re.findall(r"^\S*temporal workflow .*?(?<!\\)$", README.read_text(encoding="utf-8"),
                          re.MULTILINE | re.DOTALL)  # fmt: skip
    assert commands
    for command in commands:
        assert '--codec-endpoint "$(cat .mentorflow/codec-endpoint)"' in command, command
