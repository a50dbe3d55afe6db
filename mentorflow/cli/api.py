"""`mentorflow api` and `mentorflow api-keys …`: the HTTP API (mentorflow/api/, docs/api.md)."""

from __future__ import annotations

from mentorflow.api.commands import api_keys_app, serve_api
from mentorflow.cli.shared import app

app.command("api")(serve_api)
app.add_typer(api_keys_app, name="api-keys")
