"""`mentorflow api` and `mentorflow api-keys …`: the HTTP API (mentorflow/api/, docs/api.md)."""

from __future__ import annotations

import typer

from mentorflow.api.commands import api_keys_app, serve_api
from mentorflow.cli.shared import app

# Registered as it is: the HTTP API's commands report their problems themselves.
typer.Typer.command(app, "api")(serve_api)
app.add_typer(api_keys_app, name="api-keys")
