"""Secrets the service must use again later (webhook signing secrets; a job's token for a
takeover), encrypted at rest with ``GPUSHOP_SECRET_KEY``: a copy of the store without that key
reveals none of them.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``). ``GPUSHOP_SECRET_KEY`` holds one key
or several, comma-separated: the first encrypts, every one decrypts, so a key is rotated by
putting the new one first, re-encrypting (``gpushop secrets rotate``) and then dropping the old.
A key is a Fernet key (``gpushop secrets keygen``) or a passphrase of 32 characters or more,
stretched with HKDF-SHA256.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gpushop.errors import ConfigError, GpushopError

PREFIX = "fernet:"  # what a stored ciphertext starts with (never a plain secret)
MIN_PASSPHRASE = 32


class SecretKeyMissing(ConfigError):
    """The service needs GPUSHOP_SECRET_KEY for this (and it is not set)."""


class SecretUnreadable(GpushopError):
    """A stored secret was encrypted with a key that GPUSHOP_SECRET_KEY no longer holds."""


def keygen() -> str:
    return Fernet.generate_key().decode()


def _fernet(key: str) -> Fernet:
    key = key.strip()
    try:
        if len(base64.urlsafe_b64decode(key.encode())) == 32 and len(key) == 44:
            return Fernet(key.encode())
    except (ValueError, TypeError):
        pass
    if len(key) < MIN_PASSPHRASE:
        raise ConfigError(
            "GPUSHOP_SECRET_KEY: each key is a Fernet key (`gpushop secrets keygen`) or a"
            f" passphrase of at least {MIN_PASSPHRASE} characters"
        )
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"gpushop-secret-key", info=b"fernet v1"
    ).derive(key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


class SecretBox:
    def __init__(self, setting: str) -> None:
        keys = [part for part in setting.split(",") if part.strip()]
        if not keys:
            raise SecretKeyMissing("GPUSHOP_SECRET_KEY is empty")
        self._fernet = MultiFernet([_fernet(k) for k in keys])

    @classmethod
    def from_setting(cls, setting: str | None) -> SecretBox:
        if not setting:
            raise SecretKeyMissing(
                "GPUSHOP_SECRET_KEY is not set: the service encrypts the secrets it keeps"
                " (webhook signing secrets) with it; make one with `gpushop secrets keygen`"
            )
        return cls(setting)

    def seal(self, plain: str) -> str:
        return PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str:
        if not sealed.startswith(PREFIX):
            raise SecretUnreadable("a stored secret is not encrypted: refusing to use it")
        try:
            return self._fernet.decrypt(sealed[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "a stored secret does not open with GPUSHOP_SECRET_KEY (was the key changed"
                " without keeping the old one after the new?)"
            ) from None

    def reseal(self, sealed: str) -> str:
        """The same secret under the first key (rotation)."""
        try:
            return PREFIX + self._fernet.rotate(sealed[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "a stored secret does not open with GPUSHOP_SECRET_KEY"
            ) from None
