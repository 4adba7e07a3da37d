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
"""

from __future__ import annotations

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
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS outbox_status ON outbox(status);
"""

# Columns added after the first release: a memory file written before them gains them when opened.
_ADDED_COLUMNS = {"claimed_by": "TEXT", "lease_until": "REAL"}


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


@dataclass(frozen=True)
class PendingNotification:
    key: str
    opportunity: Opportunity
    attempts: int
    created_at: float
    lease_until: float | None = None


_SELECT = (
    "SELECT o.*, x.attempts AS n_attempts, x.created_at AS queued_at, x.lease_until AS leased_to "
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
