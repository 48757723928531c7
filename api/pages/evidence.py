"""A decision's evidence drawn for a person: per candidate, a waterfall from the prior through the
weight of each compared field to the match weight and its probability (as Splink's waterfall
chart does), computed from the decision record alone, never by scoring again.

The record keeps each field's weight and the candidate's total; the prior's log-odds is what the
total holds beyond the fields (identity/compare.py: total = prior + sum of field weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

#: Drawing area of one waterfall, in SVG user units: labels left, bars right, with room on both
#: sides of the bars for their figures.
LABELS, WIDTH, ROW, MARGIN = 150, 600, 24, 50


@dataclass(frozen=True, slots=True)
class Step:
    label: str
    level: str
    weight: float
    start: float
    end: float
    x: float
    width: float
    y: float
    kind: str  # "prior", "up", "down" or "total": its colour


@dataclass(frozen=True, slots=True)
class Waterfall:
    profile_id: str
    probability: float
    total: float
    strong_identifier: bool
    conflicts: list[str]
    steps: list[Step]
    height: float
    zero_x: float


def _scale(low: float, high: float) -> tuple[float, float]:
    span = (high - low) or 1.0
    return (WIDTH - LABELS - 2 * MARGIN) / span, low


def waterfall(candidate: dict[str, Any]) -> Waterfall:
    fields = candidate.get("fields", [])
    total = float(candidate["match_weight"])
    prior = total - sum(float(f["weight"]) for f in fields)
    rows: list[tuple[str, str, float, float, float, str]] = [("prior", "", prior, 0.0, prior, "prior")]
    running = prior
    for f in fields:
        weight = float(f["weight"])
        rows.append((f["field"], f["level"], weight, running, running + weight, "up" if weight >= 0 else "down"))
        running += weight
    rows.append(("total", "", total, 0.0, total, "total"))
    edges = [0.0, *(r[3] for r in rows), *(r[4] for r in rows)]
    per_unit, low = _scale(min(edges), max(edges))

    def at(value: float) -> float:
        return LABELS + MARGIN + (value - low) * per_unit

    steps = [Step(label, level, weight, start, end, at(min(start, end)), max(abs(end - start) * per_unit, 1.0),
                  i * ROW + 4, kind) for i, (label, level, weight, start, end, kind) in enumerate(rows)]
    return Waterfall(candidate["profile_id"], float(candidate["probability"]), total,
                     bool(candidate.get("strong_identifier")), list(candidate.get("conflicts", [])), steps,
                     len(rows) * ROW + 8, at(0.0))


def waterfalls(record: Mapping[str, Any] | None, only: list[str] | None = None) -> list[Waterfall]:
    """The candidates' waterfalls, best first; ``only`` keeps those profiles (a review's pair)."""
    candidates = ((record or {}).get("evidence") or {}).get("candidates", [])
    return [waterfall(c) for c in candidates if only is None or c.get("profile_id") in only]
