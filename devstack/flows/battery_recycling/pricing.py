"""Tiered quotes from recoverable metal value and the battery's grade.

Metal content per kWh by chemistry is typical industry data; recovery rates are what a
hydrometallurgical plant recovers. A second-life grade earns a premium over metal value.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

#: kg of metal per kWh of pack capacity, by chemistry.
METAL_KG_PER_KWH = {
    "NMC811": {"cobalt": 0.09, "nickel": 0.75, "lithium_carbonate": 0.60},
    "NMC622": {"cobalt": 0.20, "nickel": 0.61, "lithium_carbonate": 0.63},
    "NCA": {"cobalt": 0.13, "nickel": 0.67, "lithium_carbonate": 0.58},
    "LFP": {"cobalt": 0.0, "nickel": 0.0, "lithium_carbonate": 0.55},
}
RECOVERY = {"cobalt": 0.95, "nickel": 0.95, "lithium_carbonate": 0.80}
GRADE_MULTIPLIER = {"A": 1.35, "B": 1.10, "C": 1.00, "D": 0.85}
GRADE_TIER = {"A": "premium", "B": "standard", "C": "recycle", "D": "recycle"}


class PricingError(ValueError):
    """A battery that cannot be priced, naming what is missing."""


@dataclass(frozen=True, slots=True)
class MetalPrices:
    as_of: str
    usd_per_tonne: dict[str, float]

    @classmethod
    def load(cls, path: str | Path) -> "MetalPrices":
        """The newest row of a price index CSV (comment lines start with #)."""
        with open(path, encoding="utf-8") as handle:
            rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
        if not rows:
            raise PricingError(f"{path}: no prices")
        newest = max(rows, key=lambda row: row["date"])
        return cls(newest["date"], {k.removesuffix("_usd_t"): float(v) for k, v in newest.items() if k != "date"})


@dataclass(frozen=True, slots=True)
class Quote:
    amount_usd: float
    tier: str
    metal_value_usd: float
    prices_as_of: str


def price_quote(chemistry: str, capacity_kwh: float, grade: str, prices: MetalPrices) -> Quote:
    content = METAL_KG_PER_KWH.get(chemistry)
    if content is None:
        raise PricingError(f"unknown chemistry {chemistry!r}: expected one of {sorted(METAL_KG_PER_KWH)}")
    if grade not in GRADE_MULTIPLIER:
        raise PricingError(f"unknown grade {grade!r}")
    metal_value = sum(
        kg * capacity_kwh / 1000 * prices.usd_per_tonne[metal] * RECOVERY[metal] for metal, kg in content.items()
    )
    return Quote(round(metal_value * GRADE_MULTIPLIER[grade], 2), GRADE_TIER[grade], round(metal_value, 2), prices.as_of)
