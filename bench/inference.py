"""Pricing throughput of an open model: batched (left-padded) generation vs one prompt at a time.

    python bench/inference.py                      # gemma-3-270m (the GGUF package), 32 test items
    python bench/inference.py --model tiny         # the tiny random model: a quick run
    python bench/inference.py --adapter models/specialist/tiny/adapter --n 64
    python bench/inference.py --n 32 --batch-size 32 --threads 2 --json

Prompts are the curated test split's (data/curated/test.parquet, or a 600-item demo catalog
curated into a temporary folder when there is none). Both modes run the same predictor
(greedy, the same max_new_tokens, early stop once the number is complete); the batched mode
runs the prompts in left-padded batches sorted by length. Also timed: the probability-
weighted estimator in batches. The target is batched >= 5x one-at-a-time items/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def test_prompts(n: int, data_dir: Path | None) -> list[str]:
    import pandas as pd

    path = (data_dir or Path("data/curated")) / "test.parquet"
    if not path.exists():
        from pricer.data.config import CurateConfig, DemoSourceConfig
        from pricer.data.curate import curate

        tmp = Path(tempfile.mkdtemp(prefix="bench-inference-"))
        curate(CurateConfig(source=DemoSourceConfig(n_items=max(600, n * 12))), root=tmp)
        path = tmp / "data" / "curated" / "test.parquet"
    prompts = pd.read_parquet(path)["prompt"].tolist()
    while len(prompts) < n:
        prompts += prompts
    return prompts[:n]


def load(model: str, adapter: Path | None):
    from pricer.llm.config import GemmaGGUFModelConfig, HFModelConfig, TinyModelConfig
    from pricer.llm.loading import load_adapter_model, load_base_model, load_base_tokenizer

    if adapter is not None:
        return load_adapter_model(adapter)
    spec = {"tiny": TinyModelConfig(), "gemma-3-270m": GemmaGGUFModelConfig()}.get(model)
    if spec is None:
        spec = HFModelConfig(name_or_path=model)
    tokenizer = load_base_tokenizer(spec)
    return load_base_model(spec, tokenizer=tokenizer).eval(), tokenizer  # fp32 on a CPU, bf16 on CUDA


def timed(function, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m", help="gemma-3-270m, tiny, or a local HF folder")
    parser.add_argument("--adapter", type=Path, default=None, help="an adapter folder written by the stage")
    parser.add_argument("--n", type=int, default=32, help="test items to price")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--no-expected", action="store_true", help="skip the probability-weighted estimator")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args()

    import torch

    from pricer.llm.inference import ExpectedPricePredictor, GenerationPredictor

    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = test_prompts(args.n, args.data_dir)
    load_seconds, (model, tokenizer) = timed(load, args.model, args.adapter)
    predictor = GenerationPredictor(model, tokenizer, batch_size=args.batch_size,
                                    max_new_tokens=args.max_new_tokens)
    predictor.generate(prompts[:2])  # warm-up: first-call allocations and kernel selection

    single_seconds, single = timed(lambda: [predictor.generate([prompt])[0] for prompt in prompts])
    batched_seconds, batched = timed(predictor.generate, prompts)
    figures = {
        "model": str(args.adapter or args.model),
        "device": "cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads",
        "n": len(prompts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "load_s": round(load_seconds, 1),
        "one_at_a_time_items_per_s": round(len(prompts) / single_seconds, 3),
        "batched_items_per_s": round(len(prompts) / batched_seconds, 3),
        "speedup": round(single_seconds / batched_seconds, 2),
        "same_answers": sum(a == b for a, b in zip(single, batched, strict=True)) / len(prompts),
    }
    if not args.no_expected:
        estimator = ExpectedPricePredictor(model, tokenizer, batch_size=args.batch_size)
        expected_seconds, _ = timed(estimator, prompts)
        figures["expected_batched_items_per_s"] = round(len(prompts) / expected_seconds, 3)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{figures['model']} on {figures['device']}: {figures['n']} items, batch {args.batch_size}, "
          f"max_new_tokens {args.max_new_tokens} (load {figures['load_s']} s)")
    print(f"  one at a time : {figures['one_at_a_time_items_per_s']:8.3f} items/s")
    print(f"  batched       : {figures['batched_items_per_s']:8.3f} items/s   "
          f"-> {figures['speedup']:.2f}x (target >= 5x)")
    if "expected_batched_items_per_s" in figures:
        print(f"  expected-price estimator, batched: {figures['expected_batched_items_per_s']:.3f} items/s")
    print(f"  identical answers batched vs one at a time: {figures['same_answers']:.0%}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
