"""The worker's Kafka transport: Faust's aiokafka driver with a short consumer fetch wait.

Faust passes ``fetch_max_wait_ms=1500`` to aiokafka as a literal. A fetch may be held
that long before returning records (Tansu always holds it the full time), which alone
would break a 200 ms propagation target; this is the one place the wait is set.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka


@runtime_checkable
class FetchWaitConfigured(Protocol):
    """An app that says how long a consumer fetch may wait (IdgraphApp, ScenarioApp)."""

    fetch_wait_ms: int


class LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when start() builds its fetcher, right after this.
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError("aiokafka no longer has _fetch_max_wait_ms; update streams/transport.py")
        if not isinstance(self.app, FetchWaitConfigured):
            raise TypeError(f"{type(self.app).__name__} has no fetch_wait_ms for the low-latency transport")
        consumer._fetch_max_wait_ms = self.app.fetch_wait_ms
        return consumer


class LowLatencyConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> LowLatencyConsumerThread:
        return LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)


class LowLatencyTransport(faust_aiokafka.Transport):
    Consumer = LowLatencyConsumer
