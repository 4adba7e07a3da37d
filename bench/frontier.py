"""Frontier client throughput: items/s at concurrency 1, 8 and 32 against an endpoint with fixed latency.

    python bench/frontier.py                      # fake OpenAI server, 200 ms per request
    python bench/frontier.py --latency 0.5 --concurrency 1 8 32 64

The endpoint is tests/fake_openai.py in its own process (so the server's work does not share
this process's GIL), on 127.0.0.1, answering every chat completion after ``--latency``
seconds. The client is the production ``FrontierClient`` with the cache, the cost log and
tracing off, so every item is a real HTTP round trip. Sequential pricing would manage
1 / latency items/s; the target is a >= 20x speed-up at concurrency 32.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fake_openai.py"), "--latency", str(latency),
         "--api-key", "bench-key"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ,
             "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])},
    )
    line = process.stdout.readline() if process.stdout else ""
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError("the fake OpenAI server did not start")
    return process, line.split()[1]


def run_level(base_url: str, concurrency: int, n_items: int, round_id: int) -> dict:
    from pricer.frontier.client import FrontierClient
    from pricer.frontier.config import FrontierConfig

    config = FrontierConfig(
        name="bench", model="gpt-fake", base_url=base_url, api_key_env="PRICER_BENCH_KEY",
        max_concurrency=concurrency, timeout_s=30, cache_dir=None, cost_log=None, trace=False,
    )
    client = FrontierClient(config)
    texts = [f"Bench item {round_id}-{concurrency}-{i}: stainless steel kettle, 1.7 l"
             for i in range(n_items)]
    started = time.perf_counter()
    prices = client.price_texts(texts)
    seconds = time.perf_counter() - started
    metrics = client.totals.metrics()
    return {
        "concurrency": concurrency, "items": n_items, "seconds": seconds, "items_per_s": n_items / seconds,
        "p50_latency_s": metrics.get("frontier.latency_p50_s", float("nan")),
        "errors": metrics["frontier.failed_calls"], "priced": sum(price is not None for price in prices),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=4.0, help="rough duration of each level")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    os.environ["PRICER_BENCH_KEY"] = "bench-key"

    process, base_url = start_server(args.latency)
    try:
        run_level(base_url, 4, 8, 0)  # warm-up: imports, first connections
        rows = []
        for level in args.concurrency:
            # Enough items for ~--seconds at the ideal rate, and at least 3 waves at this concurrency.
            n_items = max(3 * level, round(args.seconds * level / args.latency))
            rows.append(run_level(base_url, level, n_items, len(rows) + 1))
    finally:
        process.terminate()
        process.wait(timeout=10)

    base = rows[0]["items_per_s"]
    print(f"\nfrontier client vs fake endpoint at {args.latency * 1000:.0f} ms latency "
          f"(ideal sequential rate {1 / args.latency:.1f} items/s)\n")
    print(f"| concurrency | items | seconds | items/s | speed-up vs {args.concurrency[0]} "
          "| p50 latency (ms) | errors |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['concurrency']} | {row['items']} | {row['seconds']:.2f} | {row['items_per_s']:.1f} "
              f"| {row['items_per_s'] / base:.1f}x | {row['p50_latency_s'] * 1000:.0f} "
              f"| {row['errors']:.0f} |")
    top = rows[-1]
    speedup = top["items_per_s"] / base
    target = ""
    if top["concurrency"] >= 32:
        target = " (target >= 20x at 32: " + ("met)" if speedup >= 20 else "MISSED)")
    print(f"\nspeed-up at concurrency {top['concurrency']}: {speedup:.1f}x{target}")


if __name__ == "__main__":
    main()
