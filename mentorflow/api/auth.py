"""Who is calling, and whom they may act as.

Two kinds of credential, both as `Authorization: Bearer …`:

- an **API key** (`mfk_…`, `activities/api_keys.py`) of another system: scoped to
  programmes, and to acting as participants, as the programme's coordinators, or neither
  (read only);
- a **person's token** from the organisation's single sign-on: a JWT verified against the
  configured JWKS, issuer and audience; the configured claim names the person's participant
  id, and the token acts only as that person.

No credential may act as an internal actor (`events.commands.INTERNAL_ACTORS`): the
directory and the matching engine are the system itself.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from pydantic import TypeAdapter, ValidationError

from activities.api_keys import ALL_PROGRAMMES, ApiKey, ApiKeyStore, key_id_of
from events.commands import INTERNAL_ACTORS, Identifier
from mentorflow.api.problems import ApiProblem, not_allowed
from mentorflow.api.settings import ApiSettings

_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="mentorflow"'}


@dataclass(frozen=True)
class Credential:
    kind: Literal["api_key", "token"]
    # The key id, or the token's subject.
    id: str
    # The key's name, or the token's issuer.
    name: str
    # None: every programme.
    programmes: frozenset[str] | None
    may_act_as: frozenset[str]
    # A token's person (its configured claim); None for keys.
    person_id: str | None = None

    @classmethod
    def of_key(cls, key: ApiKey) -> Credential:
        programmes = None if ALL_PROGRAMMES in key.programmes else frozenset(key.programmes)
        return cls("api_key", key.key_id, key.name, programmes, frozenset(key.may_act_as))

    @property
    def is_person(self) -> bool:
        return self.person_id is not None

    @property
    def rate_key(self) -> str:
        return f"{self.kind}:{self.name}:{self.id}"

    def reaches(self, programme_id: str) -> bool:
        """Whether this credential may see the programme at all (a person: any programme;
        what they see in it is limited to their own relationships)."""
        return self.is_person or self.programmes is None or programme_id in self.programmes

    def require_programme(self, programme_id: str) -> None:
        if not self.reaches(programme_id):
            raise not_allowed(f"this credential does not reach programme {programme_id}")

    def require_coordinator_key(self, programme_id: str | None = None) -> None:
        """Only API keys that may act as the programme's coordinators (and reach it)."""
        if self.kind != "api_key" or "coordinators" not in self.may_act_as:
            raise not_allowed("only an API key that may act as coordinators may do this")
        if programme_id is None:
            if self.programmes is not None:
                raise not_allowed("only an API key for every programme (*) may do this")
        else:
            self.require_programme(programme_id)

    @property
    def may_act(self) -> bool:
        return self.is_person or bool(self.may_act_as)


def check_actor(credential: Credential, actor_id: str, coordinators: frozenset[str] | None) -> None:
    """Refuse (403 not_allowed) an actor this credential may not act as.

    `coordinators`: the relationship's coordinators, needed only for a key that may act as
    one of participants or coordinators but not both (None otherwise).
    """
    if actor_id in INTERNAL_ACTORS:
        raise not_allowed(f"actor {actor_id} is the system itself: no credential may act as it")
    if credential.is_person:
        if actor_id != credential.person_id:
            raise not_allowed(f"this token acts only as {credential.person_id}, not as {actor_id}")
        return
    roles = credential.may_act_as
    if not roles:
        raise not_allowed("this API key may only read")
    if roles >= {"participants", "coordinators"}:
        return
    assert coordinators is not None, "a single-role key needs the relationship's coordinators"
    is_coordinator = actor_id in coordinators
    if is_coordinator and "coordinators" not in roles:
        raise not_allowed(f"this API key may act as participants only; {actor_id} is a coordinator")
    if not is_coordinator and "participants" not in roles:
        raise not_allowed(f"this API key may act as the programme's coordinators only; {actor_id} is not one")


def needs_coordinators(credential: Credential) -> bool:
    return not credential.is_person and len(credential.may_act_as) == 1


# -- tokens ------------------------------------------------------------------------------------


class TokenVerifier:
    """Verifies people's JWTs against a JWKS (a URL, fetched and cached by PyJWT, or a file)."""

    def __init__(self, settings: ApiSettings):
        assert settings.jwt_issuer and settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._claim = settings.jwt_person_claim
        # "none" is never accepted, whatever is configured: an unsigned token proves nothing.
        self._algorithms = [a for a in settings.jwt_algorithms.split() if a.lower() != "none"]
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if settings.jwks_url:
            self._client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300, timeout=10)
        elif settings.jwks_file:
            self._keys = jwt.PyJWKSet.from_json(settings.jwks_file.read_text(encoding="utf-8"))

    async def _signing_key(self, token: str) -> Any:
        header = jwt.get_unverified_header(token)
        if str(header.get("alg", "")).lower() == "none" or header.get("alg") not in self._algorithms:
            raise ApiProblem("unauthenticated", "the token is unsigned or signed with an algorithm not accepted",
                             headers=CHALLENGE)  # fmt: skip
        if self._client is not None:
            # PyJWT fetches with urllib (blocking): in a thread, so the server goes on serving.
            return (await asyncio.to_thread(self._client.get_signing_key_from_jwt, token)).key
        assert self._keys is not None
        kid = header.get("kid")
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise ApiProblem("unauthenticated", "the token's signing key is not in the JWKS", headers=CHALLENGE)

    async def verify(self, token: str) -> Credential:
        try:
            key = await self._signing_key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
                leeway=30,
            )
        except ApiProblem:
            raise
        except jwt.ExpiredSignatureError:
            raise ApiProblem("unauthenticated", "the token has expired", headers=CHALLENGE) from None
        except jwt.InvalidIssuerError:
            raise ApiProblem("unauthenticated", "the token is from another issuer", headers=CHALLENGE) from None
        except jwt.InvalidAudienceError:
            raise ApiProblem("unauthenticated", "the token is for another audience", headers=CHALLENGE) from None
        except jwt.PyJWKClientError:
            raise ApiProblem("unauthenticated", "the token's signing key is not in the JWKS", headers=CHALLENGE) from None
        except (jwt.InvalidTokenError, ValueError, json.JSONDecodeError):
            raise ApiProblem("unauthenticated", "the token is not valid", headers=CHALLENGE) from None
        person = claims.get(self._claim)
        try:
            person_id = _IDENTIFIER.validate_python(person)
        except ValidationError:
            raise ApiProblem("unauthenticated", f"the token's {self._claim} claim is not a participant id",
                             headers=CHALLENGE) from None  # fmt: skip
        return Credential("token", str(claims["sub"]), str(claims["iss"]), None, frozenset(), person_id=person_id)


async def authenticate(authorization: str | None, keys: ApiKeyStore, tokens: TokenVerifier | None) -> Credential:
    """The credential of an `Authorization` header, or 401."""
    if not authorization:
        raise ApiProblem("unauthenticated", "send a credential: Authorization: Bearer <API key or token>",
                         headers=CHALLENGE)  # fmt: skip
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise ApiProblem("unauthenticated", "use Authorization: Bearer <API key or token>", headers=CHALLENGE)
    if key_id_of(value) is not None or value.startswith("mfk_"):
        key = await keys.verify(value)
        if key is None:
            raise ApiProblem("unauthenticated", "the API key is not valid (unknown, revoked or expired)",
                             headers=CHALLENGE)  # fmt: skip
        return Credential.of_key(key)
    if tokens is None:
        raise ApiProblem("unauthenticated", "this API accepts API keys only (no single sign-on is configured)",
                         headers=CHALLENGE)  # fmt: skip
    return await tokens.verify(value)
