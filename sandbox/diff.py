"""The decision diff of a sandbox: its baseline against its candidate (identity/decision_diff.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from api.sandboxes import SandboxSummary, SandboxUnavailable
from graph.factory import store_from_url
from graph.store import ReadViews
from identity.decision_diff import DecisionDiff, DecisionSummary, diff_decisions
from identity.model import DecisionRecord
from sandbox.load import read_labels
from sandbox.workspace import Sandbox, SandboxError, sandboxes


#: Decisions read at once: a query each was a round trip per event of the sandbox; all at once
#: would hold every full record (with its evidence) where only summaries are kept.
DECISION_PAGE = 1_000


async def _side(store: ReadViews) -> tuple[dict[str, str], dict[str, DecisionSummary]]:
    assignments = dict(await store.assignments())
    event_ids = list(assignments)
    decisions: dict[str, DecisionSummary] = {}
    for start in range(0, len(event_ids), DECISION_PAGE):
        page = await store.decisions(event_ids[start:start + DECISION_PAGE])
        decisions.update((event_id, DecisionSummary.of(record)) for event_id, record in page.items())
    return assignments, decisions


def _candidate(sandbox: Sandbox) -> str:
    sandbox.manifest()
    if not sandbox.candidate_file.is_file():
        raise SandboxError(f"sandbox {sandbox.name!r} has no candidate yet: run 'idgraph sandbox replay "
                           f"{sandbox.name} --rules FILE' first")
    return sandbox.candidate_url


async def sandbox_diff(sandbox: Sandbox) -> DecisionDiff:
    candidate_url = _candidate(sandbox)
    async with store_from_url(sandbox.store_url) as baseline, store_from_url(candidate_url) as candidate:
        before, before_records = await _side(baseline)
        after, after_records = await _side(candidate)
    return diff_decisions(before, after, before_records, after_records, read_labels(sandbox) or None)


async def both_decisions(sandbox: Sandbox, event_id: str) -> tuple[DecisionRecord | None, DecisionRecord | None]:
    """The event's decision in the baseline and in the candidate."""
    candidate_url = _candidate(sandbox)
    async with store_from_url(sandbox.store_url) as baseline, store_from_url(candidate_url) as candidate:
        return await baseline.decision(event_id), await candidate.decision(event_id)


class SandboxDiffs:
    """The sandboxes under ``root`` as the operator console reads them (api/sandboxes.py)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def summaries(self) -> list[SandboxSummary]:
        found = []
        for sandbox in sandboxes(self._root):
            m = sandbox.manifest()
            found.append(SandboxSummary(sandbox.name, m["created_at"], m["source"], m["live_rules_version"],
                                        sandbox.candidate_file.is_file()))
        return found

    async def diff(self, name: str) -> DecisionDiff:
        try:
            sandbox = Sandbox.at(self._root, name)
            # The embedded store reads block, and a big sandbox's diff takes a while: in a thread
            # of its own (with its own loop and connections) the API answers others meanwhile.
            return await asyncio.to_thread(asyncio.run, sandbox_diff(sandbox))
        except SandboxError as exc:
            raise SandboxUnavailable(str(exc)) from None

    async def decisions(self, name: str, event_id: str) -> tuple[DecisionRecord | None, DecisionRecord | None]:
        try:
            return await both_decisions(Sandbox.at(self._root, name), event_id)
        except SandboxError as exc:
            raise SandboxUnavailable(str(exc)) from None
