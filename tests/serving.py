"""What the service and MCP tests (and bench/serve.py) share: real champions, a real vector store, a real
uvicorn on 127.0.0.1.

``register_release`` registers two real text regressors as the ``pricer-regressor`` and ``pricer-specialist``
champions and a ``pricer-ensemble`` champion pinning both (logged by the project's own ensemble pyfunc);
``Uvicorn`` serves an ASGI app in a thread of this process.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Self

import pandas as pd

from conftest import free_port
from deal_feeds import fit_text_regressor, make_champion, register_champion


def curated_demo(root: Path, n_items: int = 600) -> dict[str, Any]:
    from pricer.data.config import CurateConfig, DemoSourceConfig
    from pricer.data.curate import curate

    curate(CurateConfig(source=DemoSourceConfig(n_items=n_items)), root=root)
    data = root / "data" / "curated"
    return {"dir": data, **{split: pd.read_parquet(data / f"{split}.parquet") for split in ("train", "val", "test")}}


def register_release(train: pd.DataFrame, weights: dict[str, float] | None = None) -> dict[str, str]:
    """Champions of pricer-regressor, pricer-specialist and pricer-ensemble (pinning the first two) in the
    configured store; returns the ensemble's members (member -> pinned URI)."""
    import mlflow

    from pricer.models.ensemble import EnsembleWeights
    from pricer.serving.ensemble import log_ensemble_model
    from pricer.tracking.runs import configure

    regressor = register_champion(fit_text_regressor(train), "pricer-regressor", mae=40.0)
    specialist = register_champion(fit_text_regressor(train, char_ngrams=True, alpha=3.0), "pricer-specialist",
                                   mae=45.0)
    members = {"regressor": f"models:/pricer-regressor/{regressor}",
               "specialist": f"models:/pricer-specialist/{specialist}"}
    with mlflow.start_run(experiment_id=configure(), run_name="test-ensemble") as run:
        info = log_ensemble_model(EnsembleWeights(weights or {"regressor": 0.7, "specialist": 0.3}), members)
    make_champion(info.model_uri, run.info.run_id, "pricer-ensemble", 38.0)
    return members


def build_release(root: Path, train: pd.DataFrame, store_items: int = 120) -> dict[str, Any]:
    """A SQLite store under ``root`` holding ``register_release``'s champions, and a vector store of the first
    ``store_items`` training products (embedded with the project's embedder) at ``root / "vectorstore"``.
    Sets MLFLOW_TRACKING_URI while it registers; the caller points the tests at ``uri``."""
    import os

    from pricer.agents.vectorstore import ProductStore
    from pricer.models.embeddings import get_embedder

    (root / "mlruns").mkdir(exist_ok=True)
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        members = register_release(train)
        store = ProductStore(root / "vectorstore", embedder=get_embedder())
        store.sync(train.head(store_items))
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    return {"uri": uri, "members": members, "store": store, "root": root}


class Uvicorn:
    """``uvicorn.Server`` for ``app`` on 127.0.0.1 in a daemon thread; ``url`` once started."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def wait_ready(client: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll ``/readyz`` (an httpx client on the service) until 200; its body."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = client.get("/readyz")
        if answer.status_code == 200:
            return answer.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout_s} s: {answer.text}")
        time.sleep(0.1)
