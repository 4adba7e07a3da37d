"""How time and memory grow with the catalog: curate -> baselines -> vector store -> one deal cycle, at N products.

    python bench/scale.py                                   # N = 10k, 50k, 100k and 400k (hours on 2 cores)
    python bench/scale.py 10000 50000                       # a quicker look
    python bench/scale.py 100000 400000 --stages curate vectorstore

The catalog: its first 13,385 products are the real US Amazon ones (``../shared/data/amazon_us.jsonl.gz``,
so N = 10k is real products alone); the rest come from the demo generator (seeded; its 3% malformed records,
duplicates and re-listings included), written once as one JSONL file under ``--workdir`` and read with a
``limit`` of N. Each size gets its own workspace (params.yaml, MLflow store, embedding cache), and each
stage runs in a fresh process, so its peak RSS is its own (``workers MB``: the largest of its child
processes, e.g. curation's pool):

* **curate**: the real stage (``run_curate``), items = records read; the tokenizer is built before timing.
* **baselines**: the real stage (``run_baselines``) on the default families in the *scale profile* below,
  items = training items. Its per-model fit times go to ``<workdir>/n<N>/reports/baselines.json``.
* **vectorstore**: a Chroma store of the training split built from nothing (no embedding cache), then
  ``--queries`` single-text neighbour queries (k = 5) of test items, one at a time: ``queries/s``.
* **deals**: one planner cycle over 20 deals (``bench/deals.py``) on the champion the baselines registered,
  the fake frontier (200 ms a request) retrieving from the same store.

The scale profile, which each model run records in its params (``model.*``): every embedding consumer
reads ``kind: static`` (MiniLM took ~4 min for 13k texts here: ~2 hours for 400k, before any model trains);
``embed_svr`` fits on a seeded sample of ``--svr-sample`` items (a kernel SVR's fit grows as N^2 to
N^3); the boosts' exact kNN features search a seeded pool of ``--neighbour-pool`` training items (N x
pool instead of N^2); the boosts' TF-IDF ridge input reads words alone (``--boost-char-features 0``: char
n-grams hold ~1,330 entries per text against ~180 for words, over 3 GB at 300k training items; the README
has both profiles' rows at 50k). Below those sizes the profile is the defaults with static embeddings and
words-only boosts.

The table's ``exp`` is the growth exponent of the wall time in the catalog's size from the size before
(t ~ N^exp); N log N's between those sizes is a little over 1 (printed), and a stage above it by more
than 0.1 is flagged. ``--budget-s`` stops a stage that runs longer and reports it as over budget.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "amazon_us.jsonl.gz"
STAGES = ("curate", "baselines", "vectorstore", "deals")
SIZES = (10_000, 50_000, 100_000, 400_000)
TOLERANCE = 0.1


def write_catalog(path: Path, n: int) -> dict[str, int]:
    """The real products first, then demo records up to ``n`` lines (reused when already that long)."""
    counts_path = path.with_suffix(".counts.json")
    if counts_path.exists() and (counts := json.loads(counts_path.read_text()))["total"] >= n:
        return counts
    from pricer.data.demo import generate_catalog

    real = 0
    with path.open("wb") as out:
        if REAL.exists():
            with gzip.open(REAL, "rb") as handle:
                for line in handle:
                    if real == n:
                        break
                    if line.strip():
                        out.write(line.rstrip(b"\n") + b"\n")
                        real += 1
        for raw in generate_catalog(n - real, seed=7):
            out.write(json.dumps(raw, default=str).encode() + b"\n")
    counts = {"total": n, "real": real, "generated": n - real}
    counts_path.write_text(json.dumps(counts))
    return counts


def scale_models(svr_sample: int, neighbour_pool: int, boost_char_features: int) -> list[dict[str, Any]]:
    """The default baselines, every embedding static, the SVR sampled, the kNN pools capped and the boosts'
    ridge input on ``boost_char_features`` char n-grams."""
    from pricer.models.base import EmbeddingSpec
    from pricer.models.boost import BoostSpec
    from pricer.models.classic import EmbedSVRSpec
    from pricer.models.neighbours import KnnSpec
    from pricer.stages.params import BaselinesConfig

    def profiled(spec: Any) -> dict[str, Any]:
        update: dict[str, Any] = {}
        if isinstance(spec, EmbeddingSpec):
            update["embedding"] = {"kind": "static"}
        if isinstance(spec, EmbedSVRSpec):
            update["max_train_items"] = svr_sample
        if isinstance(spec, BoostSpec | KnnSpec):
            update["neighbour_pool"] = neighbour_pool
        if isinstance(spec, BoostSpec):
            update["char_features"] = boost_char_features
        data = spec.model_dump(mode="json", exclude_defaults=True) | {"kind": spec.kind} | update
        if hasattr(spec, "members"):
            data["members"] = [profiled(member) for member in spec.members]
        return data

    return [profiled(spec) for spec in BaselinesConfig().models]


def workspace(root: Path, n: int, args: argparse.Namespace) -> Path:
    folder = root / f"n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["curate"]["source"] = {"kind": "jsonl", "paths": [str(root / "catalog.jsonl")], "limit": n}
    params["curate"]["accepted_dir"] = None
    params["baselines"]["models"] = scale_models(args.svr_sample, args.neighbour_pool, args.boost_char_features)
    params["tracking"]["experiment"] = f"scale-{n}"
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def _peak_mb() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_maxrss / 1024, children.ru_maxrss / 1024


def run_stage(stage: str, folder: Path, queries: int) -> dict[str, Any]:
    """One stage in this (fresh) process, in the size's workspace: seconds, items and extras."""
    os.chdir(folder)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    (folder / "mlruns").mkdir(exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    extra: dict[str, Any] = {}
    if stage == "curate":
        from pricer.data.tokenizer import load_tokenizer
        from pricer.stages.curate import run_curate
        from pricer.stages.params import load_params

        load_tokenizer(load_params("params.yaml").curate.tokenizer)
        started = time.perf_counter()
        summary = run_curate(Path("params.yaml"))
        seconds, items = time.perf_counter() - started, summary["read"]
        extra = {"kept": summary["kept"], "rejected": summary["rejected"],
                 "balanced": summary["kept"] + summary["rejected"] == summary["read"]}
    elif stage == "baselines":
        from pricer.stages.baselines import run_baselines

        started = time.perf_counter()
        summary = run_baselines(Path("params.yaml"))
        seconds = time.perf_counter() - started
        items = _train_rows(folder)
        extra = {"fit_s": {name: round(m["fit_seconds"], 1) for name, m in summary["models"].items()},
                 "test_mae": {name: round(m["test"]["mae"], 2) for name, m in summary["models"].items()},
                 "registered": (summary["promotion"] or {}).get("decision")}
    elif stage == "vectorstore":
        import pandas as pd

        from pricer.agents.vectorstore import ProductStore
        from pricer.core.embedding import StaticEmbedding
        from pricer.models.embeddings import embedder_for

        store = ProductStore(folder / "data" / "vectorstore", embedder=embedder_for(StaticEmbedding(), cache_dir=None),
                             batch_size=4096)
        started = time.perf_counter()
        report = store.sync(folder / "data" / "curated" / "train.parquet")
        seconds, items = time.perf_counter() - started, report.products
        texts = pd.read_parquet(folder / "data" / "curated" / "test.parquet", columns=["text"])["text"].tolist()
        texts = (texts * (1 + queries // max(1, len(texts))))[:queries]
        store.neighbours(texts[:1], 5)  # the first query opens the index
        started = time.perf_counter()
        for text in texts:
            store.neighbours([text], 5)
        extra = {"queries_per_s": round(len(texts) / (time.perf_counter() - started), 1)}
    elif stage == "deals":
        out = folder / "reports" / "deals.json"
        command = [sys.executable, str(REPO / "bench" / "deals.py"), "--deals", "20", "--embedding", "static",
                   "--tracking-uri", os.environ["MLFLOW_TRACKING_URI"], "--data-dir", str(folder / "data" / "curated"),
                   "--vectorstore", str(folder / "data" / "vectorstore"), "--no-trace", "--out", str(out)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        cycle = json.loads(out.read_text())["cycles"][0]
        seconds, items = cycle["wall_s"], cycle["deals"]
        extra = {"opportunities": cycle["opportunities"], "notified": cycle["notified"]}
    else:
        raise SystemExit(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")
    own_mb, workers_mb = _peak_mb()
    return {"seconds": round(seconds, 2), "items": items, "peak_rss_mb": round(own_mb), "workers_mb": round(workers_mb),
            **extra}


def _train_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(folder / "data" / "curated" / "train.parquet").metadata.num_rows


def run_child(command: list[str], log_path: Path, budget_s: float | None) -> dict[str, Any]:
    """The stage's row; a stage still running after ``budget_s`` is stopped and its row says so, with the
    time it had and its peak RSS until then (no growth exponent is drawn from it)."""
    started = time.perf_counter()
    with log_path.open("w") as log:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            out, _ = child.communicate(timeout=budget_s)
        except subprocess.TimeoutExpired:
            peak_mb = _peak_of(child.pid)
            child.kill()
            child.communicate()
            return {"seconds": round(time.perf_counter() - started, 1), "items": 0, "peak_rss_mb": peak_mb,
                    "workers_mb": 0, "over_budget_s": budget_s}
    if child.returncode:
        sys.stderr.write(log_path.read_text()[-4000:])
        raise SystemExit(f"{command[3]} failed (rc {child.returncode}; its log: {log_path})")
    return json.loads(out.strip().splitlines()[-1])


def _peak_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return 0


def exponent(n1: int, t1: float, n2: int, t2: float) -> float:
    return math.log(max(t2, 1e-9) / max(t1, 1e-9)) / math.log(n2 / n1)


def n_log_n_exponent(n1: int, n2: int) -> float:
    return exponent(n1, n1 * math.log(n1), n2, n2 * math.log(n2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=list(SIZES), help="catalog sizes N")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pricer-scale"),
                        help="catalog and workspaces (kept: a rerun reuses the catalog file)")
    parser.add_argument("--svr-sample", type=int, default=20_000, help="embed_svr's training sample")
    parser.add_argument("--neighbour-pool", type=int, default=10_000, help="the boosts' kNN reference pool")
    parser.add_argument("--boost-char-features", type=int, default=0,
                        help="the char n-gram vocabulary of the boosts' ridge input (0: words only; default 300000)")
    parser.add_argument("--queries", type=int, default=2_000, help="vector store queries timed")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop a stage still running after this many seconds and report it as over budget")
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_stage(args.child[0], Path(args.child[1]), args.queries)))
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.sizes)
    catalog = write_catalog(args.workdir / "catalog.jsonl", sizes[-1])
    print(f"catalog: {catalog['real']:,} real products, {catalog['generated']:,} from the demo generator; "
          f"nproc {os.cpu_count()}, memory {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB; "
          f"svr sample {args.svr_sample:,}, kNN pool {args.neighbour_pool:,}, "
          f"boost char features {args.boost_char_features:,}", flush=True)
    # Every row lands in one results file per profile, so sizes run apart (a long one overnight) print as
    # one table, and a rerun of a size replaces its rows.
    profile = {"svr_sample": args.svr_sample, "neighbour_pool": args.neighbour_pool,
               "boost_char_features": args.boost_char_features, "queries": args.queries}
    results_path = args.workdir / (f"results-svr{args.svr_sample}-pool{args.neighbour_pool}"
                                   f"-chars{args.boost_char_features}.json")
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for n in sizes:
        folder = workspace(args.workdir, n, args)
        for stage in args.stages:
            command = [sys.executable, __file__, "--child", stage, str(folder), "--queries", str(args.queries)]
            log_path = folder / f"{stage}.log"  # the stage's own progress and logs, to follow a long run
            row = {"n": n, "stage": stage, **run_child(command, log_path, args.budget_s), "profile": profile}
            results[f"{n}/{stage}"] = row
            results_path.write_text(json.dumps(results, indent=2))
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"(all rows of this profile: {results_path})")
    print_table(sorted(results.values(), key=lambda row: row["n"]), list(STAGES))


def print_table(rows: list[dict[str, Any]], stages: list[str]) -> None:
    print(f"\n{'stage':<12} {'N':>8} {'items':>8} {'wall s':>9} {'items/s':>9} {'peak MB':>8} {'workers MB':>10} "
          f"{'exp':>5} {'NlogN':>5}  notes")
    for stage in stages:
        previous = None
        for row in (r for r in rows if r["stage"] == stage):
            growth, reference, flag = "", "", ""
            if previous is not None and not row.get("over_budget_s") and not previous.get("over_budget_s"):
                # Against the catalog's size N, not the stage's items: a deal cycle's 20 deals do not grow.
                e = exponent(previous["n"], previous["seconds"], row["n"], row["seconds"])
                ref = n_log_n_exponent(previous["n"], row["n"])
                growth, reference, flag = f"{e:.2f}", f"{ref:.2f}", " FASTER THAN N log N" if e > ref + TOLERANCE else ""
            notes = {key: value for key, value in row.items()
                     if key not in ("n", "stage", "seconds", "items", "peak_rss_mb", "workers_mb", "fit_s", "test_mae",
                                    "profile")}
            print(f"{stage:<12} {row['n']:>8,} {row['items']:>8,} {row['seconds']:>9,.1f} "
                  f"{row['items'] / max(row['seconds'], 1e-9):>9,.0f} {row['peak_rss_mb']:>8,} {row['workers_mb']:>10,} "
                  f"{growth:>5} {reference:>5} {json.dumps(notes) if notes else ''}{flag}")
            previous = row
    for row in (r for r in rows if r["stage"] == "baselines" and "fit_s" in r):
        print(f"baselines at N = {row['n']:,}: fit s {json.dumps(row['fit_s'])}; test MAE {json.dumps(row['test_mae'])}")


if __name__ == "__main__":
    main()
