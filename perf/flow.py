"""The battery-recycling flow end to end, many customers at once, on the embedded stack.

Each flow: site intake -> assessment (with its configured processing delay) -> quoting ->
grade and quote on the profile under the sovereignty policy -> a suggestion to sales for
high-value customers. Reports end-to-end and per-hop times, with scenario processing
separated from pipeline overhead.

    python -m perf.flow                                   # 200 flows at 20 flows/s, 1 s assessment
    python -m perf.flow --flows 50 --rate 10 --assessment-delay 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from devstack.flows.battery_recycling.driver import FLOW_BUDGET_MS, HOPS, flow_env, make_customers, run_flows, summarise
from devstack.stack import LocalStack


async def measure(flows: int, rate: float, assessment_delay_s: float, workdir: Path) -> dict[str, Any]:
    customers = make_customers(flows)
    async with LocalStack(workdir, [], worker_env=flow_env(assessment_delay_s)) as stack:
        done = await run_flows(stack.bootstrap, customers, rate, timeout_s=60 + flows / rate)
    return summarise(done)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="flows started per second")
    parser.add_argument("--assessment-delay", type=float, default=1.0, help="seconds the assessment scenario takes")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idgraph-flow-") as tmp:
        result = asyncio.run(measure(args.flows, args.rate, args.assessment_delay, Path(tmp)))
    print(f"{result['completed']}/{result['flows']} flows completed, {result['within_budget']} within "
          f"{FLOW_BUDGET_MS / 1000:.0f} s; end to end p50 {result['e2e_p50_ms']:.0f} ms, p99 {result['e2e_p99_ms']:.0f} ms "
          f"(scenario processing p50 {result['processing_p50_ms']:.0f} ms); pipeline overhead p99 "
          f"{result['overhead_p99_ms']:.0f} ms; {result['sales_suggestions']} sales suggestions")
    for hop in HOPS:
        print(f"  {hop:<30} p99 {result[f'hop_p99_ms[{hop}]']:.0f} ms")
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
