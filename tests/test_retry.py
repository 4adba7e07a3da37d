"""The one retry policy: bounded attempts, exponential backoff, Retry-After honoured, garbage headers survived,
for every caller (the frontier client, the API jobs, the notifiers), against real servers on 127.0.0.1."""

from __future__ import annotations

import email.utils
import time

import pytest

from deal_feeds import WebhookReceiver
from fake_openai import FakeOpenAI
from pricer.core.retry import Retryable, RetrySettings, attempts_made, retry_after_s, retrying

FAST = RetrySettings(max_retries=3, backoff_initial_s=0.001, backoff_max_s=0.005, max_retry_after_s=1.0)


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "2"}, 2.0),
    ({"retry-after": "0.25"}, 0.25),
    ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # the millisecond header wins
    ({"retry-after": "-4"}, 0.0),
    ({"retry-after": "soon"}, None),  # garbage: as if absent
    ({"retry-after": "Wed, 99 Foo 2015 07:28:00 GMT"}, None),
    ({"retry-after-ms": "nan"}, None),
    ({"retry-after": ""}, None),
    ({}, None),
    (None, None),
])
def test_retry_after_is_read_from_either_header_and_garbage_is_ignored(headers, seconds) -> None:
    assert retry_after_s(headers) == seconds


def test_an_http_date_retry_after_counts_from_now() -> None:
    assert 25 < retry_after_s({"retry-after": email.utils.formatdate(time.time() + 30, usegmt=True)}) <= 31
    assert retry_after_s({"retry-after": email.utils.formatdate(time.time() - 60, usegmt=True)}) == 0.0


def test_every_attempt_failing_stops_after_max_retries_and_raises_the_last_failure() -> None:
    calls = []
    policy = retrying(FAST, sleep=calls.append)
    with pytest.raises(Retryable, match="HTTP 503"):
        for attempt in policy:
            with attempt:
                raise Retryable("HTTP 503")
    assert attempts_made(policy) == FAST.max_retries + 1 and len(calls) == FAST.max_retries
    assert all(0 < wait <= FAST.backoff_max_s for wait in calls)


def test_retry_after_is_honoured_and_a_long_one_gives_up_at_once() -> None:
    waits = []
    answers = iter([Retryable("HTTP 429", retry_after=0.5), "done"])
    for attempt in retrying(FAST, sleep=waits.append):
        with attempt:
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
    assert answer == "done" and 0.5 <= waits[0] < 0.6
    policy = retrying(FAST, sleep=waits.append)
    with pytest.raises(Retryable):
        for attempt in policy:
            with attempt:
                raise Retryable("HTTP 429", retry_after=30.0)  # beyond max_retry_after_s: for a later run
    assert attempts_made(policy) == 1


def test_a_final_error_is_not_retried() -> None:
    policy = retrying(FAST, sleep=lambda _: None)
    with pytest.raises(KeyError):
        for attempt in policy:
            with attempt:
                raise KeyError("a bug or a 4xx: not for retrying")
    assert attempts_made(policy) == 1


def test_the_frontier_client_survives_a_garbage_retry_after(tmp_path) -> None:
    from pricer.core.config import validate
    from pricer.frontier.client import FrontierClient
    from pricer.frontier.config import FrontierConfig

    with FakeOpenAI(seed=3, failure_rate=0.5, fault_kinds={"429": 1.0}, retry_after_s="soon") as server:
        config = validate(FrontierConfig, {"name": "f", "model": "gpt-fake", "base_url": server.base_url,
                                           "api_key_env": None, "cache_dir": None, "cost_log": None,
                                           "trace": False, "max_retries": 20, "backoff_initial_s": 0.001,
                                           "backoff_max_s": 0.01})
        client = FrontierClient(config)
        results = client.complete_many([[{"role": "user", "content": f"item {i}"}] for i in range(12)])
    assert server.faults["429"] > 0 and client.totals.rate_limited == server.faults["429"]
    assert all(result.error is None for result in results)  # every item answered, none lost to the header


def test_a_notifier_survives_a_garbage_retry_after() -> None:
    from pricer.agents.config import WebhookConfig
    from pricer.agents.deals import Deal, Opportunity
    from pricer.agents.messenger import build_notifier

    deal = Deal(url="https://shop.test/d/1", title="Kettle", price=10.0, feed="f")
    with WebhookReceiver(fail_next=2) as receiver:
        receiver.fail_next_status = 429
        receiver.fail_headers = {"Retry-After": "soon"}
        config = WebhookConfig(url=receiver.url, url_env=None, max_retries=3, backoff_initial_s=0.001,
                               backoff_max_s=0.01)
        notifier = build_notifier(config)
        notifier.send(Opportunity(deal=deal, estimate=40.0))
        notifier.close()
    assert len(receiver.received) == 3 and len(receiver.delivered) == 1
