"""Fine-tuning killed for real: SIGKILL of a training process, then a resume in a fresh one.

Each run is a child process (tests/train_child.py) on the tiny model, one torch thread, the same
seed. A kill lands where the child waits for it (inside a checkpoint save, or after a step), so
nothing here depends on how fast a step or a save is. The checks on damaged checkpoint folders
at the end need no training: they copy a checkpoint of the uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = REPO / "configs" / "finetune" / "tiny.yaml"
CHILD = Path(__file__).with_name("train_child.py")
MAX_STEPS, SAVE_STEPS = 12, 4


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pricer.data.config import CurateConfig, DemoSourceConfig
    from pricer.data.curate import curate

    root = tmp_path_factory.mktemp("curated")
    curate(CurateConfig(source=DemoSourceConfig(n_items=600)), root=root)
    return root / "data" / "curated"


def kill_config(output_dir: Path, data_dir: Path):
    from pricer.llm.config import FinetuneConfig

    raw = yaml.safe_load(TINY_YAML.read_text())
    raw["training"].update({"output_dir": str(output_dir), "max_steps": MAX_STEPS,
                            "save_steps": SAVE_STEPS, "eval_steps": 6})
    raw["data_dir"] = str(data_dir)
    return FinetuneConfig.model_validate(raw)


def _child(config, work: Path, name: str, pause: dict[str, str]) -> tuple[subprocess.Popen, Path, Path]:
    work.mkdir(parents=True, exist_ok=True)
    config_path, result_path, log_path = (work / f"{name}.{ext}" for ext in ("config.json", "result.json", "log"))
    config_path.write_text(config.model_dump_json())
    env = {key: value for key, value in os.environ.items() if not key.startswith("PRICER_TEST_PAUSE")}
    env.update(pause)
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, str(CHILD), str(config_path), str(result_path)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                   text=True, env=env, cwd=work)
    return process, result_path, log_path


def train_in_child(config, work: Path, name: str) -> dict:
    """A run to its end in a fresh process; its TrainResult summary and its log."""
    process, result_path, log_path = _child(config, work, name, {})
    process.communicate()
    log = log_path.read_text()
    assert process.returncode == 0, f"{name} failed:\n{log[-3000:]}"
    return {**json.loads(result_path.read_text()), "log": log}


def kill_in_child(config, work: Path, name: str, **pause: str) -> str:
    """Start a run, SIGKILL it where it pauses; returns where that was."""
    process, _, log_path = _child(config, work, name, pause)
    paused = ""
    try:
        for line in process.stdout:
            if line.startswith("PAUSED "):
                paused = line.split(" ", 1)[1].strip()
                break
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate()
    assert paused, f"{name} ended without pausing:\n{log_path.read_text()[-3000:]}"
    assert process.returncode == -signal.SIGKILL
    return paused


def adapter_weights(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def max_abs_diff(left: dict, right: dict) -> float:
    assert left.keys() == right.keys()
    return max(float((left[key] - right[key]).abs().max()) for key in left)


@pytest.fixture(scope="module")
def reference(curated: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same run, never killed: what every resumed run must end at."""
    work = tmp_path_factory.mktemp("reference")
    config = kill_config(work / "run", curated)
    result = train_in_child(config, work, "reference")
    assert result["global_step"] == MAX_STEPS and result["resumed_from"] is None
    return config, result, adapter_weights(config.adapter_dir)


# --- real kills -------------------------------------------------------------------------------


def test_kill_during_a_checkpoint_save_resumes_from_the_last_complete_one(
    curated: Path, tmp_path: Path, reference
):
    config = kill_config(tmp_path / "run", curated)
    assert kill_in_child(config, tmp_path, "killed", PRICER_TEST_PAUSE_IN_SAVE="8") == "save 8"
    partial = config.checkpoints_dir / "checkpoint-8"
    assert (partial / "adapter_model.safetensors").exists() and (partial / "optimizer.pt").exists()
    assert not (partial / "trainer_state.json").exists()  # the last file of a save

    resumed = train_in_child(config, tmp_path, "resumed")
    assert Path(resumed["resumed_from"]).name == "checkpoint-4"
    assert "checkpoint-8 is incomplete (trainer_state.json is missing)" in resumed["log"]
    assert (config.checkpoints_dir / "incomplete" / "checkpoint-8" / "optimizer.pt").exists()
    _, full, full_weights = reference
    assert resumed["global_step"] == full["global_step"] == MAX_STEPS
    assert max_abs_diff(adapter_weights(config.adapter_dir), full_weights) < 1e-6
    # The checkpoint-8 that the resumed run wrote in place of the partial one is whole.
    from pricer.llm.checkpoints import checkpoint_problem

    assert checkpoint_problem(config.checkpoints_dir / "checkpoint-8") is None


def test_kill_at_a_random_step_resumes_to_the_unkilled_step_and_weights(
    curated: Path, tmp_path: Path, reference
):
    step = random.randint(SAVE_STEPS + 1, MAX_STEPS - 1)  # after checkpoint-4, before the end
    config = kill_config(tmp_path / "run", curated)
    assert kill_in_child(config, tmp_path, "killed", PRICER_TEST_PAUSE_AT_STEP=str(step)) == f"step {step}"
    assert not config.adapter_dir.exists()

    resumed = train_in_child(config, tmp_path, "resumed")
    expected = f"checkpoint-{(step - 1) // SAVE_STEPS * SAVE_STEPS}"  # step N pauses before its save
    assert Path(resumed["resumed_from"]).name == expected, f"killed at step {step}"
    _, full, full_weights = reference
    assert resumed["global_step"] == full["global_step"] == MAX_STEPS
    # Same data order after the resume (the sampler's RNG comes back from the checkpoint), same
    # optimizer and scheduler state: on one CPU thread the weights come out bit for bit the same.
    diff = max_abs_diff(adapter_weights(config.adapter_dir), full_weights)
    assert diff < 1e-6, f"killed at step {step}: adapter differs by {diff}"
    # The step-12 evaluation of those weights agrees too. (The logged train loss need not: each
    # entry averages the steps since the previous log, and a resume starts that window afresh.)
    assert resumed["eval_loss_last"] == pytest.approx(full["eval_loss_last"], rel=1e-6)


# --- damaged checkpoint folders -----------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "trainer_state.json is missing": lambda folder: (folder / "trainer_state.json").unlink(),
    "trainer_state.json does not parse": lambda folder: _truncate(folder / "trainer_state.json"),
    "adapter_model.safetensors does not open": lambda folder: _truncate(folder / "adapter_model.safetensors"),
    "adapter_model.safetensors is missing": lambda folder: (folder / "adapter_model.safetensors").unlink(),
    "optimizer.pt is not a whole torch archive": lambda folder: _truncate(folder / "optimizer.pt"),
    "scheduler.pt is missing": lambda folder: (folder / "scheduler.pt").unlink(),
    "rng_state.pth is missing": lambda folder: (folder / "rng_state.pth").unlink(),
}


@pytest.fixture
def checkpoints_copy(reference, tmp_path: Path) -> tuple[Path, str]:
    """The uninterrupted run's checkpoints folder (checkpoint-8 and -12), and its fingerprint."""
    config, _, _ = reference
    copy = tmp_path / "checkpoints"
    shutil.copytree(config.checkpoints_dir, copy)
    assert sorted(path.name for path in copy.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-8"]
    return copy, json.loads((copy / "pricer_fingerprint.json").read_text())["fingerprint"]


@pytest.mark.parametrize("problem", DAMAGE)
def test_a_damaged_latest_checkpoint_is_set_aside_for_the_one_before(
    checkpoints_copy, problem: str, caplog: pytest.LogCaptureFixture
):
    from pricer.llm.train import prepare_checkpoints

    checkpoints, print_ = checkpoints_copy
    assert Path(prepare_checkpoints(checkpoints, print_, resume=True)).name == "checkpoint-12"
    DAMAGE[problem](checkpoints / "checkpoint-12")
    with caplog.at_level(logging.WARNING):
        assert Path(prepare_checkpoints(checkpoints, print_, resume=True)).name == "checkpoint-8"
    assert f"checkpoint-12 is incomplete ({problem}" in caplog.text
    assert (checkpoints / "incomplete" / "checkpoint-12").is_dir()
    assert not (checkpoints / "checkpoint-12").exists()  # nor counted by the Trainer's rotation


def test_no_complete_checkpoint_means_a_fresh_start(checkpoints_copy, caplog: pytest.LogCaptureFixture):
    from pricer.llm.train import prepare_checkpoints

    checkpoints, print_ = checkpoints_copy
    for name in ("checkpoint-8", "checkpoint-12"):
        (checkpoints / name / "trainer_state.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert prepare_checkpoints(checkpoints, print_, resume=True) is None
    assert "training starts afresh" in caplog.text
    assert sorted(path.name for path in (checkpoints / "incomplete").iterdir()) == ["checkpoint-12", "checkpoint-8"]


def test_a_cut_fingerprint_file_clears_the_checkpoints_instead_of_failing_every_start(checkpoints_copy):
    from pricer.llm.train import prepare_checkpoints

    checkpoints, print_ = checkpoints_copy
    _truncate(checkpoints / "pricer_fingerprint.json")
    assert prepare_checkpoints(checkpoints, print_, resume=True) is None
    assert not list(checkpoints.glob("checkpoint-*"))
    assert json.loads((checkpoints / "pricer_fingerprint.json").read_text()) == {"fingerprint": print_}
