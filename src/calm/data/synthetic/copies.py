"""Near-duplicate copies of a clip: what a real collection holds besides the original.

Search collapses copies of one video into one result; its threshold is measured on copies
made here from benchmark clips (`benchmarks/bench_search.py --duplicates`):

    reencode  another codec (MPEG-4 part 2) at a low bit rate: blocking, ringing, colour shifts
    resize    scaled to 3/4 (a downscaled upload), H.264
    cut       a contiguous 60 % of the frames (a trimmed upload), H.264
    all       the three at once
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from calm.data.synthetic.moments import decode_frames

KINDS = ("reencode", "resize", "cut", "all")
LOW_BIT_RATE = 120_000


def _fps(path: Path) -> Fraction:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return Fraction(stream.average_rate or stream.guessed_rate or 25)


def _write(path: Path, frames: np.ndarray, fps: Fraction, codec: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "23", "preset": "fast"}
        else:
            stream.bit_rate = LOW_BIT_RATE
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image),
                                                                   format="rgb24")))
        container.mux(stream.encode())
    return path


def _resize(frames: np.ndarray, scale: float) -> np.ndarray:
    h, w = frames.shape[1:3]
    size = (max(16, int(w * scale)) // 2 * 2, max(16, int(h * scale)) // 2 * 2)
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


def write_copy(src: Path, dst: Path, kind: str, seed: int = 0) -> Path:
    """A `kind` copy (see KINDS) of the clip `src` written to `dst` (.mp4)."""
    if kind not in KINDS:
        raise ValueError(f"copy kind must be one of {KINDS}, got {kind!r}")
    frames, fps = decode_frames(Path(src)), _fps(Path(src))
    codec = "libx264"
    if kind in ("cut", "all"):
        keep = max(2, int(round(0.6 * len(frames))))
        first = int(np.random.default_rng(seed).integers(0, len(frames) - keep + 1))
        frames = frames[first : first + keep]
    if kind in ("resize", "all"):
        frames = _resize(frames, 0.75)
    if kind in ("reencode", "all"):
        codec = "mpeg4"
    return _write(Path(dst), frames, fps, codec)
