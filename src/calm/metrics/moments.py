"""Temporal moment localisation: how well a predicted time span matches the annotated one.

The measures DiDeMo-style benchmarks report for the top prediction: R@1 at IoU >= 0.5 and
>= 0.7 (the share of queries whose predicted span overlaps the annotated one by at least that
intersection over union) and mIoU (the mean IoU). Two baselines tell whether a localiser knows
anything: the whole clip (what search without moments would return) and a random span drawn
from the span boundaries the localiser itself can output (the sampled frames' segments).
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = (0.5, 0.7)


def temporal_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of spans [N, 2] (start, end in seconds), elementwise; an empty union gives 0."""
    pred, gt = np.atleast_2d(np.asarray(pred, np.float64)), np.atleast_2d(np.asarray(gt, np.float64))
    inter = np.clip(np.minimum(pred[:, 1], gt[:, 1]) - np.maximum(pred[:, 0], gt[:, 0]), 0, None)
    union = np.maximum(pred[:, 1], gt[:, 1]) - np.minimum(pred[:, 0], gt[:, 0])
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def moment_metrics(pred: np.ndarray, gt: np.ndarray, thresholds=THRESHOLDS) -> dict[str, float]:
    """{"R@1 IoU>=0.5": .., "R@1 IoU>=0.7": .., "mIoU": ..} for one prediction per query."""
    iou = temporal_iou(pred, gt)
    out = {f"R@1 IoU>={t}": float((iou >= t - 1e-9).mean()) for t in thresholds}
    out["mIoU"] = float(iou.mean())
    return out


def whole_clip_baseline(gt: np.ndarray, durations: np.ndarray, thresholds=THRESHOLDS) -> dict:
    """The metrics of answering every query with its whole clip."""
    durations = np.asarray(durations, np.float64)
    return moment_metrics(np.stack([np.zeros_like(durations), durations], 1), gt, thresholds)


def random_span_baseline(gt: np.ndarray, boundaries: list[np.ndarray], draws: int = 200,
                         seed: int = 0, thresholds=THRESHOLDS) -> dict:
    """Expected metrics of a span between two distinct boundaries drawn uniformly at random
    from each query's `boundaries` (ascending, seconds: 0, the segment edges, the clip's end)."""
    rng = np.random.default_rng(seed)
    gt = np.atleast_2d(np.asarray(gt, np.float64))
    ious = np.empty((len(gt), draws))
    for i, b in enumerate(boundaries):
        b = np.asarray(b, np.float64)
        first = rng.integers(0, len(b), draws)
        second = rng.integers(0, len(b) - 1, draws)
        second += second >= first  # a different boundary, uniformly
        spans = np.sort(np.stack([b[first], b[second]], 1), axis=1)
        ious[i] = temporal_iou(spans, np.broadcast_to(gt[i], spans.shape))
    out = {f"R@1 IoU>={t}": float((ious >= t - 1e-9).mean()) for t in thresholds}
    out["mIoU"] = float(ious.mean())
    return out
