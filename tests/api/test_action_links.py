"""Signed action links (mentorflow/action_links.py): a link names one person, relationship and
purpose, expires, survives a key rotation until it expires, and cannot be turned into any
other link."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mentorflow.action_links import ActionLink, LinkRefused, Purpose, new_link, sign, verify
from mentorflow.keyring import Keyring, generate_key

NOW = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
K1, K2 = generate_key(), generate_key()
KEYRING = Keyring({"k1": K1})


def link(**changes: object) -> ActionLink:
    made = new_link("mentee-1", "spring-2027", "rel-1", Purpose.MEETING_OUTCOME, now=NOW, subject="2027-03-01T09:00Z")
    return ActionLink(**{**made.__dict__, **changes})  # type: ignore[arg-type]


def reclaimed(token: str, **claims: object) -> str:
    """The token with some claims replaced and the original signature kept: a forgery."""
    body, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**decoded, **claims}).encode()).rstrip(b"=").decode()
    return f"{forged}.{signature}"


def refusal(token: str, keyring: Keyring = KEYRING, now: datetime = NOW) -> str:
    with pytest.raises(LinkRefused) as refused:
        verify(keyring, token, now=now)
    return refused.value.reason


def test_a_link_reads_back_as_it_was_signed() -> None:
    assert verify(KEYRING, sign(KEYRING, link()), now=NOW) == link()


@pytest.mark.parametrize(
    "claim, value",
    [("p", "mentor-1"), ("r", "rel-2"), ("g", "autumn-2027"), ("u", "sign_agreement"), ("u", "propose_agreement"),
     ("u", "change_goal"), ("s", "other"), ("e", 4102444800)],  # fmt: skip
)
def test_no_claim_can_be_changed(claim: str, value: object) -> None:
    assert refusal(reclaimed(sign(KEYRING, link()), **{claim: value})) == "bad_signature"


def test_a_link_expires() -> None:
    token = sign(KEYRING, link())
    assert verify(KEYRING, token, now=NOW + timedelta(days=14, seconds=-1))
    assert refusal(token, now=NOW + timedelta(days=14)) == "expired"


def test_rotation_keeps_old_links_until_their_key_leaves() -> None:
    old = sign(KEYRING, link())
    rotated = Keyring({"k2": K2, "k1": K1})
    assert verify(rotated, old, now=NOW) == link()
    fresh = sign(rotated, link())
    assert json.loads(base64.urlsafe_b64decode(fresh.split(".")[0] + "==="))["k"] == "k2"
    without_old = Keyring({"k2": K2})
    assert verify(without_old, fresh, now=NOW) == link()
    assert refusal(old, keyring=without_old) == "unknown_key"


def test_another_keyring_with_the_same_key_id_refuses() -> None:
    assert refusal(sign(Keyring.generate("k1"), link())) == "bad_signature"


def test_the_signing_key_is_not_the_encryption_key() -> None:
    assert KEYRING.derived_key("k1", "mentorflow action links v1") != K1
    assert KEYRING.derived_key("k1", "a") != KEYRING.derived_key("k1", "b")


@given(st.text(max_size=300))
def test_any_text_is_refused_cleanly(token: str) -> None:
    with pytest.raises(LinkRefused):
        verify(KEYRING, token, now=NOW)


@given(st.binary(max_size=200))
def test_any_signed_body_that_is_not_a_link_is_refused_cleanly(body: bytes) -> None:
    """Even a correctly signed body must hold a link's claims (e.g. a key leaked for another use)."""
    from mentorflow.action_links import _b64, _sign

    encoded = _b64(body)
    with pytest.raises(LinkRefused):
        verify(KEYRING, f"{encoded}.{_b64(_sign(KEYRING, 'k1', encoded))}", now=NOW)


def test_command_ids_repeat_for_the_same_answer_and_differ_for_another() -> None:
    one = link()
    assert one.command_id("met") == link().command_id("met")
    assert one.command_id("met") != one.command_id("did_not_meet")
    assert one.command_id("met") != link(person_id="mentor-1").command_id("met")
    assert one.command_id("met") != link(subject="2027-03-15T09:00Z").command_id("met")


def test_a_token_carries_no_more_than_its_claims() -> None:
    body = sign(KEYRING, link()).split(".")[0]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert set(claims) == {"k", "p", "g", "r", "u", "s", "e"}


def test_a_link_needs_a_positive_lifetime() -> None:
    with pytest.raises(ValueError, match="lifetime"):
        new_link("p", "g", "r", Purpose.FEEDBACK, now=NOW, lifetime=timedelta(0))
