"""Which of a fine-tuning run's checkpoints a resume may start from.

A process killed while the Trainer writes ``checkpoint-N`` leaves that folder partly written,
and the Trainer's own choice (``get_last_checkpoint``: the highest N) would then resume from it
on every later start, and fail every time (``Trainer.train`` reads ``trainer_state.json``
unconditionally; a cut adapter or optimizer file does not load). So a checkpoint counts only
when it is whole.

Whole means what ``Trainer._save_checkpoint`` (transformers 5.23) writes, in its order: the
adapter (``save_model``), optimizer, scheduler, RNG state, and last ``trainer_state.json``;
then it rotates out older checkpoints. ``trainer_state.json`` is therefore the Trainer's own
completion marker, and it is what is checked first. A marker of our own, written by an
``on_save`` callback, would add nothing against a kill (``on_save`` runs after the rotation, so
a kill there would discard a whole checkpoint), would reject every checkpoint written without
that callback, and would still need these checks: nothing the Trainer writes is atomic or
fsynced, so after a power loss a later file can exist beside an earlier one cut short. Each file
is opened, cheaply: JSON parsed, the safetensors header (which must cover the file), and the
zip directory at the end of each ``torch.save`` archive (absent from a cut file).

Incomplete checkpoints are moved into ``incomplete/`` (replacing what an earlier start set aside
there) rather than deleted: a folder this check rejects by mistake can still be inspected.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

from pricer.core.files import atomic_write_text

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "pricer_fingerprint.json"
SET_ASIDE_DIR = "incomplete"
TRAINER_STATE = "trainer_state.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
TORCH_ARCHIVES = ("optimizer.pt", "scheduler.pt")

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # the Trainer's own pattern (trainer_utils)


def _read_json(path: Path) -> tuple[Any, str | None]:
    """The parsed file, or None and why not."""
    if not path.is_file():
        return None, f"{path.name} is missing"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return None, f"{path.name} does not parse ({error})"


def _archive_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        with zipfile.ZipFile(path):
            pass
    except (OSError, zipfile.BadZipFile) as error:
        return f"{path.name} is not a whole torch archive ({error})"
    return None


def _safetensors_problem(path: Path) -> str | None:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return f"{path.name} is missing"
    try:
        with safe_open(str(path), framework="pt") as handle:
            if not list(handle.keys()):
                return f"{path.name} holds no tensors"
    except (OSError, SafetensorError) as error:
        return f"{path.name} does not open ({error})"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why ``checkpoint-N`` at ``path`` cannot be resumed from, or None when it is whole."""
    match = _CHECKPOINT.match(path.name)
    if match is None:
        return f"{path.name} is not a checkpoint folder name"
    state, problem = _read_json(path / TRAINER_STATE)
    if problem:
        return problem
    step = state.get("global_step") if isinstance(state, dict) else None
    if step != int(match.group(1)):
        return f"{TRAINER_STATE} records step {step}"
    # rng_state.pth on one process, rng_state_<rank>.pth under `accelerate launch`.
    rng = sorted(path.glob("rng_state*.pth"))
    if not rng:
        return "rng_state.pth is missing"
    for problem in (_read_json(path / ADAPTER_CONFIG)[1], _safetensors_problem(path / ADAPTER_WEIGHTS),
                    *(_archive_problem(path / name) for name in TORCH_ARCHIVES),
                    *(_archive_problem(file) for file in rng)):
        if problem:
            return problem
    return None


def _set_aside(checkpoints_dir: Path, rejected: list[tuple[Path, str]]) -> None:
    aside = checkpoints_dir / SET_ASIDE_DIR
    shutil.rmtree(aside, ignore_errors=True)  # only the latest start's rejects: disk stays bounded
    aside.mkdir()
    for path, problem in rejected:
        log.warning("checkpoint %s is incomplete (%s): moved to %s, not resumed from",
                    path, problem, aside / path.name)
        path.rename(aside / path.name)


def latest_complete(checkpoints_dir: Path) -> Path | None:
    """The whole checkpoint of the highest step; incomplete ones are moved aside, with a warning.

    Rejects older than the one chosen are moved too (a kill while the Trainer rotates out an old
    checkpoint leaves it half deleted): the Trainer's rotation would otherwise count them.
    """
    steps = sorted(
        ((int(match.group(1)), path) for path in checkpoints_dir.iterdir()
         if path.is_dir() and (match := _CHECKPOINT.match(path.name))),
        reverse=True,
    )
    chosen: Path | None = None
    rejected: list[tuple[Path, str]] = []
    for _, path in steps:
        if problem := checkpoint_problem(path):
            rejected.append((path, problem))
        elif chosen is None:
            chosen = path
    if rejected:
        _set_aside(checkpoints_dir, rejected)
        if chosen is None:
            log.warning("no complete checkpoint in %s: training starts afresh", checkpoints_dir)
    return chosen


def _stored_fingerprint(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text(encoding="utf-8"))["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: nothing proves the checkpoints match, so they go


def prepare_checkpoints(checkpoints_dir: Path, print_: str, resume: bool) -> str | None:
    """The checkpoint to resume from, if any: the latest complete one of this fingerprint.

    Checkpoints of another fingerprint are cleared, and so is everything when not resuming.
    """
    marker = checkpoints_dir / FINGERPRINT_FILE
    if checkpoints_dir.exists():
        stored = _stored_fingerprint(marker)
        if not resume or stored != print_:
            reason = "resume=False" if not resume else f"fingerprint {stored} != {print_}"
            log.info("clearing checkpoints in %s (%s)", checkpoints_dir, reason)
            shutil.rmtree(checkpoints_dir)
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    # Atomic: a kill mid-write must not leave a marker that fails every later start.
    atomic_write_text(marker, json.dumps({"fingerprint": print_}) + "\n")
    last = latest_complete(checkpoints_dir)
    return str(last) if last is not None else None
