"""A station's "engine started" reports, sent to the scheduler in batches.

One actor call per report cost the scheduler and the station about as much as
the task's own dispatch: at hundreds of short tasks a second it was half of
the head's work. So a station gathers its reports for up to ``delay_s`` and
sends them in one call, and drops a report whose task's outcome leaves first:
the outcome repeats it (``Outcome.running_at``), and the scheduler takes it
from there. A long task is seen ``running`` at most ``delay_s`` late, with the
time the station gave it (``at``), not the time it arrived.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from farm.scheduler.messages import EngineStarted

log = logging.getLogger(__name__)


class RunningReports:
    """``add`` a report (``messages.EngineStarted``), ``overtaken`` when the attempt's outcome is on its way;
    ``send(reports)`` is called from one thread of its own, with what is left."""

    def __init__(self, send: Callable[[list[EngineStarted]], object], *, delay_s: float = 0.05):
        self._send = send
        self.delay_s = delay_s
        self._pending: dict[tuple[str, int], EngineStarted] = {}
        self._lock = threading.Lock()
        self._due = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="farm-running", daemon=True)
        self._thread.start()

    def add(self, report: EngineStarted) -> None:
        with self._lock:
            self._pending[report.task_id, report.attempt] = report
        self._due.set()

    def overtaken(self, task_id: str, attempt: int) -> None:
        """The attempt's outcome is leaving now, and it carries the report itself."""
        with self._lock:
            self._pending.pop((task_id, attempt), None)

    def flush(self) -> None:
        """Send what is pending now, in one call (the reports' thread does, every
        ``delay_s`` while reports come in)."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return
        try:
            self._send(list(batch.values()))
        except Exception:  # a lost report is repeated by its outcome: log, carry on
            log.exception("could not send %d running reports", len(batch))

    def _loop(self) -> None:
        while True:
            self._due.wait()
            time.sleep(self.delay_s)  # gather what else starts meanwhile
            self._due.clear()
            self.flush()
