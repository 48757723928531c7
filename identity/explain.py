"""Rendering a decision record for a person: what was decided, how sure, and why."""

from __future__ import annotations

from typing import Any

from identity.model import DecisionRecord

_ACTION_TEXT = {
    "create": "created a new profile",
    "link": "linked to an existing profile",
    "merge": "merged profiles",
    "review": "sent to human review",
}


def _identifier_lines(identifiers: list[dict[str, Any]]) -> list[str]:
    lines = ["Identifiers:"] if identifiers else ["Identifiers: none"]
    for ident in identifiers:
        held = ", ".join(ident["profiles"]) or "no profile yet"
        lines.append(f"  {ident['identifier']:<28} {ident['status']:<8} held by {held}")
    return lines


def _candidate_lines(candidates: list[dict[str, Any]]) -> list[str]:
    if not candidates:
        return ["Candidates: none found by identifiers or blocking keys"]
    lines = ["Candidates (best first):"]
    for c in candidates:
        flags = " strong-identifier" if c["strong_identifier"] else ""
        flags += f" conflicts={','.join(c['conflicts'])}" if c["conflicts"] else ""
        lines.append(f"  {c['profile_id']}  probability {c['probability']:.4f}  weight {c['match_weight']:+.2f} bits{flags}")
        for f in c["fields"]:
            line = f"      {f['field']:<16} {f['level']:<10} {f['weight']:+7.2f}"
            if "frequency" in f:
                line += f"  (value frequency {f['frequency']:.4%}; level alone {f['level_weight']:+.2f})"
            lines.append(line)
    return lines


def render_decision(record: DecisionRecord) -> str:
    action = record["action"]
    lines = [
        f"Event {record['event_id']}: {_ACTION_TEXT.get(action, action)} -> {record['profile_id']}",
        f"Confidence {record['confidence']:.4f} under rule set {record['rule_version']} "
        f"(its rules: idgraph rules show {record['rule_version']})",
    ]
    if record.get("merged_from"):
        lines.append(f"Merged into it: {', '.join(record['merged_from'])}")
    for p in record.get("protections", []):
        lines.append(f"Protection ({p['kind']}): {p['detail']}")
    review = record.get("review")
    if review:
        lines.append(f"Review proposed for {', '.join(review['profile_ids'])}: {review['reason']}")
    evidence = record.get("evidence", {})
    lines += _identifier_lines(evidence.get("identifiers", []))
    lines += _candidate_lines(evidence.get("candidates", []))
    sovereignty = evidence.get("sovereignty") or {}
    for conflict in sovereignty.get("conflicts", []):
        lines.append(f"Sovereignty conflict on {conflict['trait']}: {conflict['scenario']} wrote {conflict['attempted']!r}, "
                     f"kept {conflict['kept']!r} ({conflict['reason']}; policy {sovereignty['policy_version']})")
    if sovereignty.get("default_rule_traits"):
        lines.append(f"Default rule applied to undeclared traits: {', '.join(sovereignty['default_rule_traits'])}")
    for trait in evidence.get("unmatchable_traits", []):
        lines.append(f"Not used for matching: {trait['path']}: {trait['reason']}")
    return "\n".join(lines)
