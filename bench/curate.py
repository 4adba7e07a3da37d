"""Curation throughput and memory: items/s and peak RSS for N demo records, end to end with tokenization.

    python bench/curate.py                        # 10,000 and 100,000 demo records, 10% malformed
    python bench/curate.py 20000 200000 --malformed 0.03
    python bench/curate.py 2000 13000 --data ../shared/data/amazon_us.jsonl.gz

Each size runs in a fresh process so that peak RSS is that run's own. Memory flat in N shows as
the largest size's peak within 10% of the smallest's; the last line prints that ratio, for the main
process and for the largest worker process (``curate.workers``). Every run also checks kept + rejected
against the count the source itself kept of the records it handed out. CPU s is the CPU time of the
run and its workers together: on a machine shared with other jobs it moves less than the wall time.
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

FLAT_TOLERANCE = 0.10


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")  # not Linux: the growth column is then unknown


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_run(n: int, malformed: float, data: Path | None) -> None:
    from pricer.data.config import CurateConfig, DemoSourceConfig, JsonlSourceConfig
    from pricer.data.curate import curate
    from pricer.data.sources import read_source
    from pricer.data.tokenizer import load_tokenizer

    source = JsonlSourceConfig(paths=[data], limit=n) if data else DemoSourceConfig(n_items=n,
                                                                                     malformed_fraction=malformed)
    with tempfile.TemporaryDirectory() as tmp:
        config = CurateConfig(source=source, output_dir=Path(tmp) / "curated",
                              quarantine_path=Path(tmp) / "q.jsonl", report_path=Path(tmp) / "r.json")
        load_tokenizer(config.tokenizer)  # trained/cached once; not part of the per-record cost
        stream = read_source(config.source)
        before_mb = _rss_mb()
        start, cpu_start = time.perf_counter(), _cpu_s()
        report = curate(config, records=stream)
        seconds, cpu_s = time.perf_counter() - start, _cpu_s() - cpu_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"source_read": stream.read, "kept": report["kept"], "rejected": report["rejected"],
                      "seconds": round(seconds, 2), "records_per_s": round(stream.read / seconds),
                      "cpu_s": round(cpu_s, 2), "peak_rss_mb": round(peak_mb, 1),
                      "growth_mb": round(peak_mb - before_mb, 1), "worker_rss_mb": round(worker_mb, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000], help="records to curate, per run")
    parser.add_argument("--malformed", type=float, default=0.10, help="the demo catalog's malformed share")
    parser.add_argument("--data", type=Path, help="a .jsonl(.gz) file instead of the demo catalog")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        one_run(args.sizes[0], args.malformed, args.data)
        return
    print(f"{'records':>9} {'kept':>9} {'rejected':>9} {'k+r=read':>9} {'seconds':>8} {'records/s':>10} "
          f"{'CPU s':>7} {'peak RSS MB':>12} {'growth MB':>10} {'worker RSS MB':>14}")
    rows = []
    for n in args.sizes:
        command = [sys.executable, __file__, str(n), "--single", "--malformed", str(args.malformed),
                   *(["--data", str(args.data)] if args.data else [])]
        row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        balanced = row["kept"] + row["rejected"] == row["source_read"]
        rows.append((row, balanced))
        print(f"{row['source_read']:>9,} {row['kept']:>9,} {row['rejected']:>9,} {'yes' if balanced else 'NO':>9} "
              f"{row['seconds']:>8} {row['records_per_s']:>10,} {row['cpu_s']:>7} {row['peak_rss_mb']:>12,} "
              f"{row['growth_mb']:>10,} {row['worker_rss_mb']:>14,}")
    if len(rows) > 1:
        for key, label in (("peak_rss_mb", "peak RSS"), ("worker_rss_mb", "worker peak RSS")):
            if not rows[0][0][key]:
                continue  # no workers: curation ran in the one process
            ratio = rows[-1][0][key] / rows[0][0][key]
            verdict = "flat" if ratio <= 1 + FLAT_TOLERANCE else f"NOT flat (over {FLAT_TOLERANCE:.0%})"
            print(f"{label} {rows[-1][0]['source_read']:,} / {rows[0][0]['source_read']:,} records: {ratio:.3f} "
                  f"({verdict})")
    if not all(balanced for _, balanced in rows):
        sys.exit("kept + rejected differs from the source's own count")


if __name__ == "__main__":
    main()
