"""FrameSampler on real PyAV-encoded clips whose frames carry their own index (tests/videos.py)."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from calm.data.errors import VideoDecodeError
from calm.data.video import FrameSampler, FrameSpec, sample_indices
from tests.videos import (
    read_index,
    truncate_file,
    write_audio_only,
    write_clip,
    write_garbage,
)

SMALL = FrameSpec(num_frames=12, image_size=32)


def indices_in(images: np.ndarray) -> list[int]:
    return [read_index(img) for img in images]


def unnormalise(frames: torch.Tensor, spec: FrameSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return frames * std + mean


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "mp4": write_clip(d / "c40.mp4", 40),
        "long": write_clip(d / "c200.mp4", 200, gop=8, bframes=3),
        "short": write_clip(d / "c5.mp4", 5),
        "mkv": write_clip(d / "c40.mkv", 40),  # the header holds no frame count
        "avi": write_clip(d / "c40.avi", 40),
        "webm": write_clip(d / "c40.webm", 40),
        "mpg": write_clip(d / "c40.mpg", 40, fps=25),  # MPEG-PS: timestamps shift after a seek
        "noext": write_clip(d / "c40", 40),
        "portrait": write_clip(d / "portrait.mp4", 10, width=48, height=96),
        "landscape": write_clip(d / "landscape.mp4", 10, width=96, height=48),
        "rotated": write_clip(d / "rotated.mp4", 10, width=48, height=64, rotation=-90),
    }


# -- sample_indices ------------------------------------------------------------------------------


@given(n=st.integers(0, 2000), t=st.integers(1, 64), seed=st.integers(0, 2**32 - 1))
def test_sample_indices_properties(n, t, seed):
    for mode in ("test", "train"):
        idx = sample_indices(n, t, mode, random.Random(seed))
        assert len(idx) == min(n, t)
        assert idx == sorted(set(idx)), "strictly increasing"
        assert all(0 <= i < n for i in idx)
        if n >= t:  # one frame in each of the T equal segments
            for s, i in enumerate(idx):
                assert s * n // t <= i < (s + 1) * n // t
        else:
            assert idx == list(range(n))


@given(n=st.integers(1, 2000), t=st.integers(1, 64), seed=st.integers(0, 2**32 - 1))
def test_train_indices_are_deterministic_per_seed(n, t, seed):
    a = sample_indices(n, t, "train", random.Random(seed))
    assert a == sample_indices(n, t, "train", random.Random(seed))


def test_test_mode_takes_segment_middles():
    assert sample_indices(40, 4, "test") == [4, 14, 24, 34]
    assert sample_indices(12, 12, "test") == list(range(12))
    assert sample_indices(5, 12, "test") == [0, 1, 2, 3, 4]
    assert sample_indices(0, 12, "test") == []


def test_sample_indices_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        sample_indices(10, 4, "val")
    with pytest.raises(ValueError, match="num_frames"):
        sample_indices(10, 0, "test")


# -- exact frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "mkv", "avi", "webm", "mpg", "noext"])
@pytest.mark.parametrize("seek_gap", [8, 0, None])
def test_test_mode_decodes_exactly_the_intended_frames(clips, kind, seek_gap):
    sampler = FrameSampler(SMALL, "test", seek_gap=seek_gap)
    wanted = sample_indices(40, 12, "test")
    assert sampler.indices_for(clips[kind]) == wanted
    assert indices_in(sampler.decode_uint8(clips[kind])) == wanted


@pytest.mark.parametrize("seek_gap", [8, 0, None])
@pytest.mark.parametrize("skip_nonref", [True, False])
def test_seeking_across_many_gops_stays_exact(clips, seek_gap, skip_nonref):
    sampler = FrameSampler(SMALL, "train", seek_gap=seek_gap, skip_nonref=skip_nonref)
    for seed in range(4):
        wanted = sampler.indices_for(clips["long"], random.Random(seed))
        assert indices_in(sampler.decode_uint8(clips["long"], random.Random(seed))) == wanted


def test_frame_threads_stay_exact(clips):
    """Frame threading delays output and copies skip_frame per packet; the frames must not move."""
    sampler = FrameSampler(SMALL, "train", threads=2)
    for seed in range(3):
        wanted = sampler.indices_for(clips["long"], random.Random(seed))
        assert indices_in(sampler.decode_uint8(clips["long"], random.Random(seed))) == wanted


def test_train_mode_is_seeded_and_stays_in_segments(clips):
    sampler = FrameSampler(SMALL, "train")
    a, mask_a = sampler(clips["mp4"], random.Random(7))
    b, mask_b = sampler(clips["mp4"], random.Random(7))
    assert torch.equal(a, b) and torch.equal(mask_a, mask_b)
    got = indices_in(sampler.decode_uint8(clips["mp4"], random.Random(7)))
    assert got == sample_indices(40, 12, "train", random.Random(7))
    for s, i in enumerate(got):
        assert s * 40 // 12 <= i < (s + 1) * 40 // 12
    draws = {tuple(sampler.indices_for(clips["mp4"], random.Random(s))) for s in range(10)}
    assert len(draws) > 1


def test_short_clip_is_padded_and_masked(clips):
    frames, mask = FrameSampler(SMALL)(clips["short"])
    assert frames.shape == (12, 3, 32, 32) and frames.dtype == torch.float32
    assert mask.dtype == torch.bool
    assert mask.tolist() == [True] * 5 + [False] * 7
    assert torch.count_nonzero(frames[5:]) == 0
    images = unnormalise(frames[:5], SMALL)
    assert [read_index(img) for img in images] == [0, 1, 2, 3, 4]


# -- pixels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["portrait", "landscape"])
def test_short_side_resize_and_centre_crop(clips, kind):
    spec = FrameSpec(num_frames=4, image_size=40)
    frames, mask = FrameSampler(spec)(clips[kind])
    assert frames.shape == (4, 3, 40, 40) and mask.all()
    images = unnormalise(frames, spec)
    assert [read_index(img) for img in images] == sample_indices(10, 4, "test")


def test_display_rotation_is_applied(clips):
    images = FrameSampler(FrameSpec(num_frames=3, image_size=32)).decode_uint8(clips["rotated"])
    assert indices_in(images) == sample_indices(10, 3, "test")


def test_normalisation_uses_spec_mean_and_std(clips):
    spec = FrameSpec(num_frames=4, image_size=32, mean=(0.1, 0.5, 0.9), std=(0.2, 0.5, 1.0))
    sampler = FrameSampler(spec)
    frames, _ = sampler(clips["mp4"])
    raw = torch.from_numpy(sampler.decode_uint8(clips["mp4"])).permute(0, 3, 1, 2).float() / 255
    expected = (raw - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(frames, expected, rtol=1e-5, atol=1e-5)


def test_augment_keeps_shape_and_is_seeded(clips):
    sampler = FrameSampler(SMALL, "train", augment=True)
    a, mask = sampler(clips["mp4"], random.Random(3))
    b, _ = sampler(clips["mp4"], random.Random(3))
    assert a.shape == (12, 3, 32, 32) and mask.all()
    assert torch.equal(a, b)
    # uniform bands survive crops and flips, so the sampled frames are still the intended ones
    got = [read_index(img.clamp(0, 1)) for img in unnormalise(a, SMALL)]
    assert got == sample_indices(40, 12, "train", random.Random(3))
    with pytest.raises(ValueError, match="augment"):
        FrameSampler(SMALL, "test", augment=True)


def test_sampler_pickles_after_use(clips):
    sampler = FrameSampler(SMALL)
    sampler(clips["mp4"])
    clone = pickle.loads(pickle.dumps(sampler))  # DataLoader workers started with spawn
    assert indices_in(clone.decode_uint8(clips["mp4"])) == sample_indices(40, 12, "test")


# -- bad input ------------------------------------------------------------------------------------


def assert_names(exc_info, path, reason_part):
    err = exc_info.value
    assert err.path == str(path)
    assert str(path) in str(err)
    assert reason_part in err.reason.lower()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoDecodeError) as e:
        FrameSampler(SMALL)(path)
    assert_names(e, path, "does not exist")


def test_garbage_bytes(tmp_path):
    path = write_garbage(tmp_path / "garbage.mp4")
    with pytest.raises(VideoDecodeError) as e:
        FrameSampler(SMALL)(path)
    assert_names(e, path, "cannot open it as a video: invalid data found")
    assert str(e.value).count(str(path)) == 1  # named once, not again inside FFmpeg's text


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoDecodeError) as e:
        FrameSampler(SMALL)(path)
    assert_names(e, path, "empty file (0 bytes)")


def test_no_video_stream(tmp_path):
    path = write_audio_only(tmp_path / "audio.mp4")
    with pytest.raises(VideoDecodeError) as e:
        FrameSampler(SMALL)(path)
    assert_names(e, path, "no video stream")


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_truncated_file_index_at_end(tmp_path, ext):
    """The index (mp4 moov, avi idx1) is written last, so a cut file does not even open."""
    path = truncate_file(write_clip(tmp_path / f"cut{ext}", 40))
    with pytest.raises(VideoDecodeError) as e:
        FrameSampler(SMALL)(path)
    assert_names(e, path, "cannot open")


def test_truncated_mp4_index_at_start(tmp_path):
    """Header intact, half the frame data gone: the container lists more frames than it holds."""
    path = truncate_file(write_clip(tmp_path / "cut_fast.mp4", 40, faststart=True))
    with pytest.raises(VideoDecodeError) as e:
        FrameSampler(SMALL)(path)
    assert_names(e, path, "truncated")
    with pytest.raises(VideoDecodeError):
        FrameSampler(SMALL).indices_for(path)


@pytest.mark.parametrize("ext", [".mkv", ".webm"])
def test_truncated_file_without_frame_count(tmp_path, ext):
    """Matroska states a duration, not a frame count: missing seconds reveal the cut."""
    path = truncate_file(write_clip(tmp_path / f"cut{ext}", 80, fps=25))
    with pytest.raises(VideoDecodeError) as e:
        FrameSampler(SMALL)(path)
    assert_names(e, path, "truncated")
