"""Fit and predict throughput of every traditional model, with its test metrics.

    python bench/baselines.py                 # the demo catalog (6,000 products)
    python bench/baselines.py --n 20000
    python bench/baselines.py --data ../shared/data/amazon_us.jsonl.gz

Same split, same harness and same model classes as `pricer baselines`; nothing is logged.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from pricer.data.config import CurateConfig, DemoSourceConfig, JsonlSourceConfig
from pricer.data.curate import curate
from pricer.stages.harness import evaluate_model
from pricer.stages.params import BaselinesConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6000, help="demo products to generate")
    parser.add_argument("--data", type=Path, help="a .jsonl(.gz) file instead of the demo catalog")
    args = parser.parse_args()
    source = JsonlSourceConfig(paths=[args.data]) if args.data else DemoSourceConfig(n_items=args.n)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        curate(CurateConfig(source=source), Path(tmp))
        splits = {s: pd.read_parquet(Path(tmp) / "data" / "curated" / f"{s}.parquet") for s in ("train", "val", "test")}
        for spec in BaselinesConfig().models:
            model = spec.build()
            started = time.perf_counter()
            model.fit(splits["train"], splits["val"])
            fit_s = time.perf_counter() - started
            started = time.perf_counter()
            model.predict(splits["test"])
            predict_s = time.perf_counter() - started
            metrics = evaluate_model(spec.label, model.predict, splits["test"], reports_dir=Path(tmp) / "reports").metrics
            rows.append({"model": spec.label, "fit_s": fit_s, "fit_items_per_s": len(splits["train"]) / fit_s,
                         "predict_items_per_s": len(splits["test"]) / predict_s,
                         **{k: metrics[k] for k in ("mae", "rmsle", "hit_rate", "r2")}})
            print(f"{spec.label}: done", file=sys.stderr)
    print(f"{len(splits['train']):,} train / {len(splits['test']):,} test items")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:,.3f}"))


if __name__ == "__main__":
    main()
