"""Accuracy on real products: every Pricer model family beside the course's week-6 recipes, same split.

    python bench/accuracy.py                                   # ../shared/data/amazon_us.jsonl.gz
    python bench/accuracy.py --eval ../shared/data/other_retailers.jsonl.gz   # + out of distribution
    python bench/accuracy.py --models text_ridge,stack --references course_bow_lr

Curates the file through the project's own jsonl source and hash split, fits each model on
train (the stack's weights on val), scores it on test with the evaluation harness, and
prints MAE, RMSLE, hit rate, fit seconds, predict items/s and the test MAE when items carry only the
token-budgeted ``text`` (no ``full_text``); last, the ratio of Pricer's best single model and of its
ensemble to the best course reference.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "amazon_us.jsonl.gz"
OURS = ("mean", "features_lr", "tfidf_lr", "embed_lr", "embed_svr", "embed_rf", "xgboost", "text_ridge", "knn",
        "boost", "stack")
REFERENCES = ("course_features_lr", "course_bow_lr", "course_w2v_lr", "course_w2v_svr", "course_w2v_rf")
ENSEMBLES = ("stack",)


def curated_splits(data: Path, workdir: Path) -> dict[str, pd.DataFrame]:
    from pricer.data.config import CurateConfig, JsonlSourceConfig
    from pricer.data.curate import curate

    report = curate(CurateConfig(source=JsonlSourceConfig(paths=[data])), workdir)
    print(f"curated {data.name}: {report['kept']:,} kept of {report['read']:,} "
          f"(splits {report['splits']}), rejected {report['rejected_by_reason']}", file=sys.stderr)
    return {split: pd.read_parquet(workdir / "data" / "curated" / f"{split}.parquet") for split in ("train", "val", "test")}


def score(kind: str, splits: dict[str, pd.DataFrame], extra: pd.DataFrame | None, reports: Path,
          fitted: dict[str, object]) -> dict:
    """Fit ``kind`` on train (val for the stack's weights) and score it on test; the stack blends the
    members this run already fitted, so its fit time is the blend's plus that of any member it had to fit."""
    from pricer.models.specs import model_spec
    from pricer.models.stack import Stack
    from pricer.stages.harness import evaluate_model

    model = model_spec(kind).build()
    if isinstance(model, Stack):
        model = model.reusing(list(fitted.values()))
    started = time.perf_counter()
    model.fit(splits["train"], splits["val"])
    fit_seconds = time.perf_counter() - started
    fitted[kind] = model
    started = time.perf_counter()
    result = evaluate_model(kind, model.predict, splits["test"], reports_dir=reports)
    row = {"model": kind, **{k: result.metrics[k] for k in ("mae", "rmsle", "hit_rate")},
           "fit_s": fit_seconds, "items_per_s": len(splits["test"]) / (time.perf_counter() - started)}
    # A caller may send only the short, token-budgeted ``text`` (no ``full_text``): how much that costs.
    short = splits["test"].drop(columns="full_text")
    row["text_only_mae"] = evaluate_model(f"{kind}-text-only", model.predict, short,
                                          reports_dir=reports).metrics["mae"]
    if extra is not None:
        row["ood_mae"] = evaluate_model(f"{kind}-ood", model.predict, extra, reports_dir=reports).metrics["mae"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="products to curate, train and test on")
    parser.add_argument("--eval", type=Path, help="a second file scored out of distribution (all usable items)")
    parser.add_argument("--models", default=",".join(OURS), help="Pricer model kinds, comma-separated")
    parser.add_argument("--references", default=",".join(REFERENCES), help="course reference kinds")
    args = parser.parse_args()
    for path in filter(None, (args.data, args.eval)):
        if not path.exists():
            sys.exit(f"{path} not found (the real data lives in ../shared/data)")

    from pricer.data.config import CurateConfig
    from pricer.data.curate import clean_file

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        splits = curated_splits(args.data, workdir)
        extra = clean_file(args.eval, CurateConfig())[0] if args.eval else None
        ours = [k for k in args.models.split(",") if k]
        references = [k for k in args.references.split(",") if k]
        fitted: dict[str, object] = {}
        rows = []
        for kind in [*references, *ours]:
            rows.append(score(kind, splits, extra, workdir / "reports", fitted))
            print(f"{kind}: MAE {rows[-1]['mae']:.2f} in {rows[-1]['fit_s']:.0f} s", file=sys.stderr, flush=True)

    table = pd.DataFrame(rows)
    print(f"\n{len(splits['train']):,} train / {len(splits['val']):,} val / {len(splits['test']):,} test items"
          + (f"; out of distribution: {len(extra):,} items of {args.eval.name}" if extra is not None else ""))
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"))
    best_reference = table[table.model.isin(references)].mae.min()
    singles = table[table.model.isin(ours) & ~table.model.isin(ENSEMBLES)]
    ensembles = table[table.model.isin(ENSEMBLES)]
    if len(singles):
        best = singles.loc[singles.mae.idxmin()]
        print(f"\nbest single Pricer model {best.model}: MAE {best.mae:.2f}; "
              f"ratio to best course reference ({best_reference:.2f}): {best.mae / best_reference:.3f}")
    if len(ensembles):
        print(f"ensemble (stack): MAE {ensembles.mae.min():.2f}; ratio: {ensembles.mae.min() / best_reference:.3f}")
    print(f"fit time: Pricer families {table[table.model.isin(ours)].fit_s.sum():,.0f} s, "
          f"course references {table[table.model.isin(references)].fit_s.sum():,.0f} s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB")


if __name__ == "__main__":
    main()
