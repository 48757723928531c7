"""Worker configuration from ``IDGRAPH_*`` environment variables, checked once at start.

| variable | default | meaning |
| --- | --- | --- |
| IDGRAPH_BROKER | (unset) | ``kafka://host:port[,host:port]``; unset means ``idgraph up`` starts Apache Kafka (devstack/up.py) |
| IDGRAPH_STORE | sqlite:///data/idgraph.db | graph store URL |
| IDGRAPH_RULES | bundled rules | resolution rule file (YAML) |
| IDGRAPH_SUBSCRIPTIONS | (unset) | subscriptions YAML registered at start |
| IDGRAPH_APP_ID | idgraph | Faust app id: the worker's Kafka consumer group (prefixed by the topic namespace) |
| IDGRAPH_TOPIC_NAMESPACE | (empty) | prefix of every topic the worker reads or writes, e.g. ``sandbox.x.``; empty is live |
| IDGRAPH_PARTITIONS | 4 | partitions of the topics the worker creates |
| IDGRAPH_BATCH_MAX | 200 | events per store transaction at most |
| IDGRAPH_BATCH_WAIT_MS | 50 | how long a partial batch may wait for events the consumer already fetched (never waits otherwise) |
| IDGRAPH_FETCH_WAIT_MS | 10 | longest a consumer fetch waits for data (Faust's own default is 1500) |
| IDGRAPH_MAX_EVENT_BYTES | 262144 | larger events are dead-lettered as oversized |
| IDGRAPH_RAW_RETENTION_HOURS | 168 | how long touchpoints and dead letters stay on the broker (erasure) |
| IDGRAPH_SESSION_TIMEOUT_S | 10 | consumer group session timeout (also the rebalance timeout) |
| IDGRAPH_DATA_DIR | data | where the worker keeps local files |
| IDGRAPH_POLICY | bundled policy | attribute sovereignty policy (YAML) |
| IDGRAPH_SCENARIOS | (unset) | ``module:object[,...]`` scenarios to run inside the worker |
| IDGRAPH_MAX_HOPS | 8 | events caused through more scenario hops are refused (dead-lettered as hop_limit) |
| IDGRAPH_METRICS_PORT | 18100 | Prometheus ``/metrics`` port of this worker; 0 disables it |
| IDGRAPH_BROKER_WAIT_S | 30 | how long a starting worker waits for a broker to accept connections before it exits (code 1), for its supervisor to start it again |
| IDGRAPH_REPLICATION | 1 | replication factor of the topics the worker creates (3 on a three-broker cluster) |
| IDGRAPH_PROFILE_GROWTH_THRESHOLD | 200 | records past which a profile counts as overgrown (likely chained links; docs/runbook.md) |
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from graph.factory import DEFAULT_STORE
from identity.topics import TopicNames

PREFIX = "IDGRAPH_"
_SCENARIO_SPECS = re.compile(r"^\s*[\w.]+:[\w.]+(\s*,\s*[\w.]+:[\w.]+)*\s*$")
#: Variables read by other parts (the Neo4j store's credentials, for one), not by the worker settings.
OTHER_READERS = ("IDGRAPH_NEO4J_", "IDGRAPH_API_", "IDGRAPH_WORKER_METRICS_URL")


class SettingsError(ValueError):
    """Configuration that cannot work, naming the variable and what is wrong with it."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    broker: str | None = None
    store: str = DEFAULT_STORE
    rules: Path | None = None
    subscriptions: Path | None = None
    app_id: str = Field(default="idgraph", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    topic_namespace: str = ""
    partitions: int = Field(default=4, ge=1, le=1024)
    batch_max: int = Field(default=200, ge=1, le=10_000)
    batch_wait_ms: int = Field(default=50, ge=0, le=10_000)
    fetch_wait_ms: int = Field(default=10, ge=1, le=30_000)
    max_event_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    session_timeout_s: float = Field(default=10.0, ge=1, le=300)
    data_dir: Path = Path("data")
    policy: Path | None = None
    scenarios: str | None = None
    max_hops: int = Field(default=8, ge=1, le=100)
    metrics_port: int = Field(default=18100, ge=0, le=65535)
    replication: int = Field(default=1, ge=1, le=10)
    raw_retention_hours: int = Field(default=168, ge=1, le=24 * 366)
    broker_wait_s: float = Field(default=30.0, ge=0, le=3600)
    # Far past any real customer's touchpoints in these scenarios; a chain grows through it.
    profile_growth_threshold: int = Field(default=200, ge=1, le=10_000_000)

    @field_validator("topic_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        TopicNames(value)  # raises, naming what is wrong
        return value

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("kafka://") or not value.removeprefix("kafka://").strip():
            raise ValueError("must look like kafka://host:9092 (several hosts separated by commas)")
        for host in value.removeprefix("kafka://").split(","):
            name, _, port = host.rpartition(":")
            if not name or not port.isdigit():
                raise ValueError(f"{host!r} is not host:port")
        return value

    @field_validator("scenarios")
    @classmethod
    def _scenario_specs(cls, value: str | None) -> str | None:
        if value is not None and not _SCENARIO_SPECS.match(value):
            raise ValueError("expected module:object, several separated by commas "
                             "(e.g. devstack.flows.battery_recycling:SCENARIOS)")
        return value

    @field_validator("rules", "subscriptions", "policy")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def bootstrap_servers(self) -> str:
        if self.broker is None:
            raise SettingsError("IDGRAPH_BROKER is not set and no local broker was started")
        return self.broker.removeprefix("kafka://")

    @property
    def topics(self) -> TopicNames:
        """The names of every topic this worker reads or writes."""
        return TopicNames(self.topic_namespace)

    @property
    def group_id(self) -> str:
        """The Faust app id (consumer group): a namespaced worker never joins the live group."""
        return self.topic_namespace + self.app_id

    def with_broker(self, url: str) -> "Settings":
        return self.model_copy(update={"broker": url})

    @classmethod
    def unknown_variables(cls, environ: Mapping[str, str] | None = None) -> list[str]:
        """``IDGRAPH_*`` variables nothing reads: usually a typo worth warning about."""
        environ = os.environ if environ is None else environ
        known = {PREFIX + name.upper() for name in cls.model_fields}
        return sorted(k for k in environ if k.startswith(PREFIX) and k not in known
                      and not k.startswith(OTHER_READERS))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        """Read ``IDGRAPH_*`` variables; raise :class:`SettingsError` naming each bad one."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = environ.get(PREFIX + name.upper())
            if raw not in (None, ""):
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{PREFIX}{str(e['loc'][0]).upper()}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors()
            )
            raise SettingsError(problems) from None
