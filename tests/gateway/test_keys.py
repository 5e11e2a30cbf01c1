"""Scopes as a table: which key may act for which tree on the hot path."""

from __future__ import annotations

from datetime import UTC, datetime
from hashlib import sha256

import pytest

from gateway.errors import ApiError
from gateway.keys import _digest, may_use
from persistence.credentials import ApiKey


def key(scopes: tuple[str, ...], tenant_root: str | None) -> ApiKey:
    return ApiKey(
        id="k",
        prefix="mwk_00000000",
        scopes=scopes,
        tenant_root=tenant_root,
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("scopes", "key_root", "lineage", "allowed"),
    [
        (("admin",), None, ("acme",), True),
        (("admin",), None, None, True),  # an admin learns that a tenant is unknown (404)
        (("usage",), "acme", ("acme",), True),
        (("usage",), "acme", ("acme", "shop"), True),  # a reseller's key reaches its customers
        (("usage",), "shop", ("acme", "shop"), True),
        (("usage",), "shop", ("acme", "shop", "till"), True),
        (("usage",), "shop", ("acme",), False),  # a customer's key never reaches its reseller
        (("usage",), "shop", ("acme", "other"), False),  # nor the other customers
        (("usage",), "acme", ("bolt",), False),
        (("usage",), "acme", None, False),  # unknown looks like elsewhere (403)
        (("usage",), None, ("acme",), False),  # an application key names its tenant
        (("admin",), "acme", ("bolt",), False),  # admin within a tree is not global admin
        (("admin", "usage"), "acme", ("acme",), True),
        ((), "acme", ("acme",), False),
        (("reports",), None, ("acme",), False),
    ],
)
def test_who_may_use_which_tree(
    scopes: tuple[str, ...], key_root: str | None, lineage: tuple[str, ...] | None, allowed: bool
) -> None:
    assert may_use(key(scopes, key_root), lineage) is allowed


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        (b"", "missing_api_key"),
        (b"Basic abc", "missing_api_key"),
        (b"Bearer ", "missing_api_key"),
        (b"Bearer " + b"k" * 257, "invalid_api_key"),
        ("Bearer \u20ac-not-latin-1", None),  # text that no header can carry: a key never found
    ],
)
def test_a_header_without_a_usable_key_is_401(header: str | bytes | None, code: str | None) -> None:
    if code is None:
        digest, plaintext = _digest(header)
        assert plaintext == b"?-not-latin-1" and len(digest) == 32
        return
    with pytest.raises(ApiError) as raised:
        _digest(header)
    assert (raised.value.status, raised.value.body.code) == (401, code)


def test_the_header_hashes_alike_as_bytes_and_as_starlettes_text() -> None:
    raw = b"bearer  mwk_abc\xe9 "
    assert (
        _digest(raw)
        == _digest(raw.decode("latin-1"))
        == (sha256(b"mwk_abc\xe9").digest(), b"mwk_abc\xe9")
    )
