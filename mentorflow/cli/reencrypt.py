"""`mentorflow reencrypt`: the one-off of security issue #12 (docs/confidentiality.md)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from rich.markup import escape

from mentorflow.cli.shared import JsonOption, _with_database, app, out, reported_as_problem
from mentorflow.config import Settings


@app.command()
def reencrypt(
    relationship: Annotated[
        str | None, typer.Argument(help="Only this relationship (its id or workflow id); default: every one.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be encrypted.")] = False,
    as_json: JsonOption = False,
) -> None:
    """One-off (security issue #12): encrypt the confidential text stored in plain before it was
    classed confidential (agreements, goals, explanations, introductions, resources) with each
    relationship's data key; idempotent. Run it after every worker is upgraded. See docs/confidentiality.md."""
    from mentorflow.reencrypt import reencrypt_plain_text
    from mentorflow.start_options import relationship_id_of

    stream_id = None
    if relationship is not None:
        with reported_as_problem(ValueError, exit_code=2):
            stream_id = relationship_id_of(relationship)
    # Counting needs no keys; encrypting does (the error names MENTORFLOW_ENCRYPTION_KEYS).
    keyring = None if dry_run else Settings.from_env().keyring()
    done = _with_database(lambda pool: reencrypt_plain_text(pool, keyring, stream_id=stream_id, dry_run=dry_run))
    if as_json:
        print(json.dumps(done.to_json()))
        return
    verb = "would encrypt" if dry_run else "encrypted"
    out.print(
        f"{done.streams} relationships held text in plain: {verb} {done.encrypted_values} values"
        f" in {done.events} events; {done.forgotten_values} values of forgotten relationships "
        + ("would be" if dry_run else "were") + f" overwritten with {escape('[forgotten]')}."
        + (f" {done.older_shapes} events of older schema versions were left alone." if done.older_shapes else "")
    )
