"""Training throughput of a fine-tuning recipe: tokens/s and peak memory for N optimizer steps.

    python bench/finetune_throughput.py                                  # tiny shape, CPU
    python bench/finetune_throughput.py --config configs/finetune/gemma-3-270m.yaml --steps 4
    python bench/finetune_throughput.py --config configs/finetune/llama-3.1-8b.yaml --shape llama-8b  # GPU

The recipe (LoRA rank and targets, batch size, gradient accumulation, optimizer, checkpointing,
max_length, quantization on CUDA) comes from the config; the model is the config's own (on a
CPU the tiny shape replaces a 7-8B hub model), or, with ``--shape``, a randomly initialised
model of a known architecture (no weights needed: tiny, gemma-270m, llama-8b, qwen-7b).
The data are synthetic token sequences with the
curated set's length profile (``--min-tokens``..``--max-tokens``, a 4-token completion),
run through the same trl SFTTrainer + peft path as ``pricer.llm.train`` (``--full-logits``
times trl's own loss, with logits at every position).

Tokens/s counts the non-padding input tokens of the timed steps (after ``--warmup`` steps);
peak memory is the CUDA allocator's peak during the timed steps (GPU) or the process's peak
RSS (CPU). With --shape and a 4-bit config on CUDA, the random bf16 weights are quantized to
nf4 in place with bitsandbytes (a random-init model has no checkpoint to load quantized);
that path has not been run on this project's CPU machines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHAPES = {
    "tiny": ("llama", {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 2048}),
    "gemma-270m": ("gemma3_text", {"hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
                                   "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
                                   "vocab_size": 262144, "sliding_window": 512}),
    "llama-8b": ("llama", {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                           "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                           "rope_theta": 500000.0, "max_position_embeddings": 8192}),
    "qwen-7b": ("qwen2", {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                          "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                          "rope_theta": 1000000.0, "max_position_embeddings": 8192}),
}


def random_model(shape: str, quantization):
    """A randomly initialised model of a known shape: bf16 on CUDA (nf4 if asked), fp32 on a CPU."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, fields = SHAPES[shape]
    config = AutoConfig.for_model(model_type, **fields)
    gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if gpu else torch.float32
    with torch.device("cuda" if gpu else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if gpu and quantization is not None and quantization.load_in_4bit:
        quantize_4bit(model, quantization)
    return model


def quantize_4bit(model, settings) -> None:
    """Replace every Linear but lm_head by a bitsandbytes Linear4bit holding the same weights."""
    import bitsandbytes as bnb
    import torch

    compute_dtype = getattr(torch, settings.compute_dtype)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear) or name == "lm_head":
                continue
            layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=settings.double_quant,
                                      quant_type=settings.quant_type, device="cpu")
            layer.weight = bnb.nn.Params4bit(child.weight.data.to("cpu"), requires_grad=False,
                                             compress_statistics=settings.double_quant,
                                             quant_type=settings.quant_type)
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, layer.to("cuda"))  # quantizes on the move
            del child
    torch.cuda.empty_cache()
    model.is_loaded_in_4bit = True
    model.is_quantized = True


def synthetic_dataset(n: int, vocab_size: int, min_tokens: int, max_tokens: int, seed: int):
    """Pre-tokenized prompt+completion rows: the loss counts the last 4 tokens (price + EOS)."""
    import random

    from datasets import Dataset

    rng = random.Random(seed)
    rows = {"input_ids": [], "completion_mask": []}
    for _ in range(n):
        length = rng.randint(min_tokens, max_tokens)
        rows["input_ids"].append([rng.randrange(3, vocab_size) for _ in range(length)])
        rows["completion_mask"].append([0] * (length - 4) + [1] * 4)
    return Dataset.from_dict(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/finetune/tiny.yaml"))
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None,
                        help="random-init model of this shape (default: the config's model; "
                             "tiny instead of a 7-8B hub model on a CPU)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=None, help="override the config's")
    parser.add_argument("--min-tokens", type=int, default=140)
    parser.add_argument("--max-tokens", type=int, default=182)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--full-logits", action="store_true", help="trl's loss over logits at every position")
    args = parser.parse_args()

    import torch
    from transformers import TrainerCallback

    from pricer.data.tokenizer import builtin_tokenizer
    from pricer.llm.config import load_finetune_config
    from pricer.llm.loading import load_base_model, load_base_tokenizer
    from pricer.llm.train import lora_config, peak_memory_gib, sft_config, trainer_class

    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available()
    config = load_finetune_config(args.config)
    # On a CPU an hf model (7-8B) is out of reach: time the tiny shape with its recipe instead.
    shape = args.shape or ("tiny" if not gpu and config.model.kind == "hf" else None)
    if shape == "tiny" and config.model.kind != "tiny":
        print(f"(CPU: timing the tiny shape with {args.config.name}'s recipe; pass --shape to change)")
    if shape in ("llama-8b", "qwen-7b") and not gpu:
        gigabytes = 32 if shape == "llama-8b" else 30
        parser.error(f"--shape {shape} needs ~{gigabytes} GB of fp32 weights: run it on a GPU")

    started = time.perf_counter()
    if shape:
        model = random_model(shape, config.quantization)
        tokenizer = builtin_tokenizer()  # pads the batches; the token ids are synthetic
    else:
        tokenizer = load_base_tokenizer(config.model)
        model = load_base_model(config.model, config.quantization, tokenizer=tokenizer)
    if gpu and getattr(model, "is_loaded_in_4bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.training.gradient_checkpointing
        )
    setup_seconds = time.perf_counter() - started

    training = config.training.model_copy(update={
        "max_steps": args.warmup + args.steps, "batch_size": args.batch_size or config.training.batch_size,
        "eval_steps": None, "logging_steps": 1, "save_steps": 10**9, "max_length": max(args.max_tokens, 16),
        "completion_logits_only": not args.full_logits and config.training.completion_logits_only,
    })
    wandb_off = config.wandb.model_copy(update={"enabled": False})
    config = config.model_copy(update={"training": training, "wandb": wandb_off})
    n_rows = training.batch_size * training.gradient_accumulation_steps * (args.warmup + args.steps)
    vocab = model.get_input_embeddings().weight.shape[0]
    dataset = synthetic_dataset(n_rows, min(vocab, len(tokenizer)) if not shape else vocab,
                                args.min_tokens, args.max_tokens, seed=training.seed)

    class Clock(TrainerCallback):
        def __init__(self):
            self.start = None
            self.tokens0 = 0

        def on_step_end(self, _args, state, control, **kwargs):
            if state.global_step == args.warmup:
                if gpu:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                self.start, self.tokens0 = time.perf_counter(), int(state.num_input_tokens_seen)
            elif state.global_step == args.warmup + args.steps:
                if gpu:
                    torch.cuda.synchronize()
                self.seconds = time.perf_counter() - self.start
                self.tokens = int(state.num_input_tokens_seen) - self.tokens0

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        sft_args = sft_config(config, Path(tmp), has_eval=False)
        sft_args.save_strategy = "no"
        sft_args.disable_tqdm = True
        trainer = trainer_class(training.completion_logits_only)(
            model=model, args=sft_args, train_dataset=dataset, processing_class=tokenizer,
            peft_config=lora_config(config), callbacks=[clock],
        )
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        trainer.train()

    figures = {
        "config": str(args.config),
        "model": shape or config.model.kind,
        "device": torch.cuda.get_device_name() if gpu else f"cpu x{torch.get_num_threads()} threads",
        "quantized_4bit": bool(getattr(model, "is_loaded_in_4bit", False)),
        "batch_size": training.batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "optim": training.optim,
        "gradient_checkpointing": training.gradient_checkpointing,
        "completion_logits_only": training.completion_logits_only,
        "lora_r": config.lora.r,
        "trainable_params": trainable,
        "timed_steps": args.steps,
        "seconds": round(clock.seconds, 2),
        "tokens_per_s": round(clock.tokens / clock.seconds, 1),
        "s_per_step": round(clock.seconds / args.steps, 3),
        "peak_memory_gib": round(peak_memory_gib() or 0.0, 2),
        "setup_s": round(setup_seconds, 1),
    }
    print(f"{figures['model']} ({figures['device']}): {figures['tokens_per_s']:,} tokens/s, "
          f"{figures['s_per_step']} s/step, peak {figures['peak_memory_gib']} GiB "
          f"({'GPU allocator' if gpu else 'process RSS'})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
