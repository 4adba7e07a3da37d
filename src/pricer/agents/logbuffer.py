"""A bounded in-memory tail of the agents' log records, for the UI's live activity view."""

from __future__ import annotations

import logging
import threading
from collections import deque

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_LOGGERS = ("pricer.agents", "pricer.frontier")


class LogBuffer(logging.Handler):
    """Keeps the last ``capacity`` formatted records; ``tail(n)`` reads them, oldest first."""

    def __init__(self, capacity: int = 1000, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.records: deque[str] = deque(maxlen=capacity)
        self.written = 0  # lines ever appended: a position that survives the deque dropping old lines
        self._lines_lock = threading.Lock()
        self.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)
            return
        with self._lines_lock:
            self.records.append(line)
            self.written += 1

    def tail(self, n: int = 200) -> str:
        with self._lines_lock:
            lines = list(self.records)[-n:]
        return "\n".join(lines)

    def mark(self) -> int:
        """The position now: ``since(mark)`` reads what is logged after it (one cycle's lines)."""
        with self._lines_lock:
            return self.written

    def since(self, mark: int, n: int = 200) -> str:
        """The lines logged after ``mark`` that the buffer still holds, at most the last ``n``."""
        with self._lines_lock:
            new = min(self.written - mark, len(self.records), n)
            lines = list(self.records)[len(self.records) - new:] if new > 0 else []
        return "\n".join(lines)

    def clear(self) -> None:
        with self._lines_lock:
            self.records.clear()


_buffer: LogBuffer | None = None
_install_lock = threading.Lock()


def install(capacity: int = 1000, level: int = logging.INFO) -> LogBuffer:
    """The process-wide buffer, attached to the agents' loggers (idempotent)."""
    global _buffer
    with _install_lock:
        if _buffer is None:
            _buffer = LogBuffer(capacity, level)
            for name in _LOGGERS:
                logger = logging.getLogger(name)
                logger.addHandler(_buffer)
                if logger.getEffectiveLevel() > level:
                    logger.setLevel(level)
        return _buffer
