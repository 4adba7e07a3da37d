"""Deal agents: wall time of one planner cycle over N deals, and each agent's latency.

    python bench/deals.py                          # 50 deals, demo regressor, fake frontier at 200 ms
    python bench/deals.py --deals 50 --latency 0.5 --cycles 2
    python bench/deals.py --specialist configs/finetune/tiny.yaml    # + a tiny LoRA specialist on CPU
    python bench/deals.py --tracking-uri sqlite:///mlruns/mlflow.db --data-dir data/curated   # real champions

Everything is served on 127.0.0.1: the deal feeds and pages (tests/deal_feeds.py, pages built
from curated test items, every other one priced at half its real price), the webhook receiver,
and (unless ``--no-frontier``) the fake OpenAI endpoint (tests/fake_openai.py) answering after
``--latency`` seconds. By default a fresh MLflow store in a temp folder holds a TF-IDF ridge
regressor trained on the demo catalog as ``pricer-regressor``; with ``--tracking-uri`` the
champions already registered there are used (e.g. the specialist adapter on CPU). The fake
frontier endpoint is registered as ``pricer-frontier`` with its own retrieval index of the training
split (``--k`` neighbours per prompt), built before timing starts.

The first cycle pays the models' load time; ``--cycles 2`` adds a second cycle over fresh deals
(models loaded, vector store synced) to show the steady state.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The test digest the stand-in frontier champion is registered under: how a rerun knows its own.
BENCH_DIGEST = "bench"
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests"), str(REPO)]


def demo_data(root: Path, n_items: int) -> Path:
    from pricer.data.config import CurateConfig, DemoSourceConfig
    from pricer.data.curate import curate

    curate(CurateConfig(source=DemoSourceConfig(n_items=n_items)), root=root)
    return root / "data" / "curated"


def pages_for(items, start: int, n: int, prefix: str) -> list:
    from deal_feeds import DealPage

    pages = []
    for offset in range(n):
        item = items.iloc[(start + offset) % len(items)]
        title, _, description = str(item["text"]).partition("\n")
        factor = 0.5 if offset % 2 == 0 else 1.1
        pages.append(
            DealPage(
                f"{prefix}-{offset}",
                title,
                description,
                round(float(item["price"]) * factor, 2),
                feed=("electronics", "home", "tools")[offset % 3],
            )
        )
    return pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument(
        "--latency", type=float, default=0.2, help="seconds the fake frontier takes per request"
    )
    parser.add_argument("--no-frontier", action="store_true")
    parser.add_argument("--k", type=int, default=5, help="neighbours in the frontier prompt")
    parser.add_argument("--embedding", choices=("minilm", "static"), default="minilm",
                        help="the embedding kind of the frontier's index and the vector store")
    parser.add_argument(
        "--specialist",
        type=Path,
        default=None,
        help="also fine-tune and register this finetune config first, e.g. configs/finetune/tiny.yaml",
    )
    parser.add_argument("--specialist-steps", type=int, default=16)
    parser.add_argument("--tracking-uri", default=None, help="use the champions registered in this store")
    parser.add_argument("--data-dir", type=Path, default=None, help="curated data (default: a demo catalog)")
    parser.add_argument("--demo-items", type=int, default=1500)
    parser.add_argument("--vectorstore", type=Path, default=None,
                        help="a vector store folder to use (synced first: unchanged data is not re-embedded)")
    parser.add_argument("--no-trace", action="store_true", help="run the cycles without MLflow tracing")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import pandas as pd

    from deal_feeds import (
        DealFeedServer,
        WebhookReceiver,
        fit_text_regressor,
        make_champion,
        register_champion,
    )
    from pricer.agents.config import AgentsConfig
    from pricer.agents.planner import Planner

    embedding = {"kind": args.embedding}
    tmp = Path(tempfile.mkdtemp(prefix="bench-deals-"))
    store_dir = args.vectorstore or tmp / "vectorstore"
    data_dir = args.data_dir or demo_data(tmp, args.demo_items)
    train = pd.read_parquet(data_dir / "train.parquet")
    items = pd.concat([pd.read_parquet(data_dir / "test.parquet"), pd.read_parquet(data_dir / "val.parquet")])

    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri or f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    (tmp / "mlruns").mkdir(exist_ok=True)
    if args.tracking_uri is None:
        started = time.perf_counter()
        register_champion(fit_text_regressor(train), "pricer-regressor", mae=0.0)
        print(
            f"registered a TF-IDF ridge regressor in {time.perf_counter() - started:.1f} s", file=sys.stderr
        )

    if args.specialist is not None:
        import yaml

        from pricer.stages.specialist import run_finetune

        raw = yaml.safe_load(args.specialist.read_text())
        raw.setdefault("training", {})["max_steps"] = args.specialist_steps
        raw["training"].update({"save_steps": args.specialist_steps, "eval_steps": args.specialist_steps})
        raw["max_test_items"] = 40
        (tmp / "configs").mkdir(exist_ok=True)
        (tmp / "configs" / "specialist.yaml").write_text(yaml.safe_dump(raw))
        started = time.perf_counter()
        run_finetune(Path("configs/specialist.yaml"), data_dir=data_dir, root=tmp)
        print(
            f"fine-tuned and registered the specialist in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )

    fake = None
    store_note = "no frontier agent"
    if not args.no_frontier:
        import mlflow

        from fake_openai import FakeOpenAI
        from pricer.agents.vectorstore import ProductStore
        from pricer.core.config import validate
        from pricer.frontier.config import FrontierConfig
        from pricer.models.embeddings import embedder_for
        from pricer.models.neighbours import NeighbourIndex
        from pricer.serving.frontier import log_frontier_model
        from pricer.tracking.registry import champion_card
        from pricer.tracking.runs import configure

        fake = FakeOpenAI(latency_s=args.latency).start()
        endpoint = validate(FrontierConfig, {
            "name": "fake", "model": "gpt-fake", "base_url": fake.base_url, "api_key_env": None, "cache_dir": None,
            "cost_log": None, "max_concurrency": 16, "timeout_s": 30, "usd_per_1m_input": 0.15,
            "usd_per_1m_output": 0.6, "k_neighbours": args.k, "embedding": embedding}, "bench")
        started = time.perf_counter()
        embedder = embedder_for(endpoint.embedding)
        index = NeighbourIndex.build(train, embedder) if args.k else None
        with mlflow.start_run(experiment_id=configure(), run_name="bench-frontier") as run:
            info = log_frontier_model(endpoint, index)
        # An earlier bench run's stand-in (its fake endpoint gone) is replaced; any other champion is kept.
        if (card := champion_card("pricer-frontier")) is not None and card["test_digest"] == BENCH_DIGEST:
            mlflow.MlflowClient().delete_registered_model("pricer-frontier")
        make_champion(info.model_uri, run.info.run_id, "pricer-frontier", 0.0, BENCH_DIGEST)
        ProductStore(store_dir, embedder=embedder).sync(data_dir / "train.parquet")
        store_note = (f"frontier with {args.k} neighbours from its own index; index and vector store of "
                      f"{len(train)} products built in {time.perf_counter() - started:.1f} s")
    print(store_note, file=sys.stderr)

    results = []
    with DealFeedServer(pages_for(items, 0, args.deals, "c0")) as server, WebhookReceiver() as receiver:
        config = AgentsConfig.model_validate(
            {
                "feeds": server.feeds_config(broken=False, missing=False),
                "scanner": {"timeout_s": 10, "concurrency": 8, "max_deals_per_feed": args.deals},
                "vectorstore": {"path": str(store_dir), "source": str(data_dir / "train.parquet"),
                                "embedding": embedding},
                "planner": {"discount_threshold": 0.35},
                "memory": {"path": str(tmp / "memory.sqlite")},
                "messenger": {"kind": "webhook", "url": receiver.url, "url_env": None},
                "tracking": {"experiment": "bench-deals", "trace": not args.no_trace},
            }
        )
        planner = Planner(config)
        for cycle in range(args.cycles):
            if cycle:
                server.add(pages_for(items, cycle * args.deals, args.deals, f"c{cycle}"))
            started = time.perf_counter()
            report = planner.run_cycle()
            wall = time.perf_counter() - started
            results.append(
                {
                    "cycle": cycle + 1,
                    "deals": report.deals,
                    "wall_s": round(wall, 3),
                    "steps_s": {k: round(v, 3) for k, v in report.timings.items()},
                    "agents": {
                        name: {
                            "latency_s": a["latency_s"],
                            "ms_per_deal": round(1000 * a["latency_s"] / max(1, report.deals), 2),
                            "answered": a["answered"],
                            "tokens": a["input_tokens"] + a["output_tokens"],
                            "cost_usd": round(a["cost_usd"], 6),
                        }
                        for name, a in report.agents.items()
                    },
                    "skipped_agents": report.skipped_agents,
                    "opportunities": report.new_opportunities,
                    "notified": report.delivery.get("sent", 0),
                }
            )
        planner.close()
    if fake is not None:
        fake.stop()

    summary = {
        "deals_per_cycle": args.deals,
        "traced": not args.no_trace,
        "frontier_latency_s": None if args.no_frontier else args.latency,
        "store": store_note,
        "cycles": results,
    }
    for row in results:
        print(
            f"cycle {row['cycle']}: {row['deals']} deals in {row['wall_s']:.2f} s "
            f"(scan {row['steps_s'].get('scan', 0):.2f}, estimate {row['steps_s'].get('estimate', 0):.2f}, "
            f"memory {row['steps_s'].get('memory', 0):.3f}, "
            f"notify {row['steps_s'].get('messenger', 0):.2f}); "
            f"{row['opportunities']} opportunities, {row['notified']} notified"
        )
        for name, agent in row["agents"].items():
            print(
                f"  agent {name:<10} {agent['latency_s']:.3f} s ({agent['ms_per_deal']:.1f} ms/deal), "
                f"{agent['answered']} answered, {agent['tokens']} tokens, ${agent['cost_usd']:.5f}"
            )
        if row["skipped_agents"]:
            print(f"  skipped: {', '.join(row['skipped_agents'])}")
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
