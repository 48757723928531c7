"""The router's Kafka sinks: a delta counts as delivered only once the broker has the projected record."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec

from sinks.router import Router
from tests.test_subscriptions import delta, subscription


class FlakyBroker:
    """Refuses the first ``failures`` records it is sent, then acknowledges every one."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, bytes]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers: Any = None) -> "asyncio.Future[None]":
        self.sent.append((topic, value))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            ack.set_exception(RuntimeError("not enough replicas"))
        else:
            ack.set_result(None)
        return ack


async def test_a_failed_scenario_topic_publish_is_sent_again_until_acknowledged():
    broker = FlakyBroker(failures=2)
    done = asyncio.Event()

    async def on_done() -> None:
        done.set()

    async with httpx.AsyncClient() as http:
        router = Router(broker, http, retry_delay_s=0.01)
        await router.update([subscription(fields=["traits.*"])])
        await router.route(delta(changes={"traits.city": (None, "上海")}, traits={"city": "上海"}), on_done)
        await asyncio.wait_for(done.wait(), 1)
        await router.stop()
    assert [topic for topic, _ in broker.sent] == ["scenario.sales"] * 3
    assert len({value for _, value in broker.sent}) == 1, "the same record each time"


async def test_an_erasure_and_its_tombstones_are_sent_again_together_until_all_are_acknowledged():
    broker = FlakyBroker(failures=2)  # the erasure and its first tombstone fail once
    done = asyncio.Event()

    async def on_done() -> None:
        done.set()

    erased = msgspec.structs.replace(delta(kind="profile.erased"), merged_from=["p_0"], profile={}, changes={})
    async with httpx.AsyncClient() as http:
        router = Router(broker, http, retry_delay_s=0.01)
        await router.update([subscription(fields=["traits.*"])])
        await router.route(erased, on_done)
        await asyncio.wait_for(done.wait(), 1)
        await router.stop()
    kinds = [None if value is None else "erased" for _, value in broker.sent]
    assert kinds == ["erased", None, None] * 2, "the whole unit again, erasure first"


class SilentEndpoint:
    """A real TCP server that accepts webhook connections and never answers, so deliveries queue."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # until the client gives up

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def webhook(url: str) -> Any:
    return subscription(fields=["traits.*"], sink={"type": "webhook", "url": url, "timeout_s": 30, "max_attempts": 1})


async def test_deliveries_queued_for_a_removed_webhook_are_dead_lettered_and_finish_their_batches():
    broker = FlakyBroker(failures=0)
    finished: list[int] = []
    async with SilentEndpoint() as url, httpx.AsyncClient() as http:
        router = Router(broker, http, retry_delay_s=0.01)
        await router.update([webhook(url)])
        for n in range(3):
            async def on_done(n: int = n) -> None:
                finished.append(n)
            await router.route(delta(changes={"traits.city": (None, f"c{n}")}, traits={"city": f"c{n}"}), on_done)
        await asyncio.sleep(0.1)  # the first is in flight, the others queued
        assert finished == []
        await asyncio.wait_for(router.update([]), 5)
        await router.stop()
    assert finished == [0, 1, 2], "every waiting batch may commit"
    assert [topic for topic, _ in broker.sent] == ["idgraph.dead-letter"] * 3


async def test_a_given_up_delivery_finishes_only_once_its_dead_letter_is_written():
    broker = FlakyBroker(failures=2)  # the dead letter is refused twice
    done = asyncio.Event()

    async def on_done() -> None:
        done.set()

    async with httpx.AsyncClient() as http:
        router = Router(broker, http, retry_delay_s=0.01)
        await router.update([webhook("http://127.0.0.1:1/refused")])  # nothing listens on port 1
        await router.route(delta(changes={"traits.city": (None, "上海")}, traits={"city": "上海"}), on_done)
        await asyncio.wait_for(done.wait(), 10)
        await router.stop()
    assert [topic for topic, _ in broker.sent] == ["idgraph.dead-letter"] * 3
