"""Embedding speed and agreement: a plain SentenceTransformer call, Pricer's MiniLM path
(pricer.models.embeddings.Embedder) and the static kind (pricer.models.static_embeddings.StaticEmbedder).

    PYTHONPATH=src HF_HUB_OFFLINE=1 python bench/embed.py                 # 2,000 real product texts
    PYTHONPATH=src HF_HUB_OFFLINE=1 python bench/embed.py --max-tokens 128 # try other settings
    PYTHONPATH=src HF_HUB_OFFLINE=1 python bench/embed.py --no-static     # the MiniLM paths only

Texts are real products (title + features + description, cut to 1,200 characters). Printed:

* plain texts/s: ``SentenceTransformer(path).encode(texts, batch_size=64)``, default settings;
* Pricer texts/s with a cold cache (a fresh temporary cache), and with a warm one (a new
  Embedder on the filled cache: no model is loaded);
* the speed ratio, in wall-clock time and in process CPU time (the CPU ratio is the steadier
  one when other processes share the cores; the load average is printed before and after);
* recall@10: for ``--queries`` texts, the share of their 10 nearest neighbours among the
  ``--n`` texts that the two embeddings agree on;
* a downstream check: the log-price error of a 10-nearest-neighbour price estimate under each;
* the static kind (distilled once into ``--static-dir``, then loaded): texts/s with a cold cache,
  and a table of all three paths side by side (speed over plain, recall@10 against plain MiniLM,
  the 10-NN price error in log and in dollars).

Model loading (and the one-off distillation) and a short warm-up are outside the timings. Exit
status 2 when the data file is missing; with ``--check``, 1 when a target is missed (MiniLM path:
ratio >= 5 and recall@10 >= 0.9; static: >= 50x plain, 10-NN price error within 5% of plain's).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "amazon_us.jsonl.gz"
MAX_CHARS = 1200
TARGET_RATIO = 5.0
TARGET_RECALL = 0.9
STATIC_TARGET_RATIO = 50.0
STATIC_TARGET_ERROR = 1.05  # the static 10-NN price error at most 5% above plain MiniLM's


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(item) for item in value if item is not None]
    return [str(value)]


def product_text(record: dict[str, Any], max_chars: int = MAX_CHARS) -> str:
    parts = _strings(record.get("title")) + _strings(record.get("features")) + _strings(record.get("description"))
    return " ".join(" ".join(parts).split())[:max_chars]


def load_products(path: Path, n: int) -> tuple[list[str], np.ndarray]:
    """The first ``n`` records with some text: their texts and prices (NaN when unparseable)."""
    try:
        from pricer.data.records import parse_price
    except ImportError:  # pragma: no cover - run without PYTHONPATH=src
        def parse_price(value: Any) -> float | None:
            try:
                return float(str(value).replace("$", "").replace(",", ""))
            except ValueError:
                return None
    texts: list[str] = []
    prices: list[float] = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or not (text := product_text(record)):
                continue
            price = parse_price(record.get("price"))
            texts.append(text)
            prices.append(price if isinstance(price, float) and price > 0 else math.nan)
            if len(texts) >= n:
                break
    return texts, np.array(prices)


def neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = vectors[queries] @ vectors.T
    scores[np.arange(len(queries)), queries] = -np.inf  # a text is not its own neighbour
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall_at_k(reference: np.ndarray, candidate: np.ndarray, queries: np.ndarray, k: int) -> float:
    ref, cand = neighbours(reference, queries, k), neighbours(candidate, queries, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref, cand)]))


def knn_errors(vectors: np.ndarray, prices: np.ndarray, k: int) -> tuple[float, float]:
    """Mean |log error| and mean absolute dollar error of the k-NN estimate (mean of the neighbours' log prices)."""
    known = np.isfinite(prices)
    if known.sum() <= k:
        return math.nan, math.nan
    logs = np.log1p(prices[known])
    nn = neighbours(vectors[known], np.arange(int(known.sum())), k)
    estimate = logs[nn].mean(axis=1)
    return float(np.mean(np.abs(estimate - logs))), float(np.mean(np.abs(np.expm1(estimate) - prices[known])))


def knn_log_price_error(vectors: np.ndarray, prices: np.ndarray, k: int) -> float:
    return knn_errors(vectors, prices, k)[0]


def print_table(rows: list[dict[str, Any]], k: int) -> None:
    header = f"| path | texts/s | x plain | recall@{k} vs plain | {k}-NN mean abs log error | {k}-NN MAE $ |"
    print(header)
    print("|" + "---|" * header.count(" |"))
    for row in rows:
        print(f"| {row['path']} | {row['texts_per_s']:,.1f} | {row['ratio']:.1f}x | {row['recall']:.3f} | "
              f"{row['log_error']:.4f} | {row['mae']:.2f} |")


def timed(function, *args, **kwargs) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="products .jsonl(.gz) (default: %(default)s)")
    parser.add_argument("--n", type=int, default=2000, help="texts to embed (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=200, help="query texts for recall@k (default: %(default)s)")
    parser.add_argument("--k", type=int, default=10, help="neighbours compared (default: %(default)s)")
    parser.add_argument("--plain-batch-size", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, help="Pricer setting (default: the Embedder's)")
    parser.add_argument("--batch-size", type=int, help="Pricer setting (default: the Embedder's)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="Pricer setting (default: auto)")
    parser.add_argument("--threads", type=int, help="torch threads for BOTH paths (default: torch's, one per core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-static", dest="static", action="store_false", help="skip the static kind")
    parser.add_argument("--pca-dims", type=int, default=256, help="static: PCA dims (default: %(default)s)")
    parser.add_argument("--static-dir", type=Path, default=REPO / ".cache" / "embeddings" / "static",
                        help="where the distilled static model is kept (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the speed/recall target is missed")
    args = parser.parse_args()

    if not args.data.is_file():
        print(f"error: data file {args.data} not found (real product data lives in ../shared/data; "
              f"pass --data PATH)", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    from sentence_transformers import SentenceTransformer

    from pricer.models.embeddings import Embedder, default_model_path

    if args.threads:
        torch.set_num_threads(args.threads)

    texts, prices = load_products(args.data, args.n + 16)
    warmup, texts, prices = texts[args.n:], texts[:args.n], prices[:args.n]
    n = len(texts)
    if n < 2 * args.k:
        print(f"error: only {n} texts with content in {args.data}", file=sys.stderr)
        return 2
    warmup = warmup or texts[:16]
    chars = np.array([len(t) for t in texts])
    print(f"{n:,} product texts from {args.data} (characters: mean {chars.mean():.0f}, max {chars.max()}); "
          f"torch threads {torch.get_num_threads()}, load average {load_average()}")

    # --- plain: the model's defaults ---------------------------------------------------------
    plain_model = SentenceTransformer(str(default_model_path()), local_files_only=True)
    plain_model.encode(warmup, batch_size=args.plain_batch_size)
    plain, plain_wall, plain_cpu = timed(plain_model.encode, texts, batch_size=args.plain_batch_size,
                                         normalize_embeddings=True)
    plain = np.asarray(plain, dtype=np.float32)
    print(f"plain   max_seq_length={plain_model.max_seq_length} batch={args.plain_batch_size} fp32: "
          f"{n / plain_wall:8.1f} texts/s  ({plain_wall:.1f} s wall, {plain_cpu:.1f} s CPU)")
    del plain_model

    # --- Pricer: cold cache, then warm cache --------------------------------------------------
    settings = {name: value for name, value in (("max_tokens", args.max_tokens), ("batch_size", args.batch_size),
                                                ("precision", args.precision)) if value is not None}
    with tempfile.TemporaryDirectory(prefix="pricer-embed-bench-") as cache_dir:
        embedder = Embedder(cache_dir=Path(cache_dir), **settings)
        embedder.compute(warmup)  # loads the model; not cached, not timed
        ours, ours_wall, ours_cpu = timed(embedder.embed, texts)
        computed = embedder.last_misses
        print(f"Pricer  {embedder.model_id} batch={embedder.batch_size}: {n / ours_wall:8.1f} texts/s cold cache "
              f"({ours_wall:.1f} s wall, {ours_cpu:.1f} s CPU, {computed:,} computed)")

        fresh = Embedder(cache_dir=Path(cache_dir), **settings)
        warm, warm_wall, _ = timed(fresh.embed, texts)
        assert np.array_equal(warm, ours), "the warm cache returned different vectors"
        print(f"Pricer  warm cache (new Embedder, model loaded: {fresh.model_loaded}, computed {fresh.last_misses}): "
              f"{n / warm_wall:8.0f} texts/s")

    ratio, cpu_ratio = plain_wall / ours_wall, plain_cpu / ours_cpu
    rng = np.random.default_rng(args.seed)
    queries = rng.choice(n, size=min(args.queries, n), replace=False)
    recall = recall_at_k(plain, ours, queries, args.k)
    norms = np.linalg.norm(ours, axis=1)
    err_plain, err_ours = knn_log_price_error(plain, prices, args.k), knn_log_price_error(ours, prices, args.k)

    print(f"speed ratio (Pricer cold / plain): {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU time "
          f"(target >= {TARGET_RATIO:g}x)")
    print(f"recall@{args.k} agreement over {len(queries)} queries: {recall:.3f} (target >= {TARGET_RECALL})")
    print(f"{args.k}-NN price estimate, mean |log error| over {int(np.isfinite(prices).sum()):,} priced texts: "
          f"plain {err_plain:.4f}, Pricer {err_ours:.4f}")
    print(f"Pricer vectors: dtype {ours.dtype}, shape {ours.shape}, |norm - 1| <= {np.abs(norms - 1).max():.1e}; "
          f"load average {load_average()}")
    met = ratio >= TARGET_RATIO and recall >= TARGET_RECALL
    print("target met" if met else "target NOT met")
    summary: dict[str, Any] = {}
    if args.static:
        static_met, summary = bench_static(args, texts, warmup, prices, plain, ours, queries,
                                           (plain_wall, ours_wall, plain_cpu))
        met = met and static_met
    print(json.dumps({**summary, "n": n, "plain_texts_per_s": round(n / plain_wall, 2), "pricer_texts_per_s": round(n / ours_wall, 2),
                      "warm_texts_per_s": round(n / warm_wall, 1), "ratio_wall": round(ratio, 3),
                      "ratio_cpu": round(cpu_ratio, 3), f"recall_at_{args.k}": round(recall, 4),
                      "knn_log_error_plain": round(err_plain, 4), "knn_log_error_pricer": round(err_ours, 4),
                      "model_id": embedder.model_id, "batch_size": embedder.batch_size}))
    return 1 if args.check and not met else 0


def bench_static(args: argparse.Namespace, texts: list[str], warmup: list[str], prices: np.ndarray,
                 plain: np.ndarray, ours: np.ndarray, queries: np.ndarray,
                 timings: tuple[float, float, float]) -> tuple[bool, dict[str, Any]]:
    """The static kind against the two MiniLM paths: one table, and whether its targets are met."""
    from pricer.models.static_embeddings import StaticEmbedder

    plain_wall, ours_wall, plain_cpu = timings
    n, k = len(texts), args.k
    with tempfile.TemporaryDirectory(prefix="pricer-static-bench-") as cache_dir:
        static = StaticEmbedder(cache_dir=Path(cache_dir), pca_dims=args.pca_dims, artifact_dir=args.static_dir)
        _, load_wall, _ = timed(lambda: static.model)
        how = "distilled and saved" if static.distilled else "loaded the kept model"
        print(f"static  {static.model_id}: {how} in {load_wall:.2f} s ({static.artifact_path})")
        static.compute(warmup)
        vectors, static_wall, static_cpu = timed(static.embed, texts)
        # Best of three: one pass takes well under a second, so one busy moment on a shared core skews it.
        compute_wall = min(timed(static.compute, texts)[1] for _ in range(3))
    print(f"static  cold cache: {n / static_wall:,.0f} texts/s ({static_wall:.2f} s wall, {static_cpu:.2f} s CPU); "
          f"compute alone: {n / compute_wall:,.0f} texts/s; CPU-time ratio over plain {plain_cpu / static_cpu:.0f}x")
    rows = []
    for path, vecs, wall in (("plain sentence-transformers", plain, plain_wall),
                             ("Pricer MiniLM (cold cache)", ours, ours_wall),
                             (f"static model2vec pca={args.pca_dims} (cold cache)", vectors, static_wall)):
        log_error, mae = knn_errors(vecs, prices, k)
        rows.append({"path": path, "texts_per_s": n / wall, "ratio": plain_wall / wall,
                     "recall": recall_at_k(plain, vecs, queries, k), "log_error": log_error, "mae": mae})
    print_table(rows, k)
    static_row, plain_row = rows[2], rows[0]
    met = (static_row["ratio"] >= STATIC_TARGET_RATIO
           and static_row["log_error"] <= STATIC_TARGET_ERROR * plain_row["log_error"]
           and static_row["mae"] <= STATIC_TARGET_ERROR * plain_row["mae"])
    print(f"static target (>= {STATIC_TARGET_RATIO:g}x plain, {k}-NN error within 5% of plain's): "
          + ("met" if met else "NOT met"))
    return met, {"static_texts_per_s": round(static_row["texts_per_s"], 1),
                 "static_ratio_wall": round(static_row["ratio"], 1),
                 f"static_recall_at_{k}": round(static_row["recall"], 4),
                 "knn_log_error_static": round(static_row["log_error"], 4),
                 "knn_mae_plain": round(plain_row["mae"], 2), "knn_mae_static": round(static_row["mae"], 2)}


if __name__ == "__main__":
    sys.exit(main())
