"""API keys: who is calling, and what they may do.

A request names its key as ``Authorization: Bearer <key>``. Keys are verified against their
scrypt hashes (:class:`persistence.ApiKeys`), and a verified key is remembered for
``cache_seconds`` (a revoked key may keep working that long on a gateway that verified it).

Scopes (what a scope allows is the gateway's to decide):

- ``admin`` on a key without a tenant root: every route, every tenant.
- ``usage`` on a key bound to a tenant (an application key; the binding is stored as its
  ``tenant_root``): the hot-path routes, for that tenant and the tenants below it only. A
  reseller's key reaches its customers; a customer's key reaches neither its reseller nor the
  other customers. A tenant outside the subtree, or unknown, is ``out_of_scope`` (403), so
  that a key cannot learn which tenants exist elsewhere.

Any other key may do nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Coroutine, Sequence
from enum import StrEnum
from typing import Any, Final

from gateway import errors
from gateway.cache import LookupCache
from persistence.credentials import ApiKey, ApiKeys

CACHE_SECONDS: Final = 60.0
INVALID_CACHE_SECONDS: Final = 5.0
CACHE_SIZE_MAX: Final = 10_000
KEY_LENGTH_MAX: Final = 256
_BEARER: Final = b"bearer "


class Scope(StrEnum):
    admin = "admin"
    usage = "usage"


def is_admin(key: ApiKey) -> bool:
    return Scope.admin in key.scopes and key.tenant_root is None


def may_use(key: ApiKey, lineage: Sequence[str] | None) -> bool:
    """Whether ``key`` may call a hot-path route for the tenant whose ``lineage`` (root first,
    the tenant last) is given; None: the tenant is unknown."""
    if is_admin(key):
        return True
    return Scope.usage in key.scopes and lineage is not None and key.tenant_root in lineage


def _digest(authorization: str | bytes | None) -> tuple[bytes, bytes]:
    """The SHA-256 of the key a bearer ``Authorization`` header carries (the cache's key: no
    plaintext is kept), and the key; 401 if there is none or it is too long. The hot path
    passes the header's bytes as they came, the other routes Starlette's (latin-1) text."""
    if isinstance(authorization, str):
        # Starlette's headers are latin-1 text; anything else cannot be a key (401, not 500).
        authorization = authorization.encode("latin-1", "replace")
    if not authorization or not authorization[: len(_BEARER)].lower() == _BEARER:
        raise errors.missing_key()
    plaintext = authorization[len(_BEARER) :].strip()
    if not plaintext:
        raise errors.missing_key()
    if len(plaintext) > KEY_LENGTH_MAX:
        raise errors.invalid_key()
    return hashlib.sha256(plaintext).digest(), plaintext


class KeyVerifier:
    def __init__(
        self,
        keys: ApiKeys,
        *,
        cache_seconds: float = CACHE_SECONDS,
        invalid_cache_seconds: float = INVALID_CACHE_SECONDS,
    ) -> None:
        self.keys = keys
        self._cache: LookupCache[bytes, ApiKey] = LookupCache(
            "api-keys",
            ttl_seconds=cache_seconds,
            missing_ttl_seconds=invalid_cache_seconds,
            size_max=CACHE_SIZE_MAX,
        )

    def verify(self, authorization: str | bytes | None) -> ApiKey | Coroutine[Any, Any, ApiKey]:
        """The key the ``Authorization`` header names: at once if it is remembered (the hot
        path's hit takes no coroutine), else a coroutine that looks it up; the header is
        hashed once either way. 401 if it is missing or invalid."""
        digest, plaintext = _digest(authorization)
        entry = self._cache.fresh(digest)
        if entry is None:
            return self._looked_up(digest, plaintext)
        if entry[1] is None:
            raise errors.invalid_key()
        return entry[1]

    async def authenticate(self, authorization: str | None) -> ApiKey:
        """:meth:`verify`, awaited."""
        key = self.verify(authorization)
        return key if isinstance(key, ApiKey) else await key

    async def _looked_up(self, digest: bytes, plaintext: bytes) -> ApiKey:
        key = await self._cache.get(digest, lambda: self.keys.verify(plaintext.decode("latin-1")))
        if key is None:
            raise errors.invalid_key()
        return key

    def forget(self, key_id: str) -> None:
        """Stop accepting a key this gateway remembers, at once (on its revocation here;
        other gateways stop within ``cache_seconds``)."""
        self._cache.forget_values(lambda key: key.id == key_id)

    def close(self) -> None:
        self._cache.close()
