"""Configuration, read once from the environment into a frozen model."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

if TYPE_CHECKING:
    from temporalio.service import TLSConfig
    from mentorflow.keyring import Keyring


class ConfigurationError(RuntimeError):
    pass


def read_setting_file(variable: str, path: Path | str) -> str:
    """The value of setting `variable` kept in the file `path` (a mounted secret), without the
    line ending a file ends with; a ConfigurationError naming the variable when unreadable."""
    try:
        return Path(path).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    except OSError as error:
        raise ConfigurationError(f"{variable}: cannot read {path}: {error.strerror}") from None


def _check_origins(value: str) -> str:
    for origin in value.split():
        scheme, _, rest = origin.partition("://")
        if scheme not in {"http", "https"} or not rest or "/" in rest:
            raise ValueError(f"{origin!r} is not an origin like https://app.example.org (no path)")
    return value


def _check_public_url(value: str) -> str:
    scheme, _, rest = value.partition("://")
    if scheme not in {"http", "https"} or not rest or any(c in value for c in "?#") or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not a base URL like https://mentoring.example.org")
    return value.rstrip("/")


# Space-separated browser origins (scheme://host[:port], no path), as CORS compares them.
Origins = Annotated[str, AfterValidator(_check_origins)]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # None means: `mentorflow dev` starts an embedded PostgreSQL; `mentorflow worker` refuses.
    database_url: str | None = None
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "mentorflow"
    # TLS to Temporal (mTLS with a client certificate): PEM files. Without a CA file the
    # connection is plain (the dev server, or a private network).
    temporal_tls_ca_file: Path | None = None
    temporal_tls_cert_file: Path | None = None
    temporal_tls_key_file: Path | None = None
    temporal_tls_server_name: str | None = None
    task_queue: str = "mentorflow"
    state_dir: Path = Path(".mentorflow")
    temporal_ui_port: int = 8233

    # Prometheus metrics (Temporal's and ours) on http://METRICS_HOST:METRICS_PORT/metrics;
    # unset: no metrics endpoint.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "0.0.0.0"
    # How often (seconds) the worker counts running relationships per phase for the
    # mentorflow_relationships gauge: one visibility count per phase each time.
    metrics_phase_interval: float = Field(default=60, gt=0)
    # Worker Deployment Versioning: with a build id the worker polls as version
    # DEPLOYMENT_NAME.BUILD_ID and gets tasks only once that version is current (or ramping);
    # unset: an unversioned worker. See docs/deploying.md.
    deployment_name: str = Field(default="mentorflow", min_length=1, max_length=255)
    build_id: str | None = Field(default=None, min_length=1, max_length=255)
    # Run workflows in Temporal's sandbox (worker.workflow_runner): it checks workflow code for
    # non-deterministic calls at about a third of the worker's CPU. The tests turn it on.
    workflow_sandbox: bool = False
    # Whether a relationship may start with the settings its starter passes instead of its
    # programme's. Only for tests that need no programme: a start from outside must not
    # choose its own rules (coordinators, limits). Off, given settings must equal the
    # programme's or the start fails (not_allowed).
    trust_start_settings: bool = False
    # Worker tuning (docs/deploying.md, "Tuning a worker"). How many workflow tasks one worker
    # works on at once: a task holds its slot while its local activities (the append, the
    # notifications' first try) run, and Python runs all of them on one core, so past what
    # the worker finishes within the 10 s workflow-task timeout more slots only make every
    # task late (bench/README.md, 2026-12-05).
    workflow_task_slots: int = Field(default=10, ge=2, le=1000)
    # How long a workflow task may wait on this worker's own (sticky) queue before the server
    # hands it to any worker, as a timed-out workflow task, with its whole history to replay
    # (seconds). A busy worker with few slots keeps tasks waiting there; a worker that died
    # without stopping leaves the tasks already queued for it waiting this long. Temporal's
    # default is 10 s: with 10 slots a saturated worker let 113 tasks time out there.
    sticky_schedule_to_start_seconds: float = Field(default=60, gt=0, le=300)
    # The longest the first try of a command's notifications may take inside its workflow
    # task (seconds; after it they go to the `send_notifications` activity, which retries with
    # backoff). Kept well inside the 10 s task timeout: a slow mail server must not make the
    # task time out, nor hold the relationship's next commands up. 0: no first try inside the
    # task; every notification goes to that activity (bench/README.md measures both).
    notify_first_try_seconds: float = Field(default=4, ge=0, le=8)
    # Pairs (mentees × mentors) above which a matching round scores and solves its cohort a
    # few mentee rows at a time instead of in one score matrix (pairing/round_solver.py).
    # Unset: the default measured there (`TILED_ABOVE_PAIRS`); 0: every round tiled.
    round_tiled_above_pairs: int | None = Field(default=None, ge=0)

    # Email notifications over SMTP; without a host they are written to the log instead.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    # starttls: upgrade a plain connection (port 587); tls: TLS from the start (465); none.
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # The From header, e.g. "Mentoring programme <mentoring@example.org>"; needed with a host.
    smtp_from: str | None = Field(default=None, validate_default=True)
    # A PEM file of CAs to trust for the SMTP server instead of the system's.
    smtp_ca_file: Path | None = None
    smtp_timeout: float = Field(default=20, gt=0)
    # Webhook notifications: the Standard Webhooks signing secret (whsec_<base64>); several,
    # space-separated, while rotating. Without one they are written to the log instead.
    webhook_secret: SecretStr | None = None
    webhook_timeout: float = Field(default=10, gt=0)
    # Where people reach the pages of `mentorflow api` (e.g. https://mentoring.example.org):
    # emails carry signed links under it (docs/people.md). Unset: emails carry no links.
    public_url: Annotated[str, AfterValidator(_check_public_url)] | None = None
    # AES-256 keys for Temporal payloads (and wrapping event-store data keys): space-separated
    # "key-id:BASE64" entries, the active key first, older keys kept for decryption.
    encryption_keys: SecretStr | None = None
    # Commands (any payload a client sends) larger than this are refused before they reach Temporal.
    max_payload_bytes: int = Field(default=256 * 1024, ge=1024, le=2 * 1024 * 1024)
    # Whether workers refuse payloads that arrive unencrypted (a plain-JSON client's): the
    # relationship then refuses such a command or start as invalid_payload instead of acting
    # on it. Only workers apply it. Unset: on (`mentorflow worker`), except that `mentorflow
    # dev` turns it off, so that the plain examples of the docs work. See docs/confidentiality.md.
    refuse_plain_payloads: bool | None = None
    # The codec server the Web UI calls to decrypt payloads: where it listens, the bearer
    # tokens it accepts (space-separated, at least 32 characters each), and the Web UI
    # origins allowed to call it from a browser (space-separated, e.g. https://temporal.example.org).
    codec_host: str = "127.0.0.1"
    codec_port: int = Field(default=8234, ge=1, le=65535)
    codec_tokens: SecretStr | None = None
    codec_cors_origins: Origins = ""

    @field_validator("deployment_name", "build_id")
    @classmethod
    def _version_part(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and (value != value.strip() or any(c.isspace() for c in value)):
            raise ValueError("must not contain spaces")
        if value is not None and info.field_name == "deployment_name" and "." in value:
            raise ValueError("must not contain '.' (Temporal joins it with the build id by a dot)")
        return value

    @field_validator("smtp_from")
    @classmethod
    def _sender_with_host(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("smtp_host"):
            raise ValueError("required when MENTORFLOW_SMTP_HOST is set, e.g. Mentoring <mentoring@example.org>")
        if value is not None and "@" not in value:
            raise ValueError("needs an email address, e.g. Mentoring <mentoring@example.org>")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _signing_secrets(cls, value: SecretStr | None) -> SecretStr | None:
        from activities.notifications_webhook import webhook_key

        if value is not None:
            for secret in value.get_secret_value().split():
                webhook_key(secret)
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _encryption_keys(cls, value: SecretStr | None) -> SecretStr | None:
        from mentorflow.keyring import Keyring, KeyringError

        if value is not None:
            try:
                Keyring.parse(value.get_secret_value())
            except KeyringError as error:
                # The message already names the variable; drop that prefix, from_env adds it.
                raise ValueError(str(error).removeprefix("MENTORFLOW_ENCRYPTION_KEYS: ")) from None
        return value

    @field_validator("codec_tokens")
    @classmethod
    def _codec_tokens(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            tokens = value.get_secret_value().split()
            if not tokens:
                return None
            if any(len(token) < 32 for token in tokens):
                raise ValueError("each token needs at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value

    def keyring(self, *, dev_key_file: bool = False) -> Keyring:
        """The configured keys; fails fast, naming the variable, when there are none.

        With `dev_key_file`, a command run beside `mentorflow dev` falls back to the key
        file that dev keeps in the state folder (as the directory commands use its database).
        """
        from mentorflow.keyring import Keyring, KeyringError, dev_key_file as key_file, read_key_file

        if self.encryption_keys is not None:
            return Keyring.parse(self.encryption_keys.get_secret_value())
        path = key_file(self.state_dir.expanduser())
        if dev_key_file and path.exists():
            try:
                return read_key_file(path)
            except KeyringError as error:
                raise ConfigurationError(str(error)) from None
        raise ConfigurationError(
            "MENTORFLOW_ENCRYPTION_KEYS is not set: Temporal payloads are encrypted, so every client "
            "and worker needs the keys; create one with `mentorflow keys generate`"
            + (f" (or run `mentorflow dev`, which keeps a local key in {path})" if dev_key_file else "")
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every `MENTORFLOW_<FIELD>`; or `MENTORFLOW_<FIELD>_FILE`, the path of a file that
        holds the value (Docker secrets: keys, passwords and tokens stay out of the environment)."""
        environ = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for field in cls.model_fields:
            name = f"MENTORFLOW_{field.upper()}"
            direct, path = environ.get(name), environ.get(f"{name}_FILE")
            if direct and path:
                raise ConfigurationError(f"{name} and {name}_FILE are both set: give one")
            if path:
                values[field] = read_setting_file(f"{name}_FILE", path)
            elif direct:
                values[field] = direct
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"MENTORFLOW_{str(e['loc'][0]).upper()}: {e['msg']}" for e in error.errors()
            )
            raise ConfigurationError(problems) from None

    def temporal_tls(self) -> TLSConfig | bool:
        """How to reach Temporal: plain (False), or TLS with these PEM files."""
        from temporalio.service import TLSConfig

        if self.temporal_tls_ca_file is None:
            if self.temporal_tls_cert_file or self.temporal_tls_key_file:
                raise ConfigurationError("MENTORFLOW_TEMPORAL_TLS_CERT_FILE/KEY_FILE need MENTORFLOW_TEMPORAL_TLS_CA_FILE")
            return False
        if (self.temporal_tls_cert_file is None) != (self.temporal_tls_key_file is None):
            raise ConfigurationError("give both MENTORFLOW_TEMPORAL_TLS_CERT_FILE and MENTORFLOW_TEMPORAL_TLS_KEY_FILE, or neither")

        def read(path: Path | None) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as error:
                raise ConfigurationError(f"cannot read {path}: {error.strerror}") from None

        return TLSConfig(
            server_root_ca_cert=read(self.temporal_tls_ca_file),
            client_cert=read(self.temporal_tls_cert_file),
            client_private_key=read(self.temporal_tls_key_file),
            domain=self.temporal_tls_server_name,
        )

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigurationError("MENTORFLOW_DATABASE_URL is not set")
        return self.database_url
