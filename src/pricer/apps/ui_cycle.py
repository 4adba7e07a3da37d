"""The UI's "Run a cycle now": one planner cycle in a thread, its log lines streamed while it runs.

The cycle runs in its own thread, so that the event's generator can yield the lines logged since the
cycle began (``LogBuffer.mark``/``since``) every ``poll_s``; a browser that goes away stops the stream,
not the cycle, which finishes and records as a scheduled one does. Cycles started from the UI, by the
deployment or by ``pricer deals`` may overlap: the memory and the outbox are built for that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("pricer.agents.ui")


def summary(report: Any) -> str:
    delivery = report.delivery or {}
    text = (f"**Cycle {report.cycle_id}**: {report.deals} new deals, {report.priced} priced, "
            f"{report.new_opportunities} new opportunities, {delivery.get('sent', 0)} notified, "
            f"{delivery.get('failed', 0)} failed, in {report.seconds:.1f} s")
    if report.skipped_agents:
        text += f"  \nSkipped agents: {', '.join(report.skipped_agents)}"
    return text


def stream_cycle(planner: Any, buffer: Any, lines: int, poll_s: float = 0.25) -> Iterator[tuple[str, str]]:
    """Yields (status, the cycle's log so far) while the cycle runs, then its summary and whole log."""
    mark = buffer.mark()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["report"] = planner.run_cycle()
        except Exception as error:  # reported in the UI; the app keeps running
            log.exception("the cycle started from the UI failed")
            outcome["error"] = error

    started = time.monotonic()
    thread = threading.Thread(target=work, name="ui-cycle", daemon=True)
    log.info("cycle started from the UI")
    thread.start()
    while thread.is_alive():
        yield f"Running a cycle... {time.monotonic() - started:.0f} s", buffer.since(mark, lines)
        thread.join(poll_s)
    if "error" in outcome:
        error = outcome["error"]
        yield f"**The cycle failed**: {type(error).__name__}: {error}", buffer.since(mark, lines)
        return
    yield summary(outcome["report"]), buffer.since(mark, lines)
