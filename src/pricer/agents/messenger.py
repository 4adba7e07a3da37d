"""The messenger agent: delivers the memory's pending notifications through one notifier.

The notifier is chosen by ``kind`` in ``configs/agents.yaml``: ``webhook`` (an HTTP POST of
JSON), ``ntfy``, ``pushover`` or ``log``. Every HTTP notifier goes through the project's one
retry policy (``pricer.core.retry``): timeouts, dropped connections, 429 and 5xx are retried with
exponential backoff and jitter, honouring ``Retry-After``; other 4xx are not retried. Secrets (a webhook's URL or token, an ntfy topic or token, the
Pushover keys) are read from the environment variables the config names, when the notifier
is built, and never logged: errors name the host and the status, not the URL, and httpx's
own request log (which prints full URLs) is held at WARNING.

Each notification carries an ``Idempotency-Key`` header (the deal's key, also the body's ``id``
for the webhook). Delivery is at-least-once: the messenger claims one outbox row at a time under a
lease (``pricer.agents.outbox``), so two cycles running at once never send the same row, and marks
it sent only after its notifier succeeded; a failure leaves it pending for the next cycle. A
sender killed between the receiver's answer and ``mark_sent`` has its row sent again, with the
same key, by the next cycle (at once when the dead sender ran on this machine, else once its lease
runs out). A re-send a person asked for (``pricer.agents.outbox``, ``Outbox.resend``) goes out the same
way under its own, new key, and its body names the original deal's key as ``resend_of``.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from pricer.agents.config import LogNotifierConfig, NtfyConfig, PushoverConfig, WebhookConfig
from pricer.agents.deals import Opportunity
from pricer.agents.memory import Memory
from pricer.agents.outbox import new_owner
from pricer.core.errors import ConfigError, RemoteAPIError
from pricer.core.retry import (
    RETRYABLE_STATUS,
    Retryable,
    RetrySettings,
    attempts_made,
    retry_after_s,
    retrying,
)

log = logging.getLogger(__name__)


class NotifierUnavailable(ConfigError):
    """The notifier cannot be built (an environment variable it needs is not set)."""


class DeliveryError(RemoteAPIError):
    """A notification was not delivered (after retries); the message holds no secret."""


def _secret(env: str, what: str) -> str:
    value = os.environ.get(env, "").strip()
    if not value:
        raise NotifierUnavailable(f"environment variable {env} is not set: it must hold the {what}")
    return value


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def _quiet_http_logs() -> None:
    # httpx logs every request's full URL at INFO; a webhook or ntfy URL can be the secret itself.
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def message_for(opp: Opportunity, key: str | None = None) -> dict[str, Any]:
    """The notification's content (``key``: its Idempotency-Key, when not the deal's own: a re-send);
    the deal's scraped text is only ever a field of it."""
    deal = opp.deal
    resend = {"resend_of": opp.key} if key is not None and key != opp.key else {}
    return {
        "id": key or opp.key,
        **resend,
        "title": f"Deal: {deal.title[:120]}",
        "text": f"${deal.price:,.2f} vs an estimated ${opp.estimate:,.2f} ({opp.discount:.0%} below)",
        "url": deal.url,
        "price": deal.price,
        "estimate": round(opp.estimate, 2),
        "discount": round(opp.discount, 4),
        "estimates": {k: (None if v is None else round(v, 2)) for k, v in opp.estimates.items()},
        "feed": deal.feed,
        "description": deal.description[:1000],
    }


class Notifier(Protocol):
    kind: str

    def send(self, opp: Opportunity, key: str | None = None) -> None: ...

    def close(self) -> None: ...


class _HttpNotifier:
    """POST with retries and backoff; subclasses say what to post where."""

    kind = "http"

    def __init__(
        self,
        settings: RetrySettings,
        *,
        client: httpx.Client | None = None,
        rng: random.Random | None = None,
        sleep: Any = time.sleep,
    ) -> None:
        self.settings = settings
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(settings.timeout_s), follow_redirects=False
        )
        self._rng = rng or random.Random()
        self._sleep = sleep
        _quiet_http_logs()

    def close(self) -> None:
        self._client.close()

    def _attempt(self, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.post(url, **kwargs)
        except httpx.TimeoutException:
            raise Retryable(f"timeout after {self.settings.timeout_s:g} s") from None
        except httpx.HTTPError as error:
            raise Retryable(type(error).__name__) from None
        if response.status_code < 300:
            return response
        status = f"HTTP {response.status_code}"
        if response.status_code not in RETRYABLE_STATUS:
            raise DeliveryError(f"{self.kind} to {_host(url)}: {status} (not retried)")
        raise Retryable(status, retry_after_s(response.headers))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        host = _host(url)

        def on_retry(error: Retryable, attempt: int, wait: float) -> None:
            log.info("%s to %s: %s (attempt %d of %d); retrying in %.2f s", self.kind, host, error.reason, attempt,
                     self.settings.max_retries + 1, wait)

        retries = retrying(self.settings, sleep=self._sleep, rng=self._rng, on_retry=on_retry)
        try:
            for attempt in retries:
                with attempt:
                    return self._attempt(url, **kwargs)
        except Retryable as error:
            if error.retry_after is not None and error.retry_after > self.settings.max_retry_after_s:
                raise DeliveryError(f"{self.kind} to {host}: {error.reason}, retry after {error.retry_after:.0f} s "
                                    "(next cycle)") from None
            raise DeliveryError(f"{self.kind} to {host}: {error.reason} after {attempts_made(retries)} attempts"
                                ) from None
        raise AssertionError("unreachable: the retry policy returns or raises")


class WebhookNotifier(_HttpNotifier):
    kind = "webhook"

    def __init__(self, config: WebhookConfig, **kwargs: Any) -> None:
        self.url = config.url or _secret(config.url_env or "", "webhook URL")
        self._token = _secret(config.token_env, "webhook bearer token") if config.token_env else None
        super().__init__(config, **kwargs)

    def __repr__(self) -> str:
        return f"WebhookNotifier({_host(self.url)})"

    def send(self, opp: Opportunity, key: str | None = None) -> None:
        headers = {"Idempotency-Key": key or opp.key, "Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        self.post(self.url, json=message_for(opp, key), headers=headers)


class NtfyNotifier(_HttpNotifier):
    kind = "ntfy"

    def __init__(self, config: NtfyConfig, **kwargs: Any) -> None:
        self.server = config.server.rstrip("/")
        self._topic = _secret(config.topic_env, "ntfy topic")
        self._token = _secret(config.token_env, "ntfy access token") if config.token_env else None
        self.priority = config.priority
        super().__init__(config, **kwargs)

    def __repr__(self) -> str:
        return f"NtfyNotifier({_host(self.server)})"

    def send(self, opp: Opportunity, key: str | None = None) -> None:
        message = message_for(opp, key)
        # ntfy's JSON publishing: the topic goes in the body, so the URL holds nothing secret.
        body = {
            "topic": self._topic,
            "title": message["title"],
            "message": message["text"],
            "click": opp.deal.url,
            "priority": self.priority,
            "tags": ["moneybag"],
        }
        # ntfy does not document an idempotency key either; the header is for a relay that dedupes.
        headers = {"Idempotency-Key": key or opp.key}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        self.post(self.server + "/", json=body, headers=headers)


class PushoverNotifier(_HttpNotifier):
    kind = "pushover"

    def __init__(self, config: PushoverConfig, **kwargs: Any) -> None:
        self.api_url = config.api_url
        self._token = _secret(config.token_env, "Pushover application token")
        self._user = _secret(config.user_env, "Pushover user key")
        super().__init__(config, **kwargs)

    def __repr__(self) -> str:
        return f"PushoverNotifier({_host(self.api_url)})"

    def send(self, opp: Opportunity, key: str | None = None) -> None:
        message = message_for(opp, key)
        data = {
            "token": self._token,
            "user": self._user,
            "title": message["title"][:250],
            "message": message["text"],
            "url": opp.deal.url[:512],
            "url_title": "Open the deal",
        }
        # Pushover's API defines no idempotency key and ignores this header: a resend after a kill shows
        # twice on the phone. It is sent anyway, so that a relay in front of Pushover can dedupe.
        self.post(self.api_url, data=data, headers={"Idempotency-Key": key or opp.key})


class LogNotifier:
    kind = "log"

    def __init__(self, config: LogNotifierConfig | None = None) -> None:
        pass

    def send(self, opp: Opportunity, key: str | None = None) -> None:
        message = message_for(opp, key)
        log.info("OPPORTUNITY %s: %s - %s", message["title"], message["text"], message["url"])

    def close(self) -> None:
        pass


def build_notifier(config: Any, **kwargs: Any) -> Notifier:
    """The notifier ``config.kind`` names; ``NotifierUnavailable`` when a secret it needs is unset."""
    if isinstance(config, WebhookConfig):
        return WebhookNotifier(config, **kwargs)
    if isinstance(config, NtfyConfig):
        return NtfyNotifier(config, **kwargs)
    if isinstance(config, PushoverConfig):
        return PushoverNotifier(config, **kwargs)
    if isinstance(config, LogNotifierConfig):
        return LogNotifier(config)
    raise ValueError(f"unknown notifier config {type(config).__name__}")


def lease_for(config: Any) -> float:
    """How long a claimed notification stays its sender's: ``lease_s``, else the longest one send can
    take under the notifier's retry settings, so that a live sender's claim is never taken over."""
    if getattr(config, "lease_s", None) is not None:
        return float(config.lease_s)
    if not isinstance(config, RetrySettings):
        return 30.0  # the log notifier: nothing on the wire
    # httpx applies timeout_s to each of pool, connect, write and read: one attempt may take 4 of them.
    # Between attempts the policy waits a backoff or a Retry-After (plus its jitter) up to the cap.
    attempt = 4 * config.timeout_s
    wait = max(config.backoff_max_s, 1.1 * config.max_retry_after_s + 0.01)
    return (config.max_retries + 1) * attempt + config.max_retries * wait + 2.0


@dataclass
class DeliveryReport:
    attempted: int = 0
    sent: int = 0
    failed: int = 0
    expired: int = 0
    held: int = 0  # pending rows another live sender had claimed: left to it
    skipped_reason: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Messenger:
    """Delivers pending notifications from memory, oldest first, marking each sent on success."""

    name = "messenger"

    def __init__(
        self,
        config: Any,
        notifier: Notifier | None = None,
        *,
        max_age_s: float = 48 * 3600,
        lease_s: float | None = None,
    ) -> None:
        self.config = config
        self.max_age_s = max_age_s
        self.lease_s = lease_s if lease_s is not None else lease_for(config)
        self._notifier = notifier
        self._unavailable: str | None = None

    @property
    def kind(self) -> str:
        return getattr(self.config, "kind", "custom")

    def notifier(self) -> Notifier | None:
        if self._notifier is None:
            try:
                self._notifier = build_notifier(self.config)
            except NotifierUnavailable as error:
                if str(error) != self._unavailable:
                    log.warning(
                        "messenger (%s) skipped: %s; opportunities stay pending in memory", self.kind, error
                    )
                    self._unavailable = str(error)
                return None
        return self._notifier

    def deliver(self, memory: Memory) -> DeliveryReport:
        started = time.perf_counter()
        report = DeliveryReport()
        outbox = memory.outbox
        report.expired = outbox.expire_pending(self.max_age_s)
        if report.expired:
            log.warning(
                "%d notifications pending for over %.0f h expired unsent",
                report.expired,
                self.max_age_s / 3600,
            )
        owner = new_owner()
        tried: set[str] = set()
        # One row per claim: a lease then covers one send, so a crashed sender's rows come back soon,
        # and two messengers running at once share the work row by row.
        while claimed := outbox.claim(1, self.lease_s, owner, exclude=tried):
            item = claimed[0]
            notifier = self.notifier()
            if notifier is None:
                outbox.release([item.key], owner)
                report.skipped_reason = self._unavailable
                break
            tried.add(item.key)
            report.attempted += 1
            try:
                notifier.send(item.opportunity, key=item.send_key)
            except DeliveryError as error:
                outbox.mark_failed(item.key, str(error), owner=owner)
                report.failed += 1
                log.warning(
                    "notification for %s not delivered: %s; it stays pending",
                    item.opportunity.deal.url,
                    error,
                )
                continue
            report.sent += 1
            if not outbox.mark_sent(item.key, notifier.kind, owner=owner):
                # The send outlived the lease and another sender took the row over: it sends it again,
                # with the same Idempotency-Key. A longer lease_s avoids this.
                log.warning("notification for %s was sent after its %.0f s lease ran out; another cycle "
                            "may send it again", item.opportunity.deal.url, self.lease_s)
            log.info(
                "notified (%s): %s at $%.2f, estimated $%.2f",
                notifier.kind,
                item.opportunity.deal.title[:80],
                item.opportunity.deal.price,
                item.opportunity.estimate,
            )
        report.held = outbox.held(besides=owner)
        report.seconds = time.perf_counter() - started
        return report

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.close()
