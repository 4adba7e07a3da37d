"""The UI's view of one opportunity, and its one action: re-send the alert.

The view shows what the opportunity was surfaced on (each agent's estimate, stored with it) beside what
the agents say now (``pricer.agents.quote``: the same agents, weights and product text as a cycle, with
the model version of each), the training products nearest to it in the vector store (the citations:
what similar things sold for), the link, and its notification's history.

A re-send is an explicit, recorded action (``pricer.agents.outbox``, ``Outbox.resend``): a row in the
memory's ``resends`` table with who asked and when, a NEW Idempotency-Key (the deal's own key was already
acknowledged, and a receiver that dedupes on it would drop the re-send), then one delivery through the
configured messenger, exactly as a cycle delivers. A delivery that fails leaves it pending for the next
cycle, under the same new key.

Titles, descriptions and URLs come from strangers' pages: everything shown here is escaped as Markdown.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote as url_quote

import pandas as pd

from pricer.agents.deals import deal_key
from pricer.agents.outbox import ResendRefused

log = logging.getLogger("pricer.agents.ui")

AGENT_COLUMNS = ["agent", "when surfaced", "now", "model"]
CITATION_COLUMNS = ["price", "title", "text"]
_CITED_CHARS = 160  # enough of a neighbour's text to see why it is near; the title says what it is
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def escape(text: Any) -> str:
    """Markdown-inert text: a title cannot become a link, a heading or markup."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(text or "").split()))


def money(value: Any) -> str:
    try:
        return f"${float(value):,.2f}"
    except (TypeError, ValueError):
        return ""


def _when(stamp: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(stamp))) if stamp else "never"


@dataclass
class Detail:
    """What the detail panel shows; ``key`` is the opportunity's (None: nothing selected)."""

    markdown: str
    agents: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=AGENT_COLUMNS))
    citations: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CITATION_COLUMNS))
    key: str | None = None


EMPTY = Detail("Select an opportunity in the table to see each agent's estimate, the products it is priced "
               "against, and its alert.")


def key_of_row(row: list[Any] | None, columns: list[str]) -> str | None:
    """The opportunity a table row shows, by its URL (one opportunity per canonical URL)."""
    if not row or "url" not in columns or len(row) <= columns.index("url"):
        return None
    url = str(row[columns.index("url")] or "").strip()
    return deal_key(url) if url.startswith(("http://", "https://")) else None


def detail_view(planner: Any, store: Any, key: str | None, k: int = 5) -> Detail:
    """The opportunity ``key`` as surfaced and as the agents price it now, with its citations and alert."""
    if not key:
        return EMPTY
    found = planner.memory.opportunity(key)
    if found is None:
        return Detail(f"No opportunity {escape(key)} in memory.")
    now, error = _quote(planner, store, found, k)
    stored = found["estimates"]
    names = list(dict.fromkeys([*stored, *(now.agents if now is not None else {})]))
    rows = [{"agent": name, "when surfaced": money(stored.get(name)) or "no answer",
             "now": money(now.agents.get(name)) if now is not None else "",
             "model": now.models.get(name, "") if now is not None else ""} for name in names]
    rows.append({"agent": "ensemble", "when surfaced": money(found["estimate"]),
                 "now": money(now.estimate) if now is not None else "", "model": (now.ensemble or "") if now else ""})
    citations = [{"price": money(c.price), "title": c.title[:120], "text": c.text[:_CITED_CHARS]}
                 for c in (now.neighbours if now else [])]
    lines = [
        f"### {escape(found['title'][:200])}",
        (f"**{money(found['price'])}** against an estimate of **{money(found['estimate'])}** "
         f"({found['discount']:.0%} below), from feed {escape(found['feed'])}, surfaced {_when(found['created_at'])}."),
        f"[Open the deal]({_link(found['url'])})  `{_code(found['url'][:200])}`",
        "",
        _delivery(found),
    ]
    if error:
        lines += ["", f"The agents could not price it now: {escape(error)}"]
    elif now is not None and now.skipped:
        lines += ["", f"Skipped agents: {escape(', '.join(now.skipped))}"]
    if not citations:
        lines += ["", "No citations: the vector store is empty or absent (the pipeline builds it; or pricer vectorstore)."]
    return Detail("\n".join(lines), pd.DataFrame(rows, columns=AGENT_COLUMNS),
                  pd.DataFrame(citations, columns=CITATION_COLUMNS), key)


def _quote(planner: Any, store: Any, found: dict[str, Any], k: int) -> tuple[Any, str | None]:
    from pricer.agents.quote import Product, quote

    try:
        product = Product(title=found["title"][:500], description=found["description"][:20_000])
        return quote(planner, [product], store=store, k=k)[0], None
    except Exception as error:  # the stored figures still show; the panel says what failed
        log.exception("pricing opportunity %s for the detail view failed", found["key"][:12])
        return None, f"{type(error).__name__}: {error}"


def _code(text: str) -> str:
    # Inside a code span nothing is markup, and escapes would show: only a backtick could end it.
    return text.replace("`", "'")


def _link(url: str) -> str:
    # Already a validated absolute http(s) URL (``Deal``); what would end a Markdown link is percent-encoded.
    return url_quote(url, safe=":/?&=%#;,@+~!$'*-._")


def _delivery(found: dict[str, Any]) -> str:
    row = found["notification"]
    if row is None:
        return "Alert: none queued."
    key = row.get("send_key") or found["key"]
    text = (f"Alert: **{row['status']}** via {escape(row.get('notifier') or '?')}, {row['attempts']} attempt(s), "
            f"last sent {_when(row.get('sent_at'))}, Idempotency-Key `{key}`")
    if row.get("last_error"):
        text += f"; last error: {escape(row['last_error'])}"
    for resend in found["resends"]:
        text += (f"  \nRe-send {resend['number']}: asked by {escape(resend['requested_by'])} at "
                 f"{_when(resend['requested_at'])} (was {resend['previous_status']}), key `{resend['key']}`, "
                 f"delivered {_when(resend['sent_at'])}")
    return text


def resend(planner: Any, key: str | None, requested_by: str = "ui") -> str:
    """Record a re-send of ``key``'s alert and deliver it now; what happened, as Markdown."""
    if not key:
        return "Select an opportunity first."
    try:
        record = planner.memory.resend(key, requested_by)
    except ResendRefused as error:
        return f"Not re-sent: {escape(error)}"
    report = planner.messenger.deliver(planner.memory)
    row = planner.memory.outbox_row(key) or {}
    label = f"Re-send {record['number']} (Idempotency-Key `{record['key']}`)"
    if row.get("status") == "sent" and row.get("send_key") == record["key"]:
        log.info("UI re-sent the alert for %s (%s)", key[:12], record["key"])
        return f"{label}: delivered via {escape(row.get('notifier'))}."
    why = row.get("last_error") or report.skipped_reason or "another sender holds it"
    return f"{label}: recorded, not delivered yet ({escape(why)}); it stays pending and the next cycle sends it."
