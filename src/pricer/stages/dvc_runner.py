"""Run DVC stages from Python, one at a time per workspace.

Prefect may run tasks concurrently, but DVC holds a repository lock for the whole of
``dvc repro``; a file lock here queues stages instead of failing on DVC's lock.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

from pricer.core.errors import PricerError

log = logging.getLogger(__name__)


class StageFailed(PricerError):
    """``dvc repro`` exited non-zero; the message carries the tail of its output."""


def _env() -> dict[str, str]:
    # DVC runs stage commands through the shell: the interpreter running us must be first on PATH.
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _dvc(args: list[str], root: Path) -> str:
    command = [sys.executable, "-m", "dvc", *args]
    with FileLock(str(root / ".dvc" / "tmp" / "pricer-stage.lock")):
        done = subprocess.run(command, check=False, cwd=root, env=_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise StageFailed(f"{' '.join(command[2:])} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    return done.stdout


def repro(stage: str, root: Path | None = None, force: bool = False) -> bool:
    """Reproduce one stage (and what it depends on); returns False when DVC found it up to date."""
    root = root or Path.cwd()
    output = _dvc(["repro", stage, *(["--force"] if force else [])], root)
    ran = "Running stage" in output
    log.info("dvc repro %s: %s", stage, "ran" if ran else "up to date")
    return ran


def status(root: Path | None = None, *stages: str) -> dict[str, object]:
    """``dvc status --json`` of the given stages (all when none): an empty dict means up to date."""
    return json.loads(_dvc(["status", "--json", *stages], root or Path.cwd()) or "{}")


WORKSPACE_FILES = ("dvc.yaml", "params.yaml", ".gitignore", "data/accepted/.gitkeep")  # a dep DVC needs to exist
WORKSPACE_FOLDERS = ("src", "configs", "flows")


def new_workspace(root: Path, repo: Path) -> Path:
    """A fresh git + DVC repository at ``root`` holding ``repo``'s stages, params and stage sources:
    where tests and benchmarks run the pipeline without touching the checkout's outputs."""
    root.mkdir(parents=True)
    for name in WORKSPACE_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, root / name)
    for folder in WORKSPACE_FOLDERS:
        shutil.copytree(repo / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "pricer@localhost"],
                    ["git", "config", "user.name", "pricer"], [sys.executable, "-m", "dvc", "init", "-q"],
                    [sys.executable, "-m", "dvc", "config", "core.analytics", "false"]):
        subprocess.run(command, cwd=root, check=True, capture_output=True, text=True)
    (root / "mlruns").mkdir()
    return root
