"""A profile's records and merge lineage laid out as a graph, for an inline SVG.

One column per profile that ever held the customer's touchpoints (the live one first), each
touchpoint under the profile it was first resolved to, and an arc for each merge, automatic
(from the decision record) or by a person (from the operation record).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

COLUMN, TOP, ROW = 200, 70, 34


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    label: str
    x: float
    y: float
    kind: str  # "live", "retired" or "event"


@dataclass(frozen=True, slots=True)
class Edge:
    path: str
    label: str
    label_x: float
    label_y: float
    kind: str  # "record" or "merge"


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    width: float
    height: float


def _merges(decisions: Sequence[Mapping[str, Any]], operations: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """(retired, survivor) -> how: "auto" for the engine's merges, the operation's kind for a person's."""
    merges: dict[tuple[str, str], str] = {}
    for d in decisions:
        for retired in d.get("merged_from") or []:
            merges[(retired, d["profile_id"])] = "auto"
    for op in operations:
        for retired in op.get("retired") or []:
            if op.get("survivor"):
                merges[(retired, op["survivor"])] = op.get("kind", "merge")
    return merges


def lineage(live: str, merged_from: list[str], decisions: Sequence[Mapping[str, Any]],
            operations: Sequence[Mapping[str, Any]]) -> Graph:
    columns = [live, *sorted(set(merged_from) - {live})]
    columns += sorted({d["profile_id"] for d in decisions} - set(columns))
    x = {profile: 20 + COLUMN * i + COLUMN / 2 for i, profile in enumerate(columns)}
    nodes = [Node(p, p, x[p], TOP, "live" if p == live else "retired") for p in columns]
    edges: list[Edge] = []
    depth = dict.fromkeys(columns, 0)
    for d in decisions:
        owner = d["profile_id"]
        depth[owner] += 1
        y = TOP + ROW * depth[owner] + 10
        nodes.append(Node(d["event_id"], f"{d['event_id']} · {d['action']}", x[owner], y, "event"))
        edges.append(Edge(f"M{x[owner]:.0f},{y - 12:.0f} L{x[owner]:.0f},{y - ROW + 12:.0f}", "", 0, 0, "record"))
    for (retired, survivor), how in sorted(_merges(decisions, operations).items()):
        if retired in x and survivor in x:
            a, b = x[retired], x[survivor]
            edges.append(Edge(f"M{a:.0f},{TOP - 12} C{a:.0f},{TOP - 55} {b:.0f},{TOP - 55} {b:.0f},{TOP - 12}",
                              how, (a + b) / 2, TOP - 46, "merge"))
    rows = max(depth.values(), default=0)
    return Graph(nodes, edges, 40 + COLUMN * len(columns), TOP + ROW * (rows + 1) + 10)
