"""What one batch of touchpoints came to: the pipeline fills it in, logging and metrics read it."""

from __future__ import annotations

from dataclasses import dataclass, field

from graph.store import Outcome
from identity.deltas import IdentityDelta
from sinks.deadletter import DeadLetter


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)
    published: list[IdentityDelta] = field(default_factory=list)
