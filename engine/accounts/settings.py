"""How a tenant is set up inside its tree: funding, tariff, limits, alerts."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

import msgspec

from engine.meters import Key
from engine.pricing.base import check_price, check_quantity


class Funding(StrEnum):
    """``own``: the tenant has a balance of its own. ``pool``: it draws from the balance of its
    nearest ancestor that has one, optionally up to ``cap`` per period."""

    own = "own"
    pool = "pool"


class GrantExpiry(StrEnum):
    """What an unreported slice of a grant becomes when it expires.

    ``charge_in_full``: the caller may have spent it all before it went quiet, so the rest is
    charged as used; the account never loses money, and a caller that reports on time is never
    overcharged. ``release``: the rest goes back unused (trust the caller's silence).
    """

    charge_in_full = "charge_in_full"
    release = "release"


class Quota(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Units of ``meter`` per period, summed over the tenant's subtree. Past ``hard`` every
    authorisation is denied; reaching ``soft`` only raises an alert."""

    meter: Key
    hard: Decimal | None = None
    soft: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("hard", "soft"):
            value = getattr(self, name)
            if value is not None:
                check_quantity(name, value)


class TenantSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    parent: str | None = None
    funding: Funding = Funding.own
    tariff: Key | None = None
    time_zone: str = "UTC"
    credit_limit: Decimal | None = None
    """How far below zero the balance may go. None takes it from the tariff's payment mode:
    0 for prepaid, no limit for postpaid; a postpaid customer with an agreed limit names it."""
    cap: Decimal | None = None
    """For a pooled tenant: at most this much of the pool per period."""
    quotas: tuple[Quota, ...] = ()
    balance_alerts: tuple[Decimal, ...] = ()
    """Alert once per period when the balance falls below each of these amounts."""
    budget: Decimal | None = None
    """Alert at 50, 80 and 100 % of this amount spent in a period."""
    auto_top_up_below: Decimal | None = None
    """Ask the payment side for a top-up when the balance falls below this amount."""
    grant_expiry: GrantExpiry = GrantExpiry.charge_in_full
    session_grant_seconds: Annotated[int, msgspec.Meta(ge=1, le=31 * 86_400)] = 3_600
    """The longest a session is granted ahead; it is extended on heartbeats and timers."""

    def __post_init__(self) -> None:
        if self.credit_limit is not None:
            check_price("credit_limit", self.credit_limit)
        for name in ("cap", "budget", "auto_top_up_below"):
            value = getattr(self, name)
            if value is not None:
                check_price(name, value, allow_negative=name == "auto_top_up_below")
        if self.cap is not None and self.funding is not Funding.pool:
            raise ValueError("cap: only a pooled tenant draws from a pool")
        if self.funding is Funding.own and self.tariff is None:
            raise ValueError("tariff: a tenant with a balance of its own needs a tariff")
        if self.funding is Funding.pool and self.parent is None:
            raise ValueError("funding: a root tenant has no pool to draw from")
        if self.cap is not None and self.tariff is None:
            raise ValueError("cap: a capped tenant needs a tariff, whose period the cap follows")
        if self.quotas and self.tariff is None:
            raise ValueError("quotas: quotas follow the period of the tenant's tariff")
        meters = [quota.meter for quota in self.quotas]
        if len(set(meters)) != len(meters):
            raise ValueError("quotas: one quota per meter")
