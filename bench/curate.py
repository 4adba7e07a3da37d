"""Curation throughput and memory: items/s for N demo records, end to end including tokenization.

    python bench/curate.py            # 100,000 demo records
    python bench/curate.py 20000 --data ../shared/data/amazon_us.jsonl.gz

Each size runs in a fresh process so that peak RSS is that run's own; memory flat in N
shows as the same peak for N/4 and N.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(n: int, data: Path | None) -> None:
    from pricer.data.config import CurateConfig, DemoSourceConfig, JsonlSourceConfig
    from pricer.data.curate import curate
    from pricer.data.tokenizer import load_tokenizer

    source = JsonlSourceConfig(paths=[data], limit=n) if data else DemoSourceConfig(n_items=n)
    with tempfile.TemporaryDirectory() as tmp:
        config = CurateConfig(source=source, output_dir=Path(tmp) / "curated",
                              quarantine_path=Path(tmp) / "q.jsonl", report_path=Path(tmp) / "r.json")
        load_tokenizer(config.tokenizer)  # trained/cached once; not part of the per-record cost
        start = time.perf_counter()
        report = curate(config)
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"read": report["read"], "kept": report["kept"], "seconds": round(seconds, 2),
                      "records_per_s": round(report["read"] / seconds), "peak_rss_mb": round(peak_mb)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, default=100_000, help="records to curate")
    parser.add_argument("--data", type=Path, help="a .jsonl(.gz) file instead of the demo catalog")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        one_run(args.n, args.data)
        return
    print(f"{'records':>9} {'kept':>9} {'seconds':>8} {'records/s':>10} {'peak RSS MB':>12}")
    for n in (max(args.n // 4, 1), args.n):
        command = [sys.executable, __file__, str(n), "--single", *(["--data", str(args.data)] if args.data else [])]
        row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(f"{row['read']:>9,} {row['kept']:>9,} {row['seconds']:>8} {row['records_per_s']:>10,} "
              f"{row['peak_rss_mb']:>12,}")


if __name__ == "__main__":
    main()
