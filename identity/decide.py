"""Deciding which customer an event belongs to, given what the store found around it.

Order of reasoning: strong identifiers first (minus generic ones and those that would
break a per-type limit), then Fellegi–Sunter scores over earlier records. Whatever the
path, the outcome is a :class:`Decision` carrying its evidence; merges that protection
rules stop become review proposals instead of silent merges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from identity.compare import EventScorer, FieldEvidence, PairScore, score_pair, term_weights
from identity.events import PROFILE_ID_TYPE
from identity.features import PreparedEvent, key_type, split_key
from identity.model import (
    Action,
    Decision,
    MatchRecord,
    Protection,
    ProfileState,
    ResolutionContext,
    ReviewProposal,
    mask_identifier,
    stable_id,
)
from identity.policy import CUSTOMER as CUSTOMER_SCENARIO
from identity.rules import Rules


@dataclass(frozen=True, slots=True)
class _Candidate:
    profile_id: str
    score: PairScore
    strong: bool
    conflicts: tuple[str, ...]  # identifier types whose limit the event would exceed
    #: The profile's record that scored best, and one that contradicts the event, if any.
    best_record: MatchRecord | None = None
    contradiction: MatchRecord | None = None


def _classify_identifiers(prepared: PreparedEvent, ctx: ResolutionContext,
                          rules: Rules) -> tuple[list[str], list[dict[str, object]], list[Protection]]:
    """Split the event's keys into evidence and report generic values."""
    generic_after = rules.identifiers.generic_after_profiles
    evidence: list[dict[str, object]] = []
    strong: list[str] = []
    protections: list[Protection] = []
    for key in prepared.identifier_keys:
        holders = ctx.identifier_profiles.get(key, ())
        type_, _ = split_key(key)
        if len(holders) > generic_after:
            status = "generic"
            protections.append(
                Protection("generic_value", f"{mask_identifier(key)} is held by {len(holders)} profiles", type_)
            )
        else:
            status = "matched" if holders else "new"
            strong.extend(p for p in holders if p not in strong)
        evidence.append({"identifier": mask_identifier(key), "type": type_, "status": status, "profiles": list(holders)})
    return strong, evidence, protections


def limit_conflicts(keys: set[str], rules: Rules) -> tuple[str, ...]:
    """Identifier types of which ``keys`` hold more distinct values than the rules allow."""
    limits = rules.identifiers.limits
    counts: dict[str, int] = {}
    for key in keys:
        type_ = key_type(key)
        if type_ in limits:  # most keys' types have no limit: they need no count
            counts[type_] = counts.get(type_, 0) + 1
    return tuple(sorted(t for t, n in counts.items() if n > limits[t]))


def _score_candidates(prepared: PreparedEvent, ctx: ResolutionContext, strong: list[str], rules: Rules) -> list[_Candidate]:
    best: dict[str, PairScore] = {}
    extras: dict[str, tuple[FieldEvidence, ...]] = {}
    event_keys = set(prepared.identifier_keys)
    conflicts: dict[str, tuple[str, ...]] = {}
    for profile_id, profile in ctx.profiles.items():
        conflicts[profile_id] = limit_conflicts(event_keys | profile.identifiers, rules)
        extra: list[FieldEvidence] = []
        if profile_id in strong:
            extra.append(FieldEvidence("identifiers", "match", rules.identifiers.match.weight))
        if conflicts[profile_id]:
            extra.append(FieldEvidence("identifiers", "conflict", rules.identifiers.conflict.weight))
        extras[profile_id] = tuple(extra)
    records: dict[str, MatchRecord] = {}
    against: dict[str, MatchRecord] = {}
    scorer = EventScorer(prepared.features, rules, term_weights(prepared.features, ctx.terms, rules))
    # A profile's records often repeat each other (a returning customer, an inventor's every
    # patent at one employer): each is scored once. A store that hands out one features object
    # per distinct stored value lets identity find the repeats; from one that does not, a
    # repeat is only scored again.
    scored: dict[tuple[str, int], PairScore] = {}
    for record in ctx.records:
        if record.profile_id not in ctx.profiles:
            continue
        seen = (record.profile_id, id(record.features))
        score = scored.get(seen)
        if score is None:
            score = scored[seen] = scorer.score(record.features, extras[record.profile_id])
        if record.profile_id not in best or score.weight > best[record.profile_id].weight:
            best[record.profile_id], records[record.profile_id] = score, record
        if _contradicts(score, rules):
            against.setdefault(record.profile_id, record)
    for profile_id in strong:
        if profile_id not in best and profile_id in ctx.profiles:
            best[profile_id] = score_pair({}, {}, rules, extras[profile_id])
    ranked = sorted(best.items(), key=lambda item: (-item[1].weight, item[0]))
    return [_Candidate(pid, score, pid in strong, conflicts[pid], records.get(pid), against.get(pid))
            for pid, score in ranked]


def _contradicts(score: PairScore, rules: Rules) -> bool:
    """A record that is, on its own, evidence of another person: a contradicting field (a
    different birth date) and a score below the review threshold."""
    if score.probability >= rules.thresholds.review:
        return False
    contradicting = rules.contradicting_fields
    return any(f.level == "other" and f.field in contradicting for f in score.fields)


def _candidate_evidence(candidates: list[_Candidate], limit: int = 5) -> list[dict[str, object]]:
    return [
        {
            "profile_id": c.profile_id,
            "match_weight": round(c.score.weight, 3),
            "probability": round(c.score.probability, 6),
            "strong_identifier": c.strong,
            "conflicts": list(c.conflicts),
            "fields": [_field_evidence(f) for f in c.score.fields],
        }
        for c in candidates[:limit]
    ]


def _field_evidence(f: FieldEvidence) -> dict[str, object]:
    shown: dict[str, object] = {"field": f.field, "level": f.level, "weight": round(f.weight, 3)}
    if f.frequency is not None and f.level_weight is not None:
        # Adjusted for term frequency: how common the agreed value is, and what the level alone weighs.
        shown["frequency"] = round(f.frequency, 6)
        shown["level_weight"] = round(f.level_weight, 3)
    return shown


def _survivor(profile_ids: list[str], profiles: dict[str, ProfileState]) -> str:
    """The oldest profile survives a merge, so the id most consumers already hold stays valid."""
    return min(profile_ids, key=lambda pid: (profiles[pid].created_at, pid))


def decide(prepared: PreparedEvent, ctx: ResolutionContext, rules: Rules) -> Decision:
    """Decide create / link / merge / review for one event. Pure: no I/O, deterministic."""
    strong, id_evidence, protections = _classify_identifiers(prepared, ctx, rules)
    candidates = _score_candidates(prepared, ctx, strong, rules)
    evidence = {
        "identifiers": id_evidence,
        "candidates": _candidate_evidence(candidates),
        "unmatchable_traits": [{"path": e.path, "reason": e.reason} for e in prepared.unmatchable],
    }
    for c in candidates:
        if c.conflicts and (c.strong or c.score.probability >= rules.thresholds.review):
            protections.append(
                Protection("conflicting_id", f"{c.profile_id} holds another {', '.join(c.conflicts)}", c.conflicts[0])
            )
    args = _Outcome(prepared, ctx, rules, candidates, evidence, protections)
    linkable = [c for c in candidates if c.strong and not c.conflicts]
    if linkable:
        return args.strong_match(linkable)
    return args.fuzzy_match()


@dataclass(slots=True)
class _Outcome:
    """Builds the decision once the candidates are known; one method per path."""

    prepared: PreparedEvent
    ctx: ResolutionContext
    rules: Rules
    candidates: list[_Candidate]
    evidence: dict[str, object]
    protections: list[Protection]
    withheld: tuple[str, ...] = ()

    def _decision(self, action: Action, profile_id: str, confidence: float, merged_from: Iterable[str] = (),
                  review: ReviewProposal | None = None) -> Decision:
        return Decision(
            event_id=self.prepared.event_id,
            action=action,
            profile_id=profile_id,
            confidence=max(0.0, min(1.0, confidence)),
            rule_version=self.rules.model_version,
            evidence=self.evidence,
            merged_from=tuple(merged_from),
            protections=tuple(self.protections),
            review=review,
            withheld_keys=self.withheld,
            event_digest=self.prepared.digest,
        )

    def _new_profile_id(self) -> str:
        return stable_id("p", self.prepared.event_id)

    def _review_new(self, with_: list[str], reason: str, confidence: float) -> Decision:
        """Keep the event apart on a new profile and ask a person whether it belongs with ``with_``."""
        new_id = self._new_profile_id()
        proposal = ReviewProposal((new_id, *with_), reason, confidence)
        return self._decision("review", new_id, confidence, review=proposal)

    def _named_by_customer(self, linkable: list[_Candidate]) -> _Candidate | None:
        """The customer correcting their own profile names it by id (scenario ``customer``, through
        the profile API): that is the customer's word, not a guess for traits to second-guess."""
        if self.prepared.event.scenario != CUSTOMER_SCENARIO:
            return None
        named = {p for key in self.prepared.identifier_keys if split_key(key)[0] == PROFILE_ID_TYPE
                 for p in self.ctx.identifier_profiles.get(key, ())}
        hits = [c for c in linkable if c.profile_id in named]
        return hits[0] if len(hits) == 1 else None

    def _apart_from_best(self, linkable: list[_Candidate]) -> list[_Candidate]:
        """Best first, the candidates no person has kept apart from one already taken."""
        group: list[_Candidate] = []
        for c in linkable:
            if not any(self.ctx.apart(c.profile_id, g.profile_id) for g in group):
                group.append(c)
        if len(group) < len(linkable):
            dropped = [c.profile_id for c in linkable if c not in group]
            kept = {c.profile_id for c in group}
            self.withheld = tuple(k for k in self.prepared.identifier_keys
                                  if (holders := set(self.ctx.identifier_profiles.get(k, ()))) & set(dropped) and not holders & kept)
            self.protections.append(Protection("kept_apart", f"{', '.join(dropped)} kept apart from {group[0].profile_id} by a person"))
        return group

    def strong_match(self, linkable: list[_Candidate]) -> Decision:
        named = self._named_by_customer(linkable)
        if named is not None:
            return self._decision("link", named.profile_id, 1.0)
        # A pair a person kept apart is never merged again, nor proposed again.
        linkable = self._apart_from_best(linkable)
        link_at = self.rules.thresholds.link
        weakest = min(c.score.probability for c in linkable)
        if weakest < link_at:
            return self._review_new([c.profile_id for c in linkable], "identifier match contradicted by traits", weakest)
        if len(linkable) == 1:
            return self._decision("link", linkable[0].profile_id, weakest)
        ids = [c.profile_id for c in linkable]
        blocked = self._merge_block(ids)
        if blocked:
            self.protections.append(blocked)
            target = linkable[0].profile_id
            proposal = ReviewProposal(tuple(ids), f"merge stopped: {blocked.detail}", weakest)
            return self._decision("review", target, linkable[0].score.probability, review=proposal)
        survivor = _survivor(ids, self.ctx.profiles)
        return self._decision("merge", survivor, weakest, merged_from=[p for p in ids if p != survivor])

    def _merge_block(self, ids: list[str]) -> Protection | None:
        """Why the profiles behind the event's identifiers must not merge automatically, if they must not."""
        union = set(self.prepared.identifier_keys).union(*(self.ctx.profiles[p].identifiers for p in ids))
        over = limit_conflicts(union, self.rules)
        if over:
            return Protection("limit", f"merging would give one profile several {', '.join(over)}", over[0])
        for key in self.prepared.identifier_keys:
            holders = [p for p in self.ctx.identifier_profiles.get(key, ()) if p in ids]
            if len(holders) > 1:
                type_, _ = split_key(key)
                detail = f"{mask_identifier(key)} already sits on {len(holders)} profiles kept apart"
                return Protection("limit", detail, type_)
        return None

    def fuzzy_match(self) -> Decision:
        thresholds = self.rules.thresholds
        best = self.candidates[0] if self.candidates else None
        if best is None or best.score.probability < thresholds.review:
            return self._decision("create", self._new_profile_id(), 1.0 - (best.score.probability if best else 0.0))
        if best.score.probability >= thresholds.link and not best.conflicts:
            if best.contradiction is not None:
                # Judged as a whole: one record matching is not enough when another says this
                # is someone else (a chain of near-namesakes grows exactly this way).
                return self._review_new([best.profile_id], f"record {best.contradiction.event_id} of the profile "
                                        "contradicts the event", best.score.probability)
            bridged = self._bridged(best)
            if bridged:
                ids = [best.profile_id, *bridged]
                survivor = _survivor(ids, self.ctx.profiles)
                return self._decision("merge", survivor, best.score.probability,
                                      merged_from=[p for p in ids if p != survivor])
            return self._decision("link", best.profile_id, best.score.probability)
        reason = "conflicting identifiers" if best.conflicts else "fuzzy match below the link threshold"
        return self._review_new([best.profile_id], reason, best.score.probability)

    def _bridged(self, best: _Candidate) -> list[str]:
        """Other profiles the event joins to ``best``: each must match the event at the link
        threshold on its own, and its best record must be a plausible match of ``best``'s without
        the event (at the review threshold), so one ambiguous event cannot bridge two people."""
        link, review = self.rules.thresholds.link, self.rules.thresholds.review
        joined: list[str] = []
        for c in self.candidates[1:]:
            if c.score.probability < link:
                break
            if c.strong or c.conflicts or c.contradiction or c.best_record is None or best.best_record is None:
                continue
            if self.ctx.apart(c.profile_id, best.profile_id):
                continue
            direct = score_pair(best.best_record.features, c.best_record.features, self.rules)
            if direct.probability >= review:
                joined.append(c.profile_id)
        if joined and self._merge_block([best.profile_id, *joined]) is not None:
            return []
        return joined
