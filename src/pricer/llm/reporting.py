"""What a training run reports while it runs: losses, learning rate, tokens/s and peak memory, to MLflow.

transformers' own MLflow reporting is off: it uses the per-thread fluent API and would open runs of its
own. This callback writes to an explicit run id with ``MlflowClient`` instead.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState

from pricer.llm.loading import on_gpu


class MlflowMetricsCallback(TrainerCallback):
    """Train loss, eval loss, learning rate, tokens/s and peak memory -> one MLflow run, by id.

    Tokens are the non-padding input tokens the trainer counted since the previous log;
    peak memory is the CUDA allocator's peak (GiB) on a GPU and the process's peak RSS on a CPU.
    """

    def __init__(self, run_id: str | None, client: Any | None = None) -> None:
        self.run_id = run_id
        self.client = client
        self._last_time: float | None = None
        self._last_tokens = 0
        self.tokens_per_s: list[float] = []

    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        self._last_time = time.perf_counter()
        self._last_tokens = int(state.num_input_tokens_seen or 0)
        if on_gpu():
            torch.cuda.reset_peak_memory_stats()

    def on_log(self, args, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        logs = dict(logs or {})
        metrics: dict[str, float] = {}
        if "loss" in logs:
            metrics["train_loss"] = logs["loss"]
            now = time.perf_counter()
            tokens = int(state.num_input_tokens_seen or 0)
            if self._last_time is not None and now > self._last_time and tokens > self._last_tokens:
                rate = (tokens - self._last_tokens) / (now - self._last_time)
                metrics["tokens_per_s"] = rate
                self.tokens_per_s.append(rate)
            self._last_time, self._last_tokens = now, tokens
        for source, target in (("eval_loss", "eval_loss"), ("learning_rate", "learning_rate"),
                               ("grad_norm", "grad_norm")):
            if source in logs:
                metrics[target] = logs[source]
        if metrics:
            memory = peak_memory_gib()
            if memory is not None:
                metrics["peak_memory_gib"] = memory
        self._log(metrics, state.global_step)

    def on_evaluate(self, args, state, control, **kwargs):
        # Evaluation time is not training time: restart the throughput clock.
        self._last_time = time.perf_counter()

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if not self.run_id or not metrics:
            return
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = self.client or MlflowClient()
        now = int(time.time() * 1000)
        finite = [Metric(key, float(value), now, step) for key, value in metrics.items()
                  if isinstance(value, int | float) and math.isfinite(float(value))]
        if finite:
            client.log_batch(self.run_id, metrics=finite)


def peak_memory_gib() -> float | None:
    if on_gpu():
        return torch.cuda.max_memory_allocated() / 2**30
    if sys.platform.startswith("linux"):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return None
