"""Battery health grading: a deterministic stand-in for the edge model at the collection site.

State of health is measured capacity over nominal; internal resistance and visible swelling
can only lower the grade. The grade decides whether a pack has a second life (A, B) or is
worth its metals only (C, D).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


class MeasurementError(ValueError):
    """Measurements that cannot be graded, naming the field."""


@dataclass(frozen=True, slots=True)
class Assessment:
    grade: str  # A (second life) .. D (recycle only)
    state_of_health: float  # 0..1
    reasons: tuple[str, ...]


def _number(measurements: Mapping[str, Any], name: str, minimum: float = 0.0) -> float:
    value = measurements.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
        raise MeasurementError(f"measurements.{name}: expected a number >= {minimum}, got {value!r}")
    return float(value)


def grade_battery(measurements: Mapping[str, Any]) -> Assessment:
    nominal = _number(measurements, "nominal_capacity_kwh", 0.001)
    measured = _number(measurements, "measured_capacity_kwh")
    resistance = _number(measurements, "internal_resistance_mohm")
    soh = min(1.0, measured / nominal)
    grade = "A" if soh >= 0.85 else "B" if soh >= 0.70 else "C" if soh >= 0.50 else "D"
    reasons = [f"state of health {soh:.0%}"]
    if resistance > 2.5 and grade in "AB":
        grade = chr(ord(grade) + 1)
        reasons.append(f"internal resistance {resistance:.1f} mΩ lowers the grade")
    if measurements.get("swelling"):
        grade = "D"
        reasons.append("swelling: recycle only")
    return Assessment(grade, round(soh, 4), tuple(reasons))
