"""Salted scrypt hashes of secrets (API keys, passwords), in a self-describing text form
``scrypt$<n>$<r>$<p>$<salt>$<hash>`` so that the cost can rise later without a migration."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final

SALT_BYTES: Final = 16
HASH_BYTES: Final = 32
SECRET_LENGTH_MAX: Final = 1024
COST_PASSWORD: Final = 2**14
"""A password may be guessable, so its hash is slow: about 16 MiB and 0.1 s."""
COST_KEY: Final = 2**10
"""An API key's secret is 256 random bits, so its hash only has to be one-way, not slow:
about 1 MiB and 5 ms. A caller on a hot path still caches a verified key for a short while."""
_R: Final = 8
_P: Final = 1
# scrypt needs 128 * n * r bytes; leave room above the largest cost accepted from storage.
_MEMORY_MAX: Final = 128 * 2**16 * _R * 2


def hash_secret(secret: str, *, cost: int) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(secret, salt, cost, _R, _P)
    return "$".join(("scrypt", str(cost), str(_R), str(_P), _b64(salt), _b64(digest)))


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored``; the comparison takes constant time."""
    scheme, cost, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        raise ValueError(f"unknown hash scheme {scheme!r}")
    expected = _unb64(digest)
    actual = _scrypt(secret, _unb64(salt), int(cost), int(r), int(p))
    return hmac.compare_digest(actual, expected)


def burn(cost: int) -> None:
    """Spend the time of one verification, so that an unknown key id answers no faster than a
    wrong secret does."""
    _scrypt("", b"\0" * SALT_BYTES, cost, _R, _P)


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    if len(secret) > SECRET_LENGTH_MAX:
        raise ValueError(f"secret longer than {SECRET_LENGTH_MAX} characters")
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES, maxmem=_MEMORY_MAX
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
