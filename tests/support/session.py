"""What every test session shares: the test keyring and its encrypting converter, the
project's root folder, and a way to start a real Temporal dev server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from mentorflow.client import data_converter
from mentorflow.keyring import Keyring
from workflows.search_attributes import ALL_KEYS

# A fresh key per test session: every test client and worker goes through the real
# encrypting converter (the worker has no size limit, as in production).
TEST_KEYRING = Keyring.generate("test-1")
DATA_CONVERTER = data_converter(TEST_KEYRING)


def project_root() -> Path:
    """The checkout's root: the nearest folder above this file that holds pyproject.toml."""
    here = Path(__file__).resolve()
    return next(folder for folder in here.parents if (folder / "pyproject.toml").is_file())


async def start_dev_server(temporal_binary: str, **options: Any) -> WorkflowEnvironment:
    """A real Temporal dev server on free ports: namespace `mentorflow`, our search
    attributes, the encrypting test converter; `options` go to `start_local`."""
    return await WorkflowEnvironment.start_local(
        **{
            "namespace": "mentorflow",
            "data_converter": DATA_CONVERTER,
            "search_attributes": ALL_KEYS,
            "dev_server_existing_path": temporal_binary,
            **options,
        }
    )


async def dev_server(temporal_binary: str, database_file: Path) -> WorkflowEnvironment:
    """A dev server (`start_dev_server`) that keeps its state in `database_file`, so a second
    one on the same file continues where the first stopped."""
    return await start_dev_server(temporal_binary, dev_server_database_filename=str(database_file))
