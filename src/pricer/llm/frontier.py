"""Frontier models behind any OpenAI-compatible chat endpoint, priced per token and never paid twice.

One YAML file under ``configs/frontier/`` picks the endpoint (OpenAI, Anthropic's
OpenAI-compatible API, a local vLLM / Ollama / llama.cpp server) and how to call it. The
config holds the *name* of the environment variable with the API key, never the key; the
key is read when a client is made, so a registered model reads it at predict time.

``FrontierClient`` wraps the real ``openai.AsyncOpenAI`` client with what a paid, flaky,
rate-limited API needs:

- concurrency bounded by a semaphore and a requests-per-minute limiter;
- retries with exponential backoff and jitter on 429, 408/409, 5xx, timeouts, dropped
  connections and malformed bodies, honouring ``Retry-After`` (the SDK's own retries are off,
  so every attempt is counted and traced here); 4xx errors are not retried, and 401/403
  stop the run (``FrontierAuthError``) rather than scoring every item "unparseable";
- a per-request deadline (``timeout_s``, covering a whole stream too);
- an on-disk response cache keyed by (model, messages, parameters), written atomically,
  so a re-run is served from disk and pays nothing; identical requests in flight are merged;
- one ``Idempotency-Key`` per logical call, sent with every attempt, and a JSONL cost log
  with one line per billable call, keyed by it, so a retried call is never recorded twice;
- token usage, cost, latency and (when streaming) time to first token per call, summed in
  ``UsageTotals`` for MLflow metrics;
- an MLflow trace per batch with one CHAT_MODEL span per call (inputs, output, token usage,
  cost; never the key or headers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import openai
from pydantic import Field, field_validator, model_validator

from pricer.config import PROMPT_ANSWER_PREFIX, PROMPT_QUESTION, StrictModel, load_config

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]

DEFAULT_SYSTEM_PROMPT = (
    "You estimate the prices of products from their descriptions. "
    "Reply only with the price in US dollars, for example 'Price is $99.00', with no explanation."
)
RAG_INTRO = "To help, here are some similar items and their prices:"
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})
AUTH_STATUS = frozenset({401, 403})
MAX_RETRY_AFTER_S = 600.0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER_KEY = "not-needed"  # local servers ignore the key; the SDK insists on one


# --------------------------------------------------------------------------- configuration


class WandbConfig(StrictModel):
    """Optional Weights & Biases mirror of a fine-tuning job's metrics (offline needs no account)."""

    project: str = "pricer"
    mode: Literal["offline", "online", "disabled"] = "offline"
    dir: Path = Path("wandb")
    entity: str | None = None


class FineTuneConfig(StrictModel):
    """An API fine-tuning job: which base model, how much data, and the most it may cost."""

    base_model: str
    n_train: int | None = Field(500, gt=0)  # examples from the train split (None: all)
    n_val: int | None = Field(50, ge=0)  # examples from the val split (0: no validation file)
    n_epochs: int = Field(1, ge=1, le=50)
    suffix: str = Field("pricer", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    seed: int = 42
    usd_per_1m_training: float = Field(3.0, ge=0)  # price of one million trained tokens
    # What calling the fine-tuned model costs (providers charge more than for the base model).
    tuned_usd_per_1m_input: float | None = Field(None, ge=0)
    tuned_usd_per_1m_output: float | None = Field(None, ge=0)
    budget_usd: float = Field(5.0, ge=0)  # refuse to start a job estimated above this
    max_example_len: int = Field(4096, gt=0)  # tokens per example
    min_examples: int = Field(10, ge=1)
    out_dir: Path = Path("data/frontier")
    state_dir: Path = Path("data/frontier/jobs")
    poll_initial_s: float = Field(5.0, gt=0)
    poll_max_s: float = Field(60.0, gt=0)
    poll_timeout_s: float = Field(6 * 3600.0, gt=0)
    wandb: WandbConfig | None = None


class FrontierEvalConfig(StrictModel):
    data_dir: Path = Path("data/curated")
    reports_dir: Path = Path("reports")
    limit: int | None = Field(250, gt=0)  # test items to price (None: the whole split); costs money
    batch_size: int = Field(256, gt=0)
    register_as: str = "pricer-frontier"
    register_model: bool = True  # register as register_as and run the promotion gate


class FrontierConfig(StrictModel):
    """One OpenAI-compatible chat endpoint and how to call it (``configs/frontier/*.yaml``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # label in reports, runs and the harness
    model: str
    base_url: str | None = None  # None: api.openai.com
    api_key_env: str | None = "OPENAI_API_KEY"  # the NAME of the variable; None for keyless local servers
    usd_per_1m_input: float = Field(0.0, ge=0)
    usd_per_1m_output: float = Field(0.0, ge=0)
    max_concurrency: int = Field(8, ge=1, le=1024)
    requests_per_minute: float | None = Field(None, gt=0)
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(6, ge=0, le=50)
    backoff_initial_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(16, gt=0)
    seed: int | None = 42
    stream: bool = False
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    cache_dir: Path | None = Path(".cache/frontier")  # None: no response cache
    cost_log: Path | None = Path("reports/frontier/cost_log.jsonl")
    k_neighbours: int = Field(0, ge=0, le=50)  # similar training items (with prices) in the prompt
    trace: bool = True  # MLflow tracing of every call
    evaluation: FrontierEvalConfig = Field(default_factory=FrontierEvalConfig)
    finetune: FineTuneConfig | None = None

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            # Deliberately not echoing the value: it may be a pasted key.
            raise ValueError(
                "must be the NAME of an environment variable holding the key (e.g. OPENAI_API_KEY), "
                "never the key itself"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _backoff(self) -> FrontierConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self

    def safe_dict(self) -> dict[str, Any]:
        """The config as plain JSON data: it holds no secret by construction (only the env var's name)."""
        return self.model_dump(mode="json")


def load_frontier_config(path: str | Path) -> FrontierConfig:
    return load_config(FrontierConfig, path)


class FrontierError(RuntimeError):
    """The endpoint cannot be used at all (no key, bad key, unknown model...)."""


class FrontierAuthError(FrontierError):
    """The endpoint refused the credentials (401/403): no point pricing further items."""


def resolve_api_key(config: FrontierConfig) -> str:
    """The API key from the environment variable the config names (read now, never stored)."""
    if config.api_key_env is None:
        return _PLACEHOLDER_KEY
    key = os.environ.get(config.api_key_env)
    if not key:
        raise FrontierError(
            f"environment variable {config.api_key_env} is not set: it must hold the API key for "
            f"{config.name} ({config.base_url or 'api.openai.com'})"
        )
    return key


# --------------------------------------------------------------------------- prompts and answers

_DOLLAR_NUMBER = re.compile(r"\$\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?")
_NUMBER = re.compile(r"(?<![\w.,])(-)?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\d])")


def parse_price(answer: Any) -> float | None:
    """A model's answer -> a price in USD, or None when it holds no usable number.

    A number after a ``$`` wins ("Model 3000 costs $45" -> 45); otherwise the first plain
    number. Thousands separators are understood ("$1,299.99"), negative numbers, NaN,
    infinities and prose without digits give None.
    """
    if answer is None:
        return None
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        value = float(answer)
        return value if math.isfinite(value) and value >= 0 else None
    text = str(answer).strip()
    if not text:
        return None
    match = _DOLLAR_NUMBER.search(text)
    if match is None:
        plain = _NUMBER.search(text)
        if plain is None or plain.group(1):
            return None
        whole, fraction = plain.group(2), plain.group(3)
    else:
        whole, fraction = match.group(1), match.group(2)
    try:
        value = float(whole.replace(",", "") + (fraction or ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def user_prompt(text: str, neighbours: Sequence[tuple[str, float]] = ()) -> str:
    """The project prompt's question and item text, after similar items and their prices if given."""
    question = f"{PROMPT_QUESTION}\n\n{text}"
    if not neighbours:
        return question
    examples = "\n\n".join(f"{other}\n{PROMPT_ANSWER_PREFIX}{price:.2f}" for other, price in neighbours)
    return f"{RAG_INTRO}\n\n{examples}\n\nAnd now the item to price.\n{question}"


def build_messages(
    text: str, neighbours: Sequence[tuple[str, float]] = (), system_prompt: str = DEFAULT_SYSTEM_PROMPT
) -> Messages:
    messages: Messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": user_prompt(text, neighbours)})
    return messages


def answer_text(price: float) -> str:
    """What a fine-tuned model is taught to say: the project's answer prefix and whole dollars."""
    return f"{PROMPT_ANSWER_PREFIX}{round(price):.2f}"


# --------------------------------------------------------------------------- cache, cost log, limiter


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(model: str, messages: Messages, params: Mapping[str, Any]) -> str:
    """The cache key of one request: sha256 of (model, messages, sampling parameters).

    The endpoint URL is not part of it: the same model name behind another URL (a proxy, a
    region) is taken to be the same model. Give local models distinct names.
    """
    payload = _canonical({"model": model, "messages": messages, "params": dict(params)})
    return hashlib.sha256(payload.encode()).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that a reader sees the old content or the new, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ResponseCache:
    """One JSON file per request key (sharded by its first two hex digits), written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("unreadable cache entry %s; it will be fetched again", path.name)
            return None

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        atomic_write_text(self._path(key), _canonical(value))

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json")) if self.root.exists() else 0


class CostLog:
    """Append-only JSONL, one line per billable call; a key already recorded is never recorded again."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    self._seen.add(json.loads(line)["idempotency_key"])
                except (ValueError, KeyError, TypeError):
                    continue

    def record(self, entry: Mapping[str, Any]) -> bool:
        key = entry["idempotency_key"]
        line = (_canonical(entry) + "\n").encode("utf-8")
        with self._lock:
            if key in self._seen:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One write() on an O_APPEND descriptor: lines from several processes never interleave.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            self._seen.add(key)
            return True


class RateLimiter:
    """Spaces request starts at least 60 / requests_per_minute seconds apart (shared across loops)."""

    def __init__(self, requests_per_minute: float | None) -> None:
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Claim the next start slot; returns how long to wait for it."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now

    async def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    parsed = email.utils.parsedate_to_datetime(raw) if raw else None
    if parsed is None:
        return None
    return max(0.0, parsed.timestamp() - time.time())


# --------------------------------------------------------------------------- results and totals


@dataclass
class CallResult:
    content: str | None
    price: float | None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    ttft_s: float | None = None
    cached: bool = False
    attempts: int = 0
    error: str | None = None


@dataclass
class UsageTotals:
    """Sums over every call a client made: what a run cost and how the endpoint behaved."""

    calls: int = 0
    cache_hits: int = 0
    billed_calls: int = 0
    failed_calls: int = 0
    unparseable: int = 0
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    malformed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def bump(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def add_wall(self, seconds: float) -> None:
        with self._lock:
            self.wall_s += seconds

    def add(self, result: CallResult) -> None:
        with self._lock:
            self.calls += 1
            self.attempts += result.attempts
            self.retries += max(0, result.attempts - 1)
            if result.price is None:
                self.unparseable += 1
            if result.cached:
                self.cache_hits += 1
                return
            if result.error is not None:
                self.failed_calls += 1
                return
            self.billed_calls += 1
            self.input_tokens += result.input_tokens
            self.output_tokens += result.output_tokens
            self.cost_usd += result.cost_usd
            self.latencies.append(result.latency_s)
            if result.ttft_s is not None:
                self.ttfts.append(result.ttft_s)

    def metrics(self, prefix: str = "frontier.") -> dict[str, float]:
        with self._lock:
            values: dict[str, float] = {
                name: float(getattr(self, name))
                for name in ("calls", "cache_hits", "billed_calls", "failed_calls", "unparseable", "attempts",
                             "retries", "rate_limited", "server_errors", "timeouts", "malformed",
                             "input_tokens", "output_tokens", "cost_usd", "wall_s")
            }
            if self.latencies:
                ordered = sorted(self.latencies)
                values["latency_mean_s"] = sum(ordered) / len(ordered)
                values["latency_p50_s"] = ordered[len(ordered) // 2]
                values["latency_p95_s"] = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            if self.ttfts:
                values["ttft_mean_s"] = sum(self.ttfts) / len(self.ttfts)
            if self.wall_s > 0:
                values["items_per_s"] = self.calls / self.wall_s
        return {f"{prefix}{key}": value for key, value in values.items()}


class _Retry(Exception):
    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


# --------------------------------------------------------------------------- the client


class FrontierClient:
    """Prices texts through one OpenAI-compatible endpoint, concurrently, cached, retried and costed."""

    def __init__(
        self,
        config: FrontierConfig,
        *,
        run_id: str | None = None,
        api_key: str | None = None,
        cache: ResponseCache | None = None,
        cost_log: CostLog | None = None,
    ) -> None:
        self.config = config
        self.run_id = run_id
        # The key lives only in this object and the SDK client; it is never logged or traced.
        self._api_key = api_key if api_key is not None else resolve_api_key(config)
        if cache is None and config.cache_dir:
            cache = ResponseCache(config.cache_dir)
        if cost_log is None and config.cost_log:
            cost_log = CostLog(config.cost_log)
        self.cache = cache
        self.cost_log = cost_log
        self.limiter = RateLimiter(config.requests_per_minute)
        self.totals = UsageTotals()
        self.session = uuid.uuid4().hex  # idempotency keys are per client: a new session may pay again
        self._rng = random.Random()
        self.fatal: FrontierError | None = None
        self._traced = self._tracing()

    def __repr__(self) -> str:  # never the key
        config = self.config
        return f"FrontierClient(name={config.name!r}, model={config.model!r}, base_url={config.base_url!r})"

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"temperature": self.config.temperature,
                                  "max_tokens": self.config.max_tokens}
        if self.config.seed is not None:
            params["seed"] = self.config.seed
        return params

    # ---- public API -------------------------------------------------------------------------

    def complete_many(self, conversations: Sequence[Messages]) -> list[CallResult]:
        """Blocking: every conversation answered (or failed after retries), in order."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.acomplete_many(conversations))
        # Called from inside an event loop (a notebook, an async server): run ours in a thread.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self.acomplete_many(conversations)).result()

    def price_texts(
        self, texts: Sequence[str], neighbours: Sequence[Sequence[tuple[str, float]]] | None = None
    ) -> list[float | None]:
        conversations = [
            build_messages(text, neighbours[i] if neighbours else (), self.config.system_prompt)
            for i, text in enumerate(texts)
        ]
        return [result.price for result in self.complete_many(conversations)]

    async def acomplete_many(self, conversations: Sequence[Messages]) -> list[CallResult]:
        started = time.perf_counter()
        semaphore = asyncio.Semaphore(self.config.max_concurrency)
        client = self._sdk_client()
        # Identical requests in one batch (duplicate listings) are sent once.
        keys = [request_key(self.config.model, list(messages), self.params) for messages in conversations]
        unique: dict[str, Messages] = {}
        for key, messages in zip(keys, conversations, strict=True):
            unique.setdefault(key, list(messages))
        try:
            with self._span("frontier.batch", "CHAIN", root=True) as span:
                if span is not None:
                    span.set_inputs({"items": len(conversations), "unique_requests": len(unique),
                                     "model": self.config.model, "base_url": self.config.base_url})
                tasks = {key: asyncio.ensure_future(self._complete_one(client, semaphore, key, messages))
                         for key, messages in unique.items()}
                try:
                    done = dict(zip(tasks, await asyncio.gather(*tasks.values()), strict=True))
                except BaseException:
                    for task in tasks.values():
                        task.cancel()
                    await asyncio.gather(*tasks.values(), return_exceptions=True)
                    raise
                results = []
                first_use: set[str] = set()
                for key in keys:
                    result = done[key]
                    if key in first_use:  # a duplicate: the answer is shared, the cost was counted once
                        result = CallResult(result.content, result.price, cached=True)
                    first_use.add(key)
                    self.totals.add(result)
                    results.append(result)
                if span is not None:
                    span.set_outputs({"priced": sum(r.price is not None for r in results),
                                      "unparseable": sum(r.price is None for r in results)})
                    span.set_attributes({"cost_usd": sum(r.cost_usd for r in results),
                                         "cache_hits": sum(r.cached for r in results)})
        finally:
            await client.close()
            self.totals.add_wall(time.perf_counter() - started)
        return results

    # ---- internals --------------------------------------------------------------------------

    def _sdk_client(self) -> openai.AsyncOpenAI:
        # The SDK's retries are off: retrying here counts, traces and backs off every attempt.
        return openai.AsyncOpenAI(
            api_key=self._api_key, base_url=self.config.base_url, max_retries=0, timeout=self.config.timeout_s
        )

    def _tracing(self) -> bool:
        # Only into a store someone chose: MLflow's fallback would drop an mlflow.db into the cwd.
        if not self.config.trace:
            return False
        if self.run_id is not None or os.environ.get("MLFLOW_TRACKING_URI"):
            return True
        from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

        return is_tracking_uri_set()

    def _span(self, name: str, span_type: str, *, root: bool = False) -> AbstractContextManager:
        if not self._traced:
            return nullcontext(None)
        import mlflow

        kwargs: dict[str, Any] = {"name": name, "span_type": span_type}
        if root and self.run_id is not None and mlflow.get_current_active_span() is None:
            kwargs["run_id"] = self.run_id
        return mlflow.start_span(**kwargs)

    def _backoff(self, attempt: int) -> float:
        base = min(self.config.backoff_max_s, self.config.backoff_initial_s * (2 ** (attempt - 1)))
        return self._rng.uniform(base / 2, base)  # "equal jitter": never zero, never in lock-step

    async def _complete_one(
        self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, key: str, messages: Messages
    ) -> CallResult:
        with self._span(f"chat {self.config.model}", "CHAT_MODEL") as span:
            if span is not None:
                span.set_inputs({"messages": messages, "model": self.config.model, **self.params})
            result = await self._cached_or_called(client, semaphore, key, messages)
            if span is not None:
                self._annotate(span, key, result)
            return result

    def _annotate(self, span: Any, key: str, result: CallResult) -> None:
        from mlflow.tracing.constant import SpanAttributeKey

        span.set_outputs({"content": result.content, "price": result.price})
        attributes: dict[str, Any] = {
            "request_key": key,
            "cache_hit": result.cached,
            "attempts": result.attempts,
            "latency_s": result.latency_s,
            "cost_usd": result.cost_usd,
            SpanAttributeKey.MODEL: self.config.model,
            SpanAttributeKey.MESSAGE_FORMAT: "openai",
        }
        if result.ttft_s is not None:
            attributes["ttft_s"] = result.ttft_s
        if not result.cached and result.error is None:
            attributes[SpanAttributeKey.CHAT_USAGE] = {
                "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens,
                "total_tokens": result.input_tokens + result.output_tokens,
            }
            attributes[SpanAttributeKey.LLM_COST] = {
                "input_cost": result.input_tokens * self.config.usd_per_1m_input / 1e6,
                "output_cost": result.output_tokens * self.config.usd_per_1m_output / 1e6,
                "total_cost": result.cost_usd,
            }
        if result.error is not None:
            attributes["error"] = result.error
        span.set_attributes(attributes)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        config = self.config
        return (input_tokens * config.usd_per_1m_input + output_tokens * config.usd_per_1m_output) / 1e6

    async def _cached_or_called(
        self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, key: str, messages: Messages
    ) -> CallResult:
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return CallResult(hit.get("content"), parse_price(hit.get("content")), cached=True)
        idempotency_key = hashlib.sha256(f"{self.session}:{key}".encode()).hexdigest()[:32]
        attempt = 0
        last_error = "no attempt made"
        while attempt <= self.config.max_retries:
            attempt += 1
            await self.limiter.acquire()
            try:
                async with semaphore:
                    content, usage, latency, ttft = await self._call(client, messages, idempotency_key)
            except _Retry as retry:
                last_error = retry.reason
                if attempt > self.config.max_retries:
                    break
                delay = retry.delay if retry.delay is not None else self._backoff(attempt)
                log.debug("retrying after %s (attempt %d) in %.2fs", retry.reason, attempt, delay)
                await asyncio.sleep(delay)
                continue
            except FrontierAuthError as error:
                self.fatal = error
                raise
            except openai.APIStatusError as error:  # 400, 404, 422...: the request itself is wrong
                last_error = f"HTTP {error.status_code}: {_error_message(error)}"
                log.warning("%s refused a request: %s", self.config.name, last_error)
                return CallResult(None, None, attempts=attempt, error=last_error)
            input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            result = CallResult(
                content, parse_price(content), input_tokens, output_tokens,
                self.cost(input_tokens, output_tokens), latency, ttft, attempts=attempt,
            )
            self._record(key, idempotency_key, result)
            return result
        log.warning("%s: gave up after %d attempts (%s); the item counts as unparseable",
                    self.config.name, attempt, last_error)
        return CallResult(None, None, attempts=attempt, error=last_error)

    def _record(self, key: str, idempotency_key: str, result: CallResult) -> None:
        if self.cost_log is not None:
            self.cost_log.record({
                "ts": time.time(),
                "idempotency_key": idempotency_key,
                "request_key": key,
                "name": self.config.name,
                "model": self.config.model,
                "run_id": self.run_id,
                "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens,
                "cost_usd": result.cost_usd,
                "latency_s": round(result.latency_s, 4),
                "ttft_s": None if result.ttft_s is None else round(result.ttft_s, 4),
                "attempts": result.attempts,
            })
        if self.cache is not None:
            self.cache.put(key, {"content": result.content, "model": self.config.model,
                                 "input_tokens": result.input_tokens, "output_tokens": result.output_tokens,
                                 "created": time.time()})

    async def _call(
        self, client: openai.AsyncOpenAI, messages: Messages, idempotency_key: str
    ) -> tuple[str | None, Any, float, float | None]:
        """One attempt. Raises ``_Retry`` for what a retry may fix, ``FrontierAuthError`` for bad keys."""
        started = time.perf_counter()
        ttft: float | None = None
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            **self.params,
            "timeout": self.config.timeout_s,
            "extra_headers": {"Idempotency-Key": idempotency_key},
        }
        try:
            async with asyncio.timeout(self.config.timeout_s):
                if self.config.stream:
                    stream = await client.chat.completions.create(
                        **kwargs, stream=True, stream_options={"include_usage": True}
                    )
                    parts: list[str] = []
                    usage = None
                    async for chunk in stream:
                        if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                            if ttft is None:
                                ttft = time.perf_counter() - started
                            parts.append(chunk.choices[0].delta.content)
                        if getattr(chunk, "usage", None):
                            usage = chunk.usage
                    content: str | None = "".join(parts)
                else:
                    completion = await client.chat.completions.create(**kwargs)
                    if not getattr(completion, "choices", None):
                        raise ValueError("a completion without choices")
                    content = completion.choices[0].message.content
                    usage = completion.usage
        except (TimeoutError, openai.APITimeoutError):
            self.totals.bump("timeouts")
            raise _Retry("timeout") from None
        except openai.APIStatusError as error:
            status = error.status_code
            if status in AUTH_STATUS:
                raise FrontierAuthError(
                    f"{self.config.name}: HTTP {status} from {self.config.base_url or 'api.openai.com'} - "
                    f"check the key in ${self.config.api_key_env}: {_error_message(error)}"
                ) from None
            if status not in RETRYABLE_STATUS:
                raise
            if status == 429:
                self.totals.bump("rate_limited")
            else:
                self.totals.bump("server_errors")
            wait = parse_retry_after(error.response.headers if error.response is not None else None)
            if wait is not None:
                wait = min(wait, MAX_RETRY_AFTER_S) + self._rng.uniform(0, 0.1 * wait + 0.01)
            raise _Retry(f"HTTP {status}", wait) from None
        except openai.APIConnectionError:
            self.totals.bump("server_errors")
            raise _Retry("connection error") from None
        except (ValueError, openai.APIResponseValidationError, AttributeError, TypeError, IndexError):
            # A 200 with a body that is not a chat completion (truncated JSON, wrong shape).
            self.totals.bump("malformed")
            raise _Retry("malformed response") from None
        return content, usage, time.perf_counter() - started, ttft


def _error_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
    return str(error.message)[:300]

