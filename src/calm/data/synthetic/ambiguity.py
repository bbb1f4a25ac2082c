"""How ambiguous each synthetic clip is, read from the `metadata.json` that `calm synth` writes.

The generator knows what every clip shows and what every caption names, so the synthetic
benchmark has a ground truth for uncertainty that real benchmarks lack. Per clip, among the clips
being evaluated:

* ``captions_fitting``: how many captions written for the *other* clips are also true of this one
  (the one-to-many relation CALM's VAE models: more fitting captions, more ways to describe it).
  DiDeMo-style sentences of one clip count as one paragraph, as the loader joins them.
* ``nameable_facts``: how many facts a caption could state about it: the main object's shape,
  colour, motion and (when not medium) size, the background, and the same for a second object.
* ``own_caption_matches``: the mean, over its own captions, of how many evaluated clips each one
  fits (its own included): how hard its captions are to retrieve it from even for a perfect
  reader (the oracle's k).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calm.data.errors import DataError
from calm.data.synthetic import merge_mentions
from calm.data.synthetic.world import OBJECT_KEYS, fits

AMBIGUITY_MEASURES = ("captions_fitting", "nameable_facts", "own_caption_matches")


def _object_facts(obj: dict | None) -> int:
    if obj is None:
        return 0
    return sum(1 for k in OBJECT_KEYS if not (k == "size" and obj.get(k) == "medium"))


def nameable_facts(attributes: dict) -> int:
    """Facts a caption could name about a clip with these attributes (captions never say medium)."""
    return 1 + _object_facts(attributes["main"]) + _object_facts(attributes.get("second"))


def _caption_mentions(domain: str, item: dict) -> list[dict]:
    mentions = [t["mention"] for t in item["texts"]]
    return [merge_mentions(mentions)] if domain == "didemo" and mentions else mentions


def clip_ambiguity(metadata: str | Path, video_ids: list[str]) -> dict[str, np.ndarray]:
    """Each measure in `AMBIGUITY_MEASURES` for `video_ids` (float arrays in that order).

    Raises DataError naming the file when it cannot be read or lacks one of the clips.
    """
    path = Path(metadata)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        domain = data["domain"]
        items = {it["video_id"]: it for split in data["splits"].values() for it in split}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a readable calm synth metadata file ({exc})") from None
    missing = [v for v in video_ids if v not in items]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} evaluated clip(s) are not in the metadata, e.g. {missing[0]!r} "
            "(was the benchmark regenerated after the annotations were copied?)"
        )
    clips = [items[v]["attributes"] for v in video_ids]
    mentions = [_caption_mentions(domain, items[v]) for v in video_ids]
    # fit[i, j]: how many of clip j's captions are true of clip i
    fit = np.array([[sum(fits(m, clip) for m in own) for own in mentions] for clip in clips],
                   dtype=np.float64)
    n_own = np.array([len(own) for own in mentions], dtype=np.float64)
    own_matches = fit.sum(axis=0) / np.maximum(n_own, 1)  # column j: clips j's captions fit
    return {
        "captions_fitting": fit.sum(axis=1) - np.diag(fit),
        "nameable_facts": np.array([nameable_facts(c) for c in clips], dtype=np.float64),
        "own_caption_matches": own_matches,
    }
