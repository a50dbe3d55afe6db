"""`Frozen`: the base of the core's plain value models (activity payloads, refusals), which
never change once made. Events and commands have stricter bases of their own
(`events/model.py`, `events/commands.py`: extra fields forbidden)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)
