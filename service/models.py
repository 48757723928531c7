"""The model registry as people and workers use it: register rule sets, promote one, roll back,
and follow the live one between batches.

A promotion is refused, with the reason, before the store is asked when the version is unknown,
its stored rules are invalid or do not hash to its version, it is live already, or it blocks on
other rules than the store's blocking index was built with. The last is refused rather than
reindexed in passing: workers still running the old rules would write old keys into the new
index while it is rebuilt (a Neo4j rebuild is many transactions), so the operator stops them,
runs the command the refusal names, and promotes again.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from graph.store import BlockingIndex, ModelRegistry, Promotion, RegisteredModel, StoreConflict, StoreError, UnknownModel
from identity.features import blocking_signature
from identity.rules import Rules, RulesError, parse_rules
from service.blocking import BlockingMismatch

log = structlog.get_logger("idgraph.models")

#: Who registers and promotes the rule file of the first worker to start on an empty registry.
WORKER = "worker"


class PromotionRefused(StoreError):
    """A promotion or rollback that was not made, with the reason; the live model is unchanged."""


class RegistryStore(ModelRegistry, BlockingIndex, Protocol):
    """The store as promotions use it: the registry, and the blocking index a model must fit."""


async def register(store: ModelRegistry, rules: Rules, by: str, text: str | None = None) -> bool:
    """Keep ``rules`` under their model version (``text`` as given, else their YAML); False when
    that version was registered already, which changes nothing."""
    return await store.register_model(rules.model_version, text if text is not None else rules.to_yaml(), by)


def rules_of(model: RegisteredModel) -> Rules:
    """The rules a registered model holds, checked against the version they were registered as."""
    rules = parse_rules(model.rules_yaml, f"model {model.version}")
    if rules.model_version != model.version:
        raise RulesError(f"model {model.version}'s rules hash to {rules.model_version}, not to its version")
    return rules


async def promote(store: RegistryStore, version: str, *, by: str, reason: str, action: str = "promote",
                  replacing: str | None = None) -> Promotion:
    """Make ``version`` live for every worker from its next batch (see the module docstring);
    only while ``replacing`` is live, when given (a rollback undoes the promotion it read)."""
    model = await store.model(version)
    if model is None:
        raise PromotionRefused(f"no model {version!r} is registered (idgraph rules list shows those that are)")
    try:
        rules = rules_of(model)
    except RulesError as exc:
        raise PromotionRefused(f"model {version} cannot be used: {exc}") from None
    live = await store.live_model()
    if replacing is not None and live != replacing:
        raise PromotionRefused(f"model {live} was made live meanwhile, not {replacing}; see idgraph rules history, "
                               f"then {action} again")
    if live == version:
        raise PromotionRefused(f"model {version} is live already")
    stored = await store.blocking_signature()
    if stored is not None and stored != blocking_signature(rules):
        problem = BlockingMismatch(stored, blocking_signature(rules)).describe()
        raise PromotionRefused(
            f"model {version} blocks on other rules than the store's index ({problem}); stop every worker, run "
            f"`idgraph rules show {version} > rules.yaml && idgraph reindex --rules rules.yaml`, then {action} again")
    try:
        return await store.promote_model(version, expected=live, action=action, by=by, reason=reason)
    except StoreConflict as exc:
        raise PromotionRefused(f"{exc}; see idgraph rules history, then try again") from None


async def make_live(store: RegistryStore, rules: Rules, *, by: str, reason: str) -> bool:
    """Register ``rules`` and promote them unless they are live already (then False): how a
    sandbox's own store takes the rules its worker is asked to try."""
    await register(store, rules, by)
    if await store.live_model() == rules.model_version:
        return False
    await promote(store, rules.model_version, by=by, reason=reason)
    return True


def rollback_target(history: list[Promotion]) -> str | None:
    """The version live before the live one was last promoted: rollbacks undo promotions in turn."""
    if not history:
        return None
    live = history[-1].version
    promoted = [p for p in history if p.action == "promote" and p.version == live]
    return promoted[-1].previous if promoted else None


async def rollback(store: RegistryStore, *, by: str, reason: str) -> Promotion:
    """Return to the version live before the current one, the same way a promotion does."""
    history = await store.promotions()
    target = rollback_target(history)
    if target is None:
        raise PromotionRefused("nothing to roll back to: no model was live before the live one")
    return await promote(store, target, by=by, reason=reason, action="rollback", replacing=history[-1].version)


async def start_with_registry(store: ModelRegistry, configured: Rules, *, explicit: bool) -> Rules:
    """The rules a starting worker resolves with: the live model; on a registry with none yet,
    ``configured`` (IDGRAPH_RULES or the bundled file) registered and promoted as the first.
    A rule file named ``explicit``ly that is not the live model is warned about, not used."""
    live = await store.live_model()
    if live is None:
        await register(store, configured, WORKER)
        try:
            await store.promote_model(configured.model_version, expected=None, action="promote", by=WORKER,
                                      reason="first start")
            return configured
        except StoreConflict:  # another worker starting at once made its rules live first
            live = await store.live_model()
    if explicit and live is not None and live != configured.model_version:
        log.warning("IDGRAPH_RULES is not the live model; resolving with the live one", configured=configured.model_version,
                    live=live, to_use_the_file=f"idgraph rules register FILE && idgraph rules promote {configured.model_version}")
    return await live_rules(store, configured)


async def live_rules(store: ModelRegistry, fallback: Rules) -> Rules:
    """The registry's live model, only read; ``fallback`` (the rule file) while none is live."""
    live = await store.live_model()
    if live is None or live == fallback.model_version:
        return fallback
    return await _registered_rules(store, live)


async def _registered_rules(store: ModelRegistry, version: str) -> Rules:
    model = await store.model(version)
    if model is None:
        raise UnknownModel(f"the live model {version} is not registered in the store")
    return rules_of(model)


class LiveRules:
    """The rules a worker holds, checked against the registry's live version between batches."""

    def __init__(self, store: ModelRegistry, rules: Rules) -> None:
        self._store = store
        self.rules = rules

    async def refresh(self) -> Rules | None:
        """The live model's rules when it changed since the last call (None when not): one read."""
        live = await self._store.live_model()
        if live is None or live == self.rules.model_version:
            return None
        try:
            rules = await _registered_rules(self._store, live)
        except (RulesError, UnknownModel) as exc:
            # Promotions check this; keep resolving under the rules held rather than stop the stream.
            log.error("live model unusable; keeping the rules held", live=live, held=self.rules.model_version,
                      reason=str(exc))
            return None
        log.info("switching to the live model", previous=self.rules.model_version, live=live)
        self.rules = rules
        return rules
