"""The HTTP API's own settings, read once from MENTORFLOW_API_* (the shared ones — Temporal,
database, keys, the payload limit — come from `mentorflow.config.Settings`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from mentorflow.config import ConfigurationError, Origins, read_setting_file

MIN_SECRET_LENGTH = 32


class ApiSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The server secret API keys are hashed with (HMAC-SHA256): at least 32 characters, given
    # directly or as a file (a mounted secret). Needed to serve and to create keys.
    key_secret: SecretStr | None = None
    key_secret_file: Path | None = None
    # How long a replica trusts a key it verified without asking PostgreSQL again: the bound
    # on how late a key revoked or rotated out elsewhere is refused. 0: asked on every request.
    key_cache_seconds: float = Field(default=5, ge=0, le=60)
    # Single sign-on: people's bearer tokens (JWTs) are verified against this JWKS (a URL
    # or a file), must come from this issuer for this audience, and name the person's
    # participant id in this claim. Without a JWKS only API keys are accepted.
    jwks_url: str | None = None
    jwks_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_person_claim: str = "sub"
    jwt_algorithms: str = "RS256 ES256 PS256 EdDSA"
    # How long a command or query waits for the relationship's answer before the API
    # answers 503 with Retry-After (a retry with the same command id is always safe).
    command_timeout: float = Field(default=10, gt=0, le=300)
    # Requests per second per credential, per replica (token bucket); 0 turns it off.
    rate_limit: float = Field(default=20, ge=0)
    rate_burst: int = Field(default=40, ge=1)
    # Browser origins allowed to call the API (space-separated); none: no CORS headers at all.
    cors_origins: Origins = ""
    # Reverse proxies whose X-Forwarded-* headers are believed (uvicorn's forwarded_allow_ips).
    forwarded_allow_ips: str = "127.0.0.1"

    @field_validator("jwks_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://127.", "http://localhost", "http://[::1]")):
            raise ValueError("must be an https:// URL (plain http only on loopback, for tests)")
        return value

    def key_secret_bytes(self) -> bytes:
        """The server secret; fails naming the variables when there is none."""
        if self.key_secret is not None:
            secret = self.key_secret.get_secret_value()
        elif self.key_secret_file is not None:
            secret = read_setting_file("MENTORFLOW_API_KEY_SECRET_FILE", self.key_secret_file)
        else:
            raise ConfigurationError(
                "MENTORFLOW_API_KEY_SECRET (or MENTORFLOW_API_KEY_SECRET_FILE) is not set: API keys are stored "
                "as HMAC-SHA256 hashes keyed with it; make one with `openssl rand -hex 32`"
            )
        if len(secret) < MIN_SECRET_LENGTH:
            raise ConfigurationError(f"MENTORFLOW_API_KEY_SECRET: needs at least {MIN_SECRET_LENGTH} characters")
        return secret.encode()

    @property
    def tokens_enabled(self) -> bool:
        return self.jwks_url is not None or self.jwks_file is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        environ = os.environ if environ is None else environ
        values = {
            field: environ[f"MENTORFLOW_API_{field.upper()}"]
            for field in cls.model_fields
            if environ.get(f"MENTORFLOW_API_{field.upper()}")
        }
        try:
            settings = cls.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(f"MENTORFLOW_API_{str(e['loc'][0]).upper()}: {e['msg']}" for e in error.errors())
            raise ConfigurationError(problems) from None
        if settings.tokens_enabled and not (settings.jwt_issuer and settings.jwt_audience):
            raise ConfigurationError(
                "MENTORFLOW_API_JWT_ISSUER and MENTORFLOW_API_JWT_AUDIENCE are needed with a JWKS: "
                "a token is accepted only from the configured issuer for this API"
            )
        return settings
