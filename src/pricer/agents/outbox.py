"""The memory's outbox: one notification per opportunity, claimed under a lease before it is sent.

A row is ``pending`` until a sender marks it ``sent`` (or it grows too old and is ``expired``).
Two cycles may run at once (a cron tick while a slow cycle is still notifying, two schedulers),
so a sender first *claims* rows: ``claim`` takes, in one ``BEGIN IMMEDIATE`` transaction, only
pending rows that nobody holds or whose lease has run out, and stamps them with the sender's id
(``claimed_by``) and an expiry (``lease_until``). SQLite lets one writer in at a time, so two
claimers never take the same row. ``mark_sent`` and ``mark_failed`` change a row only for the
sender that claimed it; a failure releases the row for the next cycle at once.

A sender that dies holding a claim (SIGKILL, OOM, a lost machine) cannot release it. When it was a
process on this machine (same host name and PID namespace) that no longer runs, the next claimer
takes the row over at once; otherwise (another machine, or a process that hangs) the row waits
until the lease runs out. Either way it is sent again under the same ``Idempotency-Key``. A lease
must therefore outlast the longest send (the messenger derives it from the notifier's retry
settings), or a live, slow sender's row is sent twice.

Delivery is at-least-once: a kill after the receiver answered and before ``mark_sent`` committed
means one resend with the same key; a receiver that dedupes on the key shows it once.

A person may ask for a notification again (the UI's "Re-send"): ``resend`` records the request in the
``resends`` table and puts the row back to ``pending`` under a NEW key, ``resend_key(deal key, n)``, in
one transaction; the messenger then delivers it like any other row. A new key, because the deal's own
key was already acknowledged: a receiver that dedupes on it (as it should) would drop the re-send, so
the button would do nothing exactly where delivery is done right. The new key is fixed when the request
is recorded, so that request's own retries and crash-resends still carry one key, and the body names
the original (``resend_of``). Only a row that is ``sent`` or ``expired`` can be re-sent: a pending one
is still going to be delivered, and may be on the wire.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pricer.agents.deals import Deal, Opportunity
from pricer.core.errors import PricerError

log = logging.getLogger(__name__)

PENDING = "pending"
SENT = "sent"
EXPIRED = "expired"

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    key TEXT PRIMARY KEY REFERENCES opportunities(key),
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'expired')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    notifier TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    sent_at REAL,
    claimed_by TEXT,
    lease_until REAL,
    send_key TEXT
);
CREATE INDEX IF NOT EXISTS outbox_status ON outbox(status);
CREATE TABLE IF NOT EXISTS resends (
    key TEXT PRIMARY KEY,
    opportunity TEXT NOT NULL REFERENCES opportunities(key),
    number INTEGER NOT NULL,
    requested_at REAL NOT NULL,
    requested_by TEXT NOT NULL,
    previous_status TEXT NOT NULL,
    previous_sent_at REAL,
    sent_at REAL,
    UNIQUE (opportunity, number)
);
"""

# Columns added after the first release: a memory file written before them gains them when opened.
# send_key: the Idempotency-Key of the row's current send (NULL: the deal's key; set by a re-send).
_ADDED_COLUMNS = {"claimed_by": "TEXT", "lease_until": "REAL", "send_key": "TEXT"}


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Add the columns an older memory file lacks; returns those added (none when it is current)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read inside the write lock: another process opening the same file may have just migrated it.
        have = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
        added = [name for name in _ADDED_COLUMNS if name not in have]
        for name in added:
            conn.execute(f"ALTER TABLE outbox ADD COLUMN {name} {_ADDED_COLUMNS[name]}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return added


def _here() -> str:
    """This machine and PID namespace: where a claimer's process id means the same process."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = "?"  # no way to tell: claims then wait for their lease, never for a PID check
    return f"{socket.gethostname()}:{namespace}"


def new_owner() -> str:
    """A claimer's id: host, PID namespace, process (whether it still runs) and a random part (unique)."""
    return f"{_here()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _gone(owner: str) -> bool:
    """Whether ``owner`` was a process here that has exited. Unsure means no: a reused PID, or one
    not readable, only makes the row wait for its lease."""
    place, _, rest = owner.rpartition(":")[0].rpartition(":")
    if place != _here() or place.endswith(":?") or not rest.isdigit():
        return False
    pid = int(rest)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # killed but not yet reaped by its parent: a zombie sends nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


class ResendRefused(PricerError):
    """A re-send that cannot be recorded: no such notification, or it is still pending."""


def resend_key(key: str, number: int) -> str:
    """The Idempotency-Key of the ``number``-th re-send of deal ``key``: new, and the same on every retry."""
    return hashlib.sha256(f"{key}:resend:{number}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class PendingNotification:
    key: str
    opportunity: Opportunity
    attempts: int
    created_at: float
    lease_until: float | None = None
    send_key: str | None = None  # the Idempotency-Key to send with (None: the deal's key)

    @property
    def idempotency_key(self) -> str:
        return self.send_key or self.key


_SELECT = (
    "SELECT o.*, x.attempts AS n_attempts, x.created_at AS queued_at, x.lease_until AS leased_to, "
    "x.send_key AS send_key "
    "FROM outbox x JOIN opportunities o ON o.key = x.key"
)


class Outbox:
    """The outbox rows of one memory database, through the memory's connection and transactions."""

    def __init__(
        self,
        conn: Callable[[], sqlite3.Connection],
        transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
    ) -> None:
        self._conn = conn
        self._transaction = transaction

    def pending(self, limit: int | None = None) -> list[PendingNotification]:
        """Every pending row, claimed or not: a read for people and tests; senders ``claim``."""
        sql = f"{_SELECT} WHERE x.status = 'pending' ORDER BY x.created_at, x.key"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_pending(row) for row in self._conn().execute(sql)]

    def claim(
        self, limit: int, lease_s: float, owner: str, *, exclude: Collection[str] = ()
    ) -> list[PendingNotification]:
        """Up to ``limit`` pending rows nobody holds (or whose lease ran out), oldest first, now held
        by ``owner`` for ``lease_s`` seconds; ``exclude`` holds keys this sender already tried."""
        now = time.time()
        with self._transaction() as conn:
            holders = conn.execute(
                "SELECT DISTINCT claimed_by FROM outbox WHERE status = 'pending' AND lease_until > ?", (now,)
            ).fetchall()
            for (holder,) in holders:
                if holder and _gone(holder):  # its lease cannot protect a send that is no longer happening
                    conn.execute("UPDATE outbox SET lease_until = ? WHERE status = 'pending' AND claimed_by = ?",
                                 (now, holder))
            found = conn.execute(
                "SELECT key, claimed_by FROM outbox WHERE status = 'pending' "
                "AND (lease_until IS NULL OR lease_until <= ?) "
                "AND key NOT IN (SELECT value FROM json_each(?)) ORDER BY created_at, key LIMIT ?",
                (now, json.dumps(list(exclude)), int(limit)),
            ).fetchall()
            if not found:
                return []
            keys = [row[0] for row in found]
            for key, previous in found:
                if previous is not None:  # a failure or a send clears it: this sender died or hung
                    log.warning("outbox row %s: %s died or hung holding it unsent; sending it again (same "
                                "Idempotency-Key)", key[:12], previous)
            marks = ",".join("?" * len(keys))
            conn.execute(
                f"UPDATE outbox SET claimed_by = ?, lease_until = ?, updated_at = ? WHERE key IN ({marks})",
                (owner, now + lease_s, now, *keys),
            )
            rows = conn.execute(f"{_SELECT} WHERE x.key IN ({marks}) ORDER BY x.created_at, x.key", keys)
            return [_pending(row) for row in rows]

    def release(self, keys: Iterable[str], owner: str) -> int:
        """Give back rows ``owner`` holds without trying them (its notifier could not be built)."""
        keys = list(keys)
        if not keys:
            return 0
        with self._transaction() as conn:
            return conn.execute(
                f"UPDATE outbox SET claimed_by = NULL, lease_until = NULL WHERE status = 'pending' "
                f"AND claimed_by = ? AND key IN ({','.join('?' * len(keys))})",
                (owner, *keys),
            ).rowcount

    def mark_sent(self, key: str, notifier: str | None = None, *, owner: str | None = None) -> bool:
        """Pending -> sent, for the claimer ``owner``; False when the row is not pending or another
        sender has taken it over since. With no owner, only a row that nobody holds is marked."""
        now = time.time()
        with self._transaction() as conn:
            changed = conn.execute(
                "UPDATE outbox SET status = 'sent', attempts = attempts + 1, sent_at = ?, updated_at = ?, "
                "last_error = NULL, notifier = COALESCE(?, notifier), lease_until = NULL "
                f"WHERE key = ? AND status = 'pending' AND {_HOLDER}",
                (now, now, notifier, key, owner, owner, now),
            ).rowcount
            if changed:  # a re-send's record says when it arrived
                conn.execute("UPDATE resends SET sent_at = ? WHERE key = (SELECT send_key FROM outbox WHERE key = ?)",
                             (now, key))
        return bool(changed)

    def mark_failed(self, key: str, error: str, *, owner: str | None = None) -> bool:
        """Count a failed attempt and release the row for the next cycle (same rule as ``mark_sent``)."""
        now = time.time()
        with self._transaction() as conn:
            changed = conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, updated_at = ?, "
                f"claimed_by = NULL, lease_until = NULL WHERE key = ? AND status = 'pending' AND {_HOLDER}",
                (error[:500], now, key, owner, owner, now),
            ).rowcount
        return bool(changed)

    def expire_pending(self, older_than_s: float) -> int:
        """Pending notifications older than this are not worth sending any more; a row a live sender
        holds is left to it (it may be on the wire)."""
        now = time.time()
        with self._transaction() as conn:
            return conn.execute(
                "UPDATE outbox SET status = 'expired', updated_at = ?, claimed_by = NULL, lease_until = NULL "
                "WHERE status = 'pending' AND created_at < ? AND (lease_until IS NULL OR lease_until <= ?)",
                (now, now - older_than_s, now),
            ).rowcount

    def held(self, *, besides: str | None = None) -> int:
        """Pending rows under a live lease (of a sender other than ``besides``)."""
        return int(
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND lease_until > ? "
                "AND claimed_by IS NOT ?",
                (time.time(), besides),
            )
            .fetchone()[0]
        )

    def row(self, key: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM outbox WHERE key = ?", (key,)).fetchone()
        return None if row is None else dict(row)

    def resend(self, key: str, requested_by: str) -> dict[str, Any]:
        """Record a request to notify ``key`` again and queue it under its new key; returns the record."""
        now = time.time()
        with self._transaction() as conn:
            row = conn.execute("SELECT status, sent_at FROM outbox WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise ResendRefused(f"no notification was ever queued for {key}")
            if row["status"] == PENDING:
                raise ResendRefused("it is still pending: the next delivery sends it (a re-send would race it)")
            number = 1 + conn.execute("SELECT COUNT(*) FROM resends WHERE opportunity = ?", (key,)).fetchone()[0]
            record = {"key": resend_key(key, number), "opportunity": key, "number": number, "requested_at": now,
                      "requested_by": requested_by[:200], "previous_status": row["status"],
                      "previous_sent_at": row["sent_at"], "sent_at": None}
            conn.execute(f"INSERT INTO resends ({', '.join(record)}) VALUES ({', '.join('?' * len(record))})",
                         tuple(record.values()))
            # Queued as of now, so the pending age limit counts from the request, not the first send.
            conn.execute(
                "UPDATE outbox SET status = 'pending', send_key = ?, last_error = NULL, created_at = ?, updated_at = ?, "
                "claimed_by = NULL, lease_until = NULL WHERE key = ?",
                (record["key"], now, now, key),
            )
        log.info("re-send %d of %s recorded (requested by %s); Idempotency-Key %s", number, key[:12],
                 record["requested_by"], record["key"])
        return record

    def resends(self, key: str) -> list[dict[str, Any]]:
        """Every re-send asked for ``key``, oldest first."""
        rows = self._conn().execute("SELECT * FROM resends WHERE opportunity = ? ORDER BY number", (key,))
        return [dict(row) for row in rows]


# The claimer itself, even past its lease (nobody has taken the row over, and what it reports is
# true); without an owner, only a row nobody holds. Parameters: owner, owner, now.
_HOLDER = "(claimed_by = ? OR (? IS NULL AND (lease_until IS NULL OR lease_until <= ?)))"


def _pending(row: sqlite3.Row) -> PendingNotification:
    return PendingNotification(
        row["key"],
        opportunity_of(row),
        int(row["n_attempts"]),
        float(row["queued_at"]),
        None if row["leased_to"] is None else float(row["leased_to"]),
        row["send_key"],
    )


def opportunity_of(row: sqlite3.Row) -> Opportunity:
    deal = Deal(
        url=row["url"],
        title=row["title"],
        description=row["description"],
        price=row["price"],
        feed=row["feed"],
    )
    return Opportunity(deal=deal, estimate=row["estimate"], estimates=json.loads(row["estimates"] or "{}"))
