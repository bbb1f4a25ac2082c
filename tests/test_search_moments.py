"""Moments you can check: the IoU metrics and their baselines, joined clips with known event
times, and moment times reported at the sampling resolution."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.metrics.moments import (
    moment_metrics,
    random_span_baseline,
    temporal_iou,
    whole_clip_baseline,
)
from calm.search.moment import resolution, time_decimals


def test_iou_of_spans():
    pred = np.array([[0.0, 2.0], [1.0, 3.0], [5.0, 6.0], [2.0, 2.0]])
    gt = np.array([[0.0, 2.0], [2.0, 4.0], [0.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(temporal_iou(pred, gt), [1.0, 1 / 3, 0.0, 0.0])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10), st.floats(0, 10), st.floats(0, 10)),
                min_size=1, max_size=20))
def test_iou_is_symmetric_bounded_and_one_only_for_equal_spans(rows):
    a = np.array([sorted(r[:2]) for r in rows])
    b = np.array([sorted(r[2:]) for r in rows])
    iou = temporal_iou(a, b)
    np.testing.assert_allclose(iou, temporal_iou(b, a))
    assert np.all((iou >= 0) & (iou <= 1 + 1e-12))
    np.testing.assert_allclose(temporal_iou(a, a)[a[:, 1] > a[:, 0]], 1.0)


def test_metrics_and_the_two_baselines():
    gt = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    got = moment_metrics(np.array([[0.0, 1.0], [1.0, 2.5], [0.0, 1.0]]), gt)
    assert got == {"R@1 IoU>=0.5": 2 / 3, "R@1 IoU>=0.7": 1 / 3,
                   "mIoU": pytest.approx((1 + 2 / 3 + 0) / 3)}
    whole = whole_clip_baseline(gt, np.full(3, 3.0))
    assert whole["mIoU"] == pytest.approx(1 / 3) and whole["R@1 IoU>=0.5"] == 0.0
    # boundaries 0,1,2,3: 6 equally likely spans, exactly one equals each annotated unit span
    rand = random_span_baseline(gt, [np.arange(4.0)] * 3, draws=3000, seed=0)
    assert rand["R@1 IoU>=0.7"] == pytest.approx(1 / 6, abs=0.02)


def test_times_are_reported_to_the_sampling_resolution():
    assert resolution(np.array([0.5, 1.5, np.nan]), 2.0) == 1.0
    assert [time_decimals(s) for s in (2.5, 1.0, 0.75, 0.25, 0.04)] == [0, 0, 1, 1, 2]


@pytest.fixture(scope="module")
def moment_set(tmp_path_factory):
    from calm.data.synthetic import generate
    from calm.data.synthetic.moments import write_moment_set

    root = tmp_path_factory.mktemp("moments")
    generate(root / "synth", scale="tiny", seed=0)
    data = write_moment_set(root / "synth", root / "set", videos=4, parts=(2, 3), seed=1)
    return root, data


def test_joined_clips_hold_their_events_at_the_recorded_times(moment_set):
    from calm.data.benchmarks.common import load_split
    from calm.data.synthetic.moments import decode_frames

    root, data = moment_set
    assert json.loads((root / "set" / "moments.json").read_text()) == data
    fps = data["fps"]
    ann = load_split("msrvtt", root / "synth/msrvtt/annotations", root / "synth/msrvtt/videos",
                     "test")
    source_frames = {v.video_id: decode_frames(v.path).astype(np.float32) for v in ann.videos}
    for video in data["videos"]:
        frames = decode_frames(root / "set" / video["video"]).astype(np.float32)
        events = video["events"]
        assert 2 <= len(events) <= 3
        assert len(frames) == round(video["duration"] * fps)
        assert events[0]["start"] == 0.0 and events[-1]["end"] == video["duration"]
        for a, b in zip(events, events[1:]):
            assert a["end"] == b["start"] and a["source"] != b["source"]
        for event in events:
            assert event["captions"]
            middle = frames[int((event["start"] + event["end"]) / 2 * fps)]
            # the frame at an event's middle is one of its source clip's frames (lossy codec)
            err = {vid: np.abs(src - middle).mean(axis=(1, 2, 3)).min()
                   for vid, src in source_frames.items()}
            assert min(err, key=err.get) == event["source"]
