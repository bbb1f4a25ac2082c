"""Image-caption pairs for pretraining the toy CLIP: one frame of a random clip, one caption.

Two streams of pairs come from the same recipe with different seeds:

* stream `HELD_OUT` (0) is what `calm synth` writes to `pretrain/`: a fixed split that the toy CLIP
  never trains on, so zero-shot retrieval and anchor ranking are measured on unseen pairs;
* stream `TRAINING` (1) is drawn on the fly while pretraining (`PretrainStream`): pair i of it is
  rendered when it is needed and no pair is seen twice, so the toy CLIP has to learn the world's
  concepts instead of memorising a few thousand pictures.

Pair i of a stream depends only on (seed, stream, i), like every other clip of the benchmark, so
the order and the number of worker processes never change what is drawn.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from calm.data.synthetic.captions import pretrain_caption
from calm.data.synthetic.config import (
    DOMAINS,
    PRETRAIN_MOTION_PROB,
    PRETRAIN_NEUTRAL_PROB,
    SCALES,
    Difficulty,
    Scale,
)
from calm.data.synthetic.render import render_frames
from calm.data.synthetic.world import pick, sample_clip

DOMAIN_ORDER = ("msrvtt", "didemo", "lsmdc")
PRETRAIN_DOMAIN_INDEX = 9  # the pairs' place among the (seed, domain, ...) random streams
HELD_OUT, TRAINING = 0, 1
STREAM_WORLD, STREAM_TEXT, STREAM_PIXELS = 0, 1, 2


def _rng(seed: int, stream: int, index: int, kind: int) -> np.random.Generator:
    return np.random.default_rng([seed, PRETRAIN_DOMAIN_INDEX, stream, index, kind])


def pretrain_pair(
    seed: int, index: int, scale: Scale, difficulty: Difficulty, stream: int = HELD_OUT
) -> tuple[np.ndarray, str, dict]:
    """Pair `index` of `stream`: a uint8 frame (size x size x 3), its caption and its metadata.

    The frame is a random instant of a clip in a random domain's look, with the motion trail that
    domain's videos have at this scale; the caption uses the neutral (anchor-like) wording or one
    domain's, and names mostly static attributes (`PRETRAIN_MOTION_PROB` of them name the motion).
    """
    rng = _rng(seed, stream, index, STREAM_WORLD)
    domain = pick(rng, DOMAIN_ORDER)
    style = DOMAINS[domain]
    clip = sample_clip(rng, style, difficulty)
    t = float(rng.uniform(0, 1))
    n_frames = scale.frames[domain][0]
    image = render_frames(
        clip,
        style,
        difficulty,
        scale.size,
        [t],
        _rng(seed, stream, index, STREAM_PIXELS),
        trail_dt=0.6 / (n_frames - 1),
    )[0]
    text, mention = pretrain_caption(
        _rng(seed, stream, index, STREAM_TEXT),
        clip,
        difficulty,
        DOMAINS["msrvtt"],
        PRETRAIN_MOTION_PROB,
        PRETRAIN_NEUTRAL_PROB,
    )
    meta = {"style": domain, "time": round(t, 4), "attributes": clip.attributes(),
            "mention": mention}
    return image, text, meta


class PretrainStream(Dataset):
    """Pairs `start`, `start + 1`, ... of the training stream, rendered when indexed.

    Item i is (uint8 image [3, S, S], caption). A DataLoader with workers renders the next
    batches while the model trains on this one.
    """

    def __init__(self, length: int, seed: int = 0, scale: str | Scale = "default",
                 difficulty: Difficulty | None = None, start: int = 0, stream: int = TRAINING):
        self.length = length
        self.seed = seed
        self.scale = SCALES[scale] if isinstance(scale, str) else scale
        self.difficulty = difficulty or Difficulty()
        self.start = start
        self.stream = stream

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        if not 0 <= index < self.length:
            raise IndexError(f"pair {index} of a stream of {self.length}")
        image, text, _ = pretrain_pair(self.seed, self.start + index, self.scale,
                                       self.difficulty, self.stream)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), text
