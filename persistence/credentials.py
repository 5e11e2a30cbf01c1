"""API keys and admin users. Only salted hashes of secrets are stored; a key's plaintext is
shown once, by :meth:`ApiKeys.create`, and cannot be recovered.

A key reads ``mwk_<id>_<secret>``: the id finds the row without a scan, the secret is checked
against its hash in constant time. An unknown id costs as much time as a wrong secret.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import msgspec
from sqlalchemy import insert, select, update

from persistence.database import Store, check_limit
from persistence.hashing import COST_KEY, COST_PASSWORD, burn, hash_secret, verify_secret
from persistence.models import ApiKeyRow, UserRow

KEY_MARK: Final = "mwk"
KEY_ID_BYTES: Final = 8
KEY_SECRET_BYTES: Final = 32
PREFIX_LENGTH: Final = 12
"""How much of a key is kept in the clear to recognise it in a list: ``mwk_`` and 8 hex digits
of its id."""
_KEY_PATTERN: Final = re.compile(rf"{KEY_MARK}_([0-9a-f]{{{2 * KEY_ID_BYTES}}})_([A-Za-z0-9_-]+)")
SCOPE_PATTERN: Final = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
SCOPES_MAX: Final = 32
EMAIL_PATTERN: Final = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")
ROLE_PATTERN: Final = re.compile(r"[a-z][a-z_]{0,31}")
PASSWORD_LENGTH_MIN: Final = 12
LIST_LIMIT_MAX: Final = 1_000


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    prefix: str
    scopes: tuple[str, ...]
    tenant_root: str | None
    """The tenant whose subtree the key may act for (named for the tree roots it first
    served); None for an admin key."""
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeys(Store):
    def create(self, scopes: Sequence[str], tenant_root: str | None) -> tuple[str, str]:
        """Store a new key and return ``(key_id, plaintext)``; the plaintext is not kept."""
        scopes = _check_scopes(scopes)
        key_id = secrets.token_hex(KEY_ID_BYTES)
        secret = secrets.token_urlsafe(KEY_SECRET_BYTES)
        plaintext = f"{KEY_MARK}_{key_id}_{secret}"
        row = {
            "id": key_id,
            "prefix": plaintext[:PREFIX_LENGTH],
            "secret_hash": hash_secret(secret, cost=COST_KEY),
            "scopes": list(scopes),
            "tenant_root": tenant_root,
            "created_at": self.clock(),
        }
        with self.engine.begin() as connection:
            connection.execute(insert(ApiKeyRow), row)
        return key_id, plaintext

    def verify(self, plaintext: str) -> ApiKey | None:
        """The key ``plaintext`` names, if its secret matches and it is not revoked."""
        match = _KEY_PATTERN.fullmatch(plaintext)
        row = None
        if match is not None:
            with self.engine.connect() as connection:
                row = connection.execute(
                    select(ApiKeyRow.__table__).where(ApiKeyRow.id == match.group(1))
                ).first()
        if match is None or row is None:
            burn(COST_KEY)
            return None
        if not verify_secret(match.group(2), row.secret_hash) or row.revoked_at is not None:
            return None
        return _api_key(row)

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; False if there is no such key or it was revoked already."""
        statement = (
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=self.clock())
        )
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    def get(self, key_id: str) -> ApiKey | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(ApiKeyRow.__table__).where(ApiKeyRow.id == key_id)
            ).first()
        return None if row is None else _api_key(row)

    def list_keys(
        self, *, limit: int = 100, after: str | None = None, tenant_root: str | None = None
    ) -> list[ApiKey]:
        """A page of keys by id; with ``tenant_root``, only that tree's."""
        query = (
            select(ApiKeyRow.__table__)
            .order_by(ApiKeyRow.id)
            .limit(check_limit(limit, LIST_LIMIT_MAX))
        )
        if after is not None:
            query = query.where(ApiKeyRow.id > after)
        if tenant_root is not None:
            query = query.where(ApiKeyRow.tenant_root == tenant_root)
        with self.engine.connect() as connection:
            return [_api_key(row) for row in connection.execute(query)]


class User(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str
    role: str
    created_at: datetime


class Users(Store):
    """People who sign in to the admin UI, by e-mail address and password."""

    def create(self, email: str, password: str, role: str) -> User:
        email = _check_email(email)
        if not ROLE_PATTERN.fullmatch(role):
            raise ValueError(f"role: {role!r} must be lower-case letters and '_'")
        if len(password) < PASSWORD_LENGTH_MIN:
            raise ValueError(f"password: at least {PASSWORD_LENGTH_MIN} characters")
        user = User(id=secrets.token_hex(8), email=email, role=role, created_at=self.clock())
        row = msgspec.structs.asdict(user) | {
            "password_hash": hash_secret(password, cost=COST_PASSWORD)
        }
        with self.engine.begin() as connection:
            connection.execute(insert(UserRow), row)
        return user

    def verify(self, email: str, password: str) -> User | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(UserRow.__table__).where(UserRow.email == email.strip().lower())
            ).first()
        if row is None:
            burn(COST_PASSWORD)
            return None
        if not verify_secret(password, row.password_hash):
            return None
        return User(id=row.id, email=row.email, role=row.role, created_at=row.created_at)


def _check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(scopes, str):
        raise TypeError("scopes: a sequence of scope names, not one string")
    if len(scopes) > SCOPES_MAX:
        raise ValueError(f"scopes: at most {SCOPES_MAX}")
    for scope in scopes:
        if not SCOPE_PATTERN.fullmatch(scope):
            raise ValueError(f"scopes: {scope!r} is not a scope name")
    return tuple(dict.fromkeys(scopes))


def _check_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL_PATTERN.fullmatch(email):
        raise ValueError(f"email: {email!r} is not an e-mail address")
    return email


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        prefix=row.prefix,
        scopes=tuple(row.scopes),
        tenant_root=row.tenant_root,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
