"""Frontier client throughput: items/s at concurrency 1, 8 and 32 against an endpoint with fixed latency.

    python bench/frontier.py                      # fake OpenAI server, 200 ms per request
    python bench/frontier.py --latency 0.5 --concurrency 1 8 32 64
    python bench/frontier.py --faults 0.3         # every item priced once, charged once, retries bounded
    python bench/frontier.py --faults 1.0         # every item gives up after max_retries, nothing cached

The endpoint is tests/fake_openai.py in its own process (so the server's work does not share
this process's GIL), on 127.0.0.1, answering every chat completion after ``--latency``
seconds. The client is the production ``FrontierClient`` with the cache, the cost log and
tracing off, so every item is a real HTTP round trip. Sequential pricing would manage
1 / latency items/s; the target is a >= 20x speed-up at concurrency 32.

``--faults RATE`` measures promises instead of speed: the same server (in this process, to read its
bill) fails RATE of the chat calls (429 with Retry-After, 500, an answer slower than the client's timeout
that is billed all the same, a truncated body), and the client runs with its cache and cost log on.
It prints what was priced, what the server billed against what the cost log accounts, the attempts per
item against ``max_retries``, and a second pass, which must be served from the cache.
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


def run_faults(rate: float, n_items: int, max_retries: int) -> None:
    import tempfile

    sys.path.insert(0, str(REPO / "tests"))
    from fake_openai import FakeOpenAI, rule_answer
    from pricer.core.parsing import find_price
    from pricer.frontier.cache import CostLog, ResponseCache
    from pricer.frontier.client import FrontierClient
    from pricer.frontier.config import FrontierConfig
    from pricer.frontier.messages import build_messages

    texts = [f"Fault item {i}: stainless steel kettle, 1.7 l, model K{i:04d}" for i in range(n_items)]
    kinds = {"429": 0.4, "500": 0.4, "slow": 0.1, "malformed": 0.1}
    with tempfile.TemporaryDirectory() as scratch, FakeOpenAI(
            api_key="bench-key", failure_rate=rate, fault_kinds=kinds, slow_s=0.6, seed=11) as server:
        config = FrontierConfig(
            name="bench", model="gpt-fake", base_url=server.base_url, api_key_env="PRICER_BENCH_KEY",
            max_concurrency=16, timeout_s=0.3, max_retries=max_retries, backoff_initial_s=0.01,
            backoff_max_s=0.1, cache_dir=Path(scratch) / "cache", cost_log=Path(scratch) / "cost.jsonl",
            trace=False, usd_per_1m_input=0.15, usd_per_1m_output=0.60)

        def client() -> FrontierClient:
            return FrontierClient(config, cache=ResponseCache(config.cache_dir), cost_log=CostLog(config.cost_log))

        started = time.perf_counter()
        first = client()
        results = first.complete_many([build_messages(text) for text in texts])
        seconds = time.perf_counter() - started
        bill = server.stats()
        lines = [line for line in config.cost_log.read_text().splitlines() if line] if config.cost_log.exists() else []
        import json

        logged = [json.loads(line) for line in lines]
        server.reset_counters()
        second = client()
        again = second.complete_many([build_messages(text) for text in texts])
        second_requests = server.total_requests
        cached = sum(1 for _ in Path(config.cache_dir).rglob("*.json"))

    wanted = [find_price(rule_answer(build_messages(text), "gpt-fake")) for text in texts]
    answered = [result for result in results if result.error is None]
    attempts = [result.attempts for result in results]
    gave_up = sum(result.error is not None for result in results)
    print(f"\nfrontier client under {rate:.0%} injected faults: {n_items} items, max_retries {max_retries}, "
          f"{seconds:.1f} s\n")
    print("| figure | value |\n| --- | ---: |")
    rows = [
        ("faults injected (429 / 500 / slow / malformed)",
         " / ".join(str(bill["faults"].get(kind, 0)) for kind in kinds)),
        ("items answered", len(answered)),
        ("answers equal to the server's (priced correctly)",
         sum(result.price == want for result, want in zip(results, wanted, strict=True) if result.error is None)),
        ("items that gave up", gave_up),
        ("attempts per item: max (bound: max_retries + 1)", f"{max(attempts)} ({max_retries + 1})"),
        ("attempts in all", sum(attempts)),
        ("calls the server billed", bill["charged_calls"]),
        ("replays the server did not bill", bill["uncharged_replays"]),
        ("lines in the cost log (distinct responses)", len(logged)),
        ("billed, never seen by the client", bill["charged_calls"] - len(logged)),
        ("input tokens billed / logged", f"{bill['charged_input_tokens']} / {sum(e['input_tokens'] for e in logged)}"),
        ("cost in the log (USD)", f"{sum(e['cost_usd'] for e in logged):.6f}"),
        ("cache entries", cached),
        ("second pass: requests sent / items from the cache",
         f"{second_requests} / {sum(result.cached for result in again)}"),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=float, default=None, help="fail this fraction of calls instead of "
                        "timing (0.3: a bad day; 1.0: an endpoint that is down)")
    parser.add_argument("--items", type=int, default=200, help="items priced under --faults")
    parser.add_argument("--max-retries", type=int, default=6, help="the client's max_retries under --faults")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=4.0, help="rough duration of each level")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    os.environ["PRICER_BENCH_KEY"] = "bench-key"
    if args.faults is not None:
        run_faults(args.faults, args.items, args.max_retries)
        return

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
