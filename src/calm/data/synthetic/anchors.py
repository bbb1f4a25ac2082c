"""The toy world's anchor labels: CALM's class anchors for the synthetic benchmark.

They play the part Charades' 157 action labels play for MSR-VTT: the same world (motions, shapes,
colours, sizes, scenes, counts) described in the labels' own Charades-like phrasing ("Moving
something to the left", "Something colored red"), never in the caption templates' words. Their
words do appear in the pretraining split's neutral captions, so a pretrained toy text encoder
places them meaningfully, as OpenAI CLIP does for Charades labels.
"""

from __future__ import annotations

from pathlib import Path

ANCHOR_LABELS: tuple[str, ...] = (
    # motions
    "Moving something to the left",
    "Moving something to the right",
    "Moving something sideways",
    "Lifting something upward",
    "Something falling downward",
    "Something spinning around",
    "Something getting bigger",
    "Something getting smaller",
    "Something changing size",
    "Something flashing on and off",
    "Something hopping up and down",
    "Something holding still",
    "Nothing in motion",
    # shapes
    "A round object",
    "A boxy object",
    "A pointy object",
    "A triangular thing",
    "A diamond-shaped thing",
    "A star-shaped thing",
    "A cross-shaped thing",
    "A hollow round thing",
    "A long thin thing",
    # colours
    "Something colored red",
    "Something colored orange",
    "Something colored yellow",
    "Something colored green",
    "Something colored blue",
    "Something colored purple",
    "Something colored pink",
    "Something colored white",
    # sizes
    "Something very small",
    "Something very large",
    # scenes
    "A scene under a blue sky",
    "A scene on green grass",
    "A scene on sandy ground",
    "A scene in the dark night",
    # counts
    "Two things at once",
    "A single thing alone",
    # combinations
    "A round red object",
    "A boxy blue object",
    "A pointy yellow object",
    "A green star-shaped thing",
    "A white thing in the dark night",
    "Two things moving together",
    "Spinning a pointy thing",
    "A tiny thing getting bigger",
    "A huge thing getting smaller",
    "Moving a round thing sideways",
    "Something flashing in the dark night",
    "Something hopping on green grass",
)


def anchor_labels() -> list[str]:
    """The synthetic world's anchor labels, in a fixed order."""
    return list(ANCHOR_LABELS)


def write_anchors(path: str | Path) -> Path:
    """Writes one label per line (the format `calm.model.anchors.load_labels` reads)."""
    path = Path(path)
    path.write_text("\n".join(ANCHOR_LABELS) + "\n", encoding="utf-8")
    return path
