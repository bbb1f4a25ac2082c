"""Ground truth a benchmark may carry beyond its captions, reaching evaluation through the
annotations it came with (`SplitAnnotations.truth`).

The synthetic benchmark (`calm synth`) records, per clip, what it shows: the objects, their
attributes and motions. From that, evaluation can tell which class anchors are true of a clip or
named by a caption (anchor mAP) and how ambiguous a clip is (how many captions fit it), which it
correlates with sigma. A real benchmark has no such record: its `truth` is None, and evaluating
it imports nothing of the generator.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

METADATA_FILE = "metadata.json"


class GroundTruth(Protocol):
    source: Path  # the file the truth was read from
    measures: tuple[str, ...]  # the names of `ambiguity`'s per-clip measures

    def anchor_truth(self, video_ids: list[str], captions: Sequence[tuple[str, str]],
                     labels: Sequence[str]):
        """`.video_matrix()` (anchors true of each clip) and `.caption_matrix()` (anchors each
        caption names); a DataError when `labels` are not this benchmark's anchors."""

    def ambiguity(self, video_ids: list[str]) -> dict[str, np.ndarray]:
        """Per clip, each of `measures`."""


def synthetic_metadata_path(annotations: str | Path | None) -> Path | None:
    """`<domain>/metadata.json` beside a synthetic domain's annotation folder, or None.

    A file of that name that is not calm synth's (no `domain` and `splits`) is not ours: None.
    """
    if annotations is None:
        return None
    path = Path(annotations).parent / METADATA_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not {"domain", "splits"} <= set(data):
        return None
    return path


def find_truth(annotations: str | Path | None) -> GroundTruth | None:
    """The ground truth recorded beside `annotations`, or None (every real benchmark)."""
    path = synthetic_metadata_path(annotations)
    if path is None:
        return None
    from calm.data.synthetic.truth import SyntheticTruth  # only a generated benchmark needs it

    return SyntheticTruth(path)
