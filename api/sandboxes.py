"""What the operator console reads of sandboxes: the list, each one's decision diff, and one
event's decision under both versions.

The sandbox package sits above the API (it builds stores and issues tokens), so it hands the API
an object of this shape (sandbox/diff.py ``SandboxDiffs``) and the API reads only through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from identity.decision_diff import DecisionDiff
from identity.model import DecisionRecord


class SandboxUnavailable(LookupError):
    """No such sandbox, or nothing to compare in it yet: the reason, shown to the operator."""


@dataclass(frozen=True, slots=True)
class SandboxSummary:
    name: str
    created_at: str
    source: str
    live_rules_version: str
    #: Whether a candidate was replayed, so there is a diff to show.
    replayed: bool


class SandboxDiffs(Protocol):
    def summaries(self) -> list[SandboxSummary]: ...

    async def diff(self, name: str) -> DecisionDiff: ...

    async def decisions(self, name: str, event_id: str) -> tuple[DecisionRecord | None, DecisionRecord | None]:
        """The event's decision in the sandbox's baseline and in its candidate."""
        ...
