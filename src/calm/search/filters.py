"""Which indexed videos a query may return: folder or glob, duration range, modification time.

    under            a folder, relative to the indexed one: videos below it ("trips/2023")
    glob             a shell pattern matched against the whole relative path; `*` also crosses
                     folders ("*.mov", "trips/*/beach*")
    min/max_duration seconds, inclusive
    modified_after   the file's modification time (as indexed) on or after this moment, and
    modified_before  strictly before this one: an ISO date or date-time ("2024-05-01",
                     "2024-05-01T18:30"; local time unless it names a zone) or Unix seconds

A filter only narrows the candidates: scores, moments and the order among what is left are
those of the unfiltered search. Masks are cached per filter, so a repeated filter costs one
lookup.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np

from calm.data.errors import DataError


class FilterError(DataError):
    """A filter value that cannot be understood (a bad date, a negative duration)."""


def parse_time(value: str | float | None, name: str) -> float | None:
    """Unix seconds from an ISO date / date-time or a number; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise FilterError(f"{name}: {value!r} is not a date (YYYY-MM-DD, YYYY-MM-DDTHH:MM) "
                          "or Unix seconds") from None


def parse_seconds(value: str | float | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise FilterError(f"{name}: {value!r} is not a number of seconds") from None
    if not np.isfinite(seconds) or seconds < 0:
        raise FilterError(f"{name}: must be a non-negative number of seconds, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Filters:
    under: str | None = None
    glob: str | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    modified_after: float | None = None  # Unix seconds
    modified_before: float | None = None

    @classmethod
    def parse(cls, under=None, glob=None, min_duration=None, max_duration=None,
              modified_after=None, modified_before=None) -> Filters:
        """Filters from strings as the command line and the query string give them."""
        folder = (under or "").strip().strip("/") or None
        return cls(folder, (glob or "").strip() or None,
                   parse_seconds(min_duration, "min_duration"),
                   parse_seconds(max_duration, "max_duration"),
                   parse_time(modified_after, "modified_after"),
                   parse_time(modified_before, "modified_before"))

    @property
    def empty(self) -> bool:
        return all(v is None for v in asdict(self).values())

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def mask(self, paths: np.ndarray, durations: np.ndarray, mtime_ns: np.ndarray) -> np.ndarray:
        """bool [N]: the videos these filters keep (paths as a numpy string array)."""
        keep = np.ones(len(paths), dtype=bool)
        if self.under is not None:
            keep &= np.char.startswith(paths, self.under + "/")
        if self.glob is not None:
            chosen = set(fnmatch.filter(paths[keep].tolist(), self.glob))
            keep &= np.fromiter((p in chosen for p in paths.tolist()), bool, len(paths))
        if self.min_duration is not None:
            keep &= durations >= self.min_duration
        if self.max_duration is not None:
            keep &= durations <= self.max_duration
        if self.modified_after is not None:
            keep &= mtime_ns >= int(self.modified_after * 1e9)
        if self.modified_before is not None:
            keep &= mtime_ns < int(self.modified_before * 1e9)
        return keep


PARAMS = ("under", "glob", "min_duration", "max_duration", "modified_after", "modified_before")


def add_filter_args(p) -> None:
    """The filter flags of `calm search` (--under, --glob, --min/max-duration, --modified-*)."""
    g = p.add_argument_group("filters", "narrow the videos a query may return")
    g.add_argument("--under", metavar="FOLDER", help="only videos below this folder (relative)")
    g.add_argument("--glob", metavar="PATTERN",
                   help="only relative paths matching this shell pattern ('*.mov', 'trips/*')")
    g.add_argument("--min-duration", metavar="SECONDS")
    g.add_argument("--max-duration", metavar="SECONDS")
    g.add_argument("--modified-after", metavar="DATE",
                   help="file modified on or after (YYYY-MM-DD[THH:MM], or Unix seconds)")
    g.add_argument("--modified-before", metavar="DATE", help="file modified before this")


def filters_from_args(args) -> Filters:
    return Filters.parse(**{name: getattr(args, name) for name in PARAMS})
