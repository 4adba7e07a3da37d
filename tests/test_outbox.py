"""The outbox under concurrency and kills: real processes, real SIGKILLs, real HTTP servers on 127.0.0.1.

Two messengers delivering from one memory at once, a sender killed between the receiver's 200 and
``mark_sent``, whole deal cycles killed at random points, and the files a cycle writes searched
for the secrets in its environment. Cycles price with ``deal_feeds.ListPriceAgent`` (each item's
list price, no registry): what is measured here is delivery. The seed of the random kills is in
every failure message; ``PRICER_TEST_SEED`` replays one.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from deal_feeds import DealFeedServer, DealPage, WebhookReceiver, deliver_in_child, open_memory_in_child, sku_tag
from pricer.agents.config import AgentsConfig, NtfyConfig, PushoverConfig, WebhookConfig
from pricer.agents.deals import Deal, Opportunity, deal_key
from pricer.agents.memory import Memory
from pricer.agents.messenger import DeliveryError, Messenger, build_notifier

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SPAWN = multiprocessing.get_context("spawn")
FAST = {"max_retries": 0, "timeout_s": 5.0, "backoff_initial_s": 0.01, "backoff_max_s": 0.05}

# The outbox table as the first release created it (commit 9dd8e4e): no claim columns.
OLD_SCHEMA = """
CREATE TABLE deals (key TEXT PRIMARY KEY, url TEXT NOT NULL, title TEXT NOT NULL, price REAL NOT NULL,
    feed TEXT NOT NULL, estimate REAL, cycle_id TEXT NOT NULL, seen_at REAL NOT NULL);
CREATE TABLE opportunities (key TEXT PRIMARY KEY REFERENCES deals(key), url TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL, description TEXT NOT NULL, feed TEXT NOT NULL, price REAL NOT NULL,
    estimate REAL NOT NULL, discount REAL NOT NULL, estimates TEXT NOT NULL, cycle_id TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE outbox (key TEXT PRIMARY KEY REFERENCES opportunities(key),
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'expired')), attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, notifier TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL, sent_at REAL);
CREATE INDEX outbox_status ON outbox(status);
"""


def opportunity(n: int) -> Opportunity:
    deal = Deal(url=f"https://shop.test/deal/{n}", title=f"Deal {n}", description="d", price=10.0, feed="f")
    return Opportunity(deal=deal, estimate=40.0, estimates={"list-price": 40.0})


def old_memory(path: Path, n: int) -> list[str]:
    """A memory file in the first release's layout with ``n`` pending notifications; their keys."""
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    now = time.time()
    keys = []
    for i in range(n):
        opp = opportunity(i)
        deal = opp.deal
        conn.execute("INSERT INTO deals VALUES (?, ?, ?, ?, ?, ?, 'old', ?)",
                     (opp.key, deal.url, deal.title, deal.price, deal.feed, opp.estimate, now))
        conn.execute("INSERT INTO opportunities VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'old', ?)",
                     (opp.key, deal.url, deal.title, deal.description, deal.feed, deal.price, opp.estimate,
                      opp.discount, json.dumps(opp.estimates), now + i * 1e-3))
        conn.execute("INSERT INTO outbox (key, status, attempts, created_at, updated_at) VALUES (?, 'pending', 0, ?, ?)",
                     (opp.key, now + i * 1e-3, now))
        keys.append(opp.key)
    conn.commit()
    conn.close()
    return keys


def seed() -> int:
    return int(os.environ.get("PRICER_TEST_SEED") or random.SystemRandom().randrange(1 << 30))


# --------------------------------------------------------------------------- the claim itself


def test_an_old_memory_file_is_migrated_and_its_pending_rows_delivered(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite"
    keys = old_memory(path, 3)
    memory = Memory(path)
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(outbox)")}
    assert {"claimed_by", "lease_until"} <= columns
    assert Memory(path).stats()["pending"] == 3  # opening it again changes nothing
    with WebhookReceiver() as receiver:
        report = Messenger(WebhookConfig(url=receiver.url, url_env=None, **FAST)).deliver(memory)
        assert report.sent == 3 and receiver.delivered_keys() == keys
    assert memory.stats()["sent"] == 3 and memory.outbox_row(keys[0])["lease_until"] is None


def test_a_claim_takes_only_free_rows_and_only_its_holder_settles_them(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "memory.sqlite")
    opps = [opportunity(i) for i in range(3)]
    memory.record_cycle("c1", [], opps)
    opps.sort(key=lambda opp: opp.key)  # one cycle's rows share a time: the key orders them
    first = memory.claim(2, 0.5, "a")
    assert [item.key for item in first] == [opps[0].key, opps[1].key]
    assert [item.key for item in memory.claim(5, 30, "b")] == [opps[2].key]  # only what "a" does not hold
    assert memory.claim(5, 30, "c") == []
    assert not memory.mark_sent(opps[0].key, "webhook", owner="b")  # not b's
    assert not memory.mark_sent(opps[0].key, "webhook")  # nor anyone's while a holds it
    assert memory.mark_failed(opps[1].key, "HTTP 503", owner="a")  # released at once
    assert [item.key for item in memory.claim(5, 30, "c")] == [opps[1].key]
    time.sleep(0.6)  # a's lease on row 0 runs out: a died, or hangs
    taken = memory.claim(5, 30, "d")
    assert [item.key for item in taken] == [opps[0].key]
    assert not memory.mark_sent(opps[0].key, "webhook", owner="a")  # a came back too late
    assert memory.mark_sent(opps[0].key, "webhook", owner="d")
    assert not memory.mark_sent(opps[0].key, "webhook", owner="d")  # sent once
    row = memory.outbox_row(opps[0].key)
    assert row["status"] == "sent" and row["claimed_by"] == "d" and row["attempts"] == 1
    # A row a live sender holds does not expire under it; a free one does.
    assert memory.expire_pending(older_than_s=-1) == 0
    assert memory.mark_failed(opps[2].key, "timeout", owner="b") and memory.expire_pending(older_than_s=-1) == 1


def test_every_http_notifier_sends_the_idempotency_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TOPIC", "topic")
    monkeypatch.setenv("T_TOKEN", "token")
    monkeypatch.setenv("T_USER", "user")
    opp = opportunity(1)
    with WebhookReceiver() as receiver:
        for config in (
            WebhookConfig(url=receiver.url, url_env=None, **FAST),
            NtfyConfig(server=receiver.base_url, topic_env="T_TOPIC", **FAST),
            PushoverConfig(api_url=receiver.url, token_env="T_TOKEN", user_env="T_USER", **FAST),
        ):
            notifier = build_notifier(config)
            notifier.send(opp)
            notifier.close()
        assert receiver.delivered_keys() == [opp.key] * 3


def test_the_derived_lease_outlasts_the_longest_send() -> None:
    from pricer.agents.messenger import lease_for

    config = WebhookConfig(url="http://127.0.0.1:9/hook", url_env=None, timeout_s=0.3, max_retries=2,
                           backoff_initial_s=0.05, backoff_max_s=0.1, max_retry_after_s=0.4)
    with WebhookReceiver() as receiver:
        # Every attempt hangs past the timeout, or is refused with the longest Retry-After still honoured.
        receiver.decide = lambda record: (503, 1.0) if len(receiver.received) % 2 else (503, 0.0)
        receiver.fail_headers = {"Retry-After": "0.4"}
        notifier = build_notifier(config.model_copy(update={"url": receiver.url}))
        started = time.perf_counter()
        with pytest.raises(DeliveryError, match="after 3 attempts"):
            notifier.send(opportunity(1))
        took = time.perf_counter() - started
        notifier.close()
    assert took < lease_for(config) and lease_for(config.model_copy(update={"lease_s": 7.0})) == 7.0


# --------------------------------------------------------------------------- processes


def test_two_processes_delivering_at_once_never_send_a_row_twice(tmp_path: Path) -> None:
    """Both open the memory (a file in the old layout: both migrate it) and deliver on one barrier."""
    path = tmp_path / "memory.sqlite"
    keys = old_memory(path, 30)
    barrier, results = SPAWN.Barrier(2), SPAWN.Queue()
    with WebhookReceiver(delay_s=0.05) as receiver:  # 30 sends take 1.5 s: time for both to start
        config = {"kind": "webhook", "url": receiver.url, "url_env": None, **FAST}
        workers = [SPAWN.Process(target=deliver_in_child, args=(str(path), config, barrier, results))
                   for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
            assert worker.exitcode == 0, "a delivering process failed (its traceback is above)"
        reports = [results.get(timeout=10) for _ in workers]
        delivered = receiver.delivered_keys()
    assert not receiver.duplicates(), f"sent twice: {receiver.duplicates()}"
    assert sorted(delivered) == sorted(keys) and sum(r["sent"] for r in reports) == 30
    assert all(r["sent"] > 0 for r in reports), f"the two did not run at once: {reports}"
    assert Memory(path).stats()["sent"] == 30


def test_processes_opening_a_new_memory_file_at_once_all_succeed(tmp_path: Path) -> None:
    """The first opening of a file switches it to WAL and writes the schema: processes doing it at the
    same moment can deadlock, and SQLite fails one of them at once, whatever its busy timeout."""
    processes, rounds = 4, 15
    barrier, results = SPAWN.Barrier(processes), SPAWN.Queue()
    workers = [SPAWN.Process(target=open_memory_in_child, args=(str(tmp_path / "memory.sqlite"), barrier, rounds,
                                                                  results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
        assert worker.exitcode == 0
    assert sum(results.get(timeout=10) for _ in workers) == 0


@pytest.mark.parametrize("how", ["killed", "hung"])
def test_a_sender_stopped_after_the_receivers_200_is_resent_once_with_the_same_key(tmp_path: Path, how: str) -> None:
    """The receiver answers 200 to the first notification and holds the connection open: the sender has
    the status, not yet the end of the answer, so it has not marked the row sent when it is SIGKILLed
    (its row is taken over by the next delivery at once) or SIGSTOPped (alive: its row waits for the
    lease to run out)."""
    path = tmp_path / "memory.sqlite"
    memory = Memory(path)
    opps = sorted((opportunity(i) for i in range(3)), key=lambda opp: opp.key)
    memory.record_cycle("c1", [], opps)
    answered, release = threading.Event(), threading.Event()

    def hold_first(record: dict) -> None:
        if not answered.is_set():
            answered.set()
            release.wait(30)

    with WebhookReceiver() as receiver:
        receiver.after_answer = hold_first
        config = {"kind": "webhook", "url": receiver.url, "url_env": None, "lease_s": 2.0, **FAST}
        child = SPAWN.Process(target=deliver_in_child, args=(str(path), config))
        child.start()
        try:
            assert answered.wait(120), "the child never reached the receiver"
            os.kill(child.pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
            if how == "killed":
                child.join(timeout=30)
                assert child.exitcode == -signal.SIGKILL
            assert receiver.delivered_keys() == [opps[0].key]
            row = memory.outbox_row(opps[0].key)
            assert row["status"] == "pending" and row["claimed_by"] and row["lease_until"] > time.time()

            messenger = Messenger(WebhookConfig.model_validate(config))
            report = messenger.deliver(memory)
            if how == "hung":  # its lease still runs: the row is left to it
                assert (report.sent, report.held) == (2, 1)
                time.sleep(max(0.0, row["lease_until"] - time.time()) + 0.05)
                report = messenger.deliver(memory)
                assert (report.sent, report.held) == (1, 0)
            else:
                assert (report.sent, report.held) == (3, 0)
            assert messenger.deliver(memory).attempted == 0
        finally:
            release.set()
            if child.is_alive():
                os.kill(child.pid, signal.SIGKILL)
            child.join(timeout=30)
        bodies = [r["body"] for r in receiver.delivered if r["headers"]["idempotency-key"] == opps[0].key]
    assert receiver.duplicates() == Counter({opps[0].key: 2}) and bodies[0] == bodies[1]
    assert receiver.unique_keys() == {opp.key for opp in opps} and memory.stats()["sent"] == 3


# --------------------------------------------------------------------------- whole cycles


def shop_pages(start: int, n: int) -> tuple[list[DealPage], dict[str, float], set[str]]:
    """``n`` pages; every other one at 40% of its list price (a deal), the rest at 95%."""
    pages, prices, good = [], {}, set()
    for sku in range(start, start + n):
        prices[str(sku)] = 50.0 + sku
        deal = sku % 2 == 0
        pages.append(DealPage(f"sku-{sku}", f"Widget {sku_tag(sku)} model {sku}", f"A widget, model {sku}.",
                              round(prices[str(sku)] * (0.4 if deal else 0.95), 2), feed=("home", "tools")[sku % 2]))
        if deal:
            good.add(f"sku-{sku}")
    return pages, prices, good


def cycle_config(tmp_path: Path, server: DealFeedServer, messenger: dict, trace: bool = False) -> Path:
    config = AgentsConfig.model_validate({
        "feeds": server.feeds_config(broken=False, missing=False),
        "scanner": {"timeout_s": 2.0, "concurrency": 4, "max_deals_per_feed": 500},
        "agents": {"specialist": None, "frontier": None, "regressor": None},
        "planner": {"discount_threshold": 0.35},
        "memory": {"path": str(tmp_path / "memory.sqlite")},
        "messenger": messenger,
        "vectorstore": {"path": str(tmp_path / "vectorstore")},
        "tracking": {"experiment": "outbox-test", "trace": trace,
                     "tracking_uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"},
    })
    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def start_cycle(tmp_path: Path, config: Path, prices: Path, env: dict | None = None,
                stderr: object = subprocess.DEVNULL) -> subprocess.Popen:
    env = {**os.environ, **(env or {}),
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)  # the config's store
    return subprocess.Popen([sys.executable, "-c", "import deal_feeds; deal_feeds.cycle_main()", str(config),
                             str(prices)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def wait_ready(process: subprocess.Popen, timeout: float = 120) -> None:
    line = process.stdout.readline()  # the child prints "ready" as its cycle starts
    assert line.strip() == "ready", f"the cycle did not start (exit {process.wait(timeout)})"


def test_cycles_killed_at_random_points_lose_nothing_and_notify_each_deal_once(tmp_path: Path) -> None:
    rng_seed = seed()
    rng = random.Random(rng_seed)
    (tmp_path / "mlruns").mkdir()
    prices_path = tmp_path / "prices.json"
    good: set[str] = set()
    prices: dict[str, float] = {}
    kills: list[str] = []  # what memory held after each kill: where in the cycle it landed
    # A cycle takes about 0.5 s from "ready" (scan ~0.25 s, then estimate, memory, 6 sends of 50 ms):
    # one random point in each quarter of it, in a random order.
    delays = [rng.uniform(lo, lo + 0.15) for lo in (0.0, 0.15, 0.3, 0.45)]
    rng.shuffle(delays)
    with DealFeedServer() as server, WebhookReceiver(delay_s=0.05) as receiver:
        # No retries and a short timeout: the derived lease is 4 s, should a claim outlive its dead cycle.
        messenger = {"kind": "webhook", "url": receiver.url, "url_env": None, "max_retries": 0, "timeout_s": 0.5}
        for round_, delay in enumerate(delays):
            pages, more, deals = shop_pages(round_ * 6, 6)
            server.add(pages)
            prices.update(more)
            good |= deals
            prices_path.write_text(json.dumps(prices))
            config = cycle_config(tmp_path, server, messenger)
            process = start_cycle(tmp_path, config, prices_path)
            wait_ready(process)
            time.sleep(delay)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                stats = Memory(tmp_path / "memory.sqlite").stats()
                kills.append(f"{delay:.2f}s: {stats['opportunities']} surfaced, {stats['sent']} sent")
            process.wait(timeout=60)
        process = start_cycle(tmp_path, config, prices_path)  # the rerun
        wait_ready(process)
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0, f"seed {rng_seed}"
        report = json.loads(out.strip().splitlines()[-1])
        # A dead cycle's claim is taken over at once; should one still be held, its lease (4 s) runs out.
        memory, deadline = Memory(tmp_path / "memory.sqlite"), time.monotonic() + 60
        while memory.stats()["pending"] and time.monotonic() < deadline:
            time.sleep(0.5)
            Messenger(WebhookConfig.model_validate(messenger)).deliver(memory)
        delivered = list(receiver.delivered)
        expected = {deal_key(server.page_url(slug)) for slug in good}
    surfaced = set(memory.opportunities(limit=1000)["key"])
    note = f"seed {rng_seed}, kills at {kills}, last cycle {report['delivery']}"
    assert surfaced == expected, note  # every deal surfaced, once, and nothing else
    assert memory.stats()["sent"] == len(expected) and memory.stats()["pending"] == 0, note
    keys = Counter(item["headers"]["idempotency-key"] for item in delivered)
    assert set(keys) == expected, note  # nothing lost
    assert all(item["body"]["id"] == item["headers"]["idempotency-key"] for item in delivered)
    # A kill can strand at most the one row its cycle was sending: at most one resend per kill. The same
    # row may be stranded by two kills in a row (the next cycle resends it first, oldest first, and is
    # killed on the wire again), so the bound is on the sum, not on any one row.
    assert sum(n - 1 for n in keys.values()) <= len(kills), f"{note}: {keys}"


@pytest.mark.parametrize("kind", ["webhook", "ntfy", "pushover"])
def test_no_secret_reaches_the_traces_the_memory_or_the_logs(tmp_path: Path, kind: str) -> None:
    secrets = {"T_HOOK_URL_PART": "urlpart-S3CR3T-1", "T_TOKEN": "token-S3CR3T-2", "T_USER": "user-S3CR3T-3",
               "T_TOPIC": "topic-S3CR3T-4"}
    (tmp_path / "mlruns").mkdir()
    pages, prices, good = shop_pages(0, 4)
    prices_path = tmp_path / "prices.json"
    prices_path.write_text(json.dumps(prices))
    fast = {"max_retries": 1, "timeout_s": 2.0, "backoff_initial_s": 0.01, "backoff_max_s": 0.02}
    with DealFeedServer(pages) as server, WebhookReceiver(fail_next=2) as receiver:  # one notification fails
        env = {name: value for name, value in secrets.items()}
        env["T_HOOK_URL"] = f"{receiver.url}/{secrets['T_HOOK_URL_PART']}"
        messenger = {
            "webhook": {"kind": "webhook", "url_env": "T_HOOK_URL", "token_env": "T_TOKEN", **fast},
            "ntfy": {"kind": "ntfy", "server": receiver.base_url, "topic_env": "T_TOPIC", "token_env": "T_TOKEN",
                     **fast},
            "pushover": {"kind": "pushover", "api_url": receiver.url, "token_env": "T_TOKEN", "user_env": "T_USER",
                         **fast},
        }[kind]
        config = cycle_config(tmp_path, server, messenger, trace=True)
        log_path = tmp_path / "cycle.log"
        with log_path.open("w") as log:
            process = start_cycle(tmp_path, config, prices_path, {**env, "PRICER_TEST_LOG_LEVEL": "DEBUG"}, log)
            out, _ = process.communicate(timeout=180)
        assert process.returncode == 0, log_path.read_text()[-3000:]
        (tmp_path / "cycle.out").write_text(out)
        report = json.loads(out.strip().splitlines()[-1])
        sent = json.dumps([{"path": r["path"], "headers": r["headers"], "body": r["body"]} for r in receiver.received])
    assert report["trace_id"] and report["delivery"]["failed"] == 1 and report["delivery"]["sent"] == len(good) - 1
    used = [name for name, value in secrets.items() if value in sent]
    assert used, "the notifier sent none of the secrets: the test proves nothing"
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(b"deals.cycle" in path.read_bytes() for path in files), "the cycle's trace was not written here"
    for path in files:
        data = path.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in data, f"{name}'s value is in {path.relative_to(tmp_path)}"


# --------------------------------------------------------------------------- a re-send a person asks for


def test_a_resend_is_recorded_and_delivered_under_a_new_key_that_its_retries_keep(tmp_path: Path) -> None:
    from pricer.agents.outbox import ResendRefused, resend_key

    path = tmp_path / "memory.sqlite"
    old_memory(path, 1)  # a file from before re-sends: it gains their column and table when opened
    memory = Memory(path)
    opp = opportunity(0)
    with pytest.raises(ResendRefused, match="still pending"):
        memory.resend(opp.key, "ui")  # the first send has not happened: a re-send would race it
    with WebhookReceiver() as receiver:
        messenger = Messenger(WebhookConfig(url=receiver.url, url_env=None, **FAST))
        assert messenger.deliver(memory).sent == 1
        record = memory.resend(opp.key, "ui@127.0.0.1")
        assert record["key"] == resend_key(opp.key, 1) != opp.key and record["previous_status"] == "sent"
        receiver.fail_next = 1  # the re-send's first delivery fails: it stays pending under its key
        assert messenger.deliver(memory).failed == 1
        assert memory.outbox_row(opp.key)["status"] == "pending"
        assert messenger.deliver(memory).sent == 1
        assert [r["headers"]["idempotency-key"] for r in receiver.received] == [opp.key, record["key"], record["key"]]
        body = receiver.delivered[-1]["body"]
        assert body["id"] == record["key"] and body["resend_of"] == opp.key
        second = memory.resend(opp.key, "ui")
        assert second["key"] == resend_key(opp.key, 2) and messenger.deliver(memory).sent == 1
    found = memory.opportunity(opp.key)
    assert [(r["number"], r["requested_by"]) for r in found["resends"]] == [(1, "ui@127.0.0.1"), (2, "ui")]
    assert all(r["sent_at"] is not None for r in found["resends"])
    assert found["notification"]["status"] == "sent" and found["notification"]["send_key"] == second["key"]
    with pytest.raises(ResendRefused, match="no notification"):
        memory.resend("0" * 32, "ui")
