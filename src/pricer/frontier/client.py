"""The frontier client: prices texts through one OpenAI-compatible endpoint, never paying twice.

``FrontierClient`` wraps the real ``openai.AsyncOpenAI`` client with what a paid, flaky,
rate-limited API needs:

- concurrency bounded by a semaphore and request starts spaced by aiolimiter;
- the project's one retry policy (``pricer.core.retry``) on 429, 408/409, 5xx, timeouts, dropped
  connections and malformed bodies, honouring Retry-After (the SDK's own retries are off, so every
  attempt is counted and traced here); other 4xx are not retried, and 401/403 stop the run
  (``FrontierAuthError``) rather than scoring every item "unparseable";
- a per-request deadline (``timeout_s``, covering a whole stream too);
- the response cache and cost log of ``pricer.frontier.cache``; identical requests in one batch are
  sent once, and one ``Idempotency-Key`` per logical call goes with every attempt;
- token usage, cost, latency and (when streaming) time to first token per call (``UsageTotals``);
- an MLflow trace per batch with one CHAT_MODEL span per call (inputs, output, token usage,
  cost; never the key or headers).

Answers are read by the project's one answer parser (``pricer.core.parsing.find_price``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import openai
from aiolimiter import AsyncLimiter

from pricer.core.parsing import find_price
from pricer.core.retry import (
    RETRYABLE_STATUS,
    Retryable,
    async_retrying,
    attempts_made,
    retry_after_s,
    retrying,
)
from pricer.frontier.cache import CostLog, ResponseCache, request_key
from pricer.frontier.config import FrontierAuthError, FrontierConfig, FrontierError, resolve_api_key
from pricer.frontier.messages import Messages, build_messages
from pricer.frontier.tracing import chat_attributes, start_span, tracing_wanted, usage_attributes
from pricer.frontier.usage import CallResult, UsageTotals

log = logging.getLogger(__name__)

AUTH_STATUS = frozenset({401, 403})
T = TypeVar("T")


def _log_retry(error: Retryable, attempt: int, wait: float) -> None:
    log.debug("retrying after %s (attempt %d) in %.2fs", error.reason, attempt, wait)


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
        self.totals = UsageTotals()
        self._rng = random.Random()
        self.fatal: FrontierError | None = None
        self._traced = tracing_wanted(config, run_id)

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
        # One limiter per batch: aiolimiter binds to the running event loop. Capacity 1 spaces request
        # starts 60 / requests_per_minute seconds apart.
        rpm = self.config.requests_per_minute
        limiter = AsyncLimiter(1, 60.0 / rpm) if rpm else None
        client = self._sdk_client()
        # Identical requests in one batch (duplicate listings) are sent once.
        keys = [request_key(self.config.model, list(messages), self.params) for messages in conversations]
        unique: dict[str, Messages] = {}
        for key, messages in zip(keys, conversations, strict=True):
            unique.setdefault(key, list(messages))
        try:
            with start_span(self._traced, "frontier.batch", "CHAIN", run_id=self.run_id) as span:
                if span is not None:
                    span.set_inputs({"items": len(conversations), "unique_requests": len(unique),
                                     "model": self.config.model, "base_url": self.config.base_url})
                tasks = {key: asyncio.ensure_future(self._complete_one(client, semaphore, limiter, key, messages))
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

    async def _complete_one(
        self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, limiter: AsyncLimiter | None, key: str,
        messages: Messages,
    ) -> CallResult:
        with start_span(self._traced, f"chat {self.config.model}", "CHAT_MODEL") as span:
            if span is not None:
                span.set_inputs({"messages": messages, "model": self.config.model, **self.params})
            result = await self._cached_or_called(client, semaphore, limiter, key, messages)
            if span is not None:
                self._annotate(span, key, result)
            return result

    def _annotate(self, span: Any, key: str, result: CallResult) -> None:
        span.set_outputs({"content": result.content, "price": result.price})
        attributes: dict[str, Any] = {
            "request_key": key,
            "cache_hit": result.cached,
            "attempts": result.attempts,
            "latency_s": result.latency_s,
            "cost_usd": result.cost_usd,
            **chat_attributes(self.config),
        }
        if result.ttft_s is not None:
            attributes["ttft_s"] = result.ttft_s
        if not result.cached and result.error is None:
            attributes.update(usage_attributes(self.config, result.input_tokens, result.output_tokens,
                                               result.cost_usd))
        if result.error is not None:
            attributes["error"] = result.error
        span.set_attributes(attributes)

    async def _cached_or_called(
        self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, limiter: AsyncLimiter | None, key: str,
        messages: Messages,
    ) -> CallResult:
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return CallResult(hit.get("content"), find_price(hit.get("content")), cached=True)
        # One key per logical call, the same in every process: a retried task (a new client) that sends a
        # call again gets the server's stored answer, not a second bill.
        idempotency_key = hashlib.sha256(f"pricer:{self.config.name}:{key}".encode()).hexdigest()[:32]
        retries = async_retrying(self.config, rng=self._rng, on_retry=_log_retry)
        try:
            async for attempt in retries:
                with attempt:
                    if limiter is not None:
                        await limiter.acquire()
                    async with semaphore:
                        content, usage, latency, ttft, response_id = await self._call(
                            client, messages, idempotency_key)
        except Retryable as error:
            attempts = attempts_made(retries)
            log.warning("%s: gave up after %d attempts (%s); the item counts as unparseable",
                        self.config.name, attempts, error.reason)
            return CallResult(None, None, attempts=attempts, error=error.reason)
        except FrontierAuthError as error:
            self.fatal = error
            raise
        except openai.APIStatusError as error:  # 400, 404, 422...: the request itself is wrong
            reason = f"HTTP {error.status_code}: {_error_message(error)}"
            log.warning("%s refused a request: %s", self.config.name, reason)
            return CallResult(None, None, attempts=attempts_made(retries), error=reason)
        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        result = CallResult(
            content, find_price(content), input_tokens, output_tokens,
            self.config.cost_usd(input_tokens, output_tokens), latency, ttft, attempts=attempts_made(retries),
        )
        if not self._record(key, idempotency_key, response_id, result):
            # The server replayed an answer it already billed (to an earlier, interrupted process): no new cost.
            result = CallResult(content, result.price, latency_s=latency, cached=True, attempts=result.attempts)
        return result

    def _record(self, key: str, idempotency_key: str, response_id: str | None, result: CallResult) -> bool:
        """Cache the answer and log its cost; False when the cost log already holds this response."""
        new = True
        if self.cost_log is not None:
            new = self.cost_log.record({
                "ts": time.time(),
                "response_id": response_id or idempotency_key,
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
        return new

    async def _call(
        self, client: openai.AsyncOpenAI, messages: Messages, idempotency_key: str
    ) -> tuple[str | None, Any, float, float | None, str | None]:
        """One attempt: the answer, its usage, latency, time to first token and the response's id. Raises ``Retryable`` for what a retry may fix, ``FrontierAuthError`` for bad keys."""
        started = time.perf_counter()
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            **self.params,
            "timeout": self.config.timeout_s,
            "extra_headers": {"Idempotency-Key": idempotency_key},
        }
        try:
            async with asyncio.timeout(self.config.timeout_s):
                content, usage, ttft, response_id = await self._request(client, kwargs, started)
        except (TimeoutError, openai.APITimeoutError):
            self.totals.bump("timeouts")
            raise Retryable("timeout") from None
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
            headers = error.response.headers if error.response is not None else None
            raise Retryable(f"HTTP {status}", retry_after_s(headers)) from None
        except openai.APIConnectionError:
            self.totals.bump("server_errors")
            raise Retryable("connection error") from None
        except (ValueError, openai.APIResponseValidationError, AttributeError, TypeError, IndexError):
            # A 200 with a body that is not a chat completion (truncated JSON, wrong shape).
            self.totals.bump("malformed")
            raise Retryable("malformed response") from None
        return content, usage, time.perf_counter() - started, ttft, response_id

    async def _request(
        self, client: openai.AsyncOpenAI, kwargs: dict[str, Any], started: float
    ) -> tuple[str | None, Any, float | None, str | None]:
        """The SDK call itself (chat; ``pricer.frontier.completions`` sends a bare prompt): answer, usage, time to
        first token, response id. Raises what the SDK raises; ``_call`` maps it onto the retry policy."""
        if not self.config.stream:
            completion = await client.chat.completions.create(**kwargs)
            if not getattr(completion, "choices", None):
                raise ValueError("a completion without choices")
            return completion.choices[0].message.content, completion.usage, None, getattr(completion, "id", None)
        stream = await client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
        parts: list[str] = []
        usage, response_id, ttft = None, None, None
        async for chunk in stream:
            response_id = response_id or getattr(chunk, "id", None)
            if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                if ttft is None:
                    ttft = time.perf_counter() - started
                parts.append(chunk.choices[0].delta.content)
            if getattr(chunk, "usage", None):
                usage = chunk.usage
        return "".join(parts), usage, ttft, response_id


def _error_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
    return str(error.message)[:300]


def sync_call(config: FrontierConfig, call: Callable[[], T], *, sleep: Callable[[float], Any] = time.sleep) -> T:
    """One blocking SDK call (the fine-tuning control plane) under the project's retry policy: 429, 5xx,
    timeouts and dropped connections are retried; a refused key is a ``FrontierAuthError``; any other
    status propagates as the SDK's own error."""
    for attempt in retrying(config, sleep=sleep, on_retry=_log_retry):
        with attempt:
            try:
                return call()
            except openai.APITimeoutError:
                raise Retryable("timeout") from None
            except openai.APIStatusError as error:
                if error.status_code in AUTH_STATUS:
                    raise FrontierAuthError(f"{config.name}: HTTP {error.status_code} - check the key in "
                                            f"${config.api_key_env}: {_error_message(error)}") from None
                if error.status_code not in RETRYABLE_STATUS:
                    raise
                headers = error.response.headers if error.response is not None else None
                raise Retryable(f"HTTP {error.status_code}", retry_after_s(headers)) from None
            except openai.APIConnectionError:
                raise Retryable("connection error") from None
    raise AssertionError("unreachable: the retry policy returns or raises")
