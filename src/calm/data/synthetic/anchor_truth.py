"""Which anchor labels are true of a synthetic clip, and which ones a caption names.

The generator knows every clip's attributes and what every caption says (`metadata.json`), so on
the synthetic benchmark the anchors a model *should* rank first are known. Each label of
`ANCHOR_LABELS` is read as a rule over the world's concepts (see `RULES`):

* object rules ("Something colored red", "A pointy object", "Moving something sideways",
  "A round red object"): *some* object of the clip has every listed attribute value. Words map to
  concepts as the pretraining split's neutral captions use them: round = circle or ring (a ring is
  a "hollow round" thing), pointy = triangle, diamond or star, boxy = square, long thin = bar,
  sideways = left or right, changing size = grow or shrink, very small / very large = the small /
  large size, "holding still" = the motion `stay`;
* scene rules ("A scene on green grass"): the background;
* count rules ("Two things at once", "A single thing alone"): the number of objects (clutter
  blobs never count);
* whole-clip motion rules ("Nothing in motion": every object stays; "Two things moving together":
  two objects and neither stays).

An anchor is **true of a clip** when its rule holds for the clip's attributes. It is **named by a
caption** when the caption's mention establishes the rule: one named object (the main one, or the
named second one) was named with every attribute value the rule needs, the named background
matches, and a count of two is established by naming a second object. A caption never establishes
a count of one or a rule about *every* object, since a caption names only part of a clip. So a
caption's true anchors are a subset of its clip's.

`anchor_truth(metadata, video_ids, captions)` gives both for an evaluated split, in the order the
caller's lists have; diagnostics score V_p against the clip sets and S_p against the caption sets
(mean average precision, `calm.metrics.mean_average_precision`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calm.data.errors import DataError
from calm.data.synthetic import merge_mentions
from calm.data.synthetic.anchors import ANCHOR_LABELS

ROUND = frozenset({"circle", "ring"})
POINTY = frozenset({"triangle", "diamond", "star"})
SIDEWAYS = frozenset({"left", "right"})
RESIZING = frozenset({"grow", "shrink"})


@dataclass(frozen=True)
class AnchorRule:
    """What must hold for an anchor label to be true (empty fields impose nothing)."""

    obj: dict = field(default_factory=dict)  # attribute -> allowed values, all on one object
    background: str | None = None
    count: int | None = None  # number of objects
    every_object: str | None = None  # "still" (all stay) | "moving" (none stays)


def _obj(**allowed) -> AnchorRule:
    return AnchorRule(obj={k: frozenset([v]) if isinstance(v, str) else frozenset(v)
                           for k, v in allowed.items()})


RULES: dict[str, AnchorRule] = {
    # motions
    "Moving something to the left": _obj(motion="left"),
    "Moving something to the right": _obj(motion="right"),
    "Moving something sideways": _obj(motion=SIDEWAYS),
    "Lifting something upward": _obj(motion="up"),
    "Something falling downward": _obj(motion="down"),
    "Something spinning around": _obj(motion="rotate"),
    "Something getting bigger": _obj(motion="grow"),
    "Something getting smaller": _obj(motion="shrink"),
    "Something changing size": _obj(motion=RESIZING),
    "Something flashing on and off": _obj(motion="blink"),
    "Something hopping up and down": _obj(motion="bounce"),
    "Something holding still": _obj(motion="stay"),
    "Nothing in motion": AnchorRule(every_object="still"),
    # shapes
    "A round object": _obj(shape=ROUND),
    "A boxy object": _obj(shape="square"),
    "A pointy object": _obj(shape=POINTY),
    "A triangular thing": _obj(shape="triangle"),
    "A diamond-shaped thing": _obj(shape="diamond"),
    "A star-shaped thing": _obj(shape="star"),
    "A cross-shaped thing": _obj(shape="cross"),
    "A hollow round thing": _obj(shape="ring"),
    "A long thin thing": _obj(shape="bar"),
    # colours
    **{f"Something colored {c}": _obj(colour=c)
       for c in ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white")},
    # sizes
    "Something very small": _obj(size="small"),
    "Something very large": _obj(size="large"),
    # scenes
    "A scene under a blue sky": AnchorRule(background="sky"),
    "A scene on green grass": AnchorRule(background="grass"),
    "A scene on sandy ground": AnchorRule(background="sand"),
    "A scene in the dark night": AnchorRule(background="night"),
    # counts
    "Two things at once": AnchorRule(count=2),
    "A single thing alone": AnchorRule(count=1),
    # combinations
    "A round red object": _obj(shape=ROUND, colour="red"),
    "A boxy blue object": _obj(shape="square", colour="blue"),
    "A pointy yellow object": _obj(shape=POINTY, colour="yellow"),
    "A green star-shaped thing": _obj(shape="star", colour="green"),
    "A white thing in the dark night": AnchorRule(obj={"colour": frozenset({"white"})},
                                                  background="night"),
    "Two things moving together": AnchorRule(count=2, every_object="moving"),
    "Spinning a pointy thing": _obj(shape=POINTY, motion="rotate"),
    "A tiny thing getting bigger": _obj(size="small", motion="grow"),
    "A huge thing getting smaller": _obj(size="large", motion="shrink"),
    "Moving a round thing sideways": _obj(shape=ROUND, motion=SIDEWAYS),
    "Something flashing in the dark night": AnchorRule(obj={"motion": frozenset({"blink"})},
                                                       background="night"),
    "Something hopping on green grass": AnchorRule(obj={"motion": frozenset({"bounce"})},
                                                   background="grass"),
}


def _rule(label: str) -> AnchorRule:
    try:
        return RULES[label]
    except KeyError:
        raise DataError(f"anchor label {label!r} is not one of the synthetic world's labels, so "
                        "its truth is unknown (use the benchmark's anchors.txt)") from None


def _holds(rule: AnchorRule, objects: list[dict], background: str | None, count: int | None,
           every_motion_known: bool) -> bool:
    if rule.obj and not any(all(o.get(k) in v for k, v in rule.obj.items()) for o in objects):
        return False
    if rule.background is not None and background != rule.background:
        return False
    if rule.count is not None and count != rule.count:
        return False
    if rule.every_object is not None:
        if not every_motion_known or any("motion" not in o for o in objects):
            return False
        still = [o["motion"] == "stay" for o in objects]
        return all(still) if rule.every_object == "still" else not any(still)
    return True


def clip_anchors(attributes: dict, labels: Sequence[str] = ANCHOR_LABELS) -> frozenset[int]:
    """Indices into `labels` of the anchors true of a clip (`ClipSpec.attributes()` form)."""
    objects = [attributes["main"]] + ([attributes["second"]] if attributes.get("second") else [])
    return frozenset(i for i, label in enumerate(labels)
                     if _holds(_rule(label), objects, attributes["background"], len(objects), True))


def caption_anchors(mention: dict, labels: Sequence[str] = ANCHOR_LABELS) -> frozenset[int]:
    """Indices into `labels` of the anchors a caption names (its recorded `mention`)."""
    main = {k: v for k, v in mention.items() if k not in ("background", "second")}
    objects = [main]
    count = None
    if mention.get("second") is not None:
        objects.append(dict(mention["second"]))
        count = 2
    return frozenset(i for i, label in enumerate(labels)
                     if _holds(_rule(label), objects, mention.get("background"), count, False))


@dataclass(frozen=True)
class AnchorTruth:
    """True anchors of an evaluated split: index sets into `labels`, in the caller's order."""

    labels: tuple[str, ...]
    videos: tuple[frozenset[int], ...]
    captions: tuple[frozenset[int], ...]

    @staticmethod
    def _matrix(sets, k: int) -> np.ndarray:
        out = np.zeros((len(sets), k), dtype=bool)
        for row, s in enumerate(sets):
            out[row, sorted(s)] = True
        return out

    def video_matrix(self) -> np.ndarray:
        """bool [n_videos, K]: entry (v, k) is True when anchor k is true of video v."""
        return self._matrix(self.videos, len(self.labels))

    def caption_matrix(self) -> np.ndarray:
        """bool [n_captions, K]: entry (t, k) is True when caption t names anchor k."""
        return self._matrix(self.captions, len(self.labels))


def anchor_truth(
    metadata: str | Path,
    video_ids: Sequence[str],
    captions: Sequence[tuple[str, str]] = (),
    labels: Sequence[str] | None = None,
) -> AnchorTruth:
    """The anchors true of each video and named by each caption of an evaluated split.

    `metadata`: a domain's `metadata.json` as `calm synth` writes it (`<root>/<domain>/`);
    `video_ids`: the split's videos in the caller's order (e.g. `[v.video_id for v in
    ann.videos]`); `captions`: (video id, caption text) per evaluated text, e.g.
    `[(ann.videos[t.video_index].video_id, t.text) for t in ann.texts]`. A text that is several of
    the clip's sentences joined (DiDeMo paragraphs) names the union of what they name. `labels`:
    the anchor labels in the model's order (default: the synthetic world's `ANCHOR_LABELS`).
    Raises DataError naming the file for an unreadable file, an unknown clip or caption, or a
    label that is not the synthetic world's.
    """
    path = Path(metadata)
    labels = tuple(ANCHOR_LABELS if labels is None else labels)
    for label in labels:
        _rule(label)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        items = {it["video_id"]: it for split in data["splits"].values() for it in split}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a readable calm synth metadata file ({exc})") from None

    def item(video_id: str) -> dict:
        if video_id not in items:
            raise DataError(f"{path}: clip {video_id!r} is not in the metadata (was the benchmark "
                            "regenerated after the annotations were copied?)")
        return items[video_id]

    videos = tuple(clip_anchors(item(v)["attributes"], labels) for v in video_ids)
    caption_sets = []
    for video_id, text in captions:
        texts = item(video_id)["texts"]
        exact = [t["mention"] for t in texts if t["text"] == text]
        found = exact[:1] or [t["mention"] for t in texts if t["text"] in text]
        if not found:
            raise DataError(f"{path}: caption {text[:60]!r} of clip {video_id!r} is not one of "
                            "its captions in the metadata")
        caption_sets.append(caption_anchors(merge_mentions(found), labels))
    return AnchorTruth(labels, videos, tuple(caption_sets))
