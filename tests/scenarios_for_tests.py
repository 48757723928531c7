"""Scenarios the end-to-end tests run inside workers and scenario processes."""

from streams.scenario import Message, Scenario, ScenarioContext


async def _answer(reply: str, message: Message, ctx: ScenarioContext) -> None:
    await ctx.emit(reply, payload={"hops_seen": message.hops})


async def _ping(message: Message, ctx: ScenarioContext) -> None:
    await _answer("pong", message, ctx)


async def _pong(message: Message, ctx: ScenarioContext) -> None:
    await _answer("ping", message, ctx)


#: Two scenarios that answer each other forever; only the hop limit stops them.
LOOP = [Scenario("loop.ping", _ping, fields=("traits.name",), kinds=(), event_types=("ping",)),
        Scenario("loop.pong", _pong, fields=("traits.name",), kinds=(), event_types=("pong",))]


async def _fragile(message: Message, ctx: ScenarioContext) -> None:
    if message.payload.get("poison"):
        raise ValueError("cannot handle this request")
    await ctx.emit("handled")


async def _steady(message: Message, ctx: ScenarioContext) -> None:
    await ctx.emit("steady_handled")


#: Fails on poisoned requests; the other scenario must not notice.
FRAGILE = [Scenario("fragile", _fragile, fields=("traits.name",), kinds=(), event_types=("request",)),
           Scenario("steady", _steady, fields=("traits.name",), kinds=(), event_types=("request",))]


async def _echo(message: Message, ctx: ScenarioContext) -> None:
    await ctx.emit("echoed", traits={"echo_count": 1})


#: Runs in a process of its own in the tests.
ECHO = Scenario("echo", _echo, fields=("traits.name",), kinds=(), event_types=("shout",))
