"""API fine-tuning data: the chat JSONL files, their validation and the budget check before anything is sent.

1. ``prepare_data``: train / validation JSONL in the chat fine-tuning format, built from the same
   messages the model is later asked with (``pricer.frontier.messages``), answered "Price is $N.00".
2. ``validate_chat_jsonl`` + ``check_budget``: roles, content and the token count of every example,
   then the estimated training cost (trained tokens x epochs x price), printed before anything is
   sent; a job over ``budget_usd`` is refused (``BudgetExceeded``).

Token counts use tiktoken's ``o200k_base`` when tiktoken is installed and its data is available
offline, else an estimate of one token per four characters (plus per-message overhead), which is what
the budget check needs: an upper-bound-ish figure before spending.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from pricer.core.files import atomic_write_text, sha256_file
from pricer.core.prompt import answer_text
from pricer.frontier.config import FineTuneConfig, FrontierConfig, FrontierError
from pricer.frontier.messages import build_messages

ROLES = ("system", "user", "assistant")
TOKENS_PER_MESSAGE = 4
TOKENS_PER_EXAMPLE = 3


class BudgetExceeded(FrontierError):
    """The estimated training cost is over the configured budget: nothing was sent."""


class InvalidTrainingData(FrontierError):
    """The fine-tuning files break the chat format's rules."""


class JobFailed(FrontierError):
    """The provider reported the job failed or cancelled."""


def finetune_settings(config: FrontierConfig) -> FineTuneConfig:
    if config.finetune is None:
        raise FrontierError(f"{config.name}: the config has no `finetune:` section")
    return config.finetune


# --------------------------------------------------------------------------- tokens


@lru_cache(maxsize=1)
def _tiktoken_encoding() -> Any:
    try:
        import tiktoken

        return tiktoken.get_encoding("o200k_base")
    except Exception:  # not installed, or its BPE file cannot be fetched offline
        return None


def token_counter() -> str:
    return "tiktoken:o200k_base" if _tiktoken_encoding() is not None else "estimate:chars/4"


def count_tokens(text: str) -> int:
    encoding = _tiktoken_encoding()
    if encoding is not None:
        return len(encoding.encode(text))
    return math.ceil(len(text) / 4)


def example_tokens(messages: list[dict[str, Any]]) -> int:
    per_message = (TOKENS_PER_MESSAGE + count_tokens(str(m.get("content", ""))) for m in messages)
    return TOKENS_PER_EXAMPLE + sum(per_message)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PreparedData:
    train_path: str
    val_path: str | None
    train_sha256: str
    val_sha256: str | None
    n_train: int
    n_val: int


def chat_example(text: str, price: float, system_prompt: str) -> dict[str, Any]:
    messages = build_messages(text, (), system_prompt)
    messages.append({"role": "assistant", "content": answer_text(price)})
    return {"messages": messages}


def write_chat_jsonl(items: pd.DataFrame, path: Path, system_prompt: str) -> int:
    lines = [json.dumps(chat_example(str(text), float(price), system_prompt), ensure_ascii=False)
             for text, price in zip(items["text"], items["price"], strict=True)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return len(lines)


def prepare_data(
    config: FrontierConfig, data_dir: Path | None = None, out_dir: Path | None = None
) -> PreparedData:
    """Write train.jsonl / val.jsonl for the job from the curated splits (deterministic)."""
    ft = finetune_settings(config)
    data_dir = Path(data_dir or config.evaluation.data_dir)
    out_dir = Path(out_dir or ft.out_dir)
    train = pd.read_parquet(data_dir / "train.parquet", columns=["text", "price"])
    if ft.n_train is not None:
        train = train.head(ft.n_train)
    train_path = out_dir / "train.jsonl"
    n_train = write_chat_jsonl(train, train_path, config.system_prompt)
    val_path, n_val = None, 0
    if ft.n_val:
        val = pd.read_parquet(data_dir / "val.parquet", columns=["text", "price"]).head(ft.n_val)
        if len(val):
            val_path = out_dir / "val.jsonl"
            n_val = write_chat_jsonl(val, val_path, config.system_prompt)
    return PreparedData(str(train_path), None if val_path is None else str(val_path), sha256_file(train_path),
                        None if val_path is None else sha256_file(val_path), n_train, n_val)


@dataclass
class ValidationReport:
    path: str
    n_examples: int = 0
    total_tokens: int = 0
    max_tokens: int = 0
    assistant_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    counter: str = field(default_factory=token_counter)

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_chat_jsonl(path: Path, max_example_len: int, min_examples: int = 1) -> ValidationReport:
    """Check every line the way the fine-tuning API does before it accepts a file."""
    report = ValidationReport(str(path))
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{Path(path).name}:{number}"
        try:
            example = json.loads(line)
        except json.JSONDecodeError as error:
            report.errors.append(f"{where}: not JSON ({error.msg})")
            continue
        messages = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(messages, list) or not messages:
            report.errors.append(f"{where}: no 'messages' list")
            continue
        problems = []
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                problems.append(f"message {index} is not an object")
                continue
            if message.get("role") not in ROLES:
                problems.append(f"message {index} has role {message.get('role')!r}, not one of {ROLES}")
            if not isinstance(message.get("content"), str) or not message["content"].strip():
                problems.append(f"message {index} has no text content")
            unknown = set(message) - {"role", "content", "name", "weight"}
            if unknown:
                problems.append(f"message {index} has unknown keys {sorted(unknown)}")
        roles = [m.get("role") for m in messages if isinstance(m, dict)]
        if "user" not in roles:
            problems.append("no user message")
        if not roles or roles[-1] != "assistant":
            problems.append("the last message is not the assistant's answer")
        if problems:
            report.errors.append(f"{where}: " + "; ".join(problems))
            continue
        tokens = example_tokens(messages)
        if tokens > max_example_len:
            report.errors.append(f"{where}: {tokens} tokens, over the limit of {max_example_len}")
            continue
        report.n_examples += 1
        report.total_tokens += tokens
        report.max_tokens = max(report.max_tokens, tokens)
        report.assistant_tokens += sum(count_tokens(m["content"]) for m in messages
                                       if m["role"] == "assistant")
    if report.n_examples < min_examples:
        report.errors.append(
            f"{Path(path).name}: {report.n_examples} valid examples, at least {min_examples} needed")
    return report


@dataclass(frozen=True)
class CostEstimate:
    training_tokens: int  # per epoch
    n_epochs: int
    billed_tokens: int
    usd: float
    budget_usd: float

    def describe(self) -> str:
        return (f"estimated training cost ${self.usd:,.4f}: {self.training_tokens:,} tokens x "
                f"{self.n_epochs} epoch(s) = {self.billed_tokens:,} trained tokens "
                f"(budget ${self.budget_usd:,.4g})")


def estimate_cost(config: FrontierConfig, train_report: ValidationReport) -> CostEstimate:
    ft = finetune_settings(config)
    billed = train_report.total_tokens * ft.n_epochs
    return CostEstimate(train_report.total_tokens, ft.n_epochs, billed, billed * ft.usd_per_1m_training / 1e6,
                        ft.budget_usd)


def check_budget(config: FrontierConfig, prepared: PreparedData) -> tuple[CostEstimate, dict[str, Any]]:
    """Validate both files and print the estimated cost; raise before anything is sent if over budget."""
    ft = finetune_settings(config)
    train = validate_chat_jsonl(Path(prepared.train_path), ft.max_example_len, ft.min_examples)
    reports = [train]
    if prepared.val_path:
        reports.append(validate_chat_jsonl(Path(prepared.val_path), ft.max_example_len, 1))
    errors = [error for report in reports for error in report.errors]
    if errors:
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise InvalidTrainingData(f"the fine-tuning data has {len(errors)} problem(s):\n  {shown}{more}")
    estimate = estimate_cost(config, train)
    print(f"{config.name} fine-tune of {ft.base_model}: {estimate.describe()} "
          f"[{train.n_examples} examples, longest {train.max_tokens} tokens, counted with {train.counter}]")
    if estimate.usd > ft.budget_usd:
        raise BudgetExceeded(f"{estimate.describe()}: over budget, refusing to start the job "
                             f"(raise finetune.budget_usd or use fewer examples / epochs)")
    return estimate, {"train": asdict(train), "val": asdict(reports[1]) if len(reports) > 1 else None}
