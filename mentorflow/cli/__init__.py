"""The `mentorflow` command: run the system and drive relationships from a shell.

Problems the caller can fix (bad input, a rejected command, a server that is not running)
are reported as one line on stderr with exit code 2 (bad usage) or 1 (everything else);
a traceback means a bug.

One module per noun, all adding to the one `app` of shared.py (with the consoles,
`Problem`, `reports_problems` that every command goes through, the exit codes and the
connections every command uses):

    system.py                 dev, worker, migrate, codec-server, replay-check
    relationship.py           relationship start, show (and the `relationship` sub-app)
    relationship_messages.py  relationship update, signal, send
    relationship_watch.py     relationship list, history, events
    keys.py                   keys generate
    contract.py               contract
    programme.py              programme create, show, list
    people.py                 people add, import, show, leave
    deployment.py             deployment set-current, show
    profiles.py               profiles import, set, show, list, explain, settings
    rounds.py                 round start, run, show
    forget.py                 forget
    projections.py            projections status, rebuild
    report.py                 report
    audit.py                  audit streams
    reencrypt.py              reencrypt (a one-off of security issue #12)
    api.py                    api, api-keys create|list|revoke|rotate

Typer lists commands in the order they are added, so the modules are imported below in the
order `mentorflow --help` has always listed them; a new noun goes last.
"""

from __future__ import annotations

import sys
import types
from typing import Any

# Imported for their commands, in help order (see above), not sorted by name.
# ruff: noqa: I001
from mentorflow.cli import (  # noqa: F401
    system,
    relationship,
    relationship_messages,
    relationship_watch,
    keys,
    contract,
    programme,
    people,
    deployment,
    profiles,
    rounds,
    forget,
    projections,
    report,
    audit,
    reencrypt,
    api,
)

# What scripts and tests use from `mentorflow.cli` (the entry point is `mentorflow.cli:app`).
from mentorflow.cli.people import IMPORT_BATCH_SIZE
from mentorflow.cli.rounds import _with_round_progress
from mentorflow.cli.shared import (
    EXIT_INVALID,
    EXIT_PROBLEM,
    EXIT_REJECTED,
    JsonOption,
    Problem,
    _connect,
    _with_database,
    _with_directory,
    app,
    directory_database_url,
    err,
    out,
    reports_problems,
    run,
)

__all__ = [
    "EXIT_INVALID",
    "EXIT_PROBLEM",
    "EXIT_REJECTED",
    "IMPORT_BATCH_SIZE",
    "JsonOption",
    "Problem",
    "_connect",
    "_with_database",
    "_with_directory",
    "_with_round_progress",
    "app",
    "directory_database_url",
    "err",
    "out",
    "reports_problems",
    "run",
]

_UNSET = object()


class _Package(types.ModuleType):
    """Setting a name here sets it in every module of the package that holds the same object.

    When the CLI was one module, `monkeypatch.setattr(mentorflow.cli, "err", console)`
    changed the console every command prints to; the commands now read `err` (and `out`,
    `_with_database`, `IMPORT_BATCH_SIZE`, …) from their own modules, so the new value is
    passed on to them (and the old one put back the same way when the patch is undone).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        old = self.__dict__.get(name, _UNSET)
        super().__setattr__(name, value)
        if old is _UNSET or isinstance(old, types.ModuleType):
            return
        prefix = self.__name__ + "."
        for module_name, module in list(sys.modules.items()):
            if module_name.startswith(prefix) and module is not None and module.__dict__.get(name, _UNSET) is old:
                setattr(module, name, value)


sys.modules[__name__].__class__ = _Package
