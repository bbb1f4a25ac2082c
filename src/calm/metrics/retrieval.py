"""Video-text retrieval metrics: R@1/5/10, MdR, MnR for text->video and video->text.

Pure functions over a similarity matrix ``sim[n_texts, n_videos]`` and ``text_to_video``
(the ground-truth video index of each text). Nothing here imports from ``calm``.

Rank definition (1-based; a perfect ranking has MdR = MnR = 1). Ranks are *counted*, never
read off a sort, so they cannot depend on the order of candidates:

* ``ties="optimistic"`` (default, reported as ``"strictly-better"``):
  rank = 1 + #candidates whose score is strictly greater than the ground truth.
* ``ties="pessimistic"`` (``"better-or-equal"``): rank = 1 + #non-ground-truth candidates whose
  score is >= the ground truth.
* ``ties="mean"``: the average of the two (float ranks).

Video->text with several captions per video: the ground-truth score of a video is the max over its
own captions (its best-ranked caption), and every text is a candidate. Optimistic rank =
1 + #texts scoring strictly above that max; pessimistic rank = 1 + #texts that are *not* its
captions scoring >= that max (i.e. the worst position of the first hit over all tie-breaks).
Videos with no caption have no ground truth and are excluded from video->text.

Memory: the matrix is read in chunks of rows, so at most ``chunk_size x n_videos`` extra elements
exist at a time (no second full copy of a 27,763 x 670 MSVD matrix). NaN scores raise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = [
    "TIE_RULES",
    "caption_groups",
    "ranks_t2v",
    "ranks_v2t",
    "retrieval_metrics",
    "summarize_ranks",
]

#: ``ties`` argument -> the rule's name as reported in ``retrieval_metrics(...)["tie_rule"]``.
TIE_RULES: dict[str, str] = {
    "optimistic": "strictly-better",
    "pessimistic": "better-or-equal",
    "mean": "mean-of-strictly-better-and-better-or-equal",
}

# Auto chunk: about 4M scores per chunk (32 MB as float64) whatever the number of columns.
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def _check_sim(sim: Any) -> tuple[int, int]:
    """Validate shape/dtype without copying; returns (n_texts, n_videos)."""
    if isinstance(sim, torch.Tensor):
        if sim.is_complex() or sim.dtype == torch.bool:
            raise TypeError(f"sim must be a real-valued tensor, got dtype {sim.dtype}")
    else:
        if not isinstance(sim, np.ndarray):
            raise TypeError(f"sim must be a torch.Tensor or numpy.ndarray, got {type(sim)!r}")
        if not (np.issubdtype(sim.dtype, np.floating) or np.issubdtype(sim.dtype, np.integer)):
            raise TypeError(f"sim must be real-valued, got dtype {sim.dtype}")
    if sim.ndim != 2:
        raise ValueError(f"sim must be 2-D [n_texts, n_videos], got shape {tuple(sim.shape)}")
    n_texts, n_videos = int(sim.shape[0]), int(sim.shape[1])
    if n_texts == 0 or n_videos == 0:
        raise ValueError(f"sim must be non-empty, got shape {(n_texts, n_videos)}")
    return n_texts, n_videos


def _to_numpy(x: Any) -> np.ndarray:
    """Small piece (chunk / gathered vector) -> numpy, exact: bf16/fp16 go to fp32 losslessly."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _check_text_to_video(text_to_video: Any, n_texts: int | None, n_videos: int) -> np.ndarray:
    """Ground-truth index vector as int64, checked against the matrix shape (rows unchecked when
    `n_texts` is None)."""
    if isinstance(text_to_video, torch.Tensor):
        text_to_video = text_to_video.detach().cpu().numpy()
    t2v = np.asarray(text_to_video)
    if t2v.ndim != 1:
        raise ValueError(f"text_to_video must be 1-D, got shape {t2v.shape}")
    if t2v.size and not np.issubdtype(t2v.dtype, np.integer):
        raise TypeError(f"text_to_video must hold integers, got dtype {t2v.dtype}")
    t2v = t2v.astype(np.int64, copy=False)
    if n_texts is not None and t2v.shape[0] != n_texts:
        raise ValueError(f"text_to_video has {t2v.shape[0]} entries but sim has {n_texts} rows")
    if t2v.size and (t2v.min() < 0 or t2v.max() >= n_videos):
        raise ValueError(
            f"text_to_video values must lie in [0, {n_videos}), got [{t2v.min()}, {t2v.max()}]"
        )
    return t2v


def _check_ties(ties: str) -> None:
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {sorted(TIE_RULES)}, got {ties!r}")


def _chunk_rows(chunk_size: int | None, n_videos: int) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // n_videos)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise TypeError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


def _gt_scores(sim: Any, t2v: np.ndarray) -> np.ndarray:
    """sim[t, text_to_video[t]] for every text: an n_texts vector, gathered without a full copy."""
    if isinstance(sim, torch.Tensor):
        rows = torch.arange(sim.shape[0], device=sim.device)
        return _to_numpy(sim[rows, torch.from_numpy(t2v).to(sim.device)])
    return np.asarray(sim[np.arange(sim.shape[0]), t2v])


# --------------------------------------------------------------------------------------------
# caption groups
# --------------------------------------------------------------------------------------------


def caption_groups(text_to_video: Any, n_videos: int) -> np.ndarray:
    """Text indices of each video's captions, ``[n_videos, max_captions]``, padded with -1.

    Captions appear in increasing text index. A video with no caption is an all -1 row. -1 is a
    valid Python index (the last text), so consumers must mask ``groups >= 0`` before gathering;
    ``ranks_v2t`` does, and padding never counts as a candidate or as a ground truth.
    """
    n_videos = int(n_videos)
    if n_videos < 0:
        raise ValueError(f"n_videos must be >= 0, got {n_videos}")
    t2v = _check_text_to_video(text_to_video, None, n_videos)
    counts = np.bincount(t2v, minlength=n_videos)
    width = int(counts.max()) if n_videos else 0
    groups = np.full((n_videos, width), -1, dtype=np.int64)
    if t2v.size:
        order = np.argsort(t2v, kind="stable")  # texts grouped by video, text order kept
        sorted_v = t2v[order]
        starts = np.cumsum(counts) - counts
        slot = np.arange(t2v.size) - starts[sorted_v]
        groups[sorted_v, slot] = order
    return groups


def _best_caption_scores(gt: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per video, max ground-truth score over its captions; padding cannot contribute.

    Pads are replaced by the video's first real caption (slot 0 is always real for a video with
    captions), so no sentinel value is needed and the dtype is kept. Rows without captions give
    garbage that callers drop.
    """
    valid = groups >= 0
    vals = gt[np.where(valid, groups, 0)]
    vals = np.where(valid, vals, vals[:, :1])
    return vals.max(axis=1) if vals.shape[1] else np.zeros(groups.shape[0], dtype=gt.dtype)


# --------------------------------------------------------------------------------------------
# ranks
# --------------------------------------------------------------------------------------------


def _count_ranks(
    sim: Any, t2v: np.ndarray, chunk_size: int | None, want_t2v: bool, want_v2t: bool
) -> dict[str, np.ndarray]:
    """One chunked pass over rows counting strictly-better / better-or-equal candidates."""
    n_texts, n_videos = _check_sim(sim)
    rows_per_chunk = _chunk_rows(chunk_size, n_videos)
    gt = _gt_scores(sim, t2v)  # [n_texts]
    out: dict[str, np.ndarray] = {}

    if want_t2v:
        t2v_gt_count = np.zeros(n_texts, dtype=np.int64)  # candidates with score > gt
        t2v_ge_count = np.zeros(n_texts, dtype=np.int64)  # candidates with score >= gt (incl gt)
    if want_v2t:
        groups = caption_groups(t2v, n_videos)
        has_caption = (groups[:, 0] >= 0) if groups.shape[1] else np.zeros(n_videos, dtype=bool)
        best = _best_caption_scores(gt, groups)  # [n_videos]
        v2t_gt_count = np.zeros(n_videos, dtype=np.int64)
        v2t_ge_count = np.zeros(n_videos, dtype=np.int64)

    n_nan = 0
    for start in range(0, n_texts, rows_per_chunk):
        stop = min(start + rows_per_chunk, n_texts)
        chunk = _to_numpy(sim[start:stop])
        if np.issubdtype(chunk.dtype, np.floating):
            chunk_nan = int(np.count_nonzero(np.isnan(chunk)))
            if chunk_nan:
                n_nan += chunk_nan
                continue  # keep counting NaNs to report the total, skip the ranking work
        if n_nan:
            continue
        if want_t2v:
            g = gt[start:stop, None]
            t2v_gt_count[start:stop] = np.count_nonzero(chunk > g, axis=1)
            t2v_ge_count[start:stop] = np.count_nonzero(chunk >= g, axis=1)
        if want_v2t:
            b = best[None, :]
            v2t_gt_count += np.count_nonzero(chunk > b, axis=0)
            v2t_ge_count += np.count_nonzero(chunk >= b, axis=0)
    if n_nan:
        raise ValueError(
            f"sim contains {n_nan} NaN value(s) out of {n_texts * n_videos}; "
            "NaN scores cannot be ranked (check for corrupt inputs)"
        )

    if want_t2v:
        out["t2v_opt"] = 1 + t2v_gt_count
        out["t2v_pes"] = t2v_ge_count  # = 1 + (ge_count - 1): the gt itself is excluded
    if want_v2t:
        # own captions scoring >= best are exactly those tied at the max; exclude them.
        own_ge = np.bincount(t2v, weights=(gt >= best[t2v]), minlength=n_videos)
        own_ge = own_ge.astype(np.int64)
        out["v2t_opt"] = (1 + v2t_gt_count)[has_caption]
        out["v2t_pes"] = (1 + v2t_ge_count - own_ge)[has_caption]
    return out


def _apply_ties(opt: np.ndarray, pes: np.ndarray, ties: str) -> np.ndarray:
    if ties == "optimistic":
        return opt
    if ties == "pessimistic":
        return pes
    return (opt + pes) / 2.0


def ranks_t2v(
    sim: torch.Tensor | np.ndarray,
    text_to_video: Any,
    ties: str = "optimistic",
    chunk_size: int | None = None,
) -> np.ndarray:
    """1-based rank of each text's ground-truth video among all videos, shape [n_texts].

    ``ties="optimistic"`` (default): 1 + #videos scoring strictly above the ground truth;
    ``"pessimistic"``: 1 + #other videos scoring >= it; ``"mean"``: their average (float).
    Counting (not sorting) makes the result independent of candidate order. int64 unless
    ``ties="mean"``. ``chunk_size`` rows are processed at a time (None: automatic).
    """
    _check_ties(ties)
    n_texts, n_videos = _check_sim(sim)
    t2v = _check_text_to_video(text_to_video, n_texts, n_videos)
    c = _count_ranks(sim, t2v, chunk_size, want_t2v=True, want_v2t=False)
    return _apply_ties(c["t2v_opt"], c["t2v_pes"], ties)


def ranks_v2t(
    sim: torch.Tensor | np.ndarray,
    text_to_video: Any,
    ties: str = "optimistic",
    chunk_size: int | None = None,
) -> np.ndarray:
    """1-based rank of each video's best-ranked own caption among ALL texts.

    Shape [n_videos_with_captions], in increasing video index; videos with no caption are
    excluded (they have no ground truth). With g = max score over the video's captions,
    optimistic rank = 1 + #texts scoring strictly above g; pessimistic = 1 + #texts that are not
    its captions scoring >= g; ``"mean"`` averages them (float).
    """
    _check_ties(ties)
    n_texts, n_videos = _check_sim(sim)
    t2v = _check_text_to_video(text_to_video, n_texts, n_videos)
    c = _count_ranks(sim, t2v, chunk_size, want_t2v=False, want_v2t=True)
    return _apply_ties(c["v2t_opt"], c["v2t_pes"], ties)


def summarize_ranks(ranks: Any) -> dict[str, float]:
    """R@1/R@5/R@10 (percent of queries with rank <= K), MdR (median) and MnR (mean rank)."""
    r = np.asarray(ranks, dtype=np.float64).reshape(-1)
    if r.size == 0:
        raise ValueError("cannot summarise an empty set of ranks")
    if np.isnan(r).any() or (r < 1).any():
        raise ValueError("ranks must be >= 1 (1-based) and not NaN")
    return {
        "R@1": float(100.0 * np.mean(r <= 1)),
        "R@5": float(100.0 * np.mean(r <= 5)),
        "R@10": float(100.0 * np.mean(r <= 10)),
        "MdR": float(np.median(r)),
        "MnR": float(np.mean(r)),
    }


def retrieval_metrics(
    sim: torch.Tensor | np.ndarray,
    text_to_video: Any,
    ties: str = "optimistic",
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Both directions from one chunked pass over ``sim``.

    Returns ``{"t2v": summary, "v2t": summary, "n_texts", "n_videos",
    "n_videos_without_captions", "tie_rule"}`` where each summary is ``summarize_ranks`` output
    and ``tie_rule`` names the rule used (default ``"strictly-better"``).
    """
    _check_ties(ties)
    n_texts, n_videos = _check_sim(sim)
    t2v = _check_text_to_video(text_to_video, n_texts, n_videos)
    c = _count_ranks(sim, t2v, chunk_size, want_t2v=True, want_v2t=True)
    t2v_ranks = _apply_ties(c["t2v_opt"], c["t2v_pes"], ties)
    v2t_ranks = _apply_ties(c["v2t_opt"], c["v2t_pes"], ties)
    return {
        "t2v": summarize_ranks(t2v_ranks),
        "v2t": summarize_ranks(v2t_ranks),
        "n_texts": n_texts,
        "n_videos": n_videos,
        "n_videos_without_captions": int(n_videos - v2t_ranks.shape[0]),
        "tie_rule": TIE_RULES[ties],
    }
