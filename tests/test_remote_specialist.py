"""The specialist asked over an OpenAI-compatible completions endpoint, as vLLM serves base model + adapter.

Real parts: a registered specialist (a tiny Llama with a LoRA adapter, logged and promoted in a SQLite MLflow
store), the real ``openai`` SDK over real sockets to tests/fake_openai.py, whose ``/v1/completions`` answers
with the registered adapter itself (its own greedy generation on the prompt it receives), as the server
would. The adapter's weights are set, not trained: random LoRA weights make its answers depend on the
prompt, and an output layer that writes only digits makes every answer a price.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from deal_feeds import DealFeedServer, DealPage, make_champion
from fake_openai import FakeOpenAI
from pricer.agents.config import AgentsConfig, RemoteSpecialistConfig
from pricer.agents.estimators import RegistryAgent
from pricer.agents.planner import Planner
from pricer.agents.remote import RemoteSpecialistAgent
from pricer.agents.roster import build_agents, pinned_agent
from pricer.core.config import validate
from pricer.core.errors import ConfigError
from pricer.serving.specialist import prompts_from

REPO = Path(__file__).resolve().parents[1]
SERVED = "pricer-specialist"
LONG = "Cordless drill, 20V, two batteries. " + "Brushless motor, LED light, belt clip, 2-speed gearbox. " * 60
TEXTS = ["A fountain pen with a steel nib", "Acme 55-inch 4K smart TV with HDR and three HDMI ports", LONG,
         "Stainless steel kettle, 1.7 l"]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_adapter(folder: Path) -> Path:
    """A tiny Llama + LoRA adapter whose greedy answers are 3-digit prices that depend on the prompt."""
    import torch
    from peft import get_peft_model

    from pricer.data.tokenizer import builtin_tokenizer
    from pricer.llm.config import FinetuneConfig
    from pricer.llm.inference import integer_tokens
    from pricer.llm.loading import build_tiny_model
    from pricer.llm.train import lora_config, save_adapter

    raw = yaml.safe_load((REPO / "configs" / "finetune" / "tiny.yaml").read_text())
    raw["training"]["output_dir"] = str(folder / "training")
    raw["inference"]["max_new_tokens"] = 3
    config = FinetuneConfig.model_validate(raw)
    tokenizer = builtin_tokenizer(config.model.vocab_size)
    model = get_peft_model(build_tiny_model(config.model, len(tokenizer)), lora_config(config))
    ids, _, widths = integer_tokens(tokenizer)
    digits = [token for token, width in zip(ids, widths, strict=True) if width == 1]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        head = model.base_model.model.lm_head.modules_to_save["default"].weight
        only_digits = torch.zeros_like(head)
        only_digits[digits] = torch.randn(len(digits), head.shape[1], generator=generator) * 3
        head.copy_(only_digits)
    return save_adapter(model, config, folder / "adapter")


@pytest.fixture(scope="module")
def specialist(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A SQLite store whose pricer-specialist champion is the tiny adapter, and that model loaded."""
    from pricer.serving.specialist import log_specialist
    from pricer.tracking.runs import configure

    root = tmp_path_factory.mktemp("specialist")
    (root / "mlruns").mkdir()
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("PRICER_CACHE", str(root / "cache"))
        adapter = write_adapter(root)
        with mlflow.start_run(experiment_id=configure(), run_name="test-specialist") as run:
            info = log_specialist(adapter)
        version = make_champion(info.model_uri, run.info.run_id, "pricer-specialist", mae=40.0)
        loaded = mlflow.pyfunc.load_model(f"models:/pricer-specialist/{version}")
        yield {"uri": uri, "cache": root / "cache", "model_uri": f"models:/pricer-specialist/{version}",
               "pyfunc": loaded.unwrap_python_model(), "loaded": loaded}


@pytest.fixture
def store(specialist, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", specialist["uri"])
    monkeypatch.setenv("PRICER_CACHE", str(specialist["cache"]))
    return specialist


def served_by(specialist: dict, asked: list[int]):
    """The server's answer: the registered adapter's own generation on the prompt it was sent."""
    predictor = specialist["pyfunc"].predictor

    def complete(prompt: str, model: str, max_tokens: int) -> str:
        asked.append(max_tokens)
        return predictor.generate([prompt])[0]

    return complete


def remote_config(server: FakeOpenAI, tmp_path: Path, **overrides) -> RemoteSpecialistConfig:
    return RemoteSpecialistConfig.model_validate({
        "kind": "remote", "base_url": server.base_url, "adapter_cache": str(tmp_path / "adapters"),
        "max_retries": 6, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5, "trace": False,
        **overrides})


# --------------------------------------------------------------------------- config


def test_remote_specialist_config_is_chosen_by_kind_and_checked() -> None:
    old = AgentsConfig.model_validate({"agents": {"specialist": {"model": "pricer-specialist"}}})
    assert old.agents.specialist.kind == "registry"  # a config from before the remote kind
    remote = AgentsConfig.model_validate(
        {"agents": {"specialist": {"kind": "remote", "base_url": "http://gpu:8000/v1/"}}}).agents.specialist
    assert isinstance(remote, RemoteSpecialistConfig) and remote.base_url == "http://gpu:8000/v1"
    assert remote.model == "pricer-specialist" and remote.api_key_env is None
    bad = [({"kind": "remote"}, "base_url"), ({"kind": "remote", "base_url": "gpu:8000"}, "http"),
           ({"kind": "remote", "base_url": "http://me:hunter2@gpu:8000/v1"}, "user:password"),
           ({"kind": "remote", "base_url": "http://gpu/v1", "api_key_env": "sk-live-123"}, "NAME"),
           ({"kind": "remote", "base_url": "http://gpu/v1", "endpoint": "x"}, "endpoint"),
           ({"kind": "vllm", "model": "x"}, "remote")]
    for entry, named in bad:
        with pytest.raises(ConfigError, match=named) as caught:
            validate(AgentsConfig, {"agents": {"specialist": entry}}, "agents.yaml")
        assert "hunter2" not in str(caught.value)  # the message of a bad setting never echoes a password


# --------------------------------------------------------------------------- the agent


def test_remote_specialist_answers_as_the_registered_model_with_its_training_prompt(
    store: dict, tmp_path: Path
) -> None:
    asked: list[int] = []
    with FakeOpenAI(served_models=("base-model", SERVED), completion_for=served_by(store, asked)) as server:
        agent = RemoteSpecialistAgent("specialist", remote_config(server, tmp_path))
        assert agent.ready() and agent.model_uri == store["model_uri"]
        result = agent.estimate(TEXTS)
        in_process = RegistryAgent("specialist", "pricer-specialist")
        assert in_process.ready()
        expected = in_process.estimate(TEXTS).estimates
        # Again, after its batched generation left padding switched on in the tokenizer it cuts texts with.
        assert in_process.estimate(TEXTS).estimates == expected

    # The same prompts the registered pyfunc builds: the project's prompt, the long text cut to the
    # adapter's token budget with the base model's tokenizer.
    assert server.prompts == prompts_from(pd.DataFrame({"text": TEXTS}), store["pyfunc"].shorten)
    assert server.prompts[1].endswith(f"{TEXTS[1]}\n\nPrice is $") and len(server.prompts[2]) < len(LONG) / 3
    assert asked == [3] * len(TEXTS)  # the adapter's answer length, from its folder
    assert result.estimates == expected and all(math.isfinite(value) for value in expected)
    assert len(set(expected)) > 1  # the answers depend on the prompt: the comparison means something
    assert result.error is None and result.model == store["model_uri"] and result.input_tokens > 0
    assert result.extra == {"endpoint": server.base_url, "served_as": SERVED}
    # The adapter was downloaded once, into a folder of its version.
    assert (tmp_path / "adapters" / "pricer-specialist-1").is_dir()


def test_remote_specialist_retries_faults_and_says_why_it_is_skipped(
    store: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeOpenAI(served_models=(SERVED,), failure_rate=0.4, seed=3, fault_paths=("/v1/completions",),
                    fault_kinds={"429": 1, "500": 1, "malformed": 1}) as server:
        agent = RemoteSpecialistAgent("specialist", remote_config(server, tmp_path))
        result = agent.estimate(TEXTS * 3)
        assert sum(server.faults.values()) > 0 and result.answered == len(TEXTS) * 3 and result.error is None

        with caplog.at_level(logging.WARNING, logger="pricer.agents.estimators"):
            # The server does not serve the adapter's name.
            wrong = RemoteSpecialistAgent("specialist", remote_config(server, tmp_path, model="other-lora"))
            assert not wrong.ready()
            # A key variable that is unset.
            keyless = RemoteSpecialistAgent("specialist", remote_config(server, tmp_path,
                                                                         api_key_env="PRICER_TEST_UNSET_KEY"))
            assert not keyless.ready()
            # A version the registry does not have.
            missing = RemoteSpecialistAgent("specialist", remote_config(server, tmp_path),
                                            model_uri="models:/pricer-specialist/99")
            assert not missing.ready()
            assert math.isnan(missing.estimate(["x"]).estimates[0])
    down = RemoteSpecialistAgent("specialist", remote_config(server, tmp_path, max_retries=1))
    with caplog.at_level(logging.WARNING, logger="pricer.agents.estimators"):
        assert not down.ready()  # the server has stopped
    assert "serves ['pricer-specialist'], not 'other-lora'" in caplog.text
    assert "PRICER_TEST_UNSET_KEY is not set" in caplog.text
    assert "the adapter of models:/pricer-specialist/99 could not be read" in caplog.text
    assert "cannot be asked what it serves" in caplog.text


def test_a_deal_cycle_prices_with_the_remote_specialist(store: dict, tmp_path: Path) -> None:
    pages = [DealPage(f"item-{n}", text[:60], text, 25.0 + n) for n, text in enumerate(TEXTS)]
    with DealFeedServer(pages) as feeds, FakeOpenAI(served_models=(SERVED,),
                                                    completion_for=served_by(store, [])) as server:
        config = AgentsConfig.model_validate({
            "feeds": feeds.feeds_config(broken=False, missing=False),
            "scanner": {"timeout_s": 2.0},
            "agents": {"specialist": remote_config(server, tmp_path).model_dump(mode="json"),
                       "frontier": None, "regressor": None},
            "memory": {"path": str(tmp_path / "memory.sqlite")},
            "messenger": {"kind": "log"},
            "tracking": {"experiment": "pricer-agents-test", "trace": False},
        })
        assert [type(agent) for agent in build_agents(config)] == [RemoteSpecialistAgent]
        pinned = pinned_agent(config, "specialist", store["model_uri"])
        assert isinstance(pinned, RemoteSpecialistAgent) and pinned.pinned == store["model_uri"]
        assert isinstance(pinned_agent(config, "regressor", "models:/pricer-regressor/1"), RegistryAgent)
        planner = Planner(config)
        try:
            report = planner.run_cycle()
        finally:
            planner.close()
    assert report.deals == len(TEXTS) and report.priced == len(TEXTS)
    assert report.agents["specialist"]["answered"] == len(TEXTS)
    assert report.agents["specialist"]["model"] == store["model_uri"]
    assert len(server.prompts) == len(TEXTS) and all(p.endswith("\n\nPrice is $") for p in server.prompts)
    assert report.planner["kind"] == "rules"


# --------------------------------------------------------------------------- specialist-serve


def test_specialist_serve_prints_and_runs_the_vllm_command(
    store: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pricer.apps.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no vllm here
    result = runner.invoke(app, ["specialist-serve", "--port", "8011"])
    assert result.exit_code == 1, result.output
    line = next(text for text in result.stdout.splitlines() if text.startswith("vllm serve "))
    argv = line.split()
    adapter_dir = Path(argv[argv.index("--lora-modules") + 1].split("=", 1)[1])
    assert argv[argv.index("--lora-modules") + 1] == f"{SERVED}={adapter_dir}"
    assert "--enable-lora" in argv and argv[argv.index("--port") + 1] == "8011"
    assert (adapter_dir / "adapter_config.json").exists() and (adapter_dir / "pricer_base.json").exists()
    assert adapter_dir.is_relative_to(tmp_path / ".cache" / "specialist-adapters" / "pricer-specialist-1")
    # The tiny base model exists only as a seeded config: it is written out as a folder vLLM can load.
    base = Path(argv[2])
    assert (base / "config.json").exists() and (base / "tokenizer.json").exists()
    assert "vllm is not installed" in result.output and "modules_to_save" not in result.output
    assert "lm_head" in result.output  # the note about whole saved modules

    # Where vllm is installed, the same command runs (a stand-in executable records its argv).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.txt"
    (bin_dir / "vllm").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\nexit 3\n")
    (bin_dir / "vllm").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = runner.invoke(app, ["specialist-serve", "--model", store["model_uri"], "--", "--max-model-len", "512"])
    assert result.exit_code == 3, result.output
    assert record.read_text().split() == [*argv[1:argv.index("--port") + 1], "8000", "--max-model-len", "512"]

    result = runner.invoke(app, ["specialist-serve", "--model", "pricer-specialist@nope", "--print-only"])
    assert result.exit_code == 2 and "pricer-specialist@nope" in result.output


def test_the_registered_pyfunc_and_the_remote_agent_share_one_prompt_rule(store: dict) -> None:
    from pricer.serving.specialist import adapter_prompting, download_adapter

    folder = download_adapter(store["model_uri"], store["cache"] / "check")
    prompting = adapter_prompting(folder)
    assert prompting.max_new_tokens == 3 and prompting.method == "generate"
    assert prompting.shorten([LONG]) == store["pyfunc"].shorten([LONG])
