"""LoRA / QLoRA supervised fine-tuning of an open model on the curated prompt/completion pairs.

trl's ``SFTTrainer`` with a peft ``LoraConfig``: the loss counts completion tokens only (the
price and the end-of-text token), never the product text. By default (``completion_logits_only``)
a thin subclass computes that same loss with the lm_head applied only at the positions that
predict a completion token, instead of at all ~180: for Gemma's 262k-token vocabulary the
full projection was most of a CPU step. On a CPU the model trains in fp32
with ``bf16=False`` (trl's default bf16 makes a CPU step ~10x slower); on a CUDA machine in
bf16, with the base model in 4-bit nf4 when the config asks for quantization.

Resuming: a checkpoint (adapter, optimizer, scheduler, RNG and data position) is written every
``save_steps`` optimizer steps under ``<output_dir>/checkpoints``. ``resume=True`` restarts
from the last complete one (``pricer.llm.checkpoints``: a folder cut short by a kill during a
save is moved aside) and ends at the same global step, with the same weights, as an
uninterrupted run. The checkpoints are tied to what produced them: a fingerprint of the base
model, LoRA and training settings and the training data is stored beside them, and
checkpoints of a different fingerprint are cleared rather than resumed. The stage's product is
the adapter alone, in ``<output_dir>/adapter``.

Metrics go to MLflow through ``pricer.llm.reporting.MlflowMetricsCallback``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import TrainerCallback

from pricer.core.files import staged_dir
from pricer.llm.checkpoints import prepare_checkpoints
from pricer.llm.config import FinetuneConfig
from pricer.llm.loading import BASE_SPEC_FILE, base_model_id, load_base_model, load_base_tokenizer, on_gpu
from pricer.llm.reporting import MlflowMetricsCallback, peak_memory_gib

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    adapter_dir: str
    global_step: int
    max_steps: int
    resumed_from: str | None
    train_loss_first: float | None
    train_loss_last: float | None
    eval_loss_first: float | None
    eval_loss_last: float | None
    train_seconds: float
    tokens_per_s: float | None
    peak_memory_gib: float | None
    n_train: int
    n_eval: int
    n_truncated: int
    log_history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "log_history"}


# --- data -------------------------------------------------------------------------------------


def load_pairs(data_dir: Path, split: str, limit: int | None = None) -> pd.DataFrame:
    """The prompt/completion columns of a curated split (its first ``limit`` rows)."""
    path = data_dir / f"{split}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"curated split missing: {path}; run `pricer curate` first")
    frame = pd.read_parquet(path)
    missing = [column for column in ("prompt", "completion") if column not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}")
    if limit is not None:
        frame = frame.head(limit)
    if frame.empty:
        raise ValueError(f"the {split} split in {data_dir} is empty")
    return frame.reset_index(drop=True)


def _dataset(frame: pd.DataFrame):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": frame["prompt"].tolist(), "completion": frame["completion"].tolist()})


def count_truncated(tokenizer, frame: pd.DataFrame, max_length: int) -> int:
    """Items whose prompt + completion + EOS exceed ``max_length`` tokens (their answer is cut)."""
    texts = (frame["prompt"] + frame["completion"]).tolist()
    lengths = [len(ids) + 1 for ids in tokenizer(texts)["input_ids"]]
    return sum(length > max_length for length in lengths)


def fingerprint(config: FinetuneConfig, train: pd.DataFrame, val: pd.DataFrame | None) -> str:
    """What a checkpoint depends on: base model, LoRA, training settings (not paths) and data."""
    training = config.training.model_dump(
        mode="json", exclude={"output_dir", "save_total_limit", "logging_steps"}
    )
    digest = hashlib.sha256()
    digest.update(json.dumps(
        {"model": config.model.model_dump(mode="json"), "lora": config.lora.model_dump(mode="json"),
         "quantization": config.quantization.model_dump(mode="json") if config.quantization else None,
         "training": training, "gpu": on_gpu()},
        sort_keys=True,
    ).encode())
    for frame in (train, val):
        if frame is not None:
            hashed = pd.util.hash_pandas_object(frame[["prompt", "completion"]], index=False)
            digest.update(hashed.values.tobytes())
    return digest.hexdigest()[:16]


# --- training ---------------------------------------------------------------------------------


def completion_loss(model, inputs: dict[str, Any], num_items_in_batch=None):
    """Cross-entropy over completion tokens, with logits computed only where one is predicted.

    ``logits_to_keep`` as a boolean (batch, length) mask makes the model apply its lm_head to
    the masked positions only (transformers returns them flattened). Summed, and divided by
    ``num_items_in_batch`` (every completion token of the accumulated batch) when the Trainer
    gives it, else averaged: the loss trl computes from full logits, without the full logits.
    """
    import torch.nn.functional as F

    labels = inputs["labels"]
    predicted = labels[:, 1:] != -100  # position t predicts token t + 1
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = predicted
    model_inputs = {key: value for key, value in inputs.items() if key != "labels"}
    outputs = model(**model_inputs, use_cache=False, logits_to_keep=keep)
    logits = outputs.logits.reshape(-1, outputs.logits.shape[-1]).float()
    targets = labels[:, 1:][predicted].to(logits.device)
    loss = F.cross_entropy(logits, targets, reduction="sum")
    if num_items_in_batch is not None:
        return loss / num_items_in_batch, outputs
    return loss / max(int(targets.numel()), 1), outputs


def trainer_class(completion_logits_only: bool):
    """trl's SFTTrainer, or a subclass whose loss projects only the completion positions."""
    from trl import SFTTrainer

    if not completion_logits_only:
        return SFTTrainer

    class CompletionLogitsSFTTrainer(SFTTrainer):
        """SFTTrainer with ``completion_loss``; it skips trl's entropy/accuracy logging."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = completion_loss(model, inputs, num_items_in_batch)
            # Read by Trainer.training_step: divided by the whole accumulated batch's token count
            # already, or a per-batch mean that the Trainer still divides by the accumulation steps.
            self.loss_is_scaled_for_ga = num_items_in_batch is not None
            return (loss, outputs) if return_outputs else loss

    return CompletionLogitsSFTTrainer


def lora_config(config: FinetuneConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules),
        modules_to_save=list(config.lora.modules_to_save) or None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def sft_config(config: FinetuneConfig, output_dir: Path, has_eval: bool):
    from trl import SFTConfig

    training = config.training
    gpu = on_gpu()
    eval_on = has_eval and training.eval_steps is not None
    report_to = ["wandb"] if config.wandb.enabled else []
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=training.epochs,
        max_steps=training.max_steps or -1,
        per_device_train_batch_size=training.batch_size,
        per_device_eval_batch_size=training.eval_batch_size or training.batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=training.learning_rate,
        lr_scheduler_type=training.lr_scheduler,
        warmup_steps=training.warmup,
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm,
        optim=training.optim,
        activation_checkpointing=training.gradient_checkpointing,  # trl defaults it on; it costs ~30%
        ddp_find_unused_parameters=False,  # LoRA trains every adapter it adds: the extra graph walk buys nothing
        # fp32 on a CPU: trl's default bf16=True makes CPU training ~10x slower.
        bf16=gpu and torch.cuda.is_bf16_supported(),
        fp16=False,
        max_length=training.max_length,
        completion_only_loss=True,
        packing=False,
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=training.save_total_limit,
        eval_strategy="steps" if eval_on else "no",
        eval_steps=training.eval_steps if eval_on else None,
        logging_strategy="steps",
        logging_steps=training.logging_steps,
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        seed=training.seed,
        data_seed=training.seed,
        report_to=report_to,
        run_name=f"finetune-{base_model_id(config.model)}"[:100],
        dataloader_num_workers=0,
        dataset_num_proc=None,
        use_cpu=not gpu,
        prediction_loss_only=True,  # eval loss only: no logits gathered
    )


def _set_wandb_env(config: FinetuneConfig, output_dir: Path) -> None:
    if not config.wandb.enabled:
        return
    os.environ.setdefault("WANDB_PROJECT", config.wandb.project)
    os.environ["WANDB_MODE"] = config.wandb.mode
    os.environ.setdefault("WANDB_DIR", str(output_dir))
    os.environ.setdefault("WANDB_SILENT", "true")


def train(
    config: FinetuneConfig,
    *,
    data_dir: Path | None = None,
    resume: bool = True,
    run_id: str | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Fine-tune a LoRA adapter as ``config`` says; returns where it is and how training went.

    ``data_dir`` overrides ``config.data_dir``; relative paths resolve against the working
    directory. ``run_id`` is the MLflow run that receives the training curves. ``callbacks``
    are added to the trainer's (tests use one to kill a run part-way).
    """
    data_dir = Path(data_dir or config.data_dir)
    train_frame = load_pairs(data_dir, "train", config.max_train_items)
    val_frame = load_pairs(data_dir, "val", config.max_eval_items) if config.training.eval_steps else None

    output_dir = config.training.output_dir
    checkpoints_dir = config.checkpoints_dir
    _set_wandb_env(config, output_dir)
    args = sft_config(config, checkpoints_dir, val_frame is not None)
    # Under `accelerate launch` every rank gets here: one clears and sets aside, the others then
    # find the folder settled and choose the same checkpoint. Per node only where each node saves.
    with args.main_process_first(local=args.save_on_each_node, desc="checkpoint selection"):
        resume_from = prepare_checkpoints(checkpoints_dir, fingerprint(config, train_frame, val_frame), resume)
    if resume_from:
        log.info("resuming from %s", resume_from)

    tokenizer = load_base_tokenizer(config.model)
    tokenizer.padding_side = "right"
    n_truncated = count_truncated(tokenizer, train_frame, config.training.max_length)
    if n_truncated:
        log.warning("%d of %d training items exceed max_length=%d tokens: their completion is cut",
                    n_truncated, len(train_frame), config.training.max_length)
    model = load_base_model(config.model, config.quantization, tokenizer=tokenizer)
    if on_gpu() and config.quantization is not None and config.quantization.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.training.gradient_checkpointing
        )

    metrics_callback = MlflowMetricsCallback(run_id)
    trainer = trainer_class(config.training.completion_logits_only)(
        model=model,
        args=args,
        train_dataset=_dataset(train_frame),
        eval_dataset=_dataset(val_frame) if val_frame is not None else None,
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=[metrics_callback, *callbacks],
    )
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started

    adapter_dir = config.adapter_dir
    if trainer.is_world_process_zero():  # every rank holds the same weights; one writes them
        save_adapter(trainer.model, config, adapter_dir)
    history = list(trainer.state.log_history)
    losses = [entry["loss"] for entry in history if "loss" in entry]
    eval_losses = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    rates = metrics_callback.tokens_per_s
    result = TrainResult(
        adapter_dir=str(adapter_dir),
        global_step=int(trainer.state.global_step),
        max_steps=int(trainer.state.max_steps),
        resumed_from=resume_from,
        train_loss_first=losses[0] if losses else None,
        train_loss_last=losses[-1] if losses else None,
        eval_loss_first=eval_losses[0] if eval_losses else None,
        eval_loss_last=eval_losses[-1] if eval_losses else None,
        train_seconds=seconds,
        tokens_per_s=(sum(rates) / len(rates)) if rates else None,
        peak_memory_gib=peak_memory_gib(),
        n_train=len(train_frame),
        n_eval=0 if val_frame is None else len(val_frame),
        n_truncated=n_truncated,
        log_history=history,
    )
    del trainer, model
    return result


def save_adapter(model, config: FinetuneConfig, adapter_dir: Path) -> Path:
    """The LoRA weights only (no base weights) and the base model's description, published whole.

    The tokenizer is not copied: it comes with the base model (hub revision, the GGUF package,
    or the builtin one), and Gemma's alone would be 33 MB beside a 6 MB adapter.
    """
    with staged_dir(adapter_dir, replace=True) as staging:
        model.save_pretrained(str(staging))
        (staging / BASE_SPEC_FILE).write_text(json.dumps(base_spec(config), indent=2) + "\n")
    return adapter_dir


def base_spec(config: FinetuneConfig) -> dict[str, Any]:
    """What a loader needs to rebuild the base model under an adapter (stored beside it)."""
    return {
        "base_model": base_model_id(config.model),
        "model": config.model.model_dump(mode="json"),
        "quantization": config.quantization.model_dump(mode="json") if config.quantization else None,
        "inference": config.inference.model_dump(mode="json"),
        "lora": config.lora.model_dump(mode="json"),
    }
