"""Named AES-256 keys: the first encrypts, all decrypt, so keys rotate without breaking old data.

Configured as one string, e.g. ``MENTORFLOW_ENCRYPTION_KEYS="k2:BASE64 k1:BASE64"``: space-separated
``id:base64`` pairs, each key exactly 32 bytes, the active (encrypting) key first. Rotating means
putting a new key in front and keeping the old ones for as long as data written with them exists.

Encryption is AES-GCM with a random 96-bit nonce; the stored blob is ``nonce || ciphertext+tag``.
Error messages name the variable and the key id, never key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
ENV_VARIABLE = "MENTORFLOW_ENCRYPTION_KEYS"
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class KeyringError(ValueError):
    """A key configuration that cannot be used (bad id, length, base64, duplicate, none)."""


class UnknownKeyError(KeyError):
    """Data names a key id that the keyring does not hold (e.g. removed too early after a rotation)."""

    def __init__(self, key_id: str, known: list[str]) -> None:
        super().__init__(key_id)
        self.key_id = key_id
        self.known = known

    def __str__(self) -> str:
        return (
            f"encryption key {self.key_id!r} is not configured (configured: {', '.join(self.known)}); "
            f"add it back to {ENV_VARIABLE} to read data written with it"
        )


class DecryptionError(ValueError):
    """The ciphertext does not authenticate: wrong key, wrong associated data, or corrupted."""


def generate_key() -> bytes:
    """32 fresh random bytes for AES-256."""
    return os.urandom(KEY_BYTES)


def format_key(key_id: str, key: bytes) -> str:
    """One ``id:base64`` entry of the configuration string."""
    _check_key_id(key_id, ENV_VARIABLE)
    if len(key) != KEY_BYTES:
        raise KeyringError(f"key {key_id!r} must be {KEY_BYTES} bytes, not {len(key)}")
    return f"{key_id}:{base64.b64encode(key).decode('ascii')}"


def _check_key_id(key_id: str, variable: str) -> None:
    if not _KEY_ID.fullmatch(key_id):
        raise KeyringError(
            f"{variable}: key id {key_id[:64]!r} must be 1-64 characters of letters, digits, '.', '_' or '-'"
        )


class Keyring:
    """Key id → 32-byte key, in order; the first is the active key."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise KeyringError(f"{ENV_VARIABLE}: no keys configured")
        for key_id, key in keys.items():
            _check_key_id(key_id, ENV_VARIABLE)
            if len(key) != KEY_BYTES:
                raise KeyringError(
                    f"{ENV_VARIABLE}: key {key_id!r} must be {KEY_BYTES} bytes, not {len(key)}"
                )
        self._keys = dict(keys)
        self._ciphers = {key_id: AESGCM(key) for key_id, key in self._keys.items()}
        self.active_key_id = next(iter(self._keys))

    @classmethod
    def parse(cls, text: str, variable: str = ENV_VARIABLE) -> Keyring:
        """Parse ``"k2:BASE64 k1:BASE64"``; errors name `variable` and the key id, never the key."""
        keys: dict[str, bytes] = {}
        entries = text.split()
        if not entries:
            raise KeyringError(f"{variable}: no keys configured; expected 'key-id:BASE64' entries")
        for position, entry in enumerate(entries, start=1):
            key_id, colon, encoded = entry.partition(":")
            if not colon or not key_id or not encoded:
                raise KeyringError(
                    f"{variable}: entry {position} is not 'key-id:BASE64' "
                    f"(generate one with `mentorflow keys generate`)"
                )
            _check_key_id(key_id, variable)
            if key_id in keys:
                raise KeyringError(f"{variable}: key id {key_id!r} appears twice")
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise KeyringError(f"{variable}: key {key_id!r} is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise KeyringError(
                    f"{variable}: key {key_id!r} must decode to {KEY_BYTES} bytes, not {len(key)}"
                )
            keys[key_id] = key
        return cls(keys)

    @classmethod
    def generate(cls, key_id: str = "k1") -> Keyring:
        return cls({key_id: generate_key()})

    def format(self) -> str:
        """The configuration string for this keyring (contains key material: store it as a secret)."""
        return " ".join(format_key(key_id, key) for key_id, key in self._keys.items())

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring(active={self.active_key_id!r}, key_ids={self.key_ids!r})"

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> tuple[str, bytes]:
        """Encrypt with the active key: (key id, nonce || ciphertext+tag)."""
        nonce = os.urandom(NONCE_BYTES)
        blob = nonce + self._ciphers[self.active_key_id].encrypt(nonce, plaintext, aad or None)
        return self.active_key_id, blob

    def derived_key(self, key_id: str, purpose: str) -> bytes:
        """A 32-byte key for another use (signing links, say), derived from key `key_id` with
        HKDF-SHA256 and `purpose` as its info, so the encryption key itself signs nothing."""
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownKeyError(key_id, self.key_ids)
        return HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=None, info=purpose.encode()).derive(key)

    def decrypt(self, key_id: str, blob: bytes, aad: bytes = b"") -> bytes:
        """Decrypt what `encrypt` produced with key `key_id` and the same associated data."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKeyError(key_id, self.key_ids)
        if len(blob) < NONCE_BYTES + 16:
            raise DecryptionError(f"encrypted data for key {key_id!r} is too short ({len(blob)} bytes)")
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad or None)
        except InvalidTag:
            raise DecryptionError(
                f"encrypted data does not authenticate with key {key_id!r}: "
                "wrong key material for that id, or the data was altered"
            ) from None


# -- the local key file of `mentorflow dev` ------------------------------------------------

DEV_KEY_FILE_NAME = "encryption-keys"


def dev_key_file(state_dir: Path) -> Path:
    return state_dir / DEV_KEY_FILE_NAME


def read_key_file(path: Path) -> Keyring:
    """A keyring from a file holding a MENTORFLOW_ENCRYPTION_KEYS string; errors name the file."""
    try:
        return Keyring.parse(path.read_text(encoding="utf-8"), variable=str(path))
    except OSError as error:
        raise KeyringError(f"cannot read the key file {path}: {error.strerror}") from None


def ensure_dev_key_file(state_dir: Path) -> tuple[Keyring, bool]:
    """The dev key file's keyring, creating it (mode 0600, one new key) on first use.
    Returns the keyring and whether the file was created now."""
    path = dev_key_file(state_dir)
    try:
        # O_EXCL: two starts racing cannot both write a key (and lose one's data).
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return read_key_file(path), False
    keyring = Keyring.generate("dev-1")
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(keyring.format() + "\n")
    return keyring, True
