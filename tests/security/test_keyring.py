"""The keyring: parsing MENTORFLOW_ENCRYPTION_KEYS, rotation, and errors that never leak keys."""

from __future__ import annotations

import base64

import pytest

from mentorflow.config import ConfigurationError, Settings
from mentorflow.keyring import KEY_BYTES, DecryptionError, Keyring, KeyringError, UnknownKeyError, format_key, generate_key


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_round_trip_with_associated_data() -> None:
    keyring = Keyring.generate("k1")
    key_id, blob = keyring.encrypt(b"meeting notes", aad=b"rel-1")
    assert key_id == "k1"
    assert b"meeting notes" not in blob
    assert keyring.decrypt(key_id, blob, aad=b"rel-1") == b"meeting notes"
    with pytest.raises(DecryptionError, match="k1"):
        keyring.decrypt(key_id, blob, aad=b"rel-2")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionError):
        keyring.decrypt(key_id, tampered, aad=b"rel-1")


def test_nonces_are_fresh() -> None:
    keyring = Keyring.generate()
    assert keyring.encrypt(b"same")[1] != keyring.encrypt(b"same")[1]


def test_rotation_first_key_encrypts_all_decrypt() -> None:
    old, new = generate_key(), generate_key()
    before = Keyring.parse(format_key("k1", old))
    written_before = before.encrypt(b"old history")
    after = Keyring.parse(f"{format_key('k2', new)} {format_key('k1', old)}")
    assert after.active_key_id == "k2"
    assert after.key_ids == ["k2", "k1"]
    assert after.decrypt(*written_before) == b"old history"
    assert after.encrypt(b"new")[0] == "k2"
    assert Keyring.parse(after.format()).key_ids == ["k2", "k1"]


def test_unknown_key_id_is_named() -> None:
    written = Keyring.generate("gone").encrypt(b"x")
    with pytest.raises(UnknownKeyError) as raised:
        Keyring.generate("k1").decrypt(*written)
    assert "'gone'" in str(raised.value)
    assert "MENTORFLOW_ENCRYPTION_KEYS" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no keys configured"),
        ("   ", "no keys configured"),
        ("SECRETSECRET", "entry 1 is not 'key-id:BASE64'"),
        ("k1:", "entry 1 is not 'key-id:BASE64'"),
        ("bad/id:" + b64(bytes(32)), "key id 'bad/id'"),
        ("k1:not*base64!SECRET", "key 'k1' is not valid base64"),
        ("k1:" + b64(b"SECRET-short"), "must decode to 32 bytes, not 12"),
        (f"k1:{b64(bytes(32))} k1:{b64(bytes(range(32)))}", "key id 'k1' appears twice"),
    ],
)
def test_bad_configuration_names_the_variable_not_the_key(text: str, message: str) -> None:
    with pytest.raises(KeyringError) as raised:
        Keyring.parse(text)
    assert str(raised.value).startswith("MENTORFLOW_ENCRYPTION_KEYS: ")
    assert message in str(raised.value)
    assert "SECRET" not in str(raised.value)
    for entry in text.split():
        encoded = entry.partition(":")[2]
        if encoded:
            assert encoded not in str(raised.value)


def test_generated_keys_and_repr() -> None:
    key = generate_key()
    assert len(key) == KEY_BYTES and key != generate_key()
    keyring = Keyring({"k1": key})
    assert b64(key) not in repr(keyring)
    assert "k1" in repr(keyring)


def test_settings_validate_and_hide_keys() -> None:
    good = format_key("k1", generate_key())
    settings = Settings.from_env({"MENTORFLOW_ENCRYPTION_KEYS": good})
    assert settings.keyring().key_ids == ["k1"]
    assert good.partition(":")[2] not in repr(settings)

    bad = "k1:" + b64(b"SECRET-but-too-short")
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"MENTORFLOW_ENCRYPTION_KEYS": bad})
    assert "MENTORFLOW_ENCRYPTION_KEYS" in str(raised.value)
    assert "32 bytes" in str(raised.value)
    assert bad.partition(":")[2] not in str(raised.value)

    with pytest.raises(ConfigurationError, match="MENTORFLOW_ENCRYPTION_KEYS is not set"):
        Settings.from_env({}).keyring()
