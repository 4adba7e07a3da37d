"""Deal cycles under chaos: faulty feeds and webhook, SIGKILLs, two cycles at once; is anything lost or sent twice?

    python bench/chaos.py                       # 50 cycles, seed 0
    python bench/chaos.py --cycles 200 --seed 7 --kill-rate 0.5 --out reports/chaos.json

Every cycle is a child process running one planner cycle (``deal_feeds.cycle_main``) against a feed
server and a webhook receiver on 127.0.0.1, over one memory file. Each cycle, new deals appear in the
feeds, every other one at 40% of its list price. Injected faults:

- feeds and deal pages: HTTP 500, no answer past the scanner's timeout, a truncated body, garbage bytes;
- the webhook: HTTP 500, an answer only after the notifier's timeout (the receiver still acts on it: the
  sender retries, so that key arrives twice), slow answers within the timeout;
- a SIGKILL of the cycle at a random moment of some cycles, and on others right after the receiver's
  200 for its first notification (before the cycle can mark it sent);
- some cycles start together with a second one over the same memory.

A final drain (faults off) runs one more cycle and delivers what is left.
Figures: opportunities surfaced, notifications received (raw, and unique idempotency keys), duplicates
(the same key acknowledged twice) by cause, duplicates left at a receiver that honours the key (a deal
processed twice: two keys for one deal URL), lost (surfaced, never received), and cycle times.

The estimator is ``deal_feeds.ListPriceAgent`` (each item's list price, no model registry): this measures
delivery, not pricing, and keeps a cycle cheap (about 3.5 s of a child's life is importing the stack).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

HOOK_FAULTS = {"500": 0.12, "timeout": 0.05, "slow": 0.10}
FEED_FAULTS = ("500", "hang", "truncated", "garbage")


class Child:
    """One cycle process: its ``ready`` line, its report, and whether (and when) it was killed."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self.started = time.perf_counter()
        with log.open("w") as stderr:
            self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr,
                                            text=True)
        self.ready = threading.Event()
        self.ready_at: float | None = None
        self.report: dict | None = None
        self.killed: str | None = None  # "random" or "after-200"
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.strip() == "ready":
                self.ready_at = time.perf_counter()
                self.ready.set()
            elif line.startswith("{"):
                self.report = json.loads(line)
        self.ready.set()  # it exited: nobody waits for a ready line that will not come

    def kill(self, why: str) -> None:
        if self.process.poll() is None and self.killed is None:
            self.killed = why
            os.kill(self.process.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill("hung")
            code = self.process.wait(30)
        self.reader.join(10)
        return code


def pages_for(start: int, n: int) -> tuple[list, dict[str, float], set[str]]:
    from deal_feeds import DealPage, sku_tag

    pages, prices, good = [], {}, set()
    for sku in range(start, start + n):
        prices[str(sku)] = round(20.0 + (sku * 37) % 400, 2)
        deal = sku % 2 == 0
        pages.append(DealPage(f"sku-{sku}", f"Gadget {sku_tag(sku)} series {sku % 7}", f"A gadget, model {sku}.",
                              round(prices[str(sku)] * (0.4 if deal else 0.97), 2),
                              feed=("electronics", "home", "tools")[sku % 3]))
        if deal:
            good.add(f"sku-{sku}")
    return pages, prices, good


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--deals", type=int, default=6, help="new deals in the feeds per cycle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kill-rate", type=float, default=0.25, help="cycles killed at a random moment")
    parser.add_argument("--kill-after-200-rate", type=float, default=0.1,
                        help="cycles killed right after the receiver's 200 for their first notification")
    parser.add_argument("--concurrent-rate", type=float, default=0.2, help="cycles started with a second one")
    parser.add_argument("--feed-fault-rate", type=float, default=0.15, help="feed and page requests that fail")
    parser.add_argument("--hook-faults", type=float, default=1.0,
                        help=f"scale of the webhook's fault rates {HOOK_FAULTS}")
    parser.add_argument("--trace", action="store_true", help="trace the cycles in MLflow (slower)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import yaml

    from deal_feeds import FaultyFeedServer, WebhookReceiver
    from pricer.agents.config import AgentsConfig
    from pricer.agents.deals import deal_key
    from pricer.agents.memory import Memory
    from pricer.agents.messenger import Messenger
    from pricer.tracking.runs import configure

    rng = random.Random(args.seed)
    chaos = threading.Lock()  # the servers' threads draw from rng too
    tmp = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    (tmp / "logs").mkdir()
    store = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    (tmp / "mlruns").mkdir()
    started = time.perf_counter()
    configure(store, "bench-chaos")  # created once here, not raced by the first two children
    print(f"MLflow store ready in {time.perf_counter() - started:.1f} s; work dir {tmp}", file=sys.stderr)

    faults_on = threading.Event()
    faults_on.set()
    hook_faults: Counter[str] = Counter()

    def feed_fault(path: str) -> str | None:
        with chaos:
            if not faults_on.is_set() or rng.random() >= args.feed_fault_rate:
                return None
            return rng.choice(FEED_FAULTS)

    def hook_decision(record: dict) -> tuple[int, float]:
        with chaos:
            draw = rng.random()
            if faults_on.is_set():
                for kind, rate in HOOK_FAULTS.items():
                    if draw < rate * args.hook_faults:
                        hook_faults[kind] += 1
                        record["fault"] = kind
                        return {"500": (500, 0.0), "timeout": (200, 1.6), "slow": (200, rng.uniform(0.2, 0.7))}[kind]
                    draw -= rate * args.hook_faults
            return 200, 0.0

    prices: dict[str, float] = {}
    good: set[str] = set()
    children: list[Child] = []
    cycle_s: list[float] = []
    walls: list[float] = []
    pairs = 0
    with FaultyFeedServer(hang_s=1.6) as feeds, WebhookReceiver() as receiver:
        feeds.fault = feed_fault
        receiver.decide = hook_decision
        config = AgentsConfig.model_validate({
            "feeds": [{"name": name, "url": feeds.feed_url(name)} for name in ("electronics", "home", "tools")],
            "scanner": {"timeout_s": 1.0, "concurrency": 8, "max_deals_per_feed": 100_000},
            "agents": {"specialist": None, "frontier": None, "regressor": None},
            "planner": {"discount_threshold": 0.35},
            "memory": {"path": str(tmp / "memory.sqlite")},
            "messenger": {"kind": "webhook", "url": receiver.url, "url_env": None, "timeout_s": 1.0,
                          "max_retries": 2, "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "max_retry_after_s": 1.0},
            "vectorstore": {"path": str(tmp / "vectorstore")},
            "tracking": {"experiment": "bench-chaos", "trace": args.trace, "tracking_uri": store},
        })
        config_path, prices_path = tmp / "agents.yaml", tmp / "prices.json"
        config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        env = {**os.environ, "PRICER_TEST_LOG_LEVEL": "WARNING",
               "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
        env.pop("MLFLOW_TRACKING_URI", None)
        command = [sys.executable, "-c", "import deal_feeds; deal_feeds.cycle_main()", str(config_path), str(prices_path)]

        def spawn() -> Child:
            child = Child(command, env, tmp, tmp / "logs" / f"cycle-{len(children):03d}.log")
            children.append(child)
            return child

        for cycle in range(args.cycles):
            pages, more, deals = pages_for(cycle * args.deals, args.deals)
            prices.update(more)
            prices_path.write_text(json.dumps(prices))
            feeds.add(pages)
            good |= deals
            pair = rng.random() < args.concurrent_rate
            pairs += pair
            running = [spawn() for _ in range(2 if pair else 1)]
            # The moment a kill lands: anywhere in most cycles (a feed that hangs makes a few much longer).
            typical = percentile(cycle_s, 75) if cycle_s else 1.5
            plans = []
            for child in running:
                draw = rng.random()
                if draw < args.kill_rate:
                    plans.append((child, "random", rng.uniform(0.0, typical)))
                elif draw < args.kill_rate + args.kill_after_200_rate and not pair:
                    plans.append((child, "after-200", None))
            for child, why, _ in plans:
                if why == "after-200":
                    def kill_on_answer(record: dict, child: Child = child) -> None:
                        receiver.after_answer = None
                        child.kill("after-200")  # the connection is still open: no mark_sent before this

                    receiver.after_answer = kill_on_answer
            for child, why, delay in plans:
                if why == "random":
                    child.ready.wait(120)
                    if child.ready_at is not None:
                        timer = threading.Timer(max(0.0, child.ready_at + delay - time.perf_counter()), child.kill,
                                                ("random",))
                        timer.daemon = True
                        timer.start()
            for child in running:
                child.wait(120)
                if child.killed is None and child.report is not None:
                    cycle_s.append(float(child.report["seconds"]))
                    walls.append(time.perf_counter() - child.started)
            receiver.after_answer = None
            done = sum(1 for c in children if c.report is not None)
            print(f"cycle {cycle + 1}/{args.cycles}: {len(running)} process(es), "
                  f"{sum(1 for c in running if c.killed)} killed; {done} cycles completed so far", file=sys.stderr)

        # The drain: no faults, one more cycle, then deliver what is left (the claims of killed cycles are
        # taken over at once; a lease only outlives a cycle that hung, and the deadline covers one).
        faults_on.clear()
        memory = Memory(tmp / "memory.sqlite")
        messenger = Messenger(config.messenger)
        deadline = time.monotonic() + messenger.lease_s + 30
        final = spawn()
        final.wait(120)
        if final.report is None:
            print(f"the drain's cycle failed (exit {final.process.returncode}): see {final.log}", file=sys.stderr)
        while memory.stats()["pending"] and time.monotonic() < deadline:
            messenger.deliver(memory)
            time.sleep(0.2)
        messenger.close()
        expected = {deal_key(feeds.page_url(slug)) for slug in good}
        feed_faults = dict(feeds.faults)
        delivered = list(receiver.delivered)
        received = len(receiver.received)

    surfaced = set(memory.opportunities(limit=1_000_000)["key"])
    stats = memory.stats()
    keys = Counter(item["headers"].get("idempotency-key", "") for item in delivered)
    unique = set(keys)
    causes: Counter[str] = Counter()
    first_fault: dict[str, str | None] = {}
    for item in delivered:  # a duplicate's cause: how the first acknowledgement of that key went
        key = item["headers"].get("idempotency-key", "")
        if key in first_fault:
            causes["answered after the sender's timeout" if first_fault[key] == "timeout"
                   else "sender killed after the 200"] += 1
        else:
            first_fault[key] = item.get("fault")
    # What a receiver that honours the key still processes twice: one deal arriving under two keys.
    keys_per_url: dict[str, set[str]] = {}
    for item in delivered:
        keys_per_url.setdefault(item["body"]["url"], set()).add(item["headers"].get("idempotency-key", ""))
    crashed = [c for c in children if c.killed is None and c.process.returncode != 0]
    summary = {
        "cycles": args.cycles,
        "seed": args.seed,
        "processes": len(children),
        "killed": dict(Counter(c.killed for c in children if c.killed)),
        "concurrent_pairs": pairs,
        "crashed": len(crashed),
        "faults": {"feeds": feed_faults, "webhook": dict(hook_faults)},
        "deals_good": len(expected),
        "opportunities_surfaced": len(surfaced),
        "surfaced_not_good": len(surfaced - expected),
        "good_never_surfaced": len(expected - surfaced),
        "webhook_requests": received,
        "notifications_received_raw": len(delivered),
        "notifications_received_unique_keys": len(unique),
        "duplicates_raw": len(delivered) - len(unique),
        "duplicates_by_cause": dict(causes),
        "duplicates_at_a_deduping_receiver": sum(1 for k in keys_per_url.values() if len(k) > 1),
        "lost": len(surfaced - unique),
        "outbox": {k: stats[k] for k in ("pending", "sent", "expired")},
        "cycle_s": {"p50": round(percentile(cycle_s, 50), 3), "p99": round(percentile(cycle_s, 99), 3),
                    "n": len(cycle_s)},
        "process_wall_s": {"p50": round(percentile(walls, 50), 3), "p99": round(percentile(walls, 99), 3)},
        "bench_s": round(time.perf_counter() - started, 1),
    }
    for child in crashed[:3]:
        print(f"--- {child.log} (exit {child.process.returncode}):\n{child.log.read_text()[-2000:]}", file=sys.stderr)
    print(f"{summary['cycles']} cycles in {summary['processes']} processes ({summary['concurrent_pairs']} started in "
          f"pairs); killed {summary['killed']}; crashed {summary['crashed']}")
    print(f"faults injected: feeds {feed_faults}, webhook {dict(hook_faults)}")
    print(f"opportunities surfaced: {summary['opportunities_surfaced']} (of {summary['deals_good']} good deals; "
          f"{summary['good_never_surfaced']} never surfaced, {summary['surfaced_not_good']} surfaced wrongly)")
    print(f"notifications received: {summary['notifications_received_raw']} raw 2xx, "
          f"{summary['notifications_received_unique_keys']} unique keys ({received} webhook requests)")
    print(f"duplicates: {summary['duplicates_raw']} raw {dict(causes)}; "
          f"{summary['duplicates_at_a_deduping_receiver']} at a receiver that honours the key")
    print(f"lost: {summary['lost']}; outbox after the drain {summary['outbox']}")
    print(f"cycle time p50 {summary['cycle_s']['p50']:.2f} s, p99 {summary['cycle_s']['p99']:.2f} s "
          f"({summary['cycle_s']['n']} completed cycles); process wall p50 {summary['process_wall_s']['p50']:.2f} s, "
          f"p99 {summary['process_wall_s']['p99']:.2f} s; bench {summary['bench_s']} s")
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
