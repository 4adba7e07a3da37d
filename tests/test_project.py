"""The project's own contract: README commands, CI, Dockerfile and CLI help stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from pricer.apps.cli import app

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    assert re.search(r"^make demo\b", readme, re.MULTILINE) and re.search(r"^make test\b", readme, re.MULTILINE)
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test: setup", makefile, re.MULTILINE) and re.search(r"^demo: setup", makefile, re.MULTILINE)
    assert "requirements.lock" in makefile


def test_every_parameter_a_dvc_stage_tracks_is_in_the_checked_in_files() -> None:
    """`dvc repro` refuses a stage whose tracked params section is missing: the main job would stop."""
    import yaml

    from pricer.stages.params import load_params

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


STAGE_MODULES = {"curate": "pricer.stages.curate", "baselines": "pricer.stages.baselines",
                 "finetune": "pricer.stages.specialist"}


def _code_files(paths: list[str]) -> set[str]:
    """The Python files (package __init__ files aside: they hold no code) a list of deps names."""
    files: set[str] = set()
    for dep in paths:
        path = REPO / dep
        candidates = path.rglob("*.py") if path.is_dir() else [path]
        files |= {str(file.relative_to(REPO)) for file in candidates
                  if file.suffix == ".py" and file.name != "__init__.py"}
    return files


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_each_dvc_stage_depends_on_exactly_the_code_it_runs(stage: str) -> None:
    """DVC re-runs a stage when code it runs changes, and only then: its code deps are the modules its stage
    module imports, directly or not."""
    import grimp
    import yaml

    deps = [dep for dep in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
            if dep.startswith("src/")]
    assert all((REPO / dep).exists() for dep in deps), [dep for dep in deps if not (REPO / dep).exists()]
    graph = grimp.build_graph("pricer")
    entry = STAGE_MODULES[stage]
    modules = graph.find_upstream_modules(entry) | {entry}
    runs = {f"src/{module.replace('.', '/')}.py" for module in modules}
    runs = {path for path in runs if (REPO / path).exists()}  # a package itself is its (empty) __init__
    declared = _code_files(deps)
    assert sorted(runs - declared) == [], f"stage {stage} runs code that dvc.yaml does not list"
    assert sorted(declared - runs) == [], f"dvc.yaml lists code that stage {stage} never runs"
    # The data files that code reads from beside itself (the demo catalog's vocabulary) shape the output too.
    data_files = {str(file.relative_to(REPO)) for path in runs for file in (REPO / path).parent.iterdir()
                  if file.suffix in (".json", ".yaml") and file.name in (REPO / path).read_text()}
    assert sorted(data_files - set(deps)) == [], f"stage {stage} reads data files that dvc.yaml does not list"


def test_params_yaml_writes_out_every_setting_that_shapes_the_curated_data() -> None:
    import yaml

    from pricer.data.config import CurateConfig

    written = yaml.safe_load((REPO / "params.yaml").read_text())["curate"]
    defaults = CurateConfig().model_dump(mode="json")

    def missing(default: dict, given: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in default.items():
            if key not in given:
                out.append(prefix + key)
            elif isinstance(value, dict) and value and isinstance(given[key], dict):
                out += missing(value, given[key], f"{prefix}{key}.")
        return out

    assert missing(defaults, written) == []


def test_the_sections_a_stage_may_read_alone_are_the_params_file_sections() -> None:
    from pricer.stages.params import Params
    from pricer.stages.sections import SECTIONS

    assert tuple(Params.model_fields) == SECTIONS
