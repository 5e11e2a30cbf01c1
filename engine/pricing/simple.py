"""The closed set of simple price models, as one tagged union (tag field ``model``)."""

from __future__ import annotations

from engine.pricing.graduated import Graduated
from engine.pricing.overage import Overage
from engine.pricing.package import Package
from engine.pricing.per_unit import PerUnit
from engine.pricing.percentage import Percentage
from engine.pricing.volume import Volume

SimplePrice = PerUnit | Graduated | Volume | Package | Overage | Percentage
