"""A fine-tuning run in a process of its own, for tests/test_train_kill.py to SIGKILL.

    python tests/train_child.py CONFIG_JSON RESULT_JSON

CONFIG_JSON is a ``FinetuneConfig`` as JSON; RESULT_JSON receives the ``TrainResult`` summary.
Two variables, set by that test only, make the run wait at a known point for its kill, so that
no test depends on how fast a step or a save is:

- ``PRICER_TEST_PAUSE_AT_STEP=N``: after optimizer step N, before that step's save if it has one.
- ``PRICER_TEST_PAUSE_IN_SAVE=N``: inside the save of checkpoint-N, once the adapter, optimizer,
  scheduler and RNG state are on disk and before ``trainer_state.json`` is.

Waiting, it prints ``PAUSED <where>`` and blocks reading stdin, so it also ends when the test
process dies and closes the pipe: no orphan keeps training.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from pricer.llm.config import FinetuneConfig
from pricer.llm.train import train


def wait_for_kill(where: str) -> None:
    print(f"PAUSED {where}", flush=True)
    sys.stdin.read()
    os._exit(3)  # the test went away without killing us


class PauseAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            wait_for_kill(f"step {self.step}")


class PauseInSave(TrainerCallback, ExportableState):
    """Trainer._save_checkpoint asks every ExportableState callback for its state right before it
    writes trainer_state.json, after everything else of the checkpoint: the latest point of a save."""

    def __init__(self, step: int):
        self.step = step
        self.armed = False  # state() is also called when the trainer is built and at other saves

    def on_step_end(self, args, state, control, **kwargs):
        self.armed = state.global_step == self.step

    def state(self) -> dict:
        if self.armed:
            wait_for_kill(f"save {self.step}")
        return {"args": {"step": self.step}, "attributes": {}}


def main() -> None:
    config_path, result_path = map(Path, sys.argv[1:3])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # the same arithmetic in every run that a test compares
    callbacks: list[TrainerCallback] = []
    if step := os.environ.get("PRICER_TEST_PAUSE_AT_STEP"):
        callbacks.append(PauseAtStep(int(step)))
    if step := os.environ.get("PRICER_TEST_PAUSE_IN_SAVE"):
        callbacks.append(PauseInSave(int(step)))
    config = FinetuneConfig.model_validate_json(config_path.read_text())
    result = train(config, resume=True, callbacks=callbacks)
    result_path.write_text(json.dumps(result.summary(), default=str))


if __name__ == "__main__":
    main()
