"""People through single sign-on: bearer JWTs verified against a JWKS served on loopback,
with a real RSA key pair. A person's token acts only as that person; expired, wrong-issuer,
wrong-audience, unsigned and foreign-signed tokens are refused and change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import asyncpg
import httpx
import jwt
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from temporalio.testing import WorkflowEnvironment

from tests.support.api_support import (
    AUDIENCE,
    COORDINATOR,
    ISSUER,
    MENTEE,
    MENTOR,
    SIGNING,
    SIGNING_JWK,
    STRANGER,
    STRANGER_JWK,
    api_stack,
    token,
)


async def test_a_persons_token_acts_only_as_that_person(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, jwks_url: str
) -> None:
    async with api_stack(dev_env.client, pool, jwks_url=jwks_url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE) as stack:
        coordinator = stack.http(await stack.key("coordinator-tool", may_act_as=("coordinators",)))
        mentee, mentor = stack.http(token(MENTEE)), stack.http(token(MENTOR))
        stranger = stack.http(token("emp-999"))
        relationship = f"r-{uuid.uuid4().hex[:8]}"
        path = f"/v1/relationships/{stack.programme}/{relationship}"
        # People do not start relationships (not even their own); keys that may act do.
        body = {"programme_id": stack.programme, "relationship_id": relationship, "mentee_id": MENTEE}
        assert (await mentee.post("/v1/relationships", json=body)).status_code == 403
        assert (await coordinator.post("/v1/relationships", json=body)).status_code == 201
        proposed = await coordinator.post(f"{path}/commands/propose_match",
                                          json={"command_id": "p1", "actor_id": COORDINATOR, "mentor_id": MENTOR})  # fmt: skip
        assert proposed.status_code == 200, proposed.text

        # The actor is filled in from the token …
        accepted = await mentee.post(f"{path}/commands/accept_match", json={"command_id": "a1"})
        assert accepted.status_code == 200, accepted.text
        # … and may not be anyone else, a coordinator or the system.
        for actor in (MENTOR, COORDINATOR, "matching-engine"):
            refused = await mentee.post(f"{path}/commands/accept_match", json={"command_id": "a2", "actor_id": actor})
            assert refused.status_code == 403 and refused.json()["code"] == "not_allowed", refused.text
        accepted = await mentor.post(f"{path}/commands/accept_match", json={"command_id": "a3", "actor_id": MENTOR})
        assert accepted.json()["phase"] == "agreement"

        # Reads: the parties yes (with their confidential text), anyone else no.
        assert (await mentee.get(path)).json()["phase"] == "agreement"
        assert (await stranger.get(path)).status_code == 403
        assert (await stranger.get(f"{path}/events")).status_code == 403
        events = (await mentor.get(f"{path}/events")).json()["events"]
        assert events[0]["type"] == "RelationshipStarted"
        # People's tokens do not reach the directory, reports or the audit record.
        for where in (f"/v1/programmes/{stack.programme}", f"/v1/people/{MENTEE}", f"{path}/audit"):
            assert (await mentee.get(where)).status_code == 403, where
        # The audit record names the token's subject and issuer.
        audit = (await coordinator.get(f"{path}/audit")).json()["audit"]
        assert {(row["credential_kind"], row["credential_id"], row["credential_name"]) for row in audit
                if row["command_id"] == "a1"} == {("token", MENTEE, ISSUER)}  # fmt: skip


async def test_bad_tokens_are_refused_and_change_nothing(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, jwks_url: str
) -> None:
    async with api_stack(dev_env.client, pool, jwks_url=jwks_url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE) as stack:
        coordinator = stack.http(await stack.key("coordinator-tool", may_act_as=("coordinators",)))
        relationship = f"r-{uuid.uuid4().hex[:8]}"
        path = f"/v1/relationships/{stack.programme}/{relationship}"
        started = await coordinator.post("/v1/relationships", json={
            "programme_id": stack.programme, "relationship_id": relationship, "mentee_id": MENTEE})  # fmt: skip
        assert started.status_code == 201
        await coordinator.post(f"{path}/commands/propose_match",
                               json={"command_id": "p1", "actor_id": COORDINATOR, "mentor_id": MENTOR})  # fmt: skip
        handle = stack.client.get_workflow_handle(f"relationship/{stack.programme}/{relationship}")
        history = len((await handle.fetch_history()).events)
        now = int(time.time())
        unsigned = jwt.encode({"sub": MENTEE, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}, None, algorithm="none")
        public_pem = SIGNING.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        header = json.dumps({"alg": "HS256", "typ": "JWT", "kid": SIGNING_JWK["kid"]}).encode()
        claims = json.dumps({"sub": MENTEE, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}).encode()
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        signing_input = f"{b64(header)}.{b64(claims)}"
        confused = f"{signing_input}.{b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())}"
        cases = {
            "expired": token(MENTEE, exp=now - 120, iat=now - 600),
            "wrong issuer": token(MENTEE, iss="https://evil.example.org"),
            "wrong audience": token(MENTEE, aud="another-api"),
            "unsigned": unsigned,
            "signed by a key not in the JWKS": token(MENTEE, key=STRANGER, kid=STRANGER_JWK["kid"]),
            "signed by a key not in the JWKS, claiming a known kid": token(MENTEE, key=STRANGER),
            "HS256 with the public key as secret": confused,
            "not a JWT": "not-a-token",
            "no expiry": jwt.encode({"sub": MENTEE, "iss": ISSUER, "aud": AUDIENCE}, SIGNING, algorithm="RS256",
                                    headers={"kid": SIGNING_JWK["kid"]}),  # fmt: skip
        }
        async with httpx.AsyncClient(base_url=stack.url) as client:
            for name, bad in cases.items():
                for method, url, body in (("POST", f"{path}/commands/accept_match", {"command_id": "x1"}), ("GET", path, None)):
                    response = await client.request(method, url, json=body, headers={"Authorization": f"Bearer {bad}"})
                    assert response.status_code == 401, (name, response.text)
                    assert response.json()["code"] == "unauthenticated", name
        assert len((await handle.fetch_history()).events) == history
        count = await pool.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", relationship)
        assert count == 2  # started, proposed
