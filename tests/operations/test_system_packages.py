"""Where the browser and Node.js tests cannot install what they need, they fail with one line
saying what to install (tests/support/system_packages.py): never a silent skip."""

from __future__ import annotations

import shutil

import pytest

from tests.support import system_packages
from tests.support.system_packages import ensure_debian_packages, ensure_node


def failure(call: object) -> str:
    with pytest.raises(pytest.fail.Exception) as failed:
        call()  # type: ignore[operator]
    message = str(failed.value)
    assert "\n" not in message and failed.value.pytrace is False, message
    return message


def test_nothing_happens_when_everything_is_there() -> None:
    ensure_debian_packages(["sh", "/"], ["nothing"], "this test")


def test_without_apt_get_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    which = shutil.which
    monkeypatch.setattr(system_packages.shutil, "which", lambda name: None if name in ("apt-get", "node") else which(name))
    message = failure(ensure_node)
    assert message == (
        "this test (Node.js) needs node, and there is no apt-get here to install it: install nodejs npm "
        "(or the same for your system)"
    )


def test_without_root_it_says_to_use_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 1000)
    message = failure(lambda: ensure_debian_packages(["/nonexistent/chromium"], ["chromium"], "the Web UI test"))
    assert message.startswith("the Web UI test needs /nonexistent/chromium;") and "sudo apt-get install chromium" in message
