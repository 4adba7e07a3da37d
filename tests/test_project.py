"""The project's own contract: README commands, CI, Dockerfile and CLI help stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from pricer.cli import app

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    assert re.search(r"^make demo\b", readme, re.M) and re.search(r"^make test\b", readme, re.M)
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test: setup", makefile, re.M) and re.search(r"^demo: setup", makefile, re.M)
    assert "requirements.lock" in makefile


def test_every_parameter_a_dvc_stage_tracks_is_in_the_checked_in_files() -> None:
    """`dvc repro` refuses a stage whose tracked params section is missing: the main job would stop."""
    import yaml

    from pricer.config import load_params

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    load_params(REPO / "params.yaml")  # and what is there validates
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        for entry in stage.get("params", []):
            if isinstance(entry, str):
                assert entry in params, f"stage {name} tracks params.yaml:{entry}, which is missing"
            else:
                assert all((REPO / file).exists() for file in entry), f"stage {name}: missing {entry}"


def test_dockerfile_builds_the_same_environment_and_runs_the_main_job() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    copies = [line.split()[1:-1] for line in instructions if line.startswith("COPY ")]
    for sources in copies:
        for source in sources:
            assert source == "." or (REPO / source).exists(), f"Dockerfile copies missing {source}"
    joined = "\n".join(instructions)
    assert "-r requirements.lock" in joined and "pip install --no-cache-dir --no-deps -e ." in joined
    assert instructions[-1] == 'CMD ["make", "demo"]'


def test_lock_pins_every_package_and_the_cpu_torch() -> None:
    lock = [line for line in (REPO / "requirements.lock").read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in line for line in lock), [line for line in lock if "==" not in line]
    assert "torch==2.13.0" in lock
    names = {line.split("==")[0].lower() for line in lock}
    for required in ("prefect", "mlflow", "dvc", "transformers", "peft", "trl", "fastapi", "xgboost-cpu"):
        assert required in names


def _commands(group, prefix=()):
    for name, command in getattr(group, "commands", {}).items():
        yield (*prefix, name)
        yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("command", [(), *_commands(get_command(app))], ids=lambda c: " ".join(c) or "pricer")
def test_every_cli_command_has_help(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output) > 200
