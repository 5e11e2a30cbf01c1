"""Every way a request can fail, and its HTTP answer, in one place.

An error answers ``{"code", "message", "field"}``. ``code`` is a sentence in snake case, like
the engine's reasons; ``field`` names the part of the request at fault (a dotted path such as
``events[3].quantity``), or is null.

A command the account refuses is not always an error: a refusal that is a business decision
(``insufficient_credit``, ``quota_exceeded`` …) is answered 200 with ``accepted: false``,
because the request was understood and answered. Only refusals that say the request itself
was wrong (an unknown reservation, a reused id, an invalid quantity) become 4xx errors.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from engine.accounts import Reason
from engine.accounts.commands import DECISIONS as DECISIONS  # answered 200, accepted false


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    field: str | None = None


class ApiError(Exception):
    """A request that cannot be answered with a decision."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(code=code, message=message, field=field)
        self.headers = headers or {}


REASON_STATUS: Final[dict[Reason, int]] = {
    Reason.unknown_tenant: 404,
    Reason.unknown_reservation: 404,
    Reason.unknown_session: 404,
    Reason.unknown_grant: 404,
    Reason.idempotency_conflict: 409,
    Reason.duplicate_reservation: 409,
    Reason.duplicate_session: 409,
    Reason.duplicate_grant: 409,
    Reason.invalid_amount: 422,
    Reason.invalid_quantity: 422,
    Reason.event_too_late: 422,
    Reason.event_in_future: 422,
    Reason.not_funded: 422,
    Reason.no_tariff: 422,
    Reason.rating_rejected: 422,
    Reason.invalid_settings: 422,
    Reason.grant_not_linear: 422,
}
"""Refusals that say the request was wrong, and their status."""

assert DECISIONS.isdisjoint(REASON_STATUS) and DECISIONS | REASON_STATUS.keys() == set(Reason), (
    "every reason is either a decision or an error"
)

RETRY_AFTER_SECONDS: Final = 1


def malformed(message: str) -> ApiError:
    return ApiError(400, "malformed_json", message)


def invalid(message: str, field: str | None) -> ApiError:
    return ApiError(422, "invalid_field", message, field)


def body_too_large(limit_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the body is limited to {limit_bytes} bytes")


def missing_key() -> ApiError:
    return ApiError(
        401,
        "missing_api_key",
        "send an API key as 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


def invalid_key() -> ApiError:
    return ApiError(
        401,
        "invalid_api_key",
        "the API key is unknown or revoked",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def out_of_scope(field: str | None = "tenant") -> ApiError:
    return ApiError(403, "out_of_scope", "the API key may not act for this tenant here", field)


def unknown_tenant(field: str = "tenant") -> ApiError:
    return ApiError(404, Reason.unknown_tenant.value, "no such tenant", field)


def host_busy(message: str = "the account host is busy; retry later") -> ApiError:
    return ApiError(429, "host_busy", message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def host_unavailable(message: str = "the account host did not answer in time") -> ApiError:
    """The host cannot be reached: the request is denied (the default failure policy). A
    write may still have been applied; a retry with the same id is applied once."""
    return ApiError(
        503, "host_unavailable", message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


def internal(message: str = "an internal error occurred") -> ApiError:
    return ApiError(500, "internal_error", message)


def refused(reason: Reason, message: str, field: str | None) -> ApiError:
    return ApiError(REASON_STATUS[reason], reason.value, message or reason.value, field)


_AT: Final = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED: Final = re.compile(r"(?:unknown|missing required) field `(?P<name>[^`]+)`")
_PREFIX: Final = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_.\[\]]*): ")


def from_validation(error: msgspec.ValidationError) -> ApiError:
    """A 422 naming the field, from msgspec's message (``… - at `$.events[3]```)."""
    text = str(error)
    match = _AT.match(text)
    assert match is not None  # the pattern matches every string
    message, path = match.group("message"), (match.group("path") or "").lstrip(".")
    named = _NAMED.search(message) or _PREFIX.match(message)
    if named is not None:
        path = f"{path}.{named.group('name')}" if path else named.group("name")
    return invalid(message, path or None)
