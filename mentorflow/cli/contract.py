"""`mentorflow contract`: export (or --check) the message contract in contract/ and docs/contract.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mentorflow.cli.shared import Problem, app, err, launcher_name, out


@app.command("contract")
def export_contract(
    check: Annotated[
        bool, typer.Option("--check", help="Only compare: exit 1 and list the differences if the files are not what the code exports.")
    ] = False,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the schemas go.")] = Path("contract"),
    docs: Annotated[
        Path, typer.Option("--docs", help="The document whose generated part lists every message (skipped if absent).")
    ] = Path("docs/contract.md"),
) -> None:
    """Export the message contract: a JSON Schema per workflow input, signal and update payload,
    update result and query result, with contract/index.json listing every name.

    The names and types are read from the workflow definitions; docs/contract.md's generated part is rewritten too.

    Exit codes: 0 written (or, with --check, up to date); 1 --check found differences; 2 the code cannot be exported (a message without a model).
    """
    from mentorflow.contract import ContractError, build_contract, compare, write

    try:
        contract = build_contract()
        if check:
            differences = compare(contract, out_dir, docs)
        else:
            changed = write(contract, out_dir, docs)
    except ContractError as error:
        raise Problem(f"contract: {error}", exit_code=2) from None
    if check:
        if differences:
            for difference in differences:
                err.print(f"[bold red]contract:[/bold red] {escape(str(difference))}")
            raise Problem(
                f"the committed contract differs from the code in {len(differences)} file(s); if the change is "
                f"intended, run `{launcher_name()} contract` and commit the result (renaming or removing a message "
                "breaks every system that sends it)"
            )
        out.print(f"contract up to date: {len(contract.entries)} entries in {escape(str(out_dir))}")
        return
    if changed:
        for path in changed:
            out.print(f"wrote {escape(str(path))}")
    else:
        out.print(f"contract up to date: {len(contract.entries)} entries in {escape(str(out_dir))}")
