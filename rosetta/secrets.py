"""Encryption at rest for passwords and keys.

Secrets are Fernet tokens in the database. The keys come from
ROSETTA_ENCRYPTION_KEYS: the first one encrypts, every one decrypts, so a key
rotation is "put the new key first, run rotate_secrets, drop the old key".
A missing or wrong key is an error, never a silent fallback to plaintext.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


class SecretDecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured(
            "ROSETTA_ENCRYPTION_KEYS is not set: Rosetta will not store or read secrets "
            "without an encryption key. Generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
        )
    try:
        return MultiFernet([Fernet(key.strip()) for key in keys])
    except ValueError:
        raise ImproperlyConfigured(
            "ROSETTA_ENCRYPTION_KEYS holds a value that is not a Fernet key "
            "(32 url-safe base64-encoded bytes)."
        ) from None


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.ROSETTA_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        # The message names the cause, never the token or the plaintext.
        raise SecretDecryptionError(
            "A stored secret cannot be decrypted with ROSETTA_ENCRYPTION_KEYS: "
            "the key that encrypted it is missing from the list."
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt a token under the first (newest) key."""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError(
            "A stored secret cannot be re-encrypted: none of ROSETTA_ENCRYPTION_KEYS decrypts it."
        ) from None


class EncryptedTextField(models.TextField):
    """A text column that holds a Fernet token; Python sees the plaintext.

    Empty string means "not set" and is stored as an empty string, so forms can
    tell "no secret" from "keep the secret".
    """

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value:
            return value
        return encrypt(value)
