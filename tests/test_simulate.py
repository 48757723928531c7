"""The load simulation drives a namespaced worker with lazy synthetic traffic and measures it as it grows."""

from __future__ import annotations

import sqlite3
import types

from devstack.simulate import Sample, simulate, stretch_cost, workload
from devstack.stack import LocalStack
from identity.topics import TopicNames

NAMESPACE = TopicNames("sim.")
SUBSCRIPTION = {"name": "simulate", "fields": ["traits.*", "identifiers.*"]}
#: Every word a correctly spelt Latin or pinyin name in the workload is made of.
SPELT = {"James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth", "William",
         "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen", "Smith", "Johnson",
         "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Hernandez", "Lopez",
         "Gonzalez", "Wilson", "Anderson", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Zhang", "Wang", "Li", "Liu",
         "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Wei", "Fang", "Na", "Min", "Jing", "Qiang", "Lei", "Jun",
         "Yong", "Yan", "Jie", "Tao", "Ming"}


def test_the_workload_is_made_lazily():
    assert isinstance(workload(1_000_000), types.GeneratorType)


def test_the_workload_has_chinese_and_latin_names_and_typos():
    names = {str(e["traits"]["name"]) for e in workload(2000)}  # type: ignore[index]
    assert any(not n.isascii() for n in names) and any(n.isascii() for n in names)
    assert any(not set(n.split()) <= SPELT for n in names if n.isascii())


async def test_a_simulation_resolves_every_event_through_the_namespace_and_reports_as_the_store_grows(tmp_path):
    samples = []
    env = {"IDGRAPH_TOPIC_NAMESPACE": NAMESPACE.namespace}
    async with LocalStack(tmp_path, [SUBSCRIPTION], worker_env=env) as stack:
        assert stack.worker is not None
        result = await simulate(stack.bootstrap, NAMESPACE, [NAMESPACE.scoped("scenario.simulate")], stack.worker.pid,
                                events=400, rate=200, store_path=stack.worker.store_path, every_s=0.5,
                                cost_mark=100, on_sample=samples.append)
        with sqlite3.connect(stack.worker.store_path) as db:
            (decided,) = db.execute("SELECT COUNT(*) FROM decisions").fetchone()
    assert decided == 400 and samples[-1].sent == 400 and result.deltas > 0
    assert result.p50_ms is not None and result.p99_ms is not None and result.p50_ms <= result.p99_ms
    assert result.cost_ms_at_mark is not None and result.cost_ms_at_end is not None and result.rss_mb_max > 0
    assert result.cost_ms_last_tenth is not None and result.cost_ms_last_tenth > 0
    assert min(s.resolved_per_s for s in samples) >= 0 and max(s.resolved_per_s for s in samples) > 0
    assert len(samples) >= 2 and samples[0].store_mb is not None and result.store_mb is not None
    assert result.store_mb > samples[0].store_mb


def sample(resolved: int, cpu_s: float) -> Sample:
    return Sample(0.0, resolved, resolved, 0.0, 0.0, None, None, 0.0, None, cpu_s)


def test_the_cost_of_a_stretch_leaves_out_what_came_before_it():
    # A cheap burst of 100 events first (0.01 s each), then 0.04 s each.
    samples = [sample(0, 0.0), sample(100, 1.0), sample(150, 3.0), sample(200, 5.0), sample(400, 13.0)]
    assert stretch_cost(samples, 100, 200) == 40.0
    assert stretch_cost(samples, 360, 400) == 40.0
    assert stretch_cost(samples, 500, 600) is None

