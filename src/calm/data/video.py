"""Frame sampling from video files with PyAV: pick frame indices first, decode only those.

A clip is split into T equal segments and one frame is taken from each (the middle one for
evaluation, a random one for training). The sampler first reads the packet table of the video
stream in one demux pass without decoding (about 1% of the cost of decoding the clip); that gives
the exact frame count, the timestamp of every frame in presentation order and the keyframes. It
then decodes forward from the start and stops after the last wanted frame, seeking ahead to a
keyframe only where that skips more than `seek_gap` frames (see `FrameSampler`). Decoded frames
are identified by their timestamp rather than by counting, so the frame returned for index i is
frame i of the file; only files without timestamps fall back to counting from the start.
"""

from __future__ import annotations

import bisect
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from calm.data.errors import VideoDecodeError

MODES = ("train", "test")

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


def sample_indices(
    num_video_frames: int, num_frames: int, mode: str, rng: random.Random | None = None
) -> list[int]:
    """T equal segments; mode 'test' takes the middle frame of each, 'train' a random frame in each.

    Clips with fewer than num_frames frames return every frame once (shorter list), so no frame is
    shown twice and the caller pads with a mask. Segment i is [i*n//T, (i+1)*n//T). Without an
    rng, 'train' draws from the `random` module, which DataLoader seeds per worker.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    n = num_video_frames
    if n < 0:
        raise ValueError(f"num_video_frames must be >= 0, got {n}")
    if n <= num_frames:
        return list(range(n))
    bounds = [i * n // num_frames for i in range(num_frames + 1)]
    if mode == "test":
        return [(lo + hi - 1) // 2 for lo, hi in zip(bounds, bounds[1:])]
    draw = rng if rng is not None else random
    return [draw.randrange(lo, hi) for lo, hi in zip(bounds, bounds[1:])]


@dataclass
class FrameTable:
    """What one demux pass tells about the video stream, in presentation order."""

    count: int  # frames the decoder will output
    pts: list[int] | None  # timestamp of frame i; None when the container lacks timestamps
    keyframes: list[int]  # frame indices of keyframes (empty when pts is None)
    listed: int  # frame count the container header claims (0 when it has none)


def read_frame_table(container, stream, path) -> FrameTable:
    """Demuxes the video stream without decoding; raises on truncation the header reveals."""
    pts: list[int | None] = []
    keys: list[int] = []
    packets = 0
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue  # the flush packet at the end
            packets += 1
            if packet.is_discard:
                continue  # decoded only as a reference, never shown (edit lists)
            if packet.is_keyframe and packet.pts is not None:
                keys.append(packet.pts)
            pts.append(packet.pts)
    except av.FFmpegError as exc:
        raise VideoDecodeError(path, f"cannot read packets: {exc}") from exc
    listed = max(int(stream.frames or 0), 0)
    if listed and packets < listed:
        raise VideoDecodeError(
            path, f"truncated file: the container lists {listed} frames but holds {packets}"
        )
    if not pts:
        raise VideoDecodeError(path, "no decodable video frames")
    if not listed:
        _check_duration(container, stream, [p for p in pts if p is not None], path)
    if any(p is None for p in pts) or len(set(pts)) != len(pts):
        return FrameTable(len(pts), None, [], listed)
    ordered = sorted(pts)  # type: ignore[arg-type]
    keyframes = sorted(bisect.bisect_left(ordered, k) for k in keys)
    return FrameTable(len(ordered), ordered, keyframes, listed)


def declared_seconds(container, stream) -> float | None:
    """The video's duration as the header states it, or None when only the data could tell."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION")  # Matroska/WebM per-track tag, e.g. 00:00:03.200000000
    if tag:
        try:
            h, m, sec = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            return None
    if container.duration and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def _check_duration(container, stream, pts: list[int], path) -> None:
    """For containers without a frame count: packets must span the duration the header states."""
    declared = declared_seconds(container, stream)
    rate = float(stream.average_rate or stream.guessed_rate or 0)
    if not declared or not rate or not pts or not stream.time_base:
        return
    covered = float((max(pts) - min(pts)) * stream.time_base) + 1.0 / rate
    if covered < 0.9 * declared and declared - covered > 0.5:
        raise VideoDecodeError(
            path,
            f"truncated file: frames cover {covered:.2f}s of the {declared:.2f}s the header states",
        )


def open_video(path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Opens `path` and returns (container, first video stream); errors name the file."""
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError(path, "file does not exist")
    if not p.is_file():
        raise VideoDecodeError(path, "not a regular file")
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoDecodeError(path, f"PyAV cannot open it as a video: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream")
    return container, container.streams.video[0]


class _Restart(Exception):
    """Timestamps after decoding did not match the packet table: decode again by counting."""


class FrameSampler:
    """Decodes T sampled frames of one clip into a normalised tensor plus a validity mask.

    `seek_gap`: seek to a keyframe only when it lies more than this many frames past the
    decoder's position (None: never seek, decode sequentially). `threads`: FFmpeg decoding
    threads per clip; 1 by default because DataLoader workers already use the cores and frame
    threads add latency after every seek.
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
        self._mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self._inv_std = 1.0 / std

    def indices_for(self, path, rng: random.Random | None = None) -> list[int]:
        """The frame indices a call with the same rng state would decode."""
        container, stream = open_video(path)
        with container:
            table = read_frame_table(container, stream, path)
        return sample_indices(table.count, self.spec.num_frames, self.mode, rng)

    def __call__(self, path, rng: random.Random | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns frames float32 [T, 3, S, S] and mask bool [T] (False marks zero padding).

        Raises VideoDecodeError(path, reason) for a missing, unreadable, truncated or empty file.
        """
        images = self.decode_uint8(path, rng)
        spec = self.spec
        t, s = spec.num_frames, spec.image_size
        n = images.shape[0]
        # in place on one buffer: 4-7x faster than building (x - mean) / std out of temporaries
        frames = torch.empty(t, 3, s, s) if n == t else torch.zeros(t, 3, s, s)
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        if self.augment:
            x = self._augment(x.float(), rng)
        real = frames[:n]
        real.copy_(x)
        real.sub_(self._mean).mul_(self._inv_std)
        mask = torch.zeros(t, dtype=torch.bool)
        mask[:n] = True
        return frames, mask

    def decode_uint8(self, path, rng: random.Random | None = None) -> np.ndarray:
        """The sampled frames as uint8 [n, S, S, 3] RGB, n = min(T, frames in the clip)."""
        container, stream = open_video(path)
        with container:
            self._configure(stream)
            table = read_frame_table(container, stream, path)
            wanted = sample_indices(table.count, self.spec.num_frames, self.mode, rng)
            try:
                if table.pts is None:
                    got = self._decode_counting(path, wanted)
                else:
                    seek_ok = not SEEKABLE_FORMATS.isdisjoint(container.format.name.split(","))
                    try:
                        got = self._decode_by_pts(container, stream, table, wanted, seek_ok)
                    except _Restart:
                        try:
                            got = self._decode_by_pts(container, stream, table, wanted, False)
                        except _Restart:
                            got = self._decode_counting(path, wanted)
            except av.FFmpegError as exc:
                raise VideoDecodeError(path, f"decoding failed: {exc}") from exc
        missing = [i for i in wanted if i not in got]
        if missing:
            raise VideoDecodeError(
                path,
                f"truncated or corrupt: frame {missing[0]} of {table.count} could not be decoded",
            )
        return np.stack([got[i] for i in wanted])

    # -- decoding -------------------------------------------------------------------------------

    def _configure(self, stream) -> None:
        if self.threads != 1:
            stream.thread_type = "AUTO"
        stream.thread_count = self.threads
        sar = stream.sample_aspect_ratio
        self._sar = float(sar) if sar else 1.0  # anamorphic sources: display width = w * sar

    def _frames_from(
        self, container, stream, start_pts: int, landed: list[int], keep: set[int], jump: bool
    ) -> Iterator:
        """Decoded frames from the keyframe at or before start_pts; its pts goes into `landed`.

        From the file's start (jump False) every packet goes to the decoder, as in a linear read.

        Packets whose pts is not in `keep` are decoded with skip_frame=NONREF: a frame no other
        frame references (most B-frames) is then skipped, which changes no other frame.
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
        index_of = {p: i for i, p in enumerate(table.pts)}
        keyframe_set = set(table.keyframes) | {0}
        keep = {table.pts[i] for i in wanted}
        want = set(wanted)
        got: dict[int, np.ndarray] = {}
        frames: Iterator | None = None
        pos = 0  # index of the next frame the current decoder run yields
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
                pos = i + 1
                if i in want and i not in got:
                    got[i] = self._to_array(frame)
                if i >= j:
                    break
            else:
                break  # decoder exhausted: the caller reports what is missing
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

    def _augment(self, x: torch.Tensor, rng: random.Random | None) -> torch.Tensor:
        """One random square crop (area >= min_crop_area) and flip for the whole clip."""
        draw = rng if rng is not None else random
        s = x.shape[-1]
        side = round(s * math.sqrt(draw.uniform(self.min_crop_area, 1.0)))
        top, left = draw.randint(0, s - side), draw.randint(0, s - side)
        x = x[:, :, top : top + side, left : left + side]
        if side != s:
            x = torch.nn.functional.interpolate(
                x, size=(s, s), mode="bilinear", align_corners=False, antialias=False
            )
        if draw.random() < 0.5:
            x = x.flip(-1)
        return x
