"""The toy world: what a clip contains, how it is sampled, and which captions it fits.

A clip holds one or two objects over a background. Each object has a shape, a colour, a size and
a motion; those attributes (plus the background) are the world's concepts, shared by every domain.
Render parameters (where, how fast, which phase) are drawn here too, so a `ClipSpec` fully
determines the frames up to pixel noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from calm.data.synthetic.config import Difficulty, DomainStyle

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "bar")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white")
SIZES = ("small", "medium", "large")
MOTIONS = ("left", "right", "up", "down", "rotate", "grow", "shrink", "blink", "bounce", "stay")
BACKGROUNDS = ("sky", "grass", "sand", "night")

# Canonical RGB (0..1) of each concept before a domain's palette transform.
COLOUR_RGB = {
    "red": (0.9, 0.12, 0.12),
    "orange": (1.0, 0.55, 0.08),
    "yellow": (0.98, 0.9, 0.12),
    "green": (0.12, 0.72, 0.2),
    "blue": (0.12, 0.28, 0.95),
    "purple": (0.58, 0.18, 0.8),
    "pink": (1.0, 0.5, 0.75),
    "white": (0.97, 0.97, 0.97),
}
BACKGROUND_RGB = {
    "sky": (0.55, 0.75, 0.95),
    "grass": (0.3, 0.58, 0.22),
    "sand": (0.86, 0.76, 0.52),
    "night": (0.07, 0.09, 0.22),
}
SIZE_FACTOR = {"small": 0.65, "medium": 1.0, "large": 1.45}
BASE_TRAVEL = 0.4  # how far a translating object moves in a clip (fraction of the frame)
MIN_CONTRAST = 0.3  # an object colour must differ this much (RGB distance) from the background
ROTATION_SYMMETRIC = ("circle", "ring")  # a spinning circle looks still: never "rotate"


@dataclass(frozen=True)
class ObjectSpec:
    """One object: its nameable attributes and the render parameters of its motion."""

    shape: str
    colour: str
    size: str
    motion: str
    x: float  # path centre, fractions of width / height
    y: float
    radius: float  # fraction of the frame width
    travel: float  # translation distance / bounce height / number of turns / blink cycles
    angle: float  # initial rotation (radians)
    spin: int  # +1 / -1
    phase: float

    def attributes(self) -> dict:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "motion": self.motion,
        }

    def state(self, t: float) -> tuple[float, float, float, float, float]:
        """(x, y, radius, angle, opacity) at clip time t in [0, 1] (t may be < 0 for trails)."""
        x, y, r, a, alpha = self.x, self.y, self.radius, self.angle, 1.0
        d, m = self.travel, self.motion
        if m == "left":
            x = self.x + d * (0.5 - t)
        elif m == "right":
            x = self.x - d * (0.5 - t)
        elif m == "up":
            y = self.y + d * (0.5 - t)
        elif m == "down":
            y = self.y - d * (0.5 - t)
        elif m == "rotate":
            a = self.angle + self.spin * 2 * math.pi * d * t
        elif m == "grow":
            r = self.radius * max(0.1, 0.55 + 0.9 * t)
        elif m == "shrink":
            r = self.radius * max(0.1, 1.45 - 0.9 * t)
        elif m == "blink":
            # a soft square wave: clearly on, clearly off, `travel` cycles per clip
            alpha = min(1.0, max(0.0, 0.5 + 1.5 * math.cos(2 * math.pi * (d * t + self.phase))))
        elif m == "bounce":
            y = self.y + d / 2 - d * abs(math.sin(math.pi * (2 * t + self.phase)))
        return x, y, r, a, alpha


@dataclass(frozen=True)
class ClipSpec:
    """A whole clip: background, objects (the first is the one captions are about), clutter."""

    background: str
    objects: tuple  # of ObjectSpec, 1 or 2
    clutter: tuple  # of (x, y, radius, brightness offset)

    def attributes(self) -> dict:
        out = {"background": self.background, "main": self.objects[0].attributes()}
        out["second"] = self.objects[1].attributes() if len(self.objects) > 1 else None
        return out


def pick(rng: np.random.Generator, items: Sequence, weights: Sequence[float] | None = None):
    """One item of `items` (a plain Python value, not a numpy scalar)."""
    if weights is None:
        return items[int(rng.integers(len(items)))]
    w = np.asarray(weights, dtype=float)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


def _contrast_ok(colour: str, background: str) -> bool:
    return math.dist(COLOUR_RGB[colour], BACKGROUND_RGB[background]) >= MIN_CONTRAST


def _sample_object(
    rng,
    background: str,
    style: DomainStyle,
    difficulty: Difficulty,
    y_range: tuple[float, float],
    avoid: ObjectSpec | None,
) -> ObjectSpec:
    shape = pick(rng, SHAPES)
    colour = pick(rng, [c for c in COLOURS if _contrast_ok(c, background)])
    size = pick(rng, SIZES)
    motions = [m for m in MOTIONS if not (m == "rotate" and shape in ROTATION_SYMMETRIC)]
    motion = pick(rng, motions)
    radius = difficulty.object_radius * SIZE_FACTOR[size] * style.object_scale
    speed = style.speed * difficulty.motion_scale * float(rng.uniform(0.8, 1.2))
    if motion in ("left", "right", "up", "down"):
        travel = min(0.6, BASE_TRAVEL * speed)
    elif motion == "bounce":
        travel = min(0.4, 0.25 * speed)
    elif motion == "rotate":
        travel = 0.35 * speed  # turns per clip
    elif motion == "blink":
        travel = 2.0  # on-off cycles per clip
    else:
        travel = 0.0
    # the path (and a grown object) must stay inside the visible frame
    extent = radius * (1.5 if motion in ("grow", "shrink") else 1.15)
    half_x = travel / 2 if motion in ("left", "right") else 0.0
    half_y = travel / 2 if motion in ("up", "down", "bounce") else 0.0
    lo_x, hi_x = extent + half_x + 0.02, 1 - extent - half_x - 0.02
    lo_y, hi_y = y_range[0] + extent + half_y + 0.02, y_range[1] - extent - half_y - 0.02
    best, best_gap = None, -1.0
    for _ in range(8):  # keep two objects apart when there is room
        x = float(rng.uniform(lo_x, hi_x)) if hi_x > lo_x else 0.5
        y = float(rng.uniform(lo_y, hi_y)) if hi_y > lo_y else sum(y_range) / 2
        gap = 1.0 if avoid is None else math.dist((x, y), (avoid.x, avoid.y))
        if gap > best_gap:
            best, best_gap = (x, y), gap
        if avoid is None or gap > 2.2 * max(radius, avoid.radius) + 0.1:
            break
    return ObjectSpec(
        shape=shape,
        colour=colour,
        size=size,
        motion=motion,
        x=best[0],
        y=best[1],
        radius=radius,
        travel=travel,
        angle=difficulty.tilt * float(rng.uniform(-1.0, 1.0)),
        spin=1 if rng.random() < 0.5 else -1,
        phase=float(rng.uniform(0, 1)),
    )


def sample_clip(rng: np.random.Generator, style: DomainStyle, difficulty: Difficulty) -> ClipSpec:
    """A random clip of `style`'s domain (its background prior, object scale and speed)."""
    names = list(style.background_prior)
    background = pick(rng, names, [style.background_prior[n] for n in names])
    y_range = (style.letterbox, 1 - style.letterbox)
    main = _sample_object(rng, background, style, difficulty, y_range, None)
    objects = [main]
    if rng.random() < min(1.0, difficulty.second_object_prob * style.second_object_factor):
        objects.append(_sample_object(rng, background, style, difficulty, y_range, main))
    n_clutter = int(rng.integers(0, round(difficulty.clutter * style.clutter_factor) + 1))
    clutter = tuple(
        (
            float(rng.uniform(0.05, 0.95)),
            float(rng.uniform(y_range[0] + 0.05, y_range[1] - 0.05)),
            float(rng.uniform(0.02, 0.045)),
            float(rng.uniform(-0.18, 0.18)),
        )
        for _ in range(n_clutter)
    )
    return ClipSpec(background=background, objects=tuple(objects), clutter=clutter)


# ---- which clips a caption fits ----------------------------------------------------------------

OBJECT_KEYS = ("shape", "colour", "size", "motion")


def _object_fits(said: dict, obj: dict) -> bool:
    return all(obj[k] == v for k, v in said.items() if k in OBJECT_KEYS)


def fits(mention: dict, clip: dict) -> bool:
    """Whether a caption that says `mention` is true of a clip with attributes `clip`.

    `mention` holds what the caption names: main-object attributes (shape, colour, size, motion),
    `background`, and `second` (None: not named; a dict, possibly empty: a second object with those
    attributes). Either object of the clip may play the caption's main object, as a reader would
    allow. Used for the oracle R@1 ceiling and the information-imbalance tests.
    """
    if "background" in mention and mention["background"] != clip["background"]:
        return False
    objects = [clip["main"]] + ([clip["second"]] if clip["second"] else [])
    said_main = {k: v for k, v in mention.items() if k in OBJECT_KEYS}
    said_second = mention.get("second")
    for i, obj in enumerate(objects):
        if not _object_fits(said_main, obj):
            continue
        if said_second is None:
            return True
        others = [o for j, o in enumerate(objects) if j != i]
        if any(_object_fits(said_second, o) for o in others):
            return True
    return False


def oracle_recall_at_1(mentions: list[dict], text_video: list[int], clips: list[dict]) -> dict:
    """The best text->video R@1 any model can expect: a perfect attribute reader that ranks the
    clips fitting a text in random order scores 1/k on a text fitting k clips (its own included).
    """
    ks = []
    for mention, v in zip(mentions, text_video):
        k = sum(fits(mention, c) for c in clips)
        ks.append(max(k, 1) if fits(mention, clips[v]) else len(clips))
    return {
        "oracle_t2v_r1": round(100.0 * float(np.mean([1.0 / k for k in ks])), 2) if ks else 0.0,
        "mean_fitting_videos": round(float(np.mean(ks)), 2) if ks else 0.0,
        "texts_fitting_several": int(sum(k >= 2 for k in ks)),
    }
