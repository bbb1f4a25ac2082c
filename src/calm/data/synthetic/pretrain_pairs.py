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

import dataclasses

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
from calm.data.synthetic.world import (
    BACKGROUNDS,
    COLOURS,
    MOTIONS,
    SHAPES,
    SIZES,
    ClipSpec,
    pick,
    sample_clip,
)
from calm.data.synthetic.world import _contrast_ok as contrast_ok

DOMAIN_ORDER = ("msrvtt", "didemo", "lsmdc")
PRETRAIN_DOMAIN_INDEX = 9  # the pairs' place among the (seed, domain, ...) random streams
HELD_OUT, TRAINING = 0, 1
# What a frame shows, as class indices: the targets of the toy CLIP's auxiliary attribute heads.
ATTRIBUTE_CLASSES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "colour": COLOURS, "size": SIZES, "motion": MOTIONS,
    "background": BACKGROUNDS, "objects": ("one", "two"),
    "second_shape": SHAPES, "second_colour": COLOURS,
}
NO_LABEL = -100  # a second object's attributes when there is none (ignored by cross-entropy)
STREAM_WORLD, STREAM_TEXT, STREAM_PIXELS, STREAM_THEME = 0, 1, 2, 3


def _rng(seed: int, stream: int, index: int, kind: int) -> np.random.Generator:
    return np.random.default_rng([seed, PRETRAIN_DOMAIN_INDEX, stream, index, kind])


def attribute_labels(attributes: dict) -> list[int]:
    """Class indices of `ATTRIBUTE_CLASSES` for a clip (`ClipSpec.attributes()` form)."""
    main, second = attributes["main"], attributes.get("second")
    out = [SHAPES.index(main["shape"]), COLOURS.index(main["colour"]), SIZES.index(main["size"]),
           MOTIONS.index(main["motion"]), BACKGROUNDS.index(attributes["background"]),
           1 if second else 0]
    out += [SHAPES.index(second["shape"]), COLOURS.index(second["colour"])] if second else [
        NO_LABEL, NO_LABEL]
    return out


def group_theme(seed: int, stream: int, group: int) -> dict:
    """The background and main-object colour every pair of one group shares."""
    rng = _rng(seed, stream, group, STREAM_THEME)
    background = pick(rng, BACKGROUNDS)
    return {"background": background,
            "colour": pick(rng, [c for c in COLOURS if contrast_ok(c, background)])}


def _themed(clip: ClipSpec, theme: dict, rng: np.random.Generator) -> ClipSpec:
    """`clip` moved onto the theme's background with its main object in the theme's colour
    (a second object keeps its colour unless that no longer shows against the background)."""
    background = theme["background"]
    objects = [dataclasses.replace(clip.objects[0], colour=theme["colour"])]
    for obj in clip.objects[1:]:
        if not contrast_ok(obj.colour, background):
            obj = dataclasses.replace(
                obj, colour=pick(rng, [c for c in COLOURS if contrast_ok(c, background)]))
        objects.append(obj)
    return dataclasses.replace(clip, background=background, objects=tuple(objects))


def pretrain_pair(
    seed: int, index: int, scale: Scale, difficulty: Difficulty, stream: int = HELD_OUT,
    theme: dict | None = None,
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
    if theme is not None:
        clip = _themed(clip, theme, rng)
    n_frames = scale.frames[domain][0]
    image = render_frames(
        clip,
        style,
        difficulty,
        scale.size,
        [t],
        _rng(seed, stream, index, STREAM_PIXELS),
        trail_dt=None if difficulty.trail_spacing is not None else 0.6 / (n_frames - 1),
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

    Item i is (uint8 image [3, S, S], caption, attribute labels [len(ATTRIBUTE_CLASSES)]).
    A DataLoader with workers renders the next
    batches while the model trains on this one.

    `group` > 1: consecutive runs of `group` pairs share a background and the main object's colour
    (`group_theme`), so a batch holds hard negatives that colour and background cannot tell
    apart; the model has to learn shape, size, motion and the second object to match them.
    """

    def __init__(self, length: int, seed: int = 0, scale: str | Scale = "default",
                 difficulty: Difficulty | None = None, start: int = 0, stream: int = TRAINING,
                 group: int = 1):
        self.length = length
        self.seed = seed
        self.scale = SCALES[scale] if isinstance(scale, str) else scale
        self.difficulty = difficulty or Difficulty()
        self.start = start
        self.stream = stream
        self.group = group

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"pair {index} of a stream of {self.length}")
        pair = self.start + index
        theme = group_theme(self.seed, self.stream, pair // self.group) if self.group > 1 else None
        image, text, meta = pretrain_pair(self.seed, pair, self.scale, self.difficulty,
                                          self.stream, theme)
        return (torch.from_numpy(image).permute(2, 0, 1).contiguous(), text,
                torch.tensor(attribute_labels(meta["attributes"])))
