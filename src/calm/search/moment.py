"""The matching moment: which stretch of a clip a query matched, from per-frame weights.

Each of the T sampled frames stands for the segment of the clip around it: from halfway to the
previous sampled frame to halfway to the next one (the first starts at 0, the last ends at the
clip's end). The moment is the segment of the frame with the largest weight, widened over
neighbouring frames while their weight stays at least `keep` times that peak, so a query about
a whole action gets the action's span and a query about an instant gets one segment.

Weights come from the fusion head's text-conditioned pooling (xpool: how much each frame counts
in the pooled embedding the text is compared with, each head by its share of that embedding) or,
for heads that pool without the text (meanP, seqTransf), from a one-hot on the frame whose own
feature is closest to the text.

A moment can be no finer than one segment (duration / sampled frames), so its times are
reported to that resolution: `resolution` gives the segment length, `time_decimals` the digits
worth printing.
"""

from __future__ import annotations

import math

import numpy as np

KEEP = 0.5


def segment_bounds(times: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) in seconds of the segment each sampled frame stands for; `times` ascending."""
    mids = (times[1:] + times[:-1]) / 2.0
    starts = np.concatenate([[0.0], mids])
    ends = np.concatenate([mids, [max(float(duration), float(times[-1]))]])
    return starts, ends


def moment(weights: np.ndarray, times: np.ndarray, duration: float, keep: float = KEEP):
    """(start, end, peak frame index) for one video; padded frames carry nan times and are ignored."""
    real = ~np.isnan(times)
    n = int(real.sum())
    if n == 0:
        return 0.0, float(duration), 0
    w = np.where(real, np.nan_to_num(weights, nan=0.0), -math.inf)[:n]
    t = times[:n]
    peak = int(np.argmax(w))
    lo = hi = peak
    threshold = keep * w[peak]
    while lo > 0 and w[lo - 1] >= threshold:
        lo -= 1
    while hi < n - 1 and w[hi + 1] >= threshold:
        hi += 1
    starts, ends = segment_bounds(t, duration)
    return float(starts[lo]), float(ends[hi]), peak


def resolution(times: np.ndarray, duration: float) -> float:
    """Seconds one sampled frame stands for: the finest step a moment's bounds can take."""
    n = int((~np.isnan(times)).sum())
    return float(duration) / max(n, 1)


def time_decimals(step: float) -> int:
    """Decimals that show a time to `step` seconds and no finer (0.75 s -> 1, 2.5 s -> 0)."""
    if step <= 0:
        return 3
    return int(min(3, max(0, math.ceil(-math.log10(step)))))


def best_frame_weights(text: np.ndarray, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One-hot weights [N, T] on the frame closest to the text (frames L2-normalised, [N, T, D])."""
    sims = np.einsum("d,ntd->nt", text / max(np.linalg.norm(text), 1e-12), frames)
    sims = np.where(mask, sims, -np.inf)
    out = np.zeros(sims.shape, dtype=np.float32)
    out[np.arange(len(sims)), sims.argmax(axis=1)] = 1.0
    return out
