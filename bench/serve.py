"""REST service: requests/s and p50/p99 latency of POST /v1/price at several concurrencies, for single
products and for batches, against a real ``pricer serve`` (uvicorn) process on 127.0.0.1.

    python bench/serve.py                                   # k=5 and k=0 neighbours x concurrency 1, 8, 32 x single, batch of 32
    python bench/serve.py --seconds 5 --concurrency 1 8 --neighbours 0
    python bench/serve.py --repeat-texts                    # the same texts again: embedding cache hits

A fresh MLflow store in a temp folder holds the demo catalog's champions: two TF-IDF ridge regressors as
``pricer-regressor`` and ``pricer-specialist`` and a ``pricer-ensemble`` pinning both (tests/serving.py),
and a Chroma store of ``--store-items`` training products, so each quote prices with two models, combines
them and cites ``--neighbours`` training products (one MiniLM embedding per product: the dominant cost).
Every product text is made unique (``lot N`` appended) unless ``--repeat-texts``, so the embedding cache
does not flatter the figures. The load generator (httpx, asyncio) runs in this process, on the same cores
as the server: on a 2-core machine the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests"), str(REPO)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


class Products:
    """Test-split products, handed out round-robin, each made unique unless ``repeat``."""

    def __init__(self, items, repeat: bool) -> None:
        self.rows = []
        for text, category in zip(items["text"], items["category"], strict=True):
            title, _, description = str(text).partition("\n")
            self.rows.append({"title": title, "description": description, "category": category})
        self.repeat = repeat
        self.n = 0

    def take(self, k: int) -> list[dict]:
        out = []
        for _ in range(k):
            row = dict(self.rows[self.n % len(self.rows)])
            if not self.repeat:
                row["description"] = f"{row['description']} lot {self.n}"
            self.n += 1
            out.append(row)
        return out


async def load(url: str, products: Products, batch: int, concurrency: int, seconds: float,
               neighbours: int, headers: dict) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            body = ({"product": products.take(1)[0]} if batch == 1 else {"products": products.take(batch)})
            body["neighbours"] = neighbours
            started = time.perf_counter()
            answer = await client.post("/v1/price", json=body, headers=headers)
            elapsed = time.perf_counter() - started
            if answer.status_code == 200 and len(answer.json()["quotes"]) == batch:
                latencies.append(elapsed)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {
        "batch": batch, "concurrency": concurrency, "requests": len(latencies), "errors": errors,
        "seconds": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 2),
        "products_per_s": round(len(latencies) * batch / wall, 1),
        "p50_ms": round(1000 * percentile(latencies, 50), 1), "p99_ms": round(1000 * percentile(latencies, 99), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch", type=int, default=32, help="products per request in the batch rows")
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per row (after a warm-up)")
    parser.add_argument("--neighbours", type=int, nargs="+", default=[5, 0],
                        help="training products cited per quote: one set of rows per value (0: no embedding)")
    parser.add_argument("--store-items", type=int, default=300, help="training products in the vector store")
    parser.add_argument("--demo-items", type=int, default=1500)
    parser.add_argument("--repeat-texts", action="store_true", help="reuse texts (embedding cache hits)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import httpx
    import yaml

    from serving import curated_demo, free_port, register_release

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    started = time.perf_counter()
    demo = curated_demo(tmp, args.demo_items)
    (tmp / "mlruns").mkdir(exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    register_release(demo["train"])
    from pricer.agents.vectorstore import ProductStore

    ProductStore(tmp / "vectorstore").sync(demo["train"].head(args.store_items))
    print(f"champions and a vector store of {args.store_items} products built in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)

    config = tmp / "agents.yaml"
    config.write_text(yaml.safe_dump({
        "agents": {"frontier": None}, "memory": {"path": str(tmp / "memory.sqlite")},
        "vectorstore": {"path": str(tmp / "vectorstore")}, "messenger": {"kind": "log"},
        "tracking": {"experiment": "bench-serve", "trace": False},
        "service": {"max_batch": max(64, args.batch), "max_body_bytes": 4_000_000},
    }))
    port = free_port()
    log_path = tmp / "serve.log"
    log_file = log_path.open("w")  # a file, not a pipe: nobody reads the log until the end
    # cwd=tmp: the unique texts' embeddings go to a cache there, not to the checkout's.
    server = subprocess.Popen([sys.executable, "-m", "pricer.apps.cli", "serve", "--config", str(config),
                               "--port", str(port)], cwd=tmp, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"pricer serve exited: {log_path.read_text()[-2000:]}")
            if time.perf_counter() - started > 180:
                raise SystemExit("pricer serve was not ready after 180 s")
            time.sleep(0.2)
        ready_s = time.perf_counter() - started
        print(f"pricer serve ready in {ready_s:.1f} s (process start, imports, champions, embedder)", file=sys.stderr)
        products = Products(demo["test"], args.repeat_texts)
        rows = []
        for k in args.neighbours:
            for batch in (1, args.batch):
                asyncio.run(load(url, products, batch, 1, 1.0, k, {}))  # warm-up
                for concurrency in args.concurrency:
                    rows.append({"neighbours": k, **asyncio.run(load(url, products, batch, concurrency,
                                                                     args.seconds, k, {}))})
                    print(f"  {rows[-1]}", file=sys.stderr)
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        server.terminate()
        server.wait(timeout=30)
        log_file.close()

    served = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith("pricer_products_priced_total "))
    print(f"\nPOST /v1/price against pricer serve on 127.0.0.1 (1 uvicorn worker; the load generator shares "
          f"the {os.cpu_count()} cores): 2 models + ensemble, k neighbours cited per product "
          f"from {args.store_items} stored, {'repeated' if args.repeat_texts else 'unique'} texts, "
          f"{args.seconds:.0f} s per row")
    print("| k | products/request | concurrency | requests | req/s | products/s | p50 ms | p99 ms | errors |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['neighbours']} | {row['batch']} | {row['concurrency']} | {row['requests']} | {row['requests_per_s']:.2f} | "
              f"{row['products_per_s']:.1f} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | {row['errors']} |")
    print(f"ready after {ready_s:.1f} s; the server counted {served:.0f} products priced")
    summary = {"ready_s": round(ready_s, 1), "neighbours": args.neighbours, "store_items": args.store_items,
               "repeat_texts": args.repeat_texts, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
