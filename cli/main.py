"""The ``idgraph`` command line: the single entry point for every command."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import orjson
import typer

from cli.api import api_command, review_app, token_command
from cli.common import fail as _fail
from cli.common import progress as _progress
from cli.common import rules_or_fail, run_on_store
from cli.rules import rules_app
from cli.sandbox import sandbox_app
from graph.factory import store_from_url
from graph.store import GraphStore, StoreError
from identity.estimate import estimate
from identity.events import EventRejected, parse_event
from identity.explain import render_decision
from identity.features import Features, prepare
from identity.learning import DEFAULT_SAMPLE, StreamLearner
from identity.model import DecisionRecord
from identity.rules import Rules
from identity.topics import TopicNames
from service.models import start_with_registry
from service.blocking import BlockingIndexUnusable, check_blocking_index, start_with_blocking_index
from service.models import register as register_model
from streams.batch import BatchReport, read_lines, resolve_lines, write_assignments
from streams.collector import tune_collector
from streams.settings import Settings, SettingsError

if TYPE_CHECKING:
    from sinks.subscriptions import Subscription
    from devstack.up import BrokerKind


app = typer.Typer(help="idgraph: a real-time customer identity graph.", no_args_is_help=True, add_completion=False)

StoreOption = typer.Option(None, "--store", envvar="IDGRAPH_STORE", help="Store URL, e.g. sqlite:///data/idgraph.db")
RulesOption = typer.Option(None, "--rules", envvar="IDGRAPH_RULES", help="Rule file (YAML); the bundled default if unset")


@app.command()
def resolve(
    input: Path = typer.Option(..., "--input", "-i", exists=True, dir_okay=False, help="Events, one JSON per line"),
    output: Path = typer.Option(..., "--output", "-o", help="CSV of event_id,profile_id"),
    rejects: Optional[Path] = typer.Option(None, help="Where refused lines go (default: OUTPUT.rejects.jsonl)"),
    store: Optional[str] = StoreOption,
    rules: Optional[Path] = RulesOption,
    batch_size: int = typer.Option(200, min=1, help="Events per store transaction"),
    learn: bool = typer.Option(True, "--learn/--no-learn",
                               help="Learn m, u and the prior from the events as they arrive (the rules are the "
                                    "cold start), or keep the rules' model throughout"),
) -> None:
    """Resolve a file of events in order and write each event's profile."""
    ruleset = rules_or_fail(rules)
    rejects = rejects or output.with_name(output.name + ".rejects.jsonl")
    learner = StreamLearner(ruleset) if learn else None
    total = sum(1 for _ in read_lines(input))
    tune_collector()  # a long run, as the worker's (streams/collector.py)

    async def run() -> BatchReport:
        async with store_from_url(store) as graph:
            await start_with_blocking_index(graph, ruleset)
            with rejects.open("wb") as bad, _progress("resolving", total) as advance:
                report = await resolve_lines(read_lines(input), graph, ruleset, batch_size=batch_size, rejects=bad,
                                             learner=learner, progress=advance)
            with output.open("w", encoding="utf-8") as out:
                await write_assignments(graph, report.event_ids, out)
            for fit in report.models:  # so that `idgraph rules promote` can make one live
                await register_model(graph, fit.rules, "idgraph resolve")
        return report

    try:
        report = asyncio.run(run())
    except StoreError as exc:
        raise _fail(str(exc)) from None
    for fit in report.models:
        typer.echo(f"learned model {fit.rules.model_version} from {fit.seen} events "
                   f"({fit.pairs} candidate pairs, prior {fit.match_share:.3g}); registered in the store")
    if learn and not report.models:
        typer.echo(f"too few duplicates to learn from: the model {ruleset.model_version} throughout")
    actions = ", ".join(f"{k} {v}" for k, v in sorted(report.actions.items()))
    typer.echo(f"{report.events} events: {actions}; {report.duplicates} duplicates; {report.deltas} deltas")
    if report.rejected:
        typer.secho(f"{report.rejected} events refused, reasons in {rejects}", err=True, fg=typer.colors.YELLOW)


@app.command()
def explain(
    event_id: str = typer.Argument(..., help="The event whose decision to show"),
    store: Optional[str] = StoreOption,
    as_json: bool = typer.Option(False, "--json", help="Print the raw decision record"),
) -> None:
    """Show why an event was resolved the way it was."""

    async def fetch() -> DecisionRecord | None:
        async with store_from_url(store) as graph:
            return await graph.decision(event_id)

    try:
        record = asyncio.run(fetch())
    except StoreError as exc:
        raise _fail(str(exc)) from None
    if record is None:
        raise _fail(f"no decision recorded for event {event_id!r}")
    typer.echo(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode() if as_json else render_decision(record))


@app.command("estimate")
def estimate_command(
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the re-estimated rule file"),
    input: Optional[Path] = typer.Option(None, "--input", "-i", exists=True, dir_okay=False,
                                         help="Sample events, JSON lines (default: sample the store's touchpoints)"),
    store: Optional[str] = StoreOption,
    sample: int = typer.Option(DEFAULT_SAMPLE, min=2, help="Without --input: how many stored touchpoints to learn from"),
    rules: Optional[Path] = RulesOption,
    version: Optional[str] = typer.Option(None, help="Version of the new rule set (default: <old>+em)"),
) -> None:
    """Learn m, u and the prior by unsupervised EM, from a file of events or from the graph
    itself (a random sample of its touchpoints); write a new model version."""
    base = rules_or_fail(rules)
    if input is None:
        features = run_on_store(lambda graph: graph.sample_features(sample), store)
        source = f"{len(features)} stored touchpoints"
    else:
        features = _file_features(input, base)
        source = f"{len(features)} events"
    try:
        result = estimate(features, base)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    updated = result.rules.model_copy(update=dict(version=version or f"{base.version.split('+em')[0]}+em"))
    output.write_text(updated.to_yaml(), encoding="utf-8")
    typer.echo(
        f"{source}, {result.pairs} candidate pairs ({result.patterns} patterns), "
        f"{result.iterations} iterations, estimated prior {result.match_share:.3g}; "
        f"wrote model {updated.model_version} to {output}"
    )


def _file_features(path: Path, rules: Rules) -> list[Features]:
    features = []
    for number, line in read_lines(path):
        try:
            features.append(prepare(parse_event(line), rules).features)
        except EventRejected as exc:
            typer.secho(f"line {number} skipped: {exc}", err=True, fg=typer.colors.YELLOW)
    return features


@app.command()
def demo(
    customers: int = typer.Option(300, min=1, help="Synthetic customers"),
    events: int = typer.Option(1500, min=1, help="Touchpoints to play"),
    rate: float = typer.Option(300.0, min=1, help="Events per second"),
    workdir: Optional[Path] = typer.Option(None, help="Where the store and logs go (default: a new temp dir)"),
    flow: Optional[str] = typer.Option(None, help="Run a reference flow instead: battery-recycling"),
    assessment_delay: float = typer.Option(1.0, min=0, help="With --flow: the assessment scenario's processing time (s)"),
    broker: str = typer.Option("kafka", help="kafka (Apache Kafka in WORKDIR/kafka) or embedded (in memory), "
                                             "unless IDGRAPH_BROKER names one"),
) -> None:
    """Run a local stack with three scenarios and a realistic workload; report propagation."""
    from devstack.demo import run_demo, run_flow_demo

    settings = _settings()
    kind = _broker_kind(broker)
    if flow is None:
        asyncio.run(run_demo(customers=customers, events=events, rate=rate, broker_url=settings.broker, workdir=workdir,
                             broker=kind))
    elif flow == "battery-recycling":
        asyncio.run(run_flow_demo(flows=min(customers, 40), rate=min(rate, 10), assessment_delay_s=assessment_delay,
                                  broker_url=settings.broker, workdir=workdir, broker=kind))
    else:
        raise _fail(f"unknown flow {flow!r}: the reference flow is battery-recycling")


def _broker_kind(name: str) -> "BrokerKind":
    if name == "kafka":
        return "kafka"
    if name == "embedded":
        return "embedded"
    raise _fail(f"unknown broker {name!r}: use kafka (Apache Kafka, durable) or embedded (in memory)")


def _settings(**overrides: object) -> Settings:
    for name in Settings.unknown_variables():
        typer.secho(f"warning: {name} is not a setting idgraph knows; see streams/settings.py", err=True, fg=typer.colors.YELLOW)
    try:
        return Settings.from_env(None, **overrides)
    except SettingsError as exc:
        raise _fail(f"bad configuration: {exc}") from None


@app.command()
def worker(loglevel: str = typer.Option("warning", help="Faust/worker log level")) -> None:
    """Run a stream worker against IDGRAPH_BROKER (see streams/settings.py for every IDGRAPH_* variable)."""
    from streams.admin import BrokerUnreachable, wait_for_broker
    from streams.app import run_worker
    from streams.ports import Listener, PortTaken, require_free

    settings = _settings()
    if settings.broker is None:
        raise _fail("IDGRAPH_BROKER is not set; use 'idgraph up' to start a broker with a worker")
    try:
        require_free([Listener("worker metrics", "0.0.0.0", settings.metrics_port, "IDGRAPH_METRICS_PORT")])
    except PortTaken as exc:
        raise _fail(str(exc)) from None
    try:
        wait_for_broker(settings.bootstrap_servers, settings.broker_wait_s)
    except BrokerUnreachable as exc:
        # Not 2 (a configuration refused): the broker may come back, so a supervisor restarts on this.
        typer.secho(f"error: {exc} (IDGRAPH_BROKER; wait set by IDGRAPH_BROKER_WAIT_S)", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    _refuse_an_unusable_blocking_index(settings)
    run_worker(settings, loglevel=loglevel)


def _refuse_an_unusable_blocking_index(settings: Settings) -> None:
    """The worker's own start check, made before Faust starts, so a refusal is one line."""
    async def check() -> None:
        async with store_from_url(settings.store) as store:
            rules = await start_with_registry(store, rules_or_fail(settings.rules), explicit=settings.rules is not None)
            await start_with_blocking_index(store, rules)
    try:
        asyncio.run(check())
    except BlockingIndexUnusable as exc:
        raise _fail(f"{exc} (IDGRAPH_STORE={settings.store})") from None


@app.command()
def up(loglevel: str = typer.Option("warning", help="Faust/worker log level"),
       api_port: int = typer.Option(8080, envvar="IDGRAPH_API_PORT", help="Profile API port; 0 runs no API"),
       broker: str = typer.Option("kafka", help="kafka: Apache Kafka, topics kept under IDGRAPH_DATA_DIR/kafka; "
                                                "embedded: in memory, lost when it stops (tests)"),
       kafka_port: int = typer.Option(9092, help="Port of the Apache Kafka that --broker kafka starts"),
       workers: int = typer.Option(1, min=1, help="Worker processes in one consumer group on the one store; "
                                                  "each its own metrics port from IDGRAPH_METRICS_PORT on")) -> None:
    """Run everything on this machine: a broker (unless IDGRAPH_BROKER is set), the profile API and the workers."""
    from api.auth import AuthConfigError
    from devstack.broker import BrokerError
    from streams.ports import PortTaken
    from devstack.up import StackError, UpOptions, run_up

    options = UpOptions(broker=_broker_kind(broker), kafka_port=kafka_port, api_port=api_port, loglevel=loglevel,
                        workers=workers)
    try:
        code = run_up(_settings(), options, typer.echo)
    except (PortTaken, BrokerError, StackError, AuthConfigError) as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


def _broker_bootstrap() -> str:
    settings = _settings()
    if settings.broker is None:
        raise _fail("IDGRAPH_BROKER is not set: 'idgraph up' prints the broker's address (kafka://127.0.0.1:9092)")
    return settings.bootstrap_servers


def _input_lines(source: str) -> list[tuple[int, bytes]]:
    if source == "-":
        numbered = enumerate(sys.stdin.buffer, start=1)
        return [(n, line.rstrip(b"\r\n")) for n, line in numbered if line.strip()]
    path = Path(source)
    if not path.is_file():
        raise _fail(f"no such file: {source}")
    return list(read_lines(path))


@app.command()
def send(
    source: str = typer.Argument(..., metavar="FILE|-", help="Touchpoint events, one JSON per line; - reads stdin"),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Send the valid lines even if some are refused"),
    rules: Optional[Path] = RulesOption,
) -> None:
    """Produce touchpoints to IDGRAPH_BROKER, each keyed by its customer's strongest identifier.

    Every line is checked first: if any is refused, each is named by its line number and
    nothing is sent (unless --skip-invalid)."""
    from cli.console import check_lines, send_records

    bootstrap, topic = _broker_bootstrap(), _settings().topics.touchpoints
    checked = check_lines(_input_lines(source), rules_or_fail(rules))
    for number, reason in checked.refused:
        typer.secho(f"line {number} refused: {reason}", err=True, fg=typer.colors.YELLOW)
    if checked.refused and not skip_invalid:
        raise _fail(f"{len(checked.refused)} of {len(checked.refused) + len(checked.records)} lines refused; "
                    "nothing sent (--skip-invalid sends the valid ones)")
    with _progress(f"sending to {topic}", len(checked.records)) as sent:
        try:
            seconds = asyncio.run(send_records(bootstrap, topic, checked.records, sent))
        except Exception as exc:  # noqa: BLE001 - the broker's error, said plainly
            raise _fail(f"sending to {bootstrap} failed: {exc!r}") from None
    rate = len(checked.records) / seconds if seconds else 0.0
    skipped = f"; {len(checked.refused)} refused lines skipped" if checked.refused else ""
    typer.echo(f"sent {len(checked.records)} events to {topic} in {seconds:.1f} s ({rate:,.0f} events/s){skipped}")


@app.command()
def tail(
    scenario: str = typer.Argument(..., help="Scenario whose deltas to print (as registered: idgraph subscriptions)"),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the topic's first record, not its end"),
    count: Optional[int] = typer.Option(None, min=1, help="Stop after this many deltas"),
) -> None:
    """Print a scenario's deltas as they arrive, one JSON per line (Ctrl-C stops)."""
    from sinks.subscriptions import parse_subscriptions
    from cli.console import follow

    documents = run_on_store(lambda store: store.subscription_documents())
    found = [s for s in parse_subscriptions(list(documents.values()), "store") if s.name == scenario]
    if not found:
        raise _fail(f"no subscription named {scenario!r}; registered: {', '.join(sorted(documents)) or 'none'}")
    topics = _settings().topics
    if found[0].sink.type == "webhook":
        raise _fail(f"{scenario!r} is delivered by webhook ({_sink_text(found[0], topics)}), not to a topic")
    topic, bootstrap = topics.scoped(found[0].topic), _broker_bootstrap()

    async def run() -> None:
        printed = 0
        ready = lambda: typer.secho(f"following {topic} on {bootstrap} (Ctrl-C stops)", err=True)  # noqa: E731
        async for value in follow(bootstrap, topic, from_beginning=from_beginning, on_ready=ready):
            typer.echo(value.decode("utf-8", "replace"))
            printed += 1
            if count is not None and printed >= count:
                return

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except LookupError as exc:
        raise _fail(str(exc)) from None


@app.command()
def subscribe(
    file: Optional[Path] = typer.Option(None, "--file", "-f", exists=True, dir_okay=False, help="Subscriptions YAML"),
    name: Optional[str] = typer.Option(None, help="Scenario name (instead of --file)"),
    field: list[str] = typer.Option([], "--field", help="traits.<name>, identifiers.<type>, or traits.* (repeatable)"),
    kind: list[str] = typer.Option([], "--kind", help="Delta kind to receive (repeatable; default all)"),
    webhook: Optional[str] = typer.Option(None, help="Deliver by HTTP POST to this URL instead of a Kafka topic"),
) -> None:
    """Register (or replace) scenario subscriptions; running workers pick them up within a second."""
    from sinks.subscriptions import SubscriptionError, load_subscriptions, parse_subscriptions

    try:
        if file is not None:
            subscriptions = load_subscriptions(file)
        elif name:
            declared: dict[str, Any] = {"name": name, "fields": field}
            if kind:
                declared["kinds"] = kind
            if webhook:
                declared["sink"] = {"type": "webhook", "url": webhook}
            subscriptions = parse_subscriptions([declared], "command line")
        else:
            raise _fail("give --file, or --name with at least one --field")
    except SubscriptionError as exc:
        raise _fail(str(exc)) from None

    async def save(store: GraphStore) -> None:
        for subscription in subscriptions:
            await store.put_subscription(subscription.name, subscription.model_dump(mode="json"))

    run_on_store(save)
    topics = _settings().topics
    for subscription in subscriptions:
        typer.echo(f"subscribed {subscription.name}: {', '.join(subscription.fields)} -> {_sink_text(subscription, topics)}")


def _sink_text(subscription: Subscription, topics: TopicNames) -> str:
    """Where a subscription's deltas go: its webhook, or its topic in this process's namespace."""
    sink = subscription.sink
    return f"webhook {sink.url}" if sink.type == "webhook" else f"topic {topics.scoped(subscription.topic)}"


@app.command()
def subscriptions() -> None:
    """List the registered scenario subscriptions."""
    from sinks.subscriptions import parse_subscriptions

    documents = run_on_store(lambda store: store.subscription_documents())
    if not documents:
        typer.echo("no subscriptions")
    topics = _settings().topics
    for subscription in parse_subscriptions(list(documents.values()), "store"):
        kinds = ", ".join(subscription.kinds)
        typer.echo(f"{subscription.name:<24} {_sink_text(subscription, topics):<40} kinds: {kinds}; fields: {', '.join(subscription.fields)}")


@app.command()
def unsubscribe(name: str = typer.Argument(..., help="Scenario whose subscription to remove")) -> None:
    """Remove a scenario's subscription."""
    if not run_on_store(lambda store: store.delete_subscription(name)):
        raise _fail(f"no subscription named {name!r}")
    typer.echo(f"unsubscribed {name}")


@app.command()
def growth(
    limit: int = typer.Option(10, min=1, help="How many of the largest profiles to list"),
    threshold: Optional[int] = typer.Option(None, min=1, help="Records past which a profile counts as overgrown "
                                            "(IDGRAPH_PROFILE_GROWTH_THRESHOLD if unset)"),
) -> None:
    """List the largest live profiles by records: chained links show as profiles far past any customer's size."""
    over = threshold or _settings().profile_growth_threshold
    found = run_on_store(lambda store: store.profile_growth(over, limit))
    typer.echo(f"{found.over_threshold} profiles hold more than {found.threshold} records")
    for profile_id, records in found.largest:
        typer.echo(f"{records:>8}  {profile_id}")


@app.command()
def reindex(rules: Optional[Path] = RulesOption) -> None:
    """Rebuild the blocking index from every record's stored features under the rules given (the
    workers' IDGRAPH_RULES): after blocking rules were added, or a store from before rule ids.
    Records stored before the store counted term frequencies are counted too, once."""
    running = rules_or_fail(rules)

    async def rebuild(store: GraphStore) -> tuple[str, int, int]:
        mismatch = await check_blocking_index(store, running)
        before = "it already matched them" if mismatch is None else mismatch.describe()
        return before, await store.reindex_blocking(running), await store.backfill_term_counts(running)

    before, records, counted = run_on_store(rebuild)
    typer.echo(f"reindexed {records} records under {len(running.blocking)} blocking rules (before: {before}); "
               f"term frequencies counted for {counted} records that counted none")


app.command("api")(api_command)
app.command("api-token")(token_command)
app.add_typer(review_app, name="review")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(rules_app, name="rules")


@app.command("scenario")
def scenario(
    action: str = typer.Argument(..., help="run"),
    spec: str = typer.Argument(..., help="module:object naming a Scenario or a list of them"),
    loglevel: str = typer.Option("warning", help="Faust log level"),
) -> None:
    """Run scenarios in a process of their own, talking to idgraph only through Kafka topics."""
    from streams.scenario import load_scenarios
    from streams.scenario_app import run_scenarios

    if action != "run":
        raise _fail(f"unknown action {action!r}: use 'idgraph scenario run module:object'")
    settings = _settings()
    if settings.broker is None:
        raise _fail("IDGRAPH_BROKER is not set: scenarios talk to idgraph through its broker")
    try:
        scenarios = load_scenarios(spec)
    except (ImportError, AttributeError, ValueError) as exc:
        raise _fail(f"cannot load scenarios from {spec!r}: {exc}") from None
    run_scenarios(settings, scenarios, loglevel=loglevel)


def main() -> None:  # pragma: no cover - console script shim
    app(prog_name="idgraph")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
