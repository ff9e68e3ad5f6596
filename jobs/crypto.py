"""Encryption at rest of secret request headers: Fernet keyed from SECRET_KEY, rotated via SECRET_KEY_FALLBACKS.

Each key is derived from a Django secret key with HKDF-SHA256 (its own `info`,
so the value is never the secret key itself nor one Django's signing uses).
New values are sealed with the key of SECRET_KEY; values sealed under any key
of SECRET_KEY_FALLBACKS still open (MultiFernet). To rotate: put the old key in
SECRET_KEY_FALLBACKS, set the new SECRET_KEY, run `manage.py reseal_headers`,
then drop the old key.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from jobs.exceptions import JobsError

_INFO = b"batchfetch sealed request headers v1"


class SealBroken(JobsError):
    """A sealed value does not open with SECRET_KEY or any of SECRET_KEY_FALLBACKS."""


def seal(text: str) -> str:
    """`text` encrypted and authenticated, as URL-safe base64 text."""
    return _fernet(*_keys()).encrypt(text.encode()).decode("ascii")


def unseal(token: str) -> str:
    """The text `seal` sealed; SealBroken if no configured key opens it."""
    try:
        return _fernet(*_keys()).decrypt(token.encode("ascii")).decode()
    except InvalidToken as exc:
        raise SealBroken(
            "the secret headers cannot be decrypted: SECRET_KEY changed without the old key in SECRET_KEY_FALLBACKS"
        ) from exc


def reseal(token: str) -> str:
    """`token` sealed again under the current SECRET_KEY (SealBroken if it does not open)."""
    try:
        return _fernet(*_keys()).rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken as exc:
        raise SealBroken("a sealed value opens with none of the configured keys") from exc


def _keys() -> tuple[str, ...]:
    # Read at each call, so override_settings and a rotation in tests apply.
    return (str(settings.SECRET_KEY), *(str(key) for key in getattr(settings, "SECRET_KEY_FALLBACKS", ())))


@functools.lru_cache(maxsize=8)
def _fernet(*keys: str) -> MultiFernet:
    return MultiFernet([Fernet(_derive(key)) for key in keys])


def _derive(secret_key: str) -> bytes:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret_key.encode())
    return base64.urlsafe_b64encode(key)
