"""Scenarios in a process of their own: a small Faust app that talks to idgraph only through topics.

At start it declares each scenario's subscription on ``idgraph.subscriptions`` (workers store
it in their registry and start routing within a second), then runs one agent per scenario
on ``scenario.<name>``. Nothing here touches the graph store.
"""

from __future__ import annotations

from typing import Any, Awaitable

import faust
import orjson
import structlog

from streams import topics
from streams.admin import ensure_topics
from streams.app import faust_options
from streams.scenario import Scenario, register
from streams.settings import Settings
from streams.transport import LowLatencyTransport

log = structlog.get_logger("idgraph.scenarios")


class ScenarioApp(faust.App):
    def __init__(self, settings: Settings, scenarios: list[Scenario]) -> None:
        self.settings = settings
        self.scenarios = scenarios
        self.fetch_wait_ms = settings.fetch_wait_ms
        names = "+".join(sorted(s.name for s in scenarios))
        (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
        super().__init__(f"{settings.group_id}.scenarios.{names}"[:200], **faust_options(settings))

    def _new_transport(self) -> LowLatencyTransport:
        return LowLatencyTransport(self.conf.broker_consumer, self)

    async def publish(self, topic: str, key: bytes | None, value: bytes | None,
                      headers: list[tuple[str, bytes]] | None = None) -> Awaitable[Any]:
        return await self.producer.send(topic, key, value, partition=None, timestamp=None, headers=headers)

    async def on_start(self) -> None:
        await super().on_start()
        partitions, names = self.settings.partitions, self.settings.topics
        own = [names.scoped(s.subscription().topic) for s in self.scenarios]
        plan = {names.subscriptions: 1, names.touchpoints: partitions, names.dead_letter: 1}
        plan.update({topic: partitions for topic in own})
        raw = topics.raw_events(self.settings.raw_retention_hours)
        configs = {names.touchpoints: raw, names.dead_letter: raw, **{topic: topics.PROFILE_KEYED for topic in own}}
        await ensure_topics(self.settings.bootstrap_servers, plan, configs=configs, replication=self.settings.replication)

    async def on_started(self) -> None:
        await super().on_started()
        for scenario in self.scenarios:
            declaration = scenario.subscription().model_dump(mode="json")
            await (await self.publish(self.settings.topics.subscriptions, scenario.name.encode(), orjson.dumps(declaration)))
        log.info("scenarios ready", scenarios=[s.name for s in self.scenarios])


def create_scenario_app(settings: Settings, scenarios: list[Scenario]) -> ScenarioApp:
    app = ScenarioApp(settings, scenarios)
    for scenario in scenarios:
        register(app, scenario, app.publish, settings.topics)
    return app


def run_scenarios(settings: Settings, scenarios: list[Scenario], loglevel: str = "warning") -> None:
    import mode.loop
    from faust import Worker

    from streams.logging import configure_logging

    mode.loop.use("uvloop")
    configure_logging(loglevel)
    Worker(create_scenario_app(settings, scenarios), loglevel=loglevel).execute_from_commandline()
