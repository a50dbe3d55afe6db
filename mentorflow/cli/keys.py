"""`mentorflow keys`: the encryption keys for Temporal payloads."""

from __future__ import annotations

from typing import Annotated

import typer

from mentorflow.cli.shared import command_group, reported_as_problem

keys_app = command_group("keys", "Encryption keys for Temporal payloads (MENTORFLOW_ENCRYPTION_KEYS).")


@keys_app.command("generate")
def generate_key(
    key_id: Annotated[str, typer.Option("--id", help="The new key's id, e.g. k2 (letters, digits, . _ -).")] = "k1",
) -> None:
    """Print a new random key as `ID:BASE64`, to put FIRST in MENTORFLOW_ENCRYPTION_KEYS.

    Keep the older keys after it for as long as data written with them exists.
    """
    from mentorflow.keyring import KeyringError, format_key, generate_key as new_key

    with reported_as_problem(KeyringError, exit_code=2):
        print(format_key(key_id, new_key()))
