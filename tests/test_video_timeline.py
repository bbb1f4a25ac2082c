"""Sampling on the presentation timeline: dropped frames, variable rate, B-frames, truncation.

Every clip is a real file written with PyAV whose frames carry their own label (tests/videos.py),
so each test reads back which captured frame the sampler returned.
"""

from __future__ import annotations

import random
import shutil
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calm.data.errors import VideoDecodeError
from calm.data.timeline import frame_slots, hold
from calm.data.video import FrameSampler, FrameSpec, open_video, read_frame_table, sample_indices
from tests.videos import (
    read_index,
    truncate_file,
    write_clip,
    write_packed_divx,
    write_timed_clip,
)

SPEC = FrameSpec(num_frames=8, image_size=32)
GAP_PTS = [0, 1, 2, 5, 6, 7, 12, 13, 20, 21, 22, 29]  # 12 frames stored over 30 frame times
VFR_MS = [0, 40, 80, 120, 200, 280, 320, 360, 400, 520, 560, 600, 640]  # 25 fps with drops


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("timeline")
    return {
        "gap_avi": write_timed_clip(d / "gaps.avi", GAP_PTS),
        "vfr_mp4": write_timed_clip(
            d / "vfr.mp4", VFR_MS, Fraction(1, 1000), labels=[m // 40 for m in VFR_MS], bframes=2
        ),
        "mpeg4_bframes_avi": write_timed_clip(d / "bframes.avi", list(range(48)), bframes=2),
        "packed_divx_avi": write_packed_divx(d / "packed.avi", 48),
        "h264_bframes_avi": write_clip(d / "h264.avi", 48, codec="libx264", bframes=2),
        "h264_bframes_mp4": write_clip(d / "h264.mp4", 48, gop=12, bframes=3),
    }


def labels(sampler: FrameSampler, path, seed: int | None = None) -> list[int]:
    rng = random.Random(seed) if seed is not None else None
    return [read_index(img) for img in sampler.decode_uint8(path, rng)]


def table_of(path):
    container, stream = open_video(path)
    with container:
        return read_frame_table(container, stream, path)


def shown_at(captured: list[int], slots: list[int]) -> list[int]:
    """What a player shows at each slot: the latest frame captured at or before it."""
    return [max(c for c in captured if c <= s) for s in slots]


# -- dropped frames and variable rate --------------------------------------------------------------


def test_avi_with_null_frames_is_not_truncated_and_holds_the_previous_frame(clips):
    path = clips["gap_avi"]
    table = table_of(path)
    assert (table.count, table.listed, table.num_slots) == (12, 30, 30)
    sampler = FrameSampler(SPEC, "test")
    assert labels(sampler, path) == shown_at(GAP_PTS, sample_indices(30, 8, "test"))
    train = FrameSampler(SPEC, "train")
    for seed in range(4):
        slots = sample_indices(30, 8, "train", random.Random(seed))
        assert labels(train, path, seed) == shown_at(GAP_PTS, slots)


def test_variable_frame_rate_mp4_is_sampled_evenly_in_time(clips):
    """Frames 40 ms apart with drops: positions are 40 ms slots, not stored-frame counts."""
    path = clips["vfr_mp4"]
    table = table_of(path)
    assert table.count == len(VFR_MS) and table.num_slots == VFR_MS[-1] // 40 + 1
    captured = [m // 40 for m in VFR_MS]
    for mode, seeds in (("test", [None]), ("train", [0, 1, 2])):
        sampler = FrameSampler(SPEC, mode)
        for seed in seeds:
            rng = random.Random(seed) if seed is not None else None
            slots = sample_indices(table.num_slots, 8, mode, rng)
            assert labels(sampler, path, seed) == shown_at(captured, slots)


def test_short_clip_with_gaps_repeats_frames_within_the_mask(tmp_path):
    path = write_timed_clip(tmp_path / "short.avi", [0, 3])  # 2 frames over 4 frame times
    frames, mask = FrameSampler(SPEC).clip(path)
    assert mask.tolist() == [True] * 4 + [False] * 4
    shown = [read_index(f.permute(1, 2, 0).numpy()) for f in frames[:4]]
    assert shown == [0, 0, 0, 3]


# -- frames leaving the decoder out of timestamp order --------------------------------------------


@pytest.mark.parametrize(
    "kind", ["mpeg4_bframes_avi", "packed_divx_avi", "h264_bframes_avi", "h264_bframes_mp4"]
)
@pytest.mark.parametrize("skip_nonref", [True, False])
@pytest.mark.parametrize("seek_gap", [8, 0, None])
def test_bframe_streams_give_the_intended_frames_with_and_without_the_skip(
    clips, kind, skip_nonref, seek_gap
):
    """Packed DivX and H.264 in AVI return frames with timestamps 1, 3, 2, 5, 4, ...: the frames
    must still be the ones shown at the sampled positions, whatever the skip and seek settings."""
    path = clips[kind]
    test = FrameSampler(SPEC, "test", skip_nonref=skip_nonref, seek_gap=seek_gap)
    assert labels(test, path) == sample_indices(48, 8, "test")
    train = FrameSampler(SPEC, "train", skip_nonref=skip_nonref, seek_gap=seek_gap)
    for seed in range(3):
        assert labels(train, path, seed) == sample_indices(48, 8, "train", random.Random(seed))


def test_packed_bframes_are_identified_by_output_order(clips):
    """The case the timestamps cannot describe: AVI numbers chunks in file order."""
    assert table_of(clips["packed_divx_avi"]).by_order
    assert table_of(clips["h264_bframes_avi"]).by_order
    assert not table_of(clips["mpeg4_bframes_avi"]).by_order  # FFmpeg reorders these itself
    assert not table_of(clips["h264_bframes_mp4"]).by_order


# -- really truncated files ------------------------------------------------------------------------


def test_cut_avi_is_still_truncated_and_named(clips, tmp_path):
    path = tmp_path / "cut.avi"
    shutil.copy(clips["mpeg4_bframes_avi"], path)
    truncate_file(path, 0.75)  # the index at the end is gone; the header still lists 48 frames
    with pytest.raises(VideoDecodeError) as e:
        FrameSampler(SPEC)(path)
    assert e.value.path == str(path) and "truncated" in e.value.reason


def test_cut_avi_with_null_frames_is_still_truncated(tmp_path):
    path = write_timed_clip(tmp_path / "cutgaps.avi", [*GAP_PTS, *range(30, 60)])
    truncate_file(path, 0.6)
    with pytest.raises(VideoDecodeError, match="truncated"):
        FrameSampler(SPEC).indices_for(path)


# -- the timeline arithmetic -----------------------------------------------------------------------


@given(
    n=st.integers(1, 300),
    step=st.one_of(st.just(1.0), st.floats(3.0, 5000.0)),
    start=st.integers(0, 10**6),
)
def test_constant_rate_timestamps_give_one_slot_per_frame(n, step, start):
    """Timestamps rounded to the time base (e.g. 33, 67, 100 ms at 30 fps) stay one slot each."""
    pts = [start + round(k * step) for k in range(n)]
    assert frame_slots(pts, Fraction(1, 90000)) == list(range(n))


@given(gaps=st.lists(st.integers(1, 6), min_size=1, max_size=80))
def test_hold_shows_the_latest_frame_at_or_before_each_slot(gaps):
    pts = [0]
    for g in gaps:
        pts.append(pts[-1] + g)
    slot_of = frame_slots(pts, Fraction(1, 10))
    slots = hold(slot_of, slot_of[-1] + 1)
    for s, frame in enumerate(slots):
        assert slot_of[frame] <= s
        assert frame + 1 == len(slot_of) or slot_of[frame + 1] > s
    assert slots[-1] == len(pts) - 1
