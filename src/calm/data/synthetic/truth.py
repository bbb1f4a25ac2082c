"""The synthetic benchmark's ground truth as `calm.data.truth.GroundTruth`: what each clip shows,
read from its domain's metadata.json (`anchor_truth`, `ambiguity`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calm.data.synthetic.ambiguity import AMBIGUITY_MEASURES, clip_ambiguity
from calm.data.synthetic.anchor_truth import AnchorTruth, anchor_truth


class SyntheticTruth:
    measures = AMBIGUITY_MEASURES

    def __init__(self, source: str | Path):
        self.source = Path(source)

    def anchor_truth(self, video_ids: list[str], captions: Sequence[tuple[str, str]],
                     labels: Sequence[str]) -> AnchorTruth:
        return anchor_truth(self.source, video_ids, captions, labels)

    def ambiguity(self, video_ids: list[str]) -> dict[str, np.ndarray]:
        return clip_ambiguity(self.source, video_ids)

    def __repr__(self) -> str:
        return f"SyntheticTruth({str(self.source)!r})"
