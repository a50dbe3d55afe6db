"""API keys: stored only as keyed hashes, verified in constant time, revoked, expiring,
rotated with two valid keys meanwhile; and `mentorflow api-keys …` from a shell."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from activities.api_keys import ApiKeyError, ApiKeyStore

SECRET = b"k" * 32


async def test_keys_are_stored_as_keyed_hashes_and_verified(pool: asyncpg.Pool) -> None:
    store = ApiKeyStore(pool, SECRET)
    key, presented = await store.create("hr-portal", ["spring-2027"], ["participants"])
    assert presented.startswith(f"mfk_{key.key_id}_")
    assert (await store.verify(presented)) == key
    # Nothing in the table is the key, and another server secret verifies nothing.
    dump = json.dumps([dict(row) for row in await pool.fetch("SELECT * FROM api_keys")], default=str)
    # mfk_<key id>_<secret>: the secret may hold "_" itself.
    assert presented not in dump and presented.split("_", 2)[2] not in dump
    assert await ApiKeyStore(pool, b"z" * 32).verify(presented) is None
    for forged in (presented[:-1] + ("A" if presented[-1] != "A" else "B"), presented + "x", "mfk_" + key.key_id, ""):
        assert await store.verify(forged) is None, forged
    # Last use is recorded (at most once a minute).
    assert (await store.get(key.key_id)).last_used_at is not None  # type: ignore[union-attr]
    with pytest.raises(ApiKeyError):
        await store.create("bad", ["spring-2027"], ["internal"])
    with pytest.raises(ApiKeyError):
        await store.create("bad", [], [])
    with pytest.raises(ApiKeyError):
        ApiKeyStore(pool, b"short")


async def test_revocation_expiry_and_rotation(pool: asyncpg.Pool) -> None:
    store = ApiKeyStore(pool, SECRET)
    key, presented = await store.create("portal", ["*"], ["participants", "coordinators"])
    new, new_presented, old = await store.rotate(key.key_id, grace=timedelta(minutes=5))
    assert (new.name, new.programmes, new.may_act_as, new.rotated_from) == ("portal", ("*",), key.may_act_as, key.key_id)
    assert old.expires_at is not None and old.expires_at - datetime.now(UTC) <= timedelta(minutes=5)
    assert await store.verify(presented) is not None and await store.verify(new_presented) is not None
    _, changed = await store.revoke(key.key_id)
    assert changed and await store.verify(presented) is None and await store.verify(new_presented) is not None
    assert (await store.revoke(key.key_id))[1] is False
    with pytest.raises(ApiKeyError):
        await store.rotate(key.key_id, grace=timedelta(hours=1))  # revoked: make a new one instead
    _, soon = await store.create("temporary", ["p"], [], expires_at=datetime.now(UTC) + timedelta(seconds=1))
    assert await store.verify(soon) is not None
    await asyncio.sleep(1.1)
    assert await store.verify(soon) is None
    statuses = {k.name: k.status(datetime.now(UTC)) for k in await store.list()}
    assert statuses["temporary"] == "expired"


async def test_a_revoked_key_is_refused_within_the_cache_bound_and_its_use_recorded(pool: asyncpg.Pool) -> None:
    # The API's store trusts a key it verified for cache_seconds; a revocation made elsewhere
    # (the CLI, another replica: another store) is seen once that runs out.
    bound = 0.5
    counted = CountingPool(pool)
    api = ApiKeyStore(counted, SECRET, cache_seconds=bound)
    elsewhere = ApiKeyStore(pool, SECRET)
    key, presented = await elsewhere.create("cached", ["p"], ["participants"])
    assert await api.verify(presented) == key
    assert (await elsewhere.get(key.key_id)).last_used_at is not None  # type: ignore[union-attr]
    # Within the bound, the cache answers: not one query. A wrong secret is refused after the
    # same lookup as an unknown key id's (no timing tells what the cache holds).
    asked = counted.asked
    for _ in range(5):
        assert await api.verify(presented) is not None
    assert counted.asked == asked
    assert await api.verify(presented[:-1] + ("A" if presented[-1] != "A" else "B")) is None
    assert counted.asked == asked + 1
    assert await api.verify(presented) is not None and counted.asked == asked + 1
    revoked_at = asyncio.get_running_loop().time()
    await elsewhere.revoke(key.key_id)
    while await api.verify(presented) is not None:
        assert asyncio.get_running_loop().time() - revoked_at < bound + 0.2, "accepted past the bound"
        await asyncio.sleep(0.05)
    assert await api.verify(presented) is None
    # Through the same store a revocation is seen at once.
    key, presented = await api.create("cached-2", ["p"], ["participants"])
    assert await api.verify(presented) is not None
    await api.revoke(key.key_id)
    assert await api.verify(presented) is None
    # An expiry is checked on every request, cached or not.
    _, soon = await api.create("brief", ["p"], [], expires_at=datetime.now(UTC) + timedelta(seconds=0.3))
    api = ApiKeyStore(pool, SECRET, cache_seconds=60)
    assert await api.verify(soon) is not None
    await asyncio.sleep(0.4)
    assert await api.verify(soon) is None


async def test_last_use_is_written_again_a_minute_later_through_the_cache(pool: asyncpg.Pool) -> None:
    store = ApiKeyStore(pool, SECRET, cache_seconds=60)
    key, presented = await store.create("in-use", ["p"], [])
    assert await store.verify(presented) is not None
    first = (await store.get(key.key_id)).last_used_at  # type: ignore[union-attr]
    assert first is not None
    await pool.execute("UPDATE api_keys SET last_used_at = now() - interval '2 minutes' WHERE key_id = $1", key.key_id)
    assert await store.verify(presented) is not None  # cached, and used less than a minute ago here
    assert (await store.get(key.key_id)).last_used_at < first  # type: ignore[union-attr,operator]
    store._verified[key.key_id].use_recorded -= 61  # a minute on, as this store sees it
    assert await store.verify(presented) is not None  # still cached: the use is written again
    assert (await store.get(key.key_id)).last_used_at >= first  # type: ignore[union-attr,operator]


class CountingPool:
    """A pool that counts what is asked of it (each query or connection)."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool, self.asked = pool, 0

    def __getattr__(self, name: str) -> Any:
        self.asked += 1
        return getattr(self.pool, name)


async def run_cli(*arguments: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mentorflow.api.commands", *arguments, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_api_keys_commands(database_url: str) -> None:
    env = {**os.environ, "MENTORFLOW_DATABASE_URL": database_url, "MENTORFLOW_API_KEY_SECRET": "s" * 40}
    code, out, err = await run_cli("api-keys", "create", "--name", "hr-portal", "--programme", "spring-2027",
                                   "--may-act-as", "participants", env=env)  # fmt: skip
    assert code == 0, err
    presented = out.strip()
    assert presented.startswith("mfk_") and "\n" not in presented and "shown only now" in err
    code, out, err = await run_cli("api-keys", "list", "--json", env=env)
    assert code == 0, err
    [listed] = json.loads(out)
    assert listed["name"] == "hr-portal" and listed["may_act_as"] == ["participants"] and presented not in out
    code, out, err = await run_cli("api-keys", "rotate", listed["key_id"], "--grace", "1h", "--json", env=env)
    assert code == 0, err
    rotated = json.loads(out)
    assert rotated["api_key"].startswith("mfk_") and rotated["old"]["status"] == "valid"
    code, out, err = await run_cli("api-keys", "revoke", listed["key_id"], env=env)
    assert code == 0 and "revoked" in out, err
    code, out, err = await run_cli("api-keys", "list", env=env)
    assert "revoked" in out and "valid" in out
    # Without the server secret nothing can be made, and the message names the variable.
    del env["MENTORFLOW_API_KEY_SECRET"]
    code, out, err = await run_cli("api-keys", "create", "--name", "x", "--programme", "p", env=env)
    assert code == 2 and "MENTORFLOW_API_KEY_SECRET" in err
