"""What this process may use of the machine: its CPU cores.

At the bottom of the layers (like `calm.clock`), so the data generator and the trainers size
their worker pools and thread counts from one rule.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask (a container's or taskset's share),
    which can be fewer than the machine has (os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)
