"""The folders are the layers: the import-linter contracts in pyproject.toml hold, and they would catch a break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def scratch_copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_layer_contracts_hold() -> None:
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "statement", "broken"), [
    # A lower layer importing a higher one.
    ("src/pricer/core/parsing.py", "import pricer.stages.protocol", "Layers: imports only go down"),
    ("src/pricer/models/features.py", "from pricer.serving import schema", "Layers: imports only go down"),
    # Two siblings of one layer importing each other.
    ("src/pricer/llm/loading.py", "import pricer.frontier.config", "Layers: imports only go down"),
    # The package importing the flows that compose it.
    ("src/pricer/agents/memory.py", "import flows.deals", "The package never imports the flows"),
    # A flow doing a stage's work itself instead of composing it.
    ("flows/curate.py", "from pricer.core.files import file_digest", "Flows compose stages, agents and apps"),
    # A cycle between two modules of one package.
    ("src/pricer/data/split.py", "import pricer.data.curate", "No import cycles"),
])
def test_an_import_against_the_layers_breaks_a_contract(tmp_path: Path, module: str, statement: str,
                                                        broken: str) -> None:
    root = scratch_copy(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{statement}  # breaks the contract\n")
    result = lint(root)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout
