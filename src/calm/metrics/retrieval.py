"""Video-text retrieval metrics: R@1/5/10, MdR, MnR for text->video and video->text.

Pure functions over a similarity matrix ``sim[n_texts, n_videos]`` and ``text_to_video``
(the ground-truth video index of each text). Nothing here imports from ``calm``.

Rank definition (1-based; a perfect ranking has MdR = MnR = 1). Ranks are *counted*, never
read off a sort, so they cannot depend on the order of candidates:

* ``ties="mean"`` (default, reported as ``"expected-under-random-tie-breaking"``): every
  number is its expectation when tied candidates are ordered uniformly at random. The rank is
  the expected rank (float) and R@K the expected fraction of hits, so a collapsed model whose
  scores are all equal gets R@1 = 100/n (chance), never 100, and checkpoint selection cannot
  prefer it. With m own captions among g tied texts (video->text), the first hit's position
  in the tie group has P(pos <= j) = 1 - C(g-m, j) / C(g, j).
* ``ties="optimistic"`` (``"strictly-better"``): rank = 1 + #candidates whose score is strictly
  greater than the ground truth. A constant scorer gets R@1 = 100: use only to compare with
  code that counts this way.
* ``ties="pessimistic"`` (``"better-or-equal"``): rank = 1 + #non-ground-truth candidates whose
  score is >= the ground truth.

Video->text with several captions per video: the ground-truth score of a video is the max over its
own captions (its best-ranked caption), and every text is a candidate. Optimistic rank =
1 + #texts scoring strictly above that max; pessimistic rank = 1 + #texts that are *not* its
captions scoring >= that max (i.e. the worst position of the first hit over all tie-breaks).
Videos with no caption have no ground truth and are excluded from video->text.

Memory: the matrix is read in chunks of rows, so at most ``chunk_size x n_videos`` extra elements
exist at a time (no second full copy of a 27,763 x 670 MSVD matrix). NaN scores raise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_TIES",
    "TIE_RULES",
    "caption_groups",
    "expected_hits",
    "expected_rank",
    "hit_rates",
    "ranks_t2v",
    "ranks_v2t",
    "retrieval_metrics",
    "summarize_ranks",
]

#: ``ties`` argument -> the rule's name as reported in ``retrieval_metrics(...)["tie_rule"]``.
TIE_RULES: dict[str, str] = {
    "mean": "expected-under-random-tie-breaking",
    "optimistic": "strictly-better",
    "pessimistic": "better-or-equal",
}
DEFAULT_TIES = "mean"
RECALL_AT = (1, 5, 10)

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
        out["t2v_own_tied"] = np.ones(n_texts, dtype=np.int64)
    if want_v2t:
        # own captions scoring >= best are exactly those tied at the max; exclude them.
        own_ge = np.bincount(t2v, weights=(gt >= best[t2v]), minlength=n_videos)
        own_ge = own_ge.astype(np.int64)
        out["v2t_opt"] = (1 + v2t_gt_count)[has_caption]
        out["v2t_pes"] = (1 + v2t_ge_count - own_ge)[has_caption]
        out["v2t_own_tied"] = own_ge[has_caption]
    return out


def _apply_ties(opt: np.ndarray, pes: np.ndarray, ties: str, own_tied: np.ndarray) -> np.ndarray:
    if ties == "optimistic":
        return opt
    if ties == "pessimistic":
        return pes
    return expected_rank(opt, pes, own_tied)


def expected_rank(opt: np.ndarray, pes: np.ndarray, own_tied: np.ndarray) -> np.ndarray:
    """Expected rank of the first ground truth when ties are ordered uniformly at random.

    The tie group holds g = (pes - opt) others + m own items; the first own item's expected
    position in it is (g + 1) / (m + 1).
    """
    m = np.asarray(own_tied, dtype=np.float64)
    g = (np.asarray(pes) - np.asarray(opt)) + m
    return np.asarray(opt) - 1.0 + (g + 1.0) / (m + 1.0)


def expected_hits(opt: np.ndarray, pes: np.ndarray, own_tied: np.ndarray, k: int) -> np.ndarray:
    """P(rank <= k) per query under random tie-breaking: 1 - C(g-m, j) / C(g, j), with j the
    number of tie-group positions that still fall within the top k."""
    opt = np.asarray(opt, dtype=np.int64)
    m = np.asarray(own_tied, dtype=np.int64)
    others = np.asarray(pes, dtype=np.int64) - opt  # tied candidates that are not ground truth
    g = others + m
    j = np.clip(k - opt + 1, 0, g)
    out = np.ones(opt.shape, dtype=np.float64)
    miss_possible = j <= others  # else a ground truth surely lands within the top k
    jj, gg, oo = j[miss_possible], g[miss_possible], others[miss_possible]
    mm = m[miss_possible]
    single = mm == 1  # one ground truth (every text query): exactly j / g
    ratio = np.empty(jj.shape, dtype=np.float64)
    ratio[single] = (gg[single] - jj[single]) / gg[single]
    lg = np.vectorize(math.lgamma, otypes=[np.float64])
    many = ~single
    if many.any():  # C(others, j) / C(g, j) = others! (g - j)! / ((others - j)! g!)
        o, gm, jm = oo[many], gg[many], jj[many]
        ratio[many] = np.exp(lg(o + 1.0) + lg(gm - jm + 1.0) - lg(o - jm + 1.0) - lg(gm + 1.0))
    out[miss_possible] = np.clip(1.0 - ratio, 0.0, 1.0)
    return out


def ranks_t2v(
    sim: torch.Tensor | np.ndarray,
    text_to_video: Any,
    ties: str = DEFAULT_TIES,
    chunk_size: int | None = None,
) -> np.ndarray:
    """1-based rank of each text's ground-truth video among all videos, shape [n_texts].

    ``ties="mean"`` (default): the expected rank under random tie-breaking (float);
    ``"optimistic"``: 1 + #videos scoring strictly above the ground truth; ``"pessimistic"``:
    1 + #other videos scoring >= it. Counting (not sorting) makes the result independent of
    candidate order. int64 unless ``ties="mean"``. ``chunk_size`` rows are processed at a time
    (None: automatic).
    """
    return _ranks(sim, text_to_video, "t2v", ties, chunk_size)


def ranks_v2t(
    sim: torch.Tensor | np.ndarray,
    text_to_video: Any,
    ties: str = DEFAULT_TIES,
    chunk_size: int | None = None,
) -> np.ndarray:
    """1-based rank of each video's best-ranked own caption among ALL texts.

    Shape [n_videos_with_captions], in increasing video index; videos with no caption are
    excluded (they have no ground truth). With g = max score over the video's captions,
    optimistic rank = 1 + #texts scoring strictly above g; pessimistic = 1 + #texts that are not
    its captions scoring >= g; ``"mean"`` is the expected rank of the first caption when ties
    are ordered at random (float).
    """
    return _ranks(sim, text_to_video, "v2t", ties, chunk_size)


def _counts(sim, text_to_video, direction: str, ties: str, chunk_size) -> dict[str, np.ndarray]:
    """The checked inputs' rank counts for one direction ("t2v" or "v2t")."""
    _check_ties(ties)
    if direction not in ("t2v", "v2t"):
        raise ValueError(f"direction must be 't2v' or 'v2t', got {direction!r}")
    n_texts, n_videos = _check_sim(sim)
    t2v = _check_text_to_video(text_to_video, n_texts, n_videos)
    return _count_ranks(sim, t2v, chunk_size, want_t2v=direction == "t2v",
                        want_v2t=direction == "v2t")


def _ranks(sim, text_to_video, direction: str, ties: str, chunk_size) -> np.ndarray:
    c = _counts(sim, text_to_video, direction, ties, chunk_size)
    return _apply_ties(c[f"{direction}_opt"], c[f"{direction}_pes"], ties,
                       c[f"{direction}_own_tied"])


def hit_rates(
    sim: torch.Tensor | np.ndarray,
    text_to_video: Any,
    direction: str,
    k: int = 1,
    ties: str = DEFAULT_TIES,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Per query of `direction` ("t2v" or "v2t"), the probability that its ground truth is in the
    top k: 0/1 for the optimistic and pessimistic rules, the expectation under random
    tie-breaking for "mean". Queries as in `ranks_t2v` / `ranks_v2t`."""
    return _hits(_counts(sim, text_to_video, direction, ties, chunk_size), direction, ties, k)


def _hits(c: dict, direction: str, ties: str, k: int) -> np.ndarray:
    opt, pes, own = c[f"{direction}_opt"], c[f"{direction}_pes"], c[f"{direction}_own_tied"]
    if ties == "mean":
        return expected_hits(opt, pes, own, k)
    return (_apply_ties(opt, pes, ties, own) <= k).astype(np.float64)


def _summary(c: dict, direction: str, ties: str) -> dict[str, float]:
    summary = summarize_ranks(_apply_ties(c[f"{direction}_opt"], c[f"{direction}_pes"], ties,
                                          c[f"{direction}_own_tied"]))
    for k in RECALL_AT:
        summary[f"R@{k}"] = float(100.0 * _hits(c, direction, ties, k).mean())
    return summary


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
    ties: str = DEFAULT_TIES,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Both directions from one chunked pass over ``sim``.

    Returns ``{"t2v": summary, "v2t": summary, "n_texts", "n_videos",
    "n_videos_without_captions", "tie_rule"}``. Each summary has R@1/5/10 (expected hit rates
    under the tie rule), MdR (median rank) and MnR (mean rank); ``tie_rule`` names the rule
    (default ``"expected-under-random-tie-breaking"``).
    """
    _check_ties(ties)
    n_texts, n_videos = _check_sim(sim)
    t2v = _check_text_to_video(text_to_video, n_texts, n_videos)
    c = _count_ranks(sim, t2v, chunk_size, want_t2v=True, want_v2t=True)
    return {
        "t2v": _summary(c, "t2v", ties),
        "v2t": _summary(c, "v2t", ties),
        "n_texts": n_texts,
        "n_videos": n_videos,
        "n_videos_without_captions": int(n_videos - c["v2t_opt"].shape[0]),
        "tie_rule": TIE_RULES[ties],
    }
