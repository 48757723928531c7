"""The console's live counters: open reviews from the store, and events/s, consumer lag and dead
letters from the worker's own Prometheus endpoint when the API is told where it is
(``IDGRAPH_WORKER_METRICS_URL``, e.g. ``http://127.0.0.1:18100/metrics``).

A scrape is one small GET with a short timeout; events/s is the change of the worker's event
counter between two reads, so the first read has none. A worker that does not answer shows as
unknown: the console never waits on it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

ENV_WORKER_METRICS_URL = "IDGRAPH_WORKER_METRICS_URL"
_SUMS = {"idgraph_events_consumed": "events", "idgraph_consumer_lag_messages": "lag",
         "idgraph_dead_letters": "dead_letters"}


@dataclass(frozen=True, slots=True)
class Reading:
    open_reviews: int
    events_per_second: float | None = None
    lag: float | None = None
    dead_letters: float | None = None


def _sums(exposition: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        key = _SUMS.get(family.name)
        if key is not None:
            sums[key] = sum(s.value for s in family.samples if not s.name.endswith("_created"))
    return sums


class Counters:
    def __init__(self, worker_metrics_url: str | None = None, timeout: float = 0.5) -> None:
        self.url = worker_metrics_url if worker_metrics_url is not None else os.environ.get(ENV_WORKER_METRICS_URL)
        self.timeout = timeout
        self._last: tuple[float, float] | None = None  # (monotonic time, events counted)

    async def read(self, open_reviews: int) -> Reading:
        if not self.url:
            return Reading(open_reviews)
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(self.url)
                response.raise_for_status()
            sums = _sums(response.text)
        except (httpx.HTTPError, ValueError):
            return Reading(open_reviews)
        return Reading(open_reviews, self._rate(sums.get("events")), sums.get("lag"), sums.get("dead_letters"))

    def _rate(self, events: float | None) -> float | None:
        if events is None:
            return None
        now, last = time.monotonic(), self._last
        self._last = (now, events)
        if last is None or now <= last[0]:
            return None
        return max(events - last[1], 0.0) / (now - last[0])
