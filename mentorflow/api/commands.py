"""`mentorflow api` (serve the HTTP API) and `mentorflow api-keys create|list|revoke|rotate`.

The lead registers them in mentorflow/cli.py:

    from mentorflow.api.commands import api_keys_app, serve_api
    app.command("api")(serve_api)
    app.add_typer(api_keys_app, name="api-keys")

`python -m mentorflow.api.commands …` runs the same commands on their own (the tests do).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer

R = TypeVar("R")

KEYS_HELP = (
    "API keys for the HTTP API (docs/api.md). Stored as HMAC-SHA256 hashes keyed with MENTORFLOW_API_KEY_SECRET "
    "(or the file MENTORFLOW_API_KEY_SECRET_FILE), in the database of MENTORFLOW_DATABASE_URL (or of the running "
    "`mentorflow dev`)."
)
api_keys_app = typer.Typer(help=KEYS_HELP, no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    print(f"mentorflow: {message}", file=sys.stderr)
    return typer.Exit(code)


def serve_api(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default MENTORFLOW_API_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default MENTORFLOW_API_PORT, 8080).")] = None,
) -> None:
    """Serve the HTTP API (FastAPI on uvicorn): /v1 resources, /v1/openapi.json and /v1/docs.

    Stateless: run as many replicas as you like behind a load balancer that terminates TLS.
    Needs Temporal, MENTORFLOW_DATABASE_URL, MENTORFLOW_ENCRYPTION_KEYS and MENTORFLOW_API_KEY_SECRET.
    """
    import uvicorn

    from mentorflow.api.app import create_app
    from mentorflow.api.settings import ApiSettings
    from mentorflow.config import ConfigurationError, Settings

    try:
        api = ApiSettings.from_env()
        settings = Settings.from_env()
        settings.require_database_url()
        settings.keyring()
        api.key_secret_bytes()
    except ConfigurationError as error:
        raise _fail(str(error), 2) from None
    uvicorn.run(
        create_app(api_settings=api),
        host=host or api.host,
        port=port if port is not None else api.port,
        proxy_headers=True,
        forwarded_allow_ips=api.forwarded_allow_ips,
        server_header=False,
        log_level="info",
        # Each request carries its credential: the access log shows path and status only.
        access_log=True,
    )


def _with_keys(action: Callable[[Any], Coroutine[Any, Any, R]]) -> R:
    """Run `action(ApiKeyStore)` against the configured database, migrated first."""
    from activities.api_keys import ApiKeyError, ApiKeyStore
    from mentorflow.api.settings import ApiSettings
    from mentorflow.config import ConfigurationError, Settings

    try:
        secret = ApiSettings.from_env().key_secret_bytes()
        settings = Settings.from_env()
        if settings.database_url:
            database_url = settings.database_url
        else:
            from mentorflow.cli import directory_database_url

            database_url = directory_database_url(settings)
    except ConfigurationError as error:
        raise _fail(str(error), 2) from None

    async def main() -> R:
        import asyncpg

        from activities.database import create_pool, migrate

        pool = await create_pool(database_url, max_size=2)
        try:
            await migrate(pool)
            return await action(ApiKeyStore(pool, secret))
        except asyncpg.PostgresError as error:
            raise _fail(f"database: {error}") from None
        finally:
            await pool.close()

    try:
        return asyncio.run(main())
    except ApiKeyError as error:
        raise _fail(str(error), 2) from None
    except OSError as error:
        raise _fail(f"database unreachable: {error}") from None


def _parse_expiry(text: str | None) -> datetime | None:
    """`90d`, `12h`, `30m` from now, or an ISO 8601 moment with an offset."""
    if text is None:
        return None
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC) + timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _fail(f"--expires {text!r}: a duration like 90d, 12h or 30m, or a moment like 2027-12-31T00:00:00+00:00", 2)
    if moment.tzinfo is None:
        raise _fail(f"--expires {text!r}: give a time zone offset", 2)
    return moment


def _print_key(key: Any, secret: str | None, as_json: bool) -> None:
    now = datetime.now(UTC)
    if as_json:
        print(json.dumps({**key.to_json(now), **({"api_key": secret} if secret else {})}))
        return
    if secret is not None:
        print(secret)
        print(f"key {key.key_id} ({key.name}): programmes {', '.join(key.programmes)}; may act as "
              f"{', '.join(key.may_act_as) or 'nobody (read only)'}; "
              f"{'expires ' + key.expires_at.isoformat() if key.expires_at else 'no expiry'}. "
              "The key is shown only now: store it in the caller's secret store.", file=sys.stderr)  # fmt: skip


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@api_keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Option("--name", help="Who uses it, e.g. hr-portal.")],
    programmes: Annotated[list[str], typer.Option("--programme", help="A programme it reaches (repeat); '*' for all.")],
    may_act_as: Annotated[
        list[str] | None,
        typer.Option("--may-act-as", help="participants and/or coordinators (repeat); none: read only."),
    ] = None,
    expires: Annotated[str | None, typer.Option("--expires", help="90d, 12h, 30m, or an ISO 8601 moment.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a key and print it once (stdout); only its keyed hash is stored."""
    expires_at = _parse_expiry(expires)
    roles = [role.strip() for value in may_act_as or [] for role in value.split(",") if role.strip()]
    key, secret = _with_keys(lambda store: store.create(name, programmes, roles, expires_at=expires_at))
    _print_key(key, secret, as_json)


@api_keys_app.command("list")
def list_keys(as_json: JsonOption = False) -> None:
    """Every key: id, name, scopes, status (valid, expired, revoked), expiry and last use. Never the keys."""
    keys = _with_keys(lambda store: store.list())
    now = datetime.now(UTC)
    if as_json:
        print(json.dumps([key.to_json(now) for key in keys]))
        return
    if not keys:
        print("No API keys.")
        return
    for key in keys:
        last = key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "never"
        expiry = key.expires_at.isoformat(timespec="seconds") if key.expires_at else "-"
        print(f"{key.key_id}  {key.name}  {key.status(now)}  programmes={','.join(key.programmes)}  "
              f"acts-as={','.join(key.may_act_as) or 'read-only'}  expires={expiry}  last-used={last}")  # fmt: skip


@api_keys_app.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(help="The key id (see `api-keys list`).")], as_json: JsonOption = False) -> None:
    """Revoke a key: running API replicas refuse it within MENTORFLOW_API_KEY_CACHE_SECONDS (5 s)."""
    key, changed = _with_keys(lambda store: store.revoke(key_id))
    if as_json:
        print(json.dumps({**key.to_json(datetime.now(UTC)), "changed": changed}))
    else:
        print(f"{key.key_id} ({key.name}) {'revoked' if changed else 'was already revoked'}")


@api_keys_app.command("rotate")
def rotate_key(
    key_id: Annotated[str, typer.Argument(help="The key id to replace.")],
    grace: Annotated[str, typer.Option("--grace", help="How long the old key stays valid: 24h, 7d, 0m.")] = "24h",
    as_json: JsonOption = False,
) -> None:
    """Make a new key with the same name and scopes (printed once); the old one expires after --grace.

    Both are valid meanwhile: deploy the new key to the caller, then let the old one lapse
    (or revoke it)."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if grace[-1:] not in units or not grace[:-1].isdigit():
        raise _fail(f"--grace {grace!r}: a duration like 24h, 7d or 0m", 2)
    period = timedelta(**{units[grace[-1]]: int(grace[:-1])})
    new, secret, old = _with_keys(lambda store: store.rotate(key_id, grace=period))
    if as_json:
        now = datetime.now(UTC)
        print(json.dumps({**new.to_json(now), "api_key": secret, "old": old.to_json(now)}))
        return
    _print_key(new, secret, as_json=False)
    print(f"the old key {old.key_id} stays valid until {old.expires_at.isoformat() if old.expires_at else '-'}",
          file=sys.stderr)  # fmt: skip


def _standalone() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, add_completion=False)
    app.command("api")(serve_api)
    app.add_typer(api_keys_app, name="api-keys")
    return app


if __name__ == "__main__":
    _standalone()()
