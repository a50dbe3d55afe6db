"""What the browser and Node.js tests need from the machine, installed as README.md says.

`./run test` installs what is missing and it can install: Debian packages with apt-get (as
root; network to the Debian mirrors) and npm packages (network to the npm registry). Where
it cannot, the test fails with one line saying what to install: never a silent skip, so a
green run means those tests ran.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pytest

APT_TIMEOUT = 900
# Two test runs at once (say two checkouts) must not run apt-get at the same time; apt's own
# lock would make the second one fail rather than wait.
APT_LOCK = Path("/tmp/mentorflow-tests-apt.lock")
# Debian's chromium: the browser every browser test drives.
CHROMIUM = Path("/usr/bin/chromium")
# The browser tests' scripts, with their npm packages (tests/ui/package.json).
UI_SCRIPTS = Path(__file__).resolve().parents[1] / "ui"


def fail(message: str) -> NoReturn:
    """Fail the test with one line: `Failed: MESSAGE`, no traceback."""
    pytest.fail(" ".join(message.split()), pytrace=False)


def _present(thing: str) -> bool:
    return Path(thing).exists() if thing.startswith("/") else shutil.which(thing) is not None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def ensure_debian_packages(needed: Sequence[str], packages: Sequence[str], purpose: str) -> None:
    """Make sure every command (or absolute path) in `needed` exists, installing the Debian
    `packages` with apt-get when one is missing; else fail the test with one line."""
    missing = [thing for thing in needed if not _present(thing)]
    if not missing:
        return
    names = " ".join(packages)
    what = f"{purpose} needs {', '.join(missing)}"
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        fail(f"{what}, and there is no apt-get here to install it: install {names} (or the same for your system)")
    if os.geteuid() != 0:
        fail(f"{what}; `./run test` installs it with apt-get only as root: run `sudo apt-get install {names}`")
    environment = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install = [apt_get, "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", *packages]
    with open(APT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        attempt = subprocess.run(install, env=environment, capture_output=True, text=True, timeout=APT_TIMEOUT)
        if attempt.returncode != 0:  # perhaps the package lists are missing or old
            subprocess.run([apt_get, "update"], env=environment, capture_output=True, timeout=APT_TIMEOUT)
            attempt = subprocess.run(install, env=environment, capture_output=True, text=True, timeout=APT_TIMEOUT)
    still_missing = [thing for thing in needed if not _present(thing)]
    if attempt.returncode != 0 or still_missing:
        fail(f"{what}; `apt-get install {names}` failed (exit {attempt.returncode}): "
             f"{_last_line(attempt.stderr or attempt.stdout)}")  # fmt: skip


def ensure_node() -> tuple[str, str]:
    """`node` and `npm`, installed with apt-get (Debian's nodejs and npm) when missing."""
    ensure_debian_packages(["node", "npm"], ["nodejs", "npm"], "this test (Node.js)")
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node is not None and npm is not None
    return node, npm


def npm_install(directory: Path, arguments: Sequence[str], purpose: str, timeout: float = 600) -> None:
    """`npm install ARGUMENTS` in `directory`; on failure, fail the test with npm's last line."""
    _, npm = ensure_node()
    try:
        attempt = subprocess.run([npm, "install", *arguments], cwd=directory, capture_output=True, text=True,
                                 timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        fail(f"{purpose}: `npm install` in {directory} took more than {timeout:.0f} s (no network to the npm registry?)")
    if attempt.returncode != 0:
        fail(f"{purpose}: `npm install` in {directory} failed (exit {attempt.returncode}; it needs the npm "
             f"registry): {_last_line(attempt.stderr or attempt.stdout)}")  # fmt: skip


def ensure_node_runtime(minimum_major: int, minimum_minor: int = 0) -> str:
    """`node` alone (no npm), at least version `minimum_major`.`minimum_minor`: installed
    with apt-get (Debian's nodejs) when missing; else fail the test with one line."""
    ensure_debian_packages(["node"], ["nodejs"], "this test (Node.js)")
    node = shutil.which("node")
    assert node is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    parts = (version.removeprefix("v").split(".") + ["", ""])[:2]
    if not all(part.isdigit() for part in parts) or (int(parts[0]), int(parts[1])) < (minimum_major, minimum_minor):
        wanted = f"{minimum_major}.{minimum_minor}" if minimum_minor else str(minimum_major)
        fail(f"this test needs Node.js {wanted} or later; {node} is {version or 'of no known version'}: "
             f"install a newer nodejs (https://nodejs.org/en/download, or your system's packages)")  # fmt: skip
    return node
