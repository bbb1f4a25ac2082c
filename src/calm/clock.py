"""Wall time and CPU time of a phase, so timings mean something on a shared machine.

Wall time depends on who else uses the cores; CPU seconds (this process and the worker
processes it waited for: DataLoader workers, renderers) measure the work itself.
"""

from __future__ import annotations

import os
import time


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished, waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Phase:
    """`with Phase() as p: ...` (or `p = Phase().start(); ...; p.stop()`) then `p.wall_s`,
    `p.cpu_s` (rounded to 0.1 s)."""

    def start(self) -> Phase:
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        self.wall_s = self.cpu_s = 0.0
        return self

    def stop(self) -> Phase:
        self.wall_s = round(time.perf_counter() - self._wall, 1)
        self.cpu_s = round(cpu_seconds() - self._cpu, 1)
        return self

    def __enter__(self) -> Phase:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
