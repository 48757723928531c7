"""A profile's records, identifiers and merge lineage laid out as a graph, for an inline SVG.

One column per profile that ever held the customer's touchpoints (the live one first), each
touchpoint under the profile it was first resolved to, and an arc for each merge, automatic
(from the decision record) or by a person (from the operation record). The live profile's
identifiers form a row beneath, each joined to the first touchpoint that carried it, or to the
profile itself when none carried it verbatim (an identifier normalised on the way in, or one
brought by an operation).
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
    kind: str  # "live", "retired", "event" or "identifier"
    parent: str = ""  # an identifier's: the node it hangs from


@dataclass(frozen=True, slots=True)
class Edge:
    path: str
    label: str
    label_x: float
    label_y: float
    kind: str  # "record", "merge" or "identifier"


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


def _carried(events: Mapping[str, Mapping[str, Any]], type_: str, value: str) -> list[str]:
    """The touchpoints (in the order given) whose own identifiers held this one as written."""
    def held(event: Mapping[str, Any]) -> bool:
        raw = (event.get("identifiers") or {}).get(type_)
        return value in ([str(v) for v in raw] if isinstance(raw, list) else [str(raw)])
    return [event_id for event_id, event in events.items() if held(event)]


def _identifier_row(identifiers: Mapping[str, Sequence[str]], events: Mapping[str, Mapping[str, Any]],
                    placed: Mapping[str, Node], live: str, y: float) -> tuple[list[Node], list[Edge]]:
    nodes: list[Node] = []
    edges: list[Edge] = []
    for i, (type_, value) in enumerate((t, v) for t in sorted(identifiers) for v in identifiers[t]):
        source = next((placed[e] for e in _carried(events, type_, value) if e in placed), placed[live])
        node = Node(f"{type_}:{value}", f"{type_}: {value}", 20 + COLUMN * i + COLUMN / 2, y, "identifier", source.id)
        nodes.append(node)
        edges.append(Edge(f"M{source.x:.0f},{source.y + 12:.0f} L{node.x:.0f},{node.y - 12:.0f}", "", 0, 0, "identifier"))
    return nodes, edges


def lineage(live: str, merged_from: list[str], decisions: Sequence[Mapping[str, Any]],
            operations: Sequence[Mapping[str, Any]], identifiers: Mapping[str, Sequence[str]],
            events: Mapping[str, Mapping[str, Any]]) -> Graph:
    """``events``: the touchpoints by event id, in the order they occurred (whose identifiers came first)."""
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
    placed = {n.id: n for n in nodes}
    band = TOP + ROW * (rows + 1) + 40
    id_nodes, id_edges = _identifier_row(identifiers, events, placed, live, band)
    width = 40 + COLUMN * max(len(columns), len(id_nodes))
    return Graph(nodes + id_nodes, edges + id_edges, width, band + (30 if id_nodes else -20))
