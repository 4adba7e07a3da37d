"""The agents' memory: every deal priced, every opportunity surfaced, and its notification (an outbox).

SQLite (WAL, ``synchronous=FULL``) under ``data/``. One planner cycle writes, in one
transaction, the deals it priced, the opportunities it surfaced and one ``pending`` outbox row
per opportunity, keyed by the deal's idempotency key (a hash of its canonical URL). The
messenger then claims pending rows (a lease, so two cycles running at once never send the same
row) and marks each ``sent`` only after its notifier succeeded (``pricer.agents.outbox``). So a
cycle killed anywhere leaves either nothing (before the commit) or pending rows that a later
cycle delivers; a sent row is never sent again, and a deal is never recorded twice (the key is
the primary key).

The one window left is a kill after the notifier succeeded and before ``mark_sent``
committed: the next claimer sends that notification again (at once when the dead sender ran on
this machine, else when its lease runs out) with the same ``Idempotency-Key`` header, so a
receiver that dedupes on it still sees it once.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from pricer.agents.deals import Deal, Opportunity
from pricer.agents.outbox import (
    EXPIRED,
    OUTBOX_SCHEMA,
    PENDING,
    SENT,
    Outbox,
    PendingNotification,
    migrate,
)
from pricer.core.retry import Retryable, RetrySettings, retrying

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deals (
    key TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    title TEXT NOT NULL,
    price REAL NOT NULL,
    feed TEXT NOT NULL,
    estimate REAL,
    cycle_id TEXT NOT NULL,
    seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS opportunities (
    key TEXT PRIMARY KEY REFERENCES deals(key),
    url TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    feed TEXT NOT NULL,
    price REAL NOT NULL,
    estimate REAL NOT NULL,
    discount REAL NOT NULL,
    estimates TEXT NOT NULL,
    cycle_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


_OPENING_RACE = RetrySettings(max_retries=30, backoff_initial_s=0.01, backoff_max_s=0.25)


@contextmanager
def _busy_is_retryable() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as error:
        if "locked" not in str(error) and "busy" not in str(error):
            raise
        raise Retryable(f"memory file busy: {error}") from error


class Memory:
    """A thread-safe handle on the memory database (one connection per thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Two processes opening one file at once can deadlock on its first switch to WAL or on the schema
        # script; SQLite then fails one of them at once, without waiting out the busy timeout. All of it is
        # idempotent, so the loser tries again.
        for attempt in retrying(_OPENING_RACE):
            with attempt, _busy_is_retryable():
                self._conn().executescript(_SCHEMA + OUTBOX_SCHEMA)  # idempotent: CREATE ... IF NOT EXISTS
                migrate(self._conn())
        self.outbox = Outbox(self._conn, self._transaction)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=True)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ---- what the scanner skips ---------------------------------------------------------------

    def known_keys(self) -> set[str]:
        return {row[0] for row in self._conn().execute("SELECT key FROM deals")}

    # ---- one cycle's writes -------------------------------------------------------------------

    def record_cycle(
        self,
        cycle_id: str,
        priced: Sequence[tuple[Deal, float]],
        opportunities: Sequence[Opportunity],
        *,
        notifier: str | None = None,
    ) -> list[str]:
        """Deals priced, opportunities and their pending notifications: all or nothing.

        Returns the keys of the opportunities that are new (an opportunity already recorded,
        e.g. by a cycle that crashed after its commit, is left as it is). Only a key conflict
        is tolerated: any other constraint failure rolls the whole cycle back and raises.
        """
        now = time.time()
        new: list[str] = []
        with self._transaction() as conn:
            for deal, estimate in priced:
                conn.execute(
                    "INSERT INTO deals (key, url, title, price, feed, estimate, cycle_id, seen_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        deal.key,
                        deal.url,
                        deal.title,
                        deal.price,
                        deal.feed,
                        None if not math.isfinite(estimate) else float(estimate),
                        cycle_id,
                        now,
                    ),
                )
            for opp in opportunities:
                deal = opp.deal
                conn.execute(
                    "INSERT INTO deals (key, url, title, price, feed, estimate, cycle_id, seen_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (deal.key, deal.url, deal.title, deal.price, deal.feed, opp.estimate, cycle_id, now),
                )
                inserted = conn.execute(
                    "INSERT INTO opportunities (key, url, title, description, feed, price, estimate, "
                    "discount, estimates, cycle_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (
                        opp.key,
                        deal.url,
                        deal.title,
                        deal.description,
                        deal.feed,
                        deal.price,
                        opp.estimate,
                        opp.discount,
                        json.dumps(opp.estimates),
                        cycle_id,
                        now,
                    ),
                ).rowcount
                if inserted:
                    conn.execute(
                        "INSERT INTO outbox (key, status, attempts, notifier, created_at, updated_at) "
                        "VALUES (?, 'pending', 0, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (opp.key, notifier, now, now),
                    )
                    new.append(opp.key)
        return new

    # ---- the outbox (pricer.agents.outbox) ---------------------------------------------------

    def pending(self, limit: int | None = None) -> list[PendingNotification]:
        return self.outbox.pending(limit)

    def claim(
        self, limit: int, lease_s: float, owner: str, *, exclude: Collection[str] = ()
    ) -> list[PendingNotification]:
        return self.outbox.claim(limit, lease_s, owner, exclude=exclude)

    def mark_sent(self, key: str, notifier: str | None = None, *, owner: str | None = None) -> bool:
        return self.outbox.mark_sent(key, notifier, owner=owner)

    def mark_failed(self, key: str, error: str, *, owner: str | None = None) -> bool:
        return self.outbox.mark_failed(key, error, owner=owner)

    def expire_pending(self, older_than_s: float) -> int:
        return self.outbox.expire_pending(older_than_s)

    def resend(self, key: str, requested_by: str) -> dict[str, Any]:
        return self.outbox.resend(key, requested_by)

    # ---- reading ------------------------------------------------------------------------------

    def opportunities(self, limit: int = 200) -> pd.DataFrame:
        """The surfaced opportunities, newest first, with their notification status."""
        rows = (
            self._conn()
            .execute(
                "SELECT o.created_at, o.title, o.price, o.estimate, o.discount, o.feed, o.url, "
                "x.status AS notification, x.attempts, o.key, o.estimates "
                "FROM opportunities o LEFT JOIN outbox x ON x.key = o.key "
                "ORDER BY o.created_at DESC, o.discount DESC LIMIT ?",
                (int(limit),),
            )
            .fetchall()
        )
        columns = [
            "created_at",
            "title",
            "price",
            "estimate",
            "discount",
            "feed",
            "url",
            "notification",
            "attempts",
            "key",
            "estimates",
        ]
        frame = pd.DataFrame([tuple(row) for row in rows], columns=columns)
        if not frame.empty:
            frame["created_at"] = pd.to_datetime(frame["created_at"], unit="s").dt.strftime(
                "%Y-%m-%d %H:%M:%S"
            )
        return frame

    def stats(self) -> dict[str, Any]:
        conn = self._conn()
        counts = dict(conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall())
        return {
            "deals": conn.execute("SELECT COUNT(*) FROM deals").fetchone()[0],
            "opportunities": conn.execute("SELECT COUNT(*) FROM opportunities").fetchone()[0],
            "pending": counts.get(PENDING, 0),
            "sent": counts.get(SENT, 0),
            "expired": counts.get(EXPIRED, 0),
        }

    def outbox_row(self, key: str) -> dict[str, Any] | None:
        return self.outbox.row(key)

    def opportunity(self, key: str) -> dict[str, Any] | None:
        """One opportunity as surfaced (its per-agent estimates decoded), its notification and its re-sends."""
        row = self._conn().execute("SELECT * FROM opportunities WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        found = dict(row)
        found["estimates"] = json.loads(found["estimates"] or "{}")
        found["notification"] = self.outbox.row(key)
        found["resends"] = self.outbox.resends(key)
        return found

    def estimates(self, since: float | None = None) -> pd.DataFrame:
        """Every deal priced (since a time): its price, the ensemble's estimate, whether it was surfaced."""
        rows = self._conn().execute(
            "SELECT d.price, d.estimate, d.seen_at, o.key IS NOT NULL AS opportunity FROM deals d "
            "LEFT JOIN opportunities o ON o.key = d.key WHERE d.estimate IS NOT NULL AND d.seen_at >= ? "
            "ORDER BY d.seen_at", (since or 0.0,)).fetchall()
        frame = pd.DataFrame([tuple(row) for row in rows], columns=["price", "estimate", "seen_at", "opportunity"])
        return frame.astype({"price": float, "estimate": float, "seen_at": float, "opportunity": bool})


def seen_estimates(path: str | Path, since: float | None = None) -> pd.DataFrame:
    """``Memory.estimates`` of the memory at ``path``, or no rows when there is none yet (nothing is created)."""
    if not Path(path).exists():
        return pd.DataFrame({"price": [], "estimate": [], "seen_at": [], "opportunity": []})
    memory = Memory(path)
    try:
        return memory.estimates(since)
    finally:
        memory.close()

