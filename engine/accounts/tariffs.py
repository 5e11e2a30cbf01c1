"""Where a tree finds its tariffs: a port, and an in-memory adapter over a catalogue."""

from __future__ import annotations

from typing import Protocol

from engine.instants import Instant
from engine.rating import PeriodRater
from engine.tariffs import Catalog


class TariffSource(Protocol):
    def rater(self, tariff: str, at: Instant, time_zone: str) -> PeriodRater | None:
        """The rater of the version of ``tariff`` in effect at ``at``, for ``time_zone``;
        None if there is no such tariff or no version in effect yet."""
        ...

    def rater_for(self, tariff: str, version: int, time_zone: str) -> PeriodRater | None:
        """The rater of one exact version (a period keeps the version it was opened with)."""
        ...


class CatalogTariffs:
    """A :class:`TariffSource` over a decoded :class:`Catalog`, with raters compiled once."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.meters = catalog.meters_by_key()
        self._raters: dict[tuple[str, int, str], PeriodRater] = {}

    def rater(self, tariff: str, at: Instant, time_zone: str) -> PeriodRater | None:
        try:
            found = self.catalog.tariff(tariff)
        except KeyError:
            return None
        version = found.version_at(at)
        if version is None:
            return None
        return self.rater_for(tariff, version.version, time_zone)

    def rater_for(self, tariff: str, version: int, time_zone: str) -> PeriodRater | None:
        key = (tariff, version, time_zone)
        rater = self._raters.get(key)
        if rater is None:
            try:
                found = self.catalog.tariff(tariff)
            except KeyError:
                return None
            chosen = next((v for v in found.versions if v.version == version), None)
            if chosen is None:
                return None
            rater = self._raters[key] = PeriodRater(tariff, chosen, self.meters, time_zone)
        return rater
