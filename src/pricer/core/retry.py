"""The one retry policy for every call to a remote service: the frontier API, its fine-tuning jobs, notifiers.

Built on tenacity. A call signals a failure that a retry may fix by raising ``Retryable`` (with the
server's Retry-After, when it sent one); anything else is final and propagates at once. Attempts are
bounded (``max_retries`` retries after the first try); between them the policy waits what the server
asked for, else an exponential backoff with "equal jitter" (half fixed, half random: never zero, never
in lock-step). A Retry-After longer than ``max_retry_after_s`` ends the retries at once: that call is
for a later run. When every attempt fails, the last ``Retryable`` is raised.

``retry_after_s`` reads ``retry-after-ms`` and ``Retry-After`` (seconds or an HTTP date); a header it
cannot read is treated as absent, never as an error.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import tenacity
from pydantic import Field, model_validator

from pricer.core.config import StrictModel

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


class RetrySettings(StrictModel):
    """How calls to a remote service are timed out and retried."""

    timeout_s: float = Field(10.0, gt=0, description="seconds one attempt may take")
    max_retries: int = Field(4, ge=0, le=50, description="retries after the first attempt (0: none)")
    backoff_initial_s: float = Field(0.5, ge=0, description="the first backoff; it doubles per retry")
    backoff_max_s: float = Field(30.0, ge=0, description="the longest backoff")
    max_retry_after_s: float = Field(60.0, ge=0, description="a longer Retry-After gives up until the next run")

    @model_validator(mode="after")
    def _backoff(self) -> RetrySettings:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self


class Retryable(Exception):
    """One failed attempt that a retry may fix: a timeout, a dropped connection, a 429 or a 5xx."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def retry_after_s(headers: Mapping[str, str] | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms``, else ``Retry-After``), or None."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        raw = str(headers.get(name) or "").strip()
        if not raw:
            continue
        try:
            seconds = float(raw) * scale
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(raw).timestamp() - now()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue  # garbage ("soon"): as if the header were absent
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _retry_after(state: tenacity.RetryCallState) -> float | None:
    error = state.outcome.exception() if state.outcome is not None else None
    return error.retry_after if isinstance(error, Retryable) else None


class _Wait(tenacity.wait.wait_base):
    def __init__(self, settings: RetrySettings, rng: random.Random) -> None:
        self.settings = settings
        self.rng = rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        asked = _retry_after(retry_state)
        if asked is not None:
            return asked + self.rng.uniform(0.0, 0.1 * asked + 0.01)  # so that clients told alike do not collide
        settings = self.settings
        base = min(settings.backoff_max_s, settings.backoff_initial_s * 2 ** (retry_state.attempt_number - 1))
        return self.rng.uniform(base / 2, base)


class _Stop(tenacity.stop.stop_base):
    def __init__(self, settings: RetrySettings) -> None:
        self.settings = settings

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        asked = _retry_after(retry_state)
        return (retry_state.attempt_number > self.settings.max_retries
                or (asked is not None and asked > self.settings.max_retry_after_s))


def _policy(settings: RetrySettings, rng: random.Random | None, on_retry: Callable[[Retryable, int, float], Any]
            | None) -> dict[str, Any]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.outcome.exception(), state.attempt_number, state.upcoming_sleep)

    return {"stop": _Stop(settings), "wait": _Wait(settings, rng or random.Random()),
            "retry": tenacity.retry_if_exception_type(Retryable), "reraise": True, "before_sleep": before_sleep}


def retrying(settings: RetrySettings, *, sleep: Callable[[float], Any] = time.sleep, rng: random.Random | None = None,
             on_retry: Callable[[Retryable, int, float], Any] | None = None) -> tenacity.Retrying:
    """``for attempt in retrying(settings): with attempt: call()`` (blocking callers)."""
    return tenacity.Retrying(sleep=sleep, **_policy(settings, rng, on_retry))


def async_retrying(settings: RetrySettings, *, rng: random.Random | None = None,
                   on_retry: Callable[[Retryable, int, float], Any] | None = None) -> tenacity.AsyncRetrying:
    """``async for attempt in async_retrying(settings): with attempt: await call()``."""
    return tenacity.AsyncRetrying(**_policy(settings, rng, on_retry))


def attempts_made(controller: tenacity.BaseRetrying) -> int:
    """How many attempts the last use of ``controller`` made."""
    return int(controller.statistics.get("attempt_number", 0))
