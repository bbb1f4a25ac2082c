"""Frame sampling from video files with PyAV: pick timeline positions first, decode only those.

A clip's presentation timeline (see calm.data.timeline: one demux pass, no decoding) is split into
T equal segments and one position is taken from each (the middle one for evaluation, a random one
for training); each position shows a frame, the one a player shows there. The sampler then decodes
forward from the start and stops after the last wanted frame, seeking ahead to a keyframe only
where that skips more than `seek_gap` frames (see `FrameSampler`). Decoded frames are identified
by their timestamp rather than by counting, so the frame returned for index i is frame i of the
file even when the decoder returns frames out of timestamp order. Only files whose timestamps
are not presentation times (none at all, or AVI whose codec reorders frames: DivX packed
B-frames, H.264 in AVI) are decoded from the start and identified by the order the decoder
returns them, which is display order.

The sampler yields uint8 frames (`clip`); normalisation to the backbone's mean and std happens
per batch on the training device (`normalize_frames`), four times less data to move than float.
"""

from __future__ import annotations

import bisect
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from calm.data.errors import VideoDecodeError
from calm.data.timeline import (  # noqa: F401 - re-exported: the sampler's public helpers
    MODES,
    FrameTable,
    declared_seconds,
    read_frame_table,
    sample_indices,
)

# Chosen with benchmarks/bench_sampler.py (30 s 640x360 30 fps H.264 clips, T=12, CPU time of
# one thread, against decoding every frame): a seek costs only a few frames of decoding, so
# seeking whenever it skips more than a handful of frames is as fast as any rule measured
# (gap 0 and 8 within noise, 32 slightly slower) and far faster than sequential decoding once
# keyframes are a second or two apart: 1 s GOP 5.8x vs 2.2x sequential, 2 s GOP 3.2x vs 1.9x.
# With x264's default 250-frame GOP few seeks pay off (2.4x vs 2.2x sequential); there most of
# the gain comes from skip_frame=NONREF, which drops B-frames nothing references.
DEFAULT_SEEK_GAP = 8
# Demuxers whose seeks land exactly on indexed keyframes with the same timestamps as a linear
# read. MPEG-PS, for one, re-derives timestamps after a seek and shifts them by a frame.
SEEKABLE_FORMATS = frozenset({"mp4", "mov", "matroska", "webm", "avi"})
# Frames may leave the decoder this many places out of timestamp order (H.264's largest
# reorder buffer); past that, a frame still missing is not coming from this decoder run.
REORDER_WINDOW = 16


_REFORMATTERS: dict[int, VideoReformatter] = {}


def _process_reformatter() -> VideoReformatter:
    """One swscale context per process, reused for every frame (half the conversion cost).

    A forked DataLoader worker must neither reuse nor free the context it inherited (freeing it
    there hangs the worker), so the parent's entry simply stays in the table.
    """
    pid = os.getpid()
    if pid not in _REFORMATTERS:
        _REFORMATTERS[pid] = VideoReformatter()
    return _REFORMATTERS[pid]


@dataclass(frozen=True)
class FrameSpec:
    """Plain preprocessing settings shared by the model side and the data side."""

    num_frames: int = 12
    image_size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)  # CLIP's
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {self.num_frames}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be at least 1, got {self.image_size}")


# -- normalisation, on whichever device the batch is on --------------------------------------------

_STATS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def normalize_frames(
    frames: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 frames [..., 3, H, W] (0..255) -> float32 (x / 255 - mean) / std, on their device.

    Call it after moving a batch to the device: the host ships a quarter of the bytes, and the
    arithmetic runs once per batch where it is cheapest. Float frames are returned unchanged:
    they are already normalised (`FrameSampler.__call__`, synthetic tensors). With `mask`
    (bool [..., T], False for padding) padded frames come out as zeros, as the CPU path gives.
    """
    if frames.dtype != torch.uint8:
        return frames
    key = (frames.device, tuple(mean), tuple(std))
    if key not in _STATS:
        m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255.0
        s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255.0
        _STATS[key] = (m.to(frames.device), (1.0 / s).to(frames.device))
    shift, scale = _STATS[key]
    out = frames.float().sub_(shift).mul_(scale)
    if mask is not None:
        out.mul_(mask.to(out.device)[..., None, None, None])
    return out


# -- clips: sampled frames to a fixed-length tensor -------------------------------------------------


def augment_clip(
    x: torch.Tensor, rng: random.Random | None, min_crop_area: float = 0.5
) -> torch.Tensor:
    """One random square crop (area >= min_crop_area) and flip for the whole clip, uint8 in/out.

    Bilinear resizing of uint8 rounds to the nearest level: within half a level of the float path.
    """
    draw = rng if rng is not None else random
    s = x.shape[-1]
    side = round(s * math.sqrt(draw.uniform(min_crop_area, 1.0)))
    top, left = draw.randint(0, s - side), draw.randint(0, s - side)
    x = x[:, :, top : top + side, left : left + side]
    if side != s:
        x = torch.nn.functional.interpolate(
            x.contiguous(), size=(s, s), mode="bilinear", align_corners=False, antialias=False
        )
    if draw.random() < 0.5:
        x = x.flip(-1)
    return x


def to_clip(
    images: torch.Tensor,
    num_frames: int,
    augment: bool = False,
    rng: random.Random | None = None,
    min_crop_area: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [n, 3, S, S] -> (uint8 frames [T, 3, S, S] zero-padded, bool mask [T])."""
    x = augment_clip(images, rng, min_crop_area) if augment else images
    n, s = x.shape[0], x.shape[-1]
    mask = torch.zeros(num_frames, dtype=torch.bool)
    mask[:n] = True
    if n == num_frames:
        return x.contiguous(), mask
    frames = torch.empty(num_frames, 3, s, s, dtype=torch.uint8)
    frames[:n] = x
    frames[n:] = 0
    return frames, mask


def open_video(path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Opens `path` and returns (container, first video stream); errors name the file."""
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError(path, "file does not exist")
    if not p.is_file():
        raise VideoDecodeError(path, "not a regular file")
    if p.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        # FFmpeg's own text ("Invalid data found when processing input"), not its errno and path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise VideoDecodeError(path, f"PyAV cannot open it as a video: {reason}") from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream")
    return container, container.streams.video[0]


class _Restart(Exception):
    """Timestamps after decoding did not match the packet table: decode again more plainly."""


class FrameSampler:
    """Decodes T sampled frames of one clip into uint8 (`clip`) or normalised float (`__call__`).

    `seek_gap`: seek to a keyframe only when it lies more than this many frames past the
    decoder's position (None: never seek, decode sequentially). `threads`: FFmpeg decoding
    threads per clip; 1 by default because DataLoader workers already use the cores and frame
    threads add latency after every seek. `skip_nonref`: decode frames nothing references only
    when wanted; an optimisation that never changes which frames come out.
    """

    def __init__(
        self,
        spec: FrameSpec,
        mode: str = "test",
        augment: bool = False,
        *,
        seek_gap: int | None = DEFAULT_SEEK_GAP,
        threads: int = 1,
        skip_nonref: bool = True,
        min_crop_area: float = 0.5,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if augment and mode != "train":
            raise ValueError("augment=True needs mode='train'")
        self.spec = spec
        self.mode = mode
        self.augment = augment
        self.seek_gap = seek_gap
        self.threads = threads
        self.skip_nonref = skip_nonref
        self.min_crop_area = min_crop_area

    def frame_indices(self, table: FrameTable, rng: random.Random | None = None) -> list[int]:
        """The frame shown at each sampled timeline position (repeats where frames dropped)."""
        slots = sample_indices(table.num_slots, self.spec.num_frames, self.mode, rng)
        return table.frames_at(slots)

    def indices_for(self, path, rng: random.Random | None = None) -> list[int]:
        """The frame indices a call with the same rng state would decode."""
        container, stream = open_video(path)
        with container:
            table = read_frame_table(container, stream, path)
        return self.frame_indices(table, rng)

    def clip(self, path, rng: random.Random | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns frames uint8 [T, 3, S, S] and mask bool [T] (False marks zero padding).

        Raises VideoDecodeError(path, reason) for a missing, unreadable, truncated or empty file.
        """
        images = torch.from_numpy(self.decode_uint8(path, rng)).permute(0, 3, 1, 2)
        return to_clip(images, self.spec.num_frames, self.augment, rng, self.min_crop_area)

    def __call__(self, path, rng: random.Random | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`clip` normalised with the spec's mean and std: float32 [T, 3, S, S], padding zeros."""
        frames, mask = self.clip(path, rng)
        return normalize_frames(frames, self.spec.mean, self.spec.std, mask), mask

    def decode_uint8(self, path, rng: random.Random | None = None) -> np.ndarray:
        """The sampled frames as uint8 [n, S, S, 3] RGB, n = min(T, timeline slots)."""
        container, stream = open_video(path)
        with container:
            self._configure(stream)
            table = read_frame_table(container, stream, path)
            wanted = self.frame_indices(table, rng)
            got = self.decode_frames(container, stream, table, wanted, path)
        return np.stack([got[i] for i in wanted])

    def decode_frames(self, container, stream, table: FrameTable, indices, path) -> dict:
        """{frame index: uint8 [S, S, 3]} for every index; raises when one cannot be decoded.

        Tries the fastest plan first (seek + skip), then sequential decoding by timestamp, then
        sequential decoding by output order without skipping; a frame that even the last plan
        cannot produce makes the file truncated or corrupt.
        """
        wanted = sorted(set(indices))
        self._configure(stream)
        try:
            got = self._decode_planned(container, stream, table, wanted, path)
        except av.FFmpegError as exc:
            raise VideoDecodeError(path, f"decoding failed: {exc}") from exc
        missing = [i for i in wanted if i not in got]
        if missing:
            raise VideoDecodeError(
                path,
                f"truncated or corrupt: frame {missing[0]} of {table.count} could not be decoded",
            )
        return got

    # -- decoding -------------------------------------------------------------------------------

    def _configure(self, stream) -> None:
        if self.threads != 1:
            stream.thread_type = "AUTO"
        stream.thread_count = self.threads
        sar = stream.sample_aspect_ratio
        self._sar = float(sar) if sar else 1.0  # anamorphic sources: display width = w * sar

    def _decode_planned(self, container, stream, table: FrameTable, wanted: list[int], path):
        if table.pts is None or table.by_order:
            return self._decode_counting(path, wanted)
        seekable = not SEEKABLE_FORMATS.isdisjoint(container.format.name.split(","))
        plans = [True, False] if seekable and self.seek_gap is not None else [False]
        for seek in plans:
            try:
                got = self._decode_by_pts(container, stream, table, wanted, seek)
            except _Restart:
                continue
            if all(i in got for i in wanted):
                return got
        return self._decode_counting(path, wanted)

    def _frames_from(
        self, container, stream, start_pts: int, landed: list[int], keep: set[int], jump: bool
    ) -> Iterator:
        """Decoded frames from the keyframe at or before start_pts; its pts goes into `landed`.

        From the file's start (jump False) every packet goes to the decoder, as in a linear read.

        Packets whose pts is not in `keep` are decoded with skip_frame=NONREF: a frame no other
        frame references (most B-frames) is then skipped, which changes no other frame. The
        decoder labels each frame with the pts of the packet it was decoded from, so the labels
        of the frames that do come out never depend on what was skipped.
        """
        container.seek(start_pts, stream=stream, backward=True)
        ctx = stream.codec_context
        skip = self.skip_nonref
        started = not jump
        for packet in container.demux(stream):
            if not started:
                if not packet.is_keyframe or packet.pts is None:
                    continue  # inexact seeks (formats without an index) may land mid-GOP
                started = True
                landed.append(packet.pts)
            if skip:
                ctx.skip_frame = "DEFAULT" if packet.pts in keep else "NONREF"
            yield from packet.decode()

    def _decode_by_pts(
        self, container, stream, table: FrameTable, wanted: list[int], seek_ok: bool
    ) -> dict:
        """Frames identified by timestamp; stops on each wanted frame once it has come out."""
        index_of = {p: i for i, p in enumerate(table.pts)}
        keyframe_set = set(table.keyframes) | {0}
        keep = {table.pts[i] for i in wanted}
        want = set(wanted)
        got: dict[int, np.ndarray] = {}
        frames: Iterator | None = None
        pos = 0  # one past the highest frame the current decoder run has returned
        floor = 0  # frames shown before the keyframe we started at reference older data: skip
        for j in wanted:
            if j in got:
                continue
            before = bisect.bisect_right(table.keyframes, j) - 1
            k = table.keyframes[before] if before >= 0 else 0  # keyframe at or before j
            jump = seek_ok and self.seek_gap is not None and k - pos > self.seek_gap
            if frames is None or jump:
                landed: list[int] = []
                start = table.pts[k if jump else 0]
                frames = self._frames_from(container, stream, start, landed, keep, jump)
                floor = -1 if jump else 0
            past = 0  # frames after j returned while j is still missing (reordering)
            for frame in frames:
                if floor < 0:  # first frame after a seek: check where the demuxer put us
                    floor = index_of.get(landed[0], -1)
                    if floor not in keyframe_set or floor > j:
                        raise _Restart  # landed off the table's keyframes or past frame j
                i = index_of.get(frame.pts)
                if i is None:
                    raise _Restart
                if i < floor:
                    continue
                pos = max(pos, i + 1)
                if i in want and i not in got:
                    got[i] = self._to_array(frame)
                if j in got:
                    break
                if i > j:
                    past += 1
                    if past > REORDER_WINDOW:
                        break
            else:
                break  # decoder exhausted: the caller tries a plainer plan
        return got

    def _decode_counting(self, path, wanted: list[int]) -> dict:
        """Sequential decoding from a freshly opened file, frames identified by their order."""
        want = set(wanted)
        last = max(wanted)
        got: dict[int, np.ndarray] = {}
        container, stream = open_video(path)
        with container:
            self._configure(stream)
            i = -1
            for packet in container.demux(stream):
                for frame in packet.decode():
                    i += 1
                    if i in want:
                        got[i] = self._to_array(frame)
                    if i >= last:
                        return got
        return got

    # -- pixels ---------------------------------------------------------------------------------

    def _to_array(self, frame) -> np.ndarray:
        """Short side to S in swscale (bicubic, like CLIP), display rotation, centre crop S x S."""
        s = self.spec.image_size
        disp_w = frame.width * self._sar
        scale = s / min(disp_w, frame.height)
        w = max(s, round(disp_w * scale))
        h = max(s, round(frame.height * scale))
        img = _process_reformatter().reformat(
            frame, width=w, height=h, format="rgb24", interpolation="BICUBIC"
        ).to_ndarray()
        turns = round((frame.rotation or 0) / 90) % 4
        if turns:
            img = np.rot90(img, turns)
            h, w = img.shape[:2]
        top, left = (h - s) // 2, (w - s) // 2
        return np.ascontiguousarray(img[top : top + s, left : left + s])
