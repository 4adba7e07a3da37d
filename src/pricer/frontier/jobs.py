"""API fine-tuning jobs that survive restarts: created once, polled until they end, their events recorded.

``submit_job`` uploads both files and creates the job. Every id is saved at once in a state file named
after the training file's hash (and the job's parameters), so a restarted flow resumes the job it
already created instead of paying for another; the job also carries that key as metadata, which finds
it even if the process died between "created" and "saved". ``wait_for_job`` polls with backoff until
succeeded / failed / cancelled, logging the job's events and metrics (train / valid loss per step) to
MLflow, and to W&B when configured. Every control-plane call goes through the project's one retry
policy (``pricer.frontier.client.sync_call``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import openai

from pricer.core.files import atomic_write_text
from pricer.frontier.client import sync_call
from pricer.frontier.config import FrontierConfig, FrontierError, resolve_api_key
from pricer.frontier.finetune import JobFailed, PreparedData, finetune_settings

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "cancelled")


class JobStillRunning(FrontierError):
    """The job outlived the poll timeout; its id is saved, so the next run resumes waiting."""


def job_key(config: FrontierConfig, prepared: PreparedData) -> str:
    """The resume key: the training file's hash, plus everything else that makes it a different job."""
    ft = finetune_settings(config)
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
    attempt: int = 0  # jobs started for this key: a retry of a failed one is a new request, not a replay
    run_id: str | None = None  # the MLflow run that tracks the job: a resumed wait goes on in the same run
    resumed: bool = False

    @property
    def idempotency_key(self) -> str:
        return f"pricer-ft-{self.key}-{self.attempt}"

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
    """The SDK client for the control-plane calls (files, jobs). Its own retries are off: every call goes
    through ``sync_call``, the project's one retry policy."""
    return openai.OpenAI(api_key=resolve_api_key(config), base_url=config.base_url, max_retries=0,
                         timeout=config.timeout_s)


def _upload(config: FrontierConfig, client: openai.OpenAI, path: str) -> str:
    def upload() -> str:
        with open(path, "rb") as handle:
            return client.files.create(file=(Path(path).name, handle), purpose="fine-tune").id

    return sync_call(config, upload)


def _file_exists(config: FrontierConfig, client: openai.OpenAI, file_id: str | None) -> bool:
    if not file_id:
        return False
    try:
        sync_call(config, lambda: client.files.retrieve(file_id))
        return True
    except openai.NotFoundError:
        return False


def _jobs_by_key(config: FrontierConfig, client: openai.OpenAI, key: str) -> tuple[list[Any], list[Any]]:
    """The live and the dead jobs this key already created, newest first: the provider's own record wins
    over a state file that a crash lost."""
    jobs = sync_call(config, lambda: list(client.fine_tuning.jobs.list(limit=100, metadata={"pricer_key": key})))
    mine = sorted((job for job in jobs if (job.metadata or {}).get("pricer_key") == key),
                  key=lambda job: job.created_at, reverse=True)
    dead = [job for job in mine if job.status in ("failed", "cancelled")]
    return [job for job in mine if job not in dead], dead


def submit_job(
    config: FrontierConfig,
    prepared: PreparedData,
    *,
    client: openai.OpenAI | None = None,
    retry_failed: bool = False,
) -> JobState:
    """Upload the files and create the job, or resume the job this data already started."""
    ft = finetune_settings(config)
    key = job_key(config, prepared)
    state = JobState.load(ft.state_dir, key)
    if state is not None and state.job_id:
        if state.status in ("failed", "cancelled") and retry_failed:
            log.warning("job %s ended %s; starting a new one (retry_failed)", state.job_id, state.status)
            state = JobState(key, prepared.train_sha256, ft.base_model,
                             state.training_file_id, state.validation_file_id, attempt=state.attempt + 1)
        else:
            state.resumed = True
            log.info("resuming fine-tuning job %s (%s) from %s", state.job_id, state.status,
                     JobState.path(ft.state_dir, key))
            return state
    state = state or JobState(key, prepared.train_sha256, ft.base_model)
    client = client or make_client(config)

    live, dead = _jobs_by_key(config, client, key)
    # A new job after dead ones is a new request: the key of a dead attempt would hand back its dead job.
    state.attempt = max(state.attempt, len(dead))
    found = live[0] if live else (dead[0] if dead and not retry_failed else None)
    if found is not None:  # created before a crash that lost the state file
        state.job_id, state.status, state.resumed = found.id, found.status, True
        state.training_file_id = found.training_file
        state.validation_file_id = found.validation_file
        state.save(ft.state_dir)
        log.info("found fine-tuning job %s by its metadata; resuming it", found.id)
        return state

    if not _file_exists(config, client, state.training_file_id):
        state.training_file_id = _upload(config, client, prepared.train_path)
        state.save(ft.state_dir)
    if prepared.val_path and not _file_exists(config, client, state.validation_file_id):
        state.validation_file_id = _upload(config, client, prepared.val_path)
        state.save(ft.state_dir)
    job = sync_call(config, lambda: client.fine_tuning.jobs.create(
        model=ft.base_model,
        training_file=state.training_file_id,
        validation_file=state.validation_file_id or openai.omit,
        hyperparameters={"n_epochs": ft.n_epochs},
        suffix=ft.suffix,
        seed=ft.seed,
        metadata={"pricer_key": key},
        extra_headers={"Idempotency-Key": state.idempotency_key},
    ))
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
        ft = finetune_settings(config)
        if ft.wandb.enabled:
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
                # At the event's own time: a poller killed after logging and before saving its state logs
                # the event again on resume, and MLflow keeps one row for the same (time, step, value).
                timestamp = int(event.created_at * 1000)
                for name, value in values.items():
                    self._mlflow.log_metric(self.run_id, name, value, step=step, timestamp=timestamp)
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


def _new_events(config: FrontierConfig, client: openai.OpenAI, job_id: str, seen: set[str],
                sleep: Callable[[float], None]) -> list[Any]:
    """Events not seen yet, oldest first (the API pages newest first)."""
    fresh: list[Any] = []
    after = None
    while True:
        cursor = {"after": after} if after else {}
        page = sync_call(config, partial(client.fine_tuning.jobs.list_events, job_id, limit=100, **cursor),
                         sleep=sleep)
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
    ft = finetune_settings(config)
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
            job = sync_call(config, lambda: client.fine_tuning.jobs.retrieve(state.job_id), sleep=sleep)
            polls += 1
            for event in _new_events(config, client, state.job_id, seen, sleep):
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
                raise JobStillRunning(f"job {state.job_id} still {job.status} after {ft.poll_timeout_s:.0f}s; "
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
    ft = finetune_settings(config)
    update: dict[str, Any] = {"model": state.fine_tuned_model, "name": f"{config.name}-ft", "finetune": None,
                              "k_neighbours": 0}  # plain prompts: the model was trained on the prompt alone
    if ft.tuned_usd_per_1m_input is not None:
        update["usd_per_1m_input"] = ft.tuned_usd_per_1m_input
    if ft.tuned_usd_per_1m_output is not None:
        update["usd_per_1m_output"] = ft.tuned_usd_per_1m_output
    return config.model_copy(update=update)
