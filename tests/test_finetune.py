"""Fine-tuning stage on a CPU with the tiny model: training, resume, inference, registry.

Real parts only: trl + peft training of a Llama-shaped model built from config, a SQLite
MLflow store in tmp_path, the registry's gate. Tiny models are dominated by per-op overhead,
so these tests pin torch to one thread (faster, and steady on a shared 2-core machine).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pricer.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = REPO / "configs" / "finetune" / "tiny.yaml"


def test_finetune_configs_validate_and_name_bad_fields(tmp_path: Path):
    from pricer.llm.config import FinetuneConfig, load_finetune_config

    for name in ("tiny", "gemma-3-270m", "llama-3.1-8b", "qwen2.5-7b"):
        config = load_finetune_config(REPO / "configs" / "finetune" / f"{name}.yaml")
        assert isinstance(config, FinetuneConfig)
        assert config.registered_name == "pricer-specialist"
        assert not config.wandb.enabled
    llama = load_finetune_config(REPO / "configs" / "finetune" / "llama-3.1-8b.yaml")
    assert llama.model.name_or_path == "meta-llama/Llama-3.1-8B"
    assert llama.quantization.quant_type == "nf4" and llama.quantization.double_quant
    assert llama.training.batch_size == 32 and llama.training.optim == "adamw_torch_fused"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {kind: tiny, hidden_size: 65}\nlora: {r: 0}\ntraining: {bogus: 1}\n")
    with pytest.raises(ConfigError) as error:
        load_finetune_config(bad)
    message = str(error.value)
    assert "lora.r" in message and "training.bogus" in message and "model.tiny" in message


# --- shared fixtures --------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pricer.data.config import CurateConfig, DemoSourceConfig
    from pricer.data.curate import curate

    root = tmp_path_factory.mktemp("curated")
    curate(CurateConfig(source=DemoSourceConfig(n_items=600)), root=root)
    return root / "data" / "curated"


def tiny_config(output_dir: Path, data_dir: Path, **training):
    from pricer.llm.config import FinetuneConfig

    raw = yaml.safe_load(TINY_YAML.read_text())
    raw["training"].update({"output_dir": str(output_dir), **training})
    raw["data_dir"] = str(data_dir)
    return FinetuneConfig.model_validate(raw)


class KillAt:
    """Raises inside the training loop at a given step: a crash, not a clean stop."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class _Kill(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == step:
                    raise KeyboardInterrupt(f"killed at step {step}")

        return _Kill()


@pytest.fixture(scope="module")
def uninterrupted(curated: Path, tmp_path_factory: pytest.TempPathFactory):
    from pricer.llm.train import train

    config = tiny_config(tmp_path_factory.mktemp("full"), curated, max_steps=12, save_steps=4, eval_steps=6)
    return config, train(config, resume=True)


# --- training ---------------------------------------------------------------------------------


def test_training_loss_falls_and_only_the_adapter_is_saved(uninterrupted):
    config, result = uninterrupted
    assert result.global_step == 12 and result.resumed_from is None
    assert result.train_loss_last < result.train_loss_first - 1.0
    assert result.eval_loss_last < result.eval_loss_first
    assert result.tokens_per_s and result.tokens_per_s > 0
    saved = {path.name for path in Path(result.adapter_dir).iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "pricer_base.json"} <= saved
    assert "model.safetensors" not in saved  # no base weights


def test_completion_logits_loss_equals_trl_full_logits_loss(curated: Path, tmp_path: Path):
    import torch

    from pricer.llm.loading import load_base_model, load_base_tokenizer
    from pricer.llm.train import _dataset, completion_loss, load_pairs, lora_config, sft_config, trainer_class

    config = tiny_config(tmp_path, curated)
    tokenizer = load_base_tokenizer(config.model)
    trl_trainer = trainer_class(False)(
        model=load_base_model(config.model, tokenizer=tokenizer), args=sft_config(config, tmp_path, False),
        train_dataset=_dataset(load_pairs(curated, "train", 8)), processing_class=tokenizer,
        peft_config=lora_config(config),
    )
    batch = next(iter(trl_trainer.get_train_dataloader()))
    n_tokens = (batch["labels"][:, 1:] != -100).sum()
    with torch.no_grad():
        for count in (None, n_tokens):
            expected = trl_trainer.compute_loss(trl_trainer.model, dict(batch), num_items_in_batch=count)
            ours, _ = completion_loss(trl_trainer.model, dict(batch), count)
            assert float(ours) == pytest.approx(float(expected), rel=1e-5)


def test_killed_run_resumes_from_last_checkpoint_to_the_same_step(
    curated: Path, tmp_path: Path, uninterrupted
):
    from pricer.llm.train import train

    config = tiny_config(tmp_path / "run", curated, max_steps=12, save_steps=4, eval_steps=6)
    with pytest.raises(KeyboardInterrupt):
        train(config, resume=True, callbacks=[KillAt(6)])
    checkpoints = sorted(path.name for path in config.checkpoints_dir.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-4"]  # step 6 died before the next save
    assert not config.adapter_dir.exists()

    resumed = train(config, resume=True)
    assert Path(resumed.resumed_from).name == "checkpoint-4"
    _, full = uninterrupted
    assert resumed.global_step == full.global_step == 12
    # Same data order, RNG and optimizer state: the resumed run lands where the full one did.
    assert resumed.train_loss_last == pytest.approx(full.train_loss_last, rel=1e-4)

    # Checkpoints of other settings are never resumed: a changed config starts afresh.
    changed = tiny_config(tmp_path / "run", curated, max_steps=4, save_steps=4, eval_steps=None,
                          learning_rate=0.001)
    fresh = train(changed, resume=True)
    assert fresh.resumed_from is None and fresh.global_step == 4


# --- inference --------------------------------------------------------------------------------


def _peaked_tiny_model():
    """A random tiny Llama with large weights: peaked logits, so greedy choices have no near-ties."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pricer.data.tokenizer import builtin_tokenizer

    tokenizer = builtin_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         initializer_range=0.2,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tokenizer


def test_batched_left_padded_generation_equals_one_at_a_time(curated: Path):
    from pricer.core.prompt import build_prompt
    from pricer.llm.inference import GenerationPredictor

    model, tokenizer = _peaked_tiny_model()
    prompts = pd.read_parquet(curated / "test.parquet")["prompt"].head(10).tolist()
    prompts += [build_prompt("A pen"), "x"]  # very different lengths: lots of left padding
    predictor = GenerationPredictor(model, tokenizer, batch_size=16, max_new_tokens=6, stop_early=False)
    batched = predictor.generate(prompts)
    single = [predictor.generate([prompt])[0] for prompt in prompts]
    assert batched == single
    assert len(set(batched)) > 1  # the answers depend on the prompt, so the comparison means something
    assert tokenizer.padding_side == "left"


def test_probability_weighted_estimator_returns_finite_prices(uninterrupted, curated: Path):
    from pricer.llm.inference import ExpectedPricePredictor, GenerationPredictor, integer_tokens
    from pricer.llm.loading import load_adapter_model

    _, result = uninterrupted
    model, tokenizer = load_adapter_model(Path(result.adapter_dir))
    prompts = pd.read_parquet(curated / "test.parquet")["prompt"].head(8).tolist()
    ids, values, _ = integer_tokens(tokenizer)
    assert set(range(10)) <= set(values) and len(ids) == len(values)
    prices = ExpectedPricePredictor(model, tokenizer, batch_size=4)(prompts)
    assert len(prices) == len(prompts)
    assert all(price is not None and math.isfinite(price) and price >= 0 for price in prices)
    greedy = GenerationPredictor(model, tokenizer, batch_size=4)(prompts)
    assert all(value is not None for value in greedy)


# --- the stage --------------------------------------------------------------------------------


def test_run_finetune_registers_specialist_and_champion_prices_a_text(
    curated: Path, tmp_path: Path, mlflow_uri: str
):
    import mlflow
    from mlflow.tracking import MlflowClient

    from pricer.stages.specialist import run_finetune

    raw = yaml.safe_load(TINY_YAML.read_text())
    raw["training"].update({"max_steps": 16, "save_steps": 8, "eval_steps": 8})
    raw["max_test_items"] = 40
    config_path = tmp_path / "configs" / "tiny.yaml"
    config_path.parent.mkdir()
    config_path.write_text(yaml.safe_dump(raw))

    summary = run_finetune(Path("configs/tiny.yaml"), data_dir=curated, root=tmp_path)

    assert summary["train"]["global_step"] == 16
    assert summary["train"]["train_loss_last"] < summary["train"]["train_loss_first"]
    for which in ("base", "finetuned"):
        assert summary[which]["n"] == 40 and "mae" in summary[which]
    assert summary["finetuned"]["unparseable"] < 40
    assert summary["promotion"]["decision"] == "promoted" and summary["promotion"]["version"] == "1"
    assert (tmp_path / "reports" / "finetune.json").exists()
    assert (tmp_path / "models" / "specialist" / "tiny" / "adapter" / "adapter_model.safetensors").exists()

    client = MlflowClient(mlflow_uri)
    version = client.get_model_version_by_alias("pricer-specialist", "champion")
    assert str(version.version) == "1"
    runs = client.search_runs([client.get_experiment_by_name("pricer").experiment_id])
    by_name = {run.info.run_name: run for run in runs}
    stage = by_name["finetune"]
    assert {"train_loss", "eval_loss", "learning_rate", "tokens_per_s"} <= set(stage.data.metrics)
    assert len(client.get_metric_history(stage.info.run_id, "train_loss")) >= 2
    for child in ("specialist-base", "specialist-finetuned"):
        assert by_name[child].data.tags["mlflow.parentRunId"] == stage.info.run_id
        assert "mae" in by_name[child].data.metrics

    mlflow.set_tracking_uri(mlflow_uri)
    champion = mlflow.pyfunc.load_model("models:/pricer-specialist@champion")
    # The gate's score is what the registered adapter predicts when loaded, on the same 40 rows.
    from pricer.core.metrics import compute_metrics
    from pricer.core.schema import model_inputs

    rows = pd.read_parquet(curated / "test.parquet").head(40)
    loaded_mae = compute_metrics(rows["price"].tolist(), list(champion.predict(model_inputs(rows))))["mae"]
    assert float(version.tags["pricer.mae"]) == pytest.approx(loaded_mae, rel=1e-12)
    assert champion.metadata.metadata["pricer.weights"] == "lora-adapter"
    assert champion.metadata.metadata["pricer.base_kind"] == "tiny"
    text = "Acme 55-inch 4K smart TV with HDR and three HDMI ports"
    price = champion.predict(pd.DataFrame({"text": [text]}))
    assert len(price) == 1 and math.isfinite(float(price[0]))
    # A deal's whole description is cut to the token budget the adapter was trained on.
    from pricer.serving.specialist import prompts_from

    specialist = champion.unwrap_python_model()
    long_text = text + ". " + "Bright colours, deep blacks and a slim bezel for any living room. " * 200
    prompt = prompts_from(pd.DataFrame({"text": [long_text]}), specialist.shorten)[0]
    assert prompts_from([text], specialist.shorten)[0].endswith(f"{text}\n\nPrice is $")
    assert long_text.startswith(prompt.split("\n\n")[1]) and len(prompt) < len(long_text) / 4

    # A second run on the same test split with the same adapter is not promoted over itself.
    again = run_finetune(Path("configs/tiny.yaml"), data_dir=curated, root=tmp_path)
    assert again["train"]["resumed_from"] is not None  # the finished checkpoint: nothing retrained
    assert again["promotion"]["decision"] in ("rejected", "already-champion")
