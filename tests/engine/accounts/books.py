"""A tenant tree for account tests, driven by commands with generated ids.

Each test module subclasses :class:`Book` with the tariffs it prices with and the few commands
it speaks of (calls, grants, reservations, sessions), so that its tests read as steps of an
account rather than as command construction.
"""

from __future__ import annotations

from decimal import Decimal
from itertools import count
from typing import Any

from engine.accounts import ConfigureTenant, Outcome, TenantSettings, TenantTree
from engine.accounts.tariffs import TariffSource
from engine.accounts.wallet import Wallet
from engine.instants import parse

MARCH = parse("2024-03-01T00:00:00Z")
"""When the books open: tenants are configured (and topped up) at midnight on 1 March 2024."""


class Book:
    """A tenant tree rooted at ``root`` (``acme`` unless named); each command gets the next id,
    ``c1``, ``c2``, ..., unless it names its own."""

    def __init__(self, tariffs: TariffSource, root: str = "acme") -> None:
        self.tree = TenantTree.new(root, tariffs)
        self.root = root
        self.ids = count(1)

    def __call__(self, command: type, at: int, tenant: str | None = None, **fields: Any) -> Outcome:
        """Handle ``command`` at ``at`` for ``tenant`` (the root unless named)."""
        fields.setdefault("id", f"c{next(self.ids)}")
        tenant = self.root if tenant is None else tenant
        return self.tree.handle(command(tenant=tenant, time=at, **fields))

    def configure(self, tenant: str | None = None, at: int = MARCH, **settings: Any) -> Outcome:
        return self(ConfigureTenant, at, tenant, settings=TenantSettings(**settings))

    @property
    def wallet(self) -> Wallet:
        """The root's wallet."""
        wallet = self.tree.state.nodes[self.root].wallet
        assert wallet is not None
        return wallet

    @property
    def balance(self) -> Decimal:
        return self.tree.balance(self.root)

    @property
    def available(self) -> Decimal:
        return self.tree.available(self.root)

    @property
    def held(self) -> Decimal:
        return self.wallet.ledger.held
