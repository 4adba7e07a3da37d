"""API fine-tuning of a frontier model: data, budget check, a resumable job, its record, its model.

The chain, each step a plain function that a Prefect task wraps:

1. ``prepare_data``: train / validation JSONL in the chat fine-tuning format (system, user
   with the project prompt's question and item text, assistant "Price is $N.00").
2. ``validate_chat_jsonl`` + ``check_budget``: roles, content and the token count of every
   example, then the estimated training cost (trained tokens x epochs x price), printed before
   anything is sent; a job over ``budget_usd`` is refused (``BudgetExceeded``).
3. ``submit_job``: upload both files and create the job. Every id is saved at once in a state
   file named after the training file's hash (and the job's parameters), so a restarted flow
   resumes the job it already created instead of paying for another; the job also carries that
   key as metadata, which finds it even if the process died between "created" and "saved".
4. ``wait_for_job``: poll with backoff until succeeded / failed / cancelled, logging the job's
   events and metrics (train / valid loss per step) to MLflow, and to W&B when configured.
5. The fine-tuned model id is then evaluated and registered like any frontier model.

Token counts use tiktoken's ``o200k_base`` when tiktoken is installed and its data is
available offline, else an estimate of one token per four characters (plus per-message
overhead), which is what the budget check needs: an upper-bound-ish figure before spending.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import openai
import pandas as pd

from pricer.llm.frontier import (
    FrontierConfig,
    FrontierError,
    answer_text,
    atomic_write_text,
    build_messages,
    resolve_api_key,
)

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "cancelled")
ROLES = ("system", "user", "assistant")
TOKENS_PER_MESSAGE = 4
TOKENS_PER_EXAMPLE = 3


class BudgetExceeded(FrontierError):
    """The estimated training cost is over the configured budget: nothing was sent."""


class InvalidTrainingData(FrontierError):
    """The fine-tuning files break the chat format's rules."""


class JobFailed(FrontierError):
    """The provider reported the job failed or cancelled."""


def _finetune(config: FrontierConfig):
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


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
    ft = _finetune(config)
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
    ft = _finetune(config)
    billed = train_report.total_tokens * ft.n_epochs
    return CostEstimate(train_report.total_tokens, ft.n_epochs, billed, billed * ft.usd_per_1m_training / 1e6,
                        ft.budget_usd)


def check_budget(config: FrontierConfig, prepared: PreparedData) -> tuple[CostEstimate, dict[str, Any]]:
    """Validate both files and print the estimated cost; raise before anything is sent if over budget."""
    ft = _finetune(config)
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


# --------------------------------------------------------------------------- the job and its state


def job_key(config: FrontierConfig, prepared: PreparedData) -> str:
    """The resume key: the training file's hash, plus everything else that makes it a different job."""
    ft = _finetune(config)
    spec = {"val": prepared.val_sha256, "base_model": ft.base_model, "n_epochs": ft.n_epochs,
            "suffix": ft.suffix, "seed": ft.seed, "endpoint": config.base_url}
    extra = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    return f"{prepared.train_sha256[:24]}-{extra}"


@dataclass
class JobState:
    key: str
    train_sha256: str
    base_model: str
    training_file_id: str | None = None
    validation_file_id: str | None = None
    job_id: str | None = None
    status: str | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: str | None = None
    seen_event_ids: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    resumed: bool = False

    @staticmethod
    def path(state_dir: Path, key: str) -> Path:
        return Path(state_dir) / f"{key}.json"

    def save(self, state_dir: Path) -> Path:
        path = self.path(state_dir, self.key)
        data = {k: v for k, v in asdict(self).items() if k != "resumed"}
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, state_dir: Path, key: str) -> JobState | None:
        path = cls.path(state_dir, key)
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def make_client(config: FrontierConfig) -> openai.OpenAI:
    """The SDK client for the control-plane calls (files, jobs): its own retries honour Retry-After."""
    return openai.OpenAI(api_key=resolve_api_key(config), base_url=config.base_url,
                         max_retries=config.max_retries, timeout=config.timeout_s)


def _upload(client: openai.OpenAI, path: str) -> str:
    with open(path, "rb") as handle:
        return client.files.create(file=(Path(path).name, handle), purpose="fine-tune").id


def _file_exists(client: openai.OpenAI, file_id: str | None) -> bool:
    if not file_id:
        return False
    try:
        client.files.retrieve(file_id)
        return True
    except openai.NotFoundError:
        return False


def _find_job_by_key(client: openai.OpenAI, key: str) -> Any | None:
    """A live job this key already created (saved or not): the provider's own record wins."""
    for job in client.fine_tuning.jobs.list(limit=100, metadata={"pricer_key": key}):
        if (job.metadata or {}).get("pricer_key") == key and job.status not in ("failed", "cancelled"):
            return job
    return None


def submit_job(
    config: FrontierConfig,
    prepared: PreparedData,
    *,
    client: openai.OpenAI | None = None,
    retry_failed: bool = False,
) -> JobState:
    """Upload the files and create the job, or resume the job this data already started."""
    ft = _finetune(config)
    key = job_key(config, prepared)
    state = JobState.load(ft.state_dir, key)
    if state is not None and state.job_id:
        if state.status in ("failed", "cancelled") and retry_failed:
            log.warning("job %s ended %s; starting a new one (retry_failed)", state.job_id, state.status)
            state = JobState(key, prepared.train_sha256, ft.base_model,
                             state.training_file_id, state.validation_file_id)
        else:
            state.resumed = True
            log.info("resuming fine-tuning job %s (%s) from %s", state.job_id, state.status,
                     JobState.path(ft.state_dir, key))
            return state
    state = state or JobState(key, prepared.train_sha256, ft.base_model)
    client = client or make_client(config)

    found = _find_job_by_key(client, key)
    if found is not None:  # created before a crash that lost the state file
        state.job_id, state.status, state.resumed = found.id, found.status, True
        state.training_file_id = found.training_file
        state.validation_file_id = found.validation_file
        state.save(ft.state_dir)
        log.info("found fine-tuning job %s by its metadata; resuming it", found.id)
        return state

    if not _file_exists(client, state.training_file_id):
        state.training_file_id = _upload(client, prepared.train_path)
        state.save(ft.state_dir)
    if prepared.val_path and not _file_exists(client, state.validation_file_id):
        state.validation_file_id = _upload(client, prepared.val_path)
        state.save(ft.state_dir)
    job = client.fine_tuning.jobs.create(
        model=ft.base_model,
        training_file=state.training_file_id,
        validation_file=state.validation_file_id or openai.omit,
        hyperparameters={"n_epochs": ft.n_epochs},
        suffix=ft.suffix,
        seed=ft.seed,
        metadata={"pricer_key": key},
        extra_headers={"Idempotency-Key": f"pricer-ft-{key}"},
    )
    state.job_id, state.status = job.id, job.status
    state.save(ft.state_dir)
    log.info("created fine-tuning job %s on %s", job.id, ft.base_model)
    return state


class _JobRecorder:
    """Where job events go: MLflow metrics (by step) and an events log, and W&B when configured."""

    def __init__(self, config: FrontierConfig, state: JobState, run_id: str | None) -> None:
        self.run_id = run_id
        self.events: list[dict[str, Any]] = []
        self._mlflow = None
        if run_id is not None:
            from mlflow.tracking import MlflowClient

            self._mlflow = MlflowClient()
        self._wandb = None
        ft = _finetune(config)
        if ft.wandb is not None and ft.wandb.mode != "disabled":
            import wandb

            ft.wandb.dir.mkdir(parents=True, exist_ok=True)
            self._wandb = wandb.init(
                project=ft.wandb.project, entity=ft.wandb.entity, mode=ft.wandb.mode, dir=str(ft.wandb.dir),
                name=state.job_id, id=(state.job_id or state.key).replace(":", "-"), resume="allow",
                config={"base_model": ft.base_model, "n_epochs": ft.n_epochs, "job_id": state.job_id,
                        "training_file_sha256": state.train_sha256},
                reinit="finish_previous",
            )

    def event(self, event: Any) -> None:
        data = dict(getattr(event, "data", None) or {})
        record = {"id": event.id, "created_at": event.created_at, "level": event.level,
                  "type": getattr(event, "type", None), "message": event.message, "data": data}
        self.events.append(record)
        log.info("job event: %s", event.message)
        if getattr(event, "type", None) == "metrics" and "step" in data:
            step = int(data["step"])
            values = {f"ft.{k}": float(v) for k, v in data.items()
                      if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)}
            if self._mlflow is not None:
                for name, value in values.items():
                    self._mlflow.log_metric(self.run_id, name, value, step=step)
            if self._wandb is not None:
                self._wandb.log(values, step=step)

    def status(self, state: JobState, polls: int) -> None:
        if self._mlflow is not None:
            self._mlflow.set_tag(self.run_id, "pricer.ft.status", state.status or "unknown")
            self._mlflow.log_metric(self.run_id, "ft.polls", polls)

    def close(self, state: JobState) -> None:
        if self._mlflow is not None:
            tags = {"pricer.ft.job_id": state.job_id or "", "pricer.ft.status": state.status or "unknown",
                    "pricer.ft.model": state.fine_tuned_model or "none"}
            for key, value in tags.items():
                self._mlflow.set_tag(self.run_id, key, value)
            if state.trained_tokens:
                self._mlflow.log_metric(self.run_id, "ft.trained_tokens", state.trained_tokens)
            if self.events:
                self._mlflow.log_text(self.run_id, "\n".join(json.dumps(e) for e in self.events) + "\n",
                                      "finetune/events.jsonl")
        if self._wandb is not None:
            self._wandb.summary.update({"status": state.status, "fine_tuned_model": state.fine_tuned_model,
                                        "trained_tokens": state.trained_tokens})
            self._wandb.finish()


def _new_events(client: openai.OpenAI, job_id: str, seen: set[str]) -> list[Any]:
    """Events not seen yet, oldest first (the API pages newest first)."""
    fresh: list[Any] = []
    after = None
    while True:
        page = client.fine_tuning.jobs.list_events(job_id, limit=100, **({"after": after} if after else {}))
        batch = list(page.data)
        stop = False
        for event in batch:
            if event.id in seen:
                stop = True
                break
            fresh.append(event)
        if stop or not batch or not getattr(page, "has_more", False):
            break
        after = batch[-1].id
    return list(reversed(fresh))


def wait_for_job(
    config: FrontierConfig,
    state: JobState,
    *,
    run_id: str | None = None,
    client: openai.OpenAI | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> JobState:
    """Poll until the job ends, with backoff; every poll is saved, so a restart picks up from here."""
    ft = _finetune(config)
    if not state.job_id:
        raise FrontierError("no job to wait for: submit_job first")
    client = client or make_client(config)
    recorder = _JobRecorder(config, state, run_id)
    seen = set(state.seen_event_ids)
    delay = ft.poll_initial_s
    started = time.monotonic()
    polls = 0
    rng = random.Random()
    try:
        while True:
            job = client.fine_tuning.jobs.retrieve(state.job_id)
            polls += 1
            for event in _new_events(client, state.job_id, seen):
                seen.add(event.id)
                recorder.event(event)
            state.status = job.status
            state.fine_tuned_model = job.fine_tuned_model
            state.trained_tokens = job.trained_tokens
            error = job.error
            state.error = None if error is None else (getattr(error, "message", None) or str(error))
            state.seen_event_ids = sorted(seen)
            state.save(ft.state_dir)
            recorder.status(state, polls)
            if job.status in TERMINAL:
                break
            if time.monotonic() - started > ft.poll_timeout_s:
                raise TimeoutError(f"job {state.job_id} still {job.status} after {ft.poll_timeout_s:.0f}s; "
                                   "run again to keep waiting (it resumes)")
            sleep(delay * rng.uniform(0.8, 1.2))
            delay = min(delay * 1.6, ft.poll_max_s)
    finally:
        recorder.close(state)
    log.info("job %s ended %s after %d polls (%s)", state.job_id, state.status, polls, state.fine_tuned_model)
    return state


def fine_tuned_config(config: FrontierConfig, state: JobState) -> FrontierConfig:
    """The config that calls the fine-tuned model (same endpoint, key variable and prices)."""
    if state.status != "succeeded" or not state.fine_tuned_model:
        raise JobFailed(f"job {state.job_id} ended {state.status}: {state.error or 'no fine-tuned model'}")
    ft = _finetune(config)
    update: dict[str, Any] = {"model": state.fine_tuned_model, "name": f"{config.name}-ft", "finetune": None,
                              "k_neighbours": 0}  # plain prompts: the model was trained on the prompt alone
    if ft.tuned_usd_per_1m_input is not None:
        update["usd_per_1m_input"] = ft.tuned_usd_per_1m_input
    if ft.tuned_usd_per_1m_output is not None:
        update["usd_per_1m_output"] = ft.tuned_usd_per_1m_output
    return config.model_copy(update=update)


def track_job(
    config: FrontierConfig,
    state: JobState,
    *,
    estimate: CostEstimate | None = None,
    validation: dict[str, Any] | None = None,
    experiment: str = "pricer",
    tracking_uri: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[JobState, str]:
    """Wait for the job inside its own MLflow run (params, estimate, events, outcome); returns the run id."""
    from mlflow.tracking import MlflowClient

    from pricer.tracking.runs import stage_run

    ft = _finetune(config)
    params = {"finetune": ft.model_dump(mode="json"), "model": config.model,
              "endpoint": config.base_url or "openai"}
    tags = {"pricer.ft.job_id": state.job_id or "", "pricer.ft.train_sha256": state.train_sha256,
            "pricer.ft.resumed": str(state.resumed).lower()}
    with stage_run("frontier-finetune", params, run_name=f"ft-{config.name}", experiment=experiment,
                   tracking_uri=tracking_uri, tags=tags) as run:
        run_id = run.info.run_id
        client = MlflowClient()
        if estimate is not None:
            client.log_metric(run_id, "ft.estimated_cost_usd", estimate.usd)
            client.log_metric(run_id, "ft.estimated_training_tokens", estimate.billed_tokens)
        if validation is not None:
            client.log_dict(run_id, validation, "finetune/validation.json")
        state = wait_for_job(config, state, run_id=run_id, sleep=sleep)
    return state, run_id


def run_finetune(
    config: FrontierConfig,
    *,
    data_dir: Path | None = None,
    reports_dir: Path | None = None,
    evaluate: bool = True,
    retry_failed: bool = False,
    experiment: str = "pricer",
    tracking_uri: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The whole chain in one process (the CLI); the flow runs the same steps as separate tasks."""
    prepared = prepare_data(config, data_dir)
    estimate, validation = check_budget(config, prepared)
    state = submit_job(config, prepared, retry_failed=retry_failed)
    state, run_id = track_job(config, state, estimate=estimate, validation=validation, experiment=experiment,
                              tracking_uri=tracking_uri, sleep=sleep)
    summary: dict[str, Any] = {"job_id": state.job_id, "status": state.status, "resumed": state.resumed,
                               "fine_tuned_model": state.fine_tuned_model, "estimated_cost_usd": estimate.usd,
                               "finetune_run_id": run_id, "evaluation": None}
    if state.status != "succeeded":
        raise JobFailed(f"job {state.job_id} ended {state.status}: {state.error or 'no reason given'}")
    if evaluate:
        summary["evaluation"] = evaluate_fine_tuned(config, state, data_dir=data_dir, reports_dir=reports_dir,
                                                    experiment=experiment, tracking_uri=tracking_uri)
    return summary


def evaluate_fine_tuned(
    config: FrontierConfig,
    state: JobState,
    *,
    data_dir: Path | None = None,
    reports_dir: Path | None = None,
    experiment: str = "pricer",
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Score the fine-tuned model id on the test split and register it through the gate."""
    from pricer.llm.frontier_eval import run_frontier_eval

    ft = _finetune(config)
    return run_frontier_eval(fine_tuned_config(config, state), data_dir=data_dir, reports_dir=reports_dir,
                             experiment=experiment, tracking_uri=tracking_uri,
                             tags={"pricer.ft.job_id": state.job_id or "",
                                   "pricer.ft.base_model": ft.base_model})
