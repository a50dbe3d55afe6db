"""`python -m mentorflow.cli`: the `mentorflow` command."""

from mentorflow.cli import app

app()
