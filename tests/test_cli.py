"""Bad input at the command line: one red line and exit code 2, nothing half written, nothing trained.

A ``PricerError`` (a file, a setting, a model name the user can fix) is one line; ``-v`` adds its
traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pricer.apps.cli import app

PRICER = Path(sys.executable).parent / "pricer"


def one_error_line(result) -> str:
    """The one error line (MLflow's own INFO lines about creating a store may come before it)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_a_missing_data_file_is_one_line_and_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("curate:\n  source: {kind: demo, n_items: 50}\n")
    done = subprocess.run([str(PRICER), "curate", "--data", "missing.jsonl"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["error: jsonl source: missing.jsonl does not exist"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]  # no run, no staging file


def test_a_missing_params_file_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for command in (["show-params"], ["curate"], ["baselines"]):
        line = one_error_line(CliRunner().invoke(app, [*command, "--params", "nope.yaml"]))
        assert "configuration file not found: nope.yaml" in line


@pytest.mark.parametrize("command", [["show-params"], ["curate"], ["baselines"]])
def test_a_top_level_typo_in_params_fails_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("curate:\n  source: {kind: demo, n_items: 50}\nbaseline: {}\n")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    assert "baseline" in result.stderr and ("unknown top-level" in result.stderr or "Extra inputs" in result.stderr)


def test_a_misspelt_model_setting_fails_at_load_before_anything_is_trained(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = {"baselines": {"models": [{"kind": "mean"}, {"kind": "boost", "kk": 30}]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for command in (["show-params"], ["baselines"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2
        assert "baselines.models.1.boost.kk" in result.stderr and "Extra inputs are not permitted" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()  # no run was even opened
    assert not (tmp_path / "reports").exists()


def test_show_params_prints_each_setting_with_its_description(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"baselines": {"models": [{"kind": "boost", "k": 60}]}}))
    result = CliRunner().invoke(app, ["show-params"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("k: 60"))
    assert "# neighbours per kNN feature set" in line
    assert '"kind": "boost"' in CliRunner().invoke(app, ["show-params", "--json"]).stdout


def test_verbose_adds_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["-v", "show-params", "--params", "nope.yaml"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "error: configuration file not found: nope.yaml" in result.stderr


def test_an_unknown_model_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    line = one_error_line(CliRunner().invoke(app, ["price", "a kettle", "--model", "pricer-nope@champion"]))
    assert "pricer-nope@champion" in line


def test_any_other_exception_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pricer.stages.curate

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(pricer.stages.curate, "run_curate", broken)
    result = CliRunner().invoke(app, ["curate"])
    assert isinstance(result.exception, RuntimeError) and result.exit_code == 1


BROKEN_YAML = {
    "bad syntax": ("curate:\n  source: {kind: demo\n", "is not valid YAML"),
    "a list": ("- curate\n- baselines\n", "the top level must be a mapping, got list"),
    "a string": ("just words\n", "the top level must be a mapping, got str"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_YAML))
@pytest.mark.parametrize("command", [["show-params"], ["curate"], ["baselines"], ["fit-ensemble", "--config"],
                                     ["frontier", "--config"], ["deals", "--config"]])
def test_a_config_file_that_is_not_a_yaml_mapping_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              case: str, command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    text, message = BROKEN_YAML[case]
    (tmp_path / "params.yaml").write_text("tracking: {experiment: t}\n")  # a good one beside the broken one
    (tmp_path / "broken.yaml").write_text(text)
    args = [*command, "broken.yaml"] if command[-1] == "--config" else [*command, "--params", "broken.yaml"]
    line = one_error_line(CliRunner().invoke(app, args))
    assert "broken.yaml" in line and message in line


def _demo_lines(n: int) -> list[str]:
    import json

    return [json.dumps({"title": f"Stainless steel kettle model {i}", "description": "A 1.7 litre kettle " * 8,
                        "features": ["Auto shut-off"], "details": {"Brand": "Acme"}, "price": 20.0 + i,
                        "main_category": "Appliances"}) for i in range(n)]


@pytest.mark.parametrize("name, content, message", [
    ("missing.jsonl", None, "does not exist"),
    ("prices.csv", "title,price\nKettle,20\n", "no usable items"),
    ("rejected.jsonl", "\n".join(['{"title": "x", "price": -1}', '{"title": "", "price": "free"}',
                                  '{"price": 1e12}']) + "\n", "no usable items"),
])
def test_evaluate_on_a_file_it_cannot_score_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        name: str, content: str | None, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "params.yaml").write_text("tracking: {experiment: t}\n")
    if content is not None:
        (tmp_path / name).write_text(content)
    line = one_error_line(CliRunner().invoke(app, ["evaluate", "--model", "pricer-regressor@champion",
                                                   "--data", name]))
    assert name in line and message in line
    if content is not None and name.endswith(".jsonl"):
        assert "rejected" in line or "invalid" in line or "price" in line  # the reasons are named
