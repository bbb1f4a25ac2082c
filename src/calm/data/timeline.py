"""The presentation timeline of a video stream, read from its packets without decoding.

One demux pass (about 1% of the cost of decoding) gives the timestamp of every stored frame, the
keyframes and the frame count the header claims. From them this module builds the timeline a
player shows: a grid of equal slots from the first frame to the end, where each slot shows the
latest frame whose timestamp falls at or before it. A constant-rate file has exactly one slot per
frame; a dropped frame (an AVI null chunk, a gap in an mp4's timestamps) repeats the frame before
it; a variable-rate file is laid out on its base frame interval. Frame positions are chosen on
this grid (`sample_indices`), so the frames drawn are spread evenly in time whatever the file's
frame spacing.

"Truncated" means the decodable timeline ends well before the duration the container states: a
cut download. Missing frames inside the timeline are not truncation, they are what the file shows.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from dataclasses import dataclass

import av

from calm.data.errors import VideoDecodeError

MODES = ("train", "test")

# A timeline shorter than the stated duration by more than both of these is a cut file.
TRUNCATION_FRACTION = 0.1
TRUNCATION_SECONDS = 0.5
# No slot is shorter than this: a file whose timestamps jitter by a tick must not explode into
# millions of slots.
MIN_SLOT_SECONDS = 1 / 240


def sample_indices(
    num_video_frames: int, num_frames: int, mode: str, rng: random.Random | None = None
) -> list[int]:
    """T equal segments; mode 'test' takes the middle frame of each, 'train' a random frame in each.

    Clips with fewer than num_frames frames return every frame once (shorter list), so no frame is
    shown twice and the caller pads with a mask. Segment i is [i*n//T, (i+1)*n//T). Without an
    rng, 'train' draws from the `random` module, which DataLoader seeds per worker. The sampler
    calls this with timeline slots as the "frames".
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
    bounds = segment_bounds(n, num_frames)
    if mode == "test":
        return [(lo + hi - 1) // 2 for lo, hi in zip(bounds, bounds[1:])]
    draw = rng if rng is not None else random
    return [draw.randrange(lo, hi) for lo, hi in zip(bounds, bounds[1:])]


def segment_bounds(n: int, num_frames: int) -> list[int]:
    """The T + 1 boundaries of T equal segments of n slots (n >= T)."""
    return [i * n // num_frames for i in range(num_frames + 1)]


@dataclass
class FrameTable:
    """What one demux pass tells about the video stream.

    Frames are the stored (decodable) frames in presentation order; `slots` is the timeline: slot
    s shows frame `slots[s]`. `by_order`: the timestamps FFmpeg attaches to decoded frames are not
    presentation times (see `read_frame_table`), so decoded frames are identified by the order in
    which the decoder returns them, which is presentation order.
    """

    count: int  # frames the decoder will output
    pts: list[int] | None  # timestamp of frame i; None when the container lacks usable timestamps
    keyframes: list[int]  # frame indices of keyframes (empty when pts is None)
    listed: int  # frame count the container header claims (0 when it has none)
    slots: list[int]  # the frame each timeline slot shows
    by_order: bool = False

    @property
    def num_slots(self) -> int:
        return len(self.slots)

    def frames_at(self, slots: list[int]) -> list[int]:
        """The frame index shown at each of `slots` (repeats where frames were dropped)."""
        return [self.slots[s] for s in slots]


def read_frame_table(container, stream, path) -> FrameTable:
    """Demuxes the video stream without decoding; raises on a file that is cut short.

    AVI stores no presentation timestamps: FFmpeg numbers its chunks, and a zero-size chunk is a
    dropped frame that the header's frame count includes. So an AVI's timeline is its chunk grid
    up to the listed count, and its timestamps are trusted only where the demuxer could reorder
    them: when the codec reorders frames (B-frames, including DivX-style packed ones) but the
    numbers arrive in file order, they are decode positions, and frames are placed by the order
    the decoder returns them.
    """
    raw: list[int | None] = []
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
            raw.append(packet.pts)
    except av.FFmpegError as exc:
        raise VideoDecodeError(path, f"cannot read packets: {exc}") from exc
    listed = max(int(stream.frames or 0), 0)
    avi = "avi" in container.format.name.split(",")
    if listed and packets < listed and not avi:
        raise VideoDecodeError(
            path, f"truncated file: the container lists {listed} frames but holds {packets}"
        )
    if not raw:
        raise VideoDecodeError(path, "no decodable video frames")
    known = [p for p in raw if p is not None]
    if len(known) < len(raw) or len(set(known)) != len(known):
        if not listed:
            _check_duration(container, stream, known, path)
        return FrameTable(len(raw), None, [], listed, list(range(len(raw))), by_order=True)
    ordered = sorted(known)
    keyframes = sorted(bisect.bisect_left(ordered, k) for k in keys)
    if avi:
        slot_of = _slots_on_grid(ordered, _avi_ticks_per_frame(stream))
        covered = slot_of[-1] + 1
        _check_listed_coverage(stream, covered, listed, path)
        n_slots = max(covered, listed)
        by_order = bool(stream.codec_context.has_b_frames) and raw == ordered
    else:
        if not listed:
            _check_duration(container, stream, ordered, path)
        slot_of = frame_slots(ordered, stream.time_base)
        n_slots = slot_of[-1] + 1
        by_order = False
    return FrameTable(len(ordered), ordered, keyframes, listed, hold(slot_of, n_slots), by_order)


def frame_slots(pts: list[int], time_base) -> list[int]:
    """The timeline slot of each frame (sorted timestamps): one per frame at a constant rate.

    Timestamps within half a frame of an even grid (constant rate, rounded to the time base) give
    slot k to frame k. Otherwise (dropped frames, variable rate) the grid step is the most common
    interval between frames, the file's base rate, and each frame takes its nearest slot.
    """
    n = len(pts)
    if n == 1:
        return [0]
    start = pts[0]
    mean = (pts[-1] - start) / (n - 1)
    if all(abs(p - start - k * mean) < mean / 2 for k, p in enumerate(pts)):
        return list(range(n))
    step = Counter(b - a for a, b in zip(pts, pts[1:])).most_common(1)[0][0]
    if time_base:
        step = max(step, MIN_SLOT_SECONDS / float(time_base))
    return _slots_on_grid(pts, step)


def _slots_on_grid(pts: list[int], step: float) -> list[int]:
    start = pts[0]
    return [round((p - start) / step) for p in pts]


def _avi_ticks_per_frame(stream) -> float:
    """FFmpeg numbers AVI chunks in a time base of one frame; guard against other conventions."""
    rate = stream.average_rate or stream.guessed_rate
    if rate and stream.time_base:
        return max(1.0, round(1 / float(rate * stream.time_base), 6))
    return 1.0


def hold(slot_of: list[int], n_slots: int) -> list[int]:
    """slots[s] = the latest frame whose slot is <= s (frames sharing a slot: the later wins)."""
    slots = [0] * n_slots
    frame = 0
    for s in range(n_slots):
        while frame + 1 < len(slot_of) and slot_of[frame + 1] <= s:
            frame += 1
        slots[s] = frame
    return slots


def _check_listed_coverage(stream, covered: int, listed: int, path) -> None:
    """AVI: stored frames must reach near the chunk count the header lists (nulls included)."""
    rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    missing = listed - covered
    if missing > TRUNCATION_FRACTION * listed and missing / rate > TRUNCATION_SECONDS:
        raise VideoDecodeError(
            path,
            f"truncated file: frames cover {covered / rate:.2f}s of the {listed / rate:.2f}s "
            f"({listed} frames) the header lists",
        )


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
    if covered < (1 - TRUNCATION_FRACTION) * declared and declared - covered > TRUNCATION_SECONDS:
        raise VideoDecodeError(
            path,
            f"truncated file: frames cover {covered:.2f}s of the {declared:.2f}s the header states",
        )
