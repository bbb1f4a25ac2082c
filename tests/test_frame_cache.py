"""The frame cache: same frames as decoding, seeded train draws, resumable writing, wiring."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from calm.cli.main import main
from calm.config.schema import DataConfig
from calm.data.errors import DataError, VideoDecodeError
from calm.data.frame_cache import (
    MANIFEST,
    CacheSettings,
    FrameCache,
    read_manifest,
    segment_plan,
)
from calm.data.prepare_frames import prepare_frames
from calm.data.samples import PairDataset, VideoDataset, collate
from calm.data.timeline import sample_indices
from calm.data.video import FrameSampler, FrameSpec, normalize_frames
from calm.engine.inputs import data_setup
from calm.model.backbone import Preprocess
from tests.fixtures_benchmarks import write_msrvtt
from tests.videos import read_index, write_clip, write_garbage, write_timed_clip

T, K, S = 6, 3, 32
SPEC = FrameSpec(num_frames=T, image_size=S)
RAW = CacheSettings(num_frames=T, per_segment=K, image_size=S, codec="raw")
JPEG = CacheSettings(num_frames=T, per_segment=K, image_size=S, codec="jpeg", quality=95)
LENGTHS = {30: 40, 31: 5, 32: 24, 33: 60, 34: 13, 35: 40, 36: 7, 37: 30, 38: 18}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """MSR-VTT layout: video30-38 real clips (one AVI with dropped frames), video39 garbage."""
    root = tmp_path_factory.mktemp("cachebench")
    write_msrvtt(root / "ann")
    videos = root / "videos"
    for i, n in LENGTHS.items():
        write_clip(videos / f"video{i}.mp4", n, width=48, height=32, gop=8)
    (videos / "video35.mp4").unlink()
    write_timed_clip(videos / "video35.avi", [0, 1, 2, 5, 6, 9, 10, 11, 20, 21, 30, 39])
    write_garbage(videos / "video39.mp4")
    return root


@pytest.fixture(scope="module")
def raw_cache(bench, tmp_path_factory):
    dst = tmp_path_factory.mktemp("rawcache")
    results = prepare_frames(bench / "videos", dst, RAW, workers=2, progress=False)
    assert {r.status for r in results} == {"cached", "failed"}
    return dst


def labels_of(frames: torch.Tensor, mask: torch.Tensor) -> list[int]:
    return [read_index(f.permute(1, 2, 0).numpy()) for f in frames[mask]]


def test_segment_plan_holds_the_test_slot_and_spread_candidates():
    test, train = segment_plan(60, 6, 3)
    assert test == sample_indices(60, 6, "test")
    assert train[0] == [1, 4, 8] and all(len(c) == 3 for c in train)  # 4: the test slot
    assert all(t in c for t, c in zip(test, train))
    assert segment_plan(60, 6, 4)[1][0] == [1, 3, 6, 8]
    for s, cands in enumerate(train):
        assert all(s * 10 <= c < (s + 1) * 10 for c in cands)
    assert segment_plan(4, 6, 3) == ([0, 1, 2, 3], [[0], [1], [2], [3]])
    assert segment_plan(8, 6, 4)[1][0] == [0]  # a 1-slot segment has one candidate


def test_test_mode_is_exactly_the_decoded_frames(bench, raw_cache):
    cache = FrameCache(raw_cache)
    cached = cache.sampler(SPEC, bench / "videos", "test")
    direct = FrameSampler(SPEC, "test")
    for path in sorted((bench / "videos").glob("video3[0-8].*")):
        frames, mask = cached.clip(path)
        want_frames, want_mask = direct.clip(path)
        assert frames.dtype == torch.uint8 and torch.equal(mask, want_mask)
        assert torch.equal(frames, want_frames), path  # raw codec: bit for bit


def test_jpeg_cache_gives_the_same_frames_within_jpeg_error(bench, tmp_path):
    prepare_frames(bench / "videos", tmp_path, JPEG, workers=1, progress=False)
    cached = FrameCache(tmp_path).sampler(SPEC, bench / "videos", "test")
    path = bench / "videos" / "video33.mp4"
    frames, mask = cached.clip(path)
    want, _ = FrameSampler(SPEC, "test").clip(path)
    assert labels_of(frames, mask) == labels_of(want, mask)
    assert (frames.float() - want.float()).abs().mean() < 2.0


def test_train_mode_draws_cached_candidates_per_seed(bench, raw_cache):
    cache = FrameCache(raw_cache)
    cached = cache.sampler(SPEC, bench / "videos", "train")
    path = bench / "videos" / "video33.mp4"  # 60 frames: segments of 10, candidates 1, 4, 8
    _, plan = segment_plan(60, T, K)
    seen = set()
    for seed in range(12):
        a, mask = cached.clip(path, random.Random(seed))
        b, _ = cached.clip(path, random.Random(seed))
        assert torch.equal(a, b)  # the same item in every worker and every resumed run
        rng = random.Random(seed)
        expected = [cands[rng.randrange(len(cands))] for cands in plan]
        assert labels_of(a, mask) == expected
        seen.add(tuple(expected))
    assert len(seen) > 6  # randomness kept: many combinations across epochs


def test_a_complete_plan_holds_every_slot_of_every_segment():
    test, train = segment_plan(60, 6, 0)
    assert test == sample_indices(60, 6, "test")
    assert train == [list(range(10 * s, 10 * s + 10)) for s in range(6)]
    test, train = segment_plan(13, 6, 0)  # uneven segments
    assert [x for cands in train for x in cands] == list(range(13))
    assert segment_plan(4, 6, 0) == ([0, 1, 2, 3], [[0], [1], [2], [3]])
    with pytest.raises(DataError, match="per-segment"):
        CacheSettings(per_segment=-1)


@pytest.mark.parametrize("augment", [False, True])
def test_a_complete_raw_cache_trains_on_exactly_the_frames_decoding_gives(bench, tmp_path,
                                                                          augment):
    """per-segment 0 + raw: train draws (and augmentation) are the sampler's, bit for bit, for
    long clips, short ones (fewer slots than T: no draw), and a file with dropped frames; the
    generator is left in the same state, so the next item's draws agree too."""
    complete = CacheSettings(num_frames=T, per_segment=0, image_size=S, codec="raw")
    prepare_frames(bench / "videos", tmp_path, complete, workers=1, progress=False)
    cached = FrameCache(tmp_path).sampler(SPEC, bench / "videos", "train", augment=augment)
    direct = FrameSampler(SPEC, "train", augment=augment)
    paths = sorted((bench / "videos").glob("video3[0-8].*"))
    assert {p.name for p in paths} >= {"video31.mp4", "video35.avi", "video33.mp4"}
    for seed in range(4):
        ours, theirs = random.Random(seed), random.Random(seed)
        for path in paths:
            frames, mask = cached.clip(path, ours)
            want, want_mask = direct.clip(path, theirs)
            assert torch.equal(mask, want_mask) and torch.equal(frames, want), (path, seed)
        assert ours.getstate() == theirs.getstate()


def test_train_mode_augments_like_the_sampler(bench, raw_cache):
    cached = FrameCache(raw_cache).sampler(SPEC, bench / "videos", "train", augment=True)
    a, mask = cached.clip(bench / "videos" / "video30.mp4", random.Random(4))
    b, _ = cached.clip(bench / "videos" / "video30.mp4", random.Random(4))
    assert torch.equal(a, b) and a.shape == (T, 3, S, S) and mask.all()


def test_dropped_frames_and_failures_are_kept(bench, raw_cache):
    cache = FrameCache(raw_cache)
    cached = cache.sampler(SPEC, bench / "videos", "test")
    gaps = bench / "videos" / "video35.avi"
    assert torch.equal(cached.clip(gaps)[0], FrameSampler(SPEC).clip(gaps)[0])
    assert cache.records["video35.avi"]["slots"] == 40
    with pytest.raises(VideoDecodeError) as e:
        cached.clip(bench / "videos" / "video39.mp4")
    assert e.value.path.endswith("video39.mp4") and "prepare-frames" in e.value.reason
    ann = data_setup_for(bench, raw_cache).split("test")
    items = VideoDataset(ann, cached, missing_video="skip")
    batch = collate([items[i] for i in range(len(items))])
    assert batch["size"] == 9 and [s.video_id for s in batch["skipped"]] == ["video39"]


def test_a_cache_is_found_under_another_extension(bench, raw_cache, tmp_path):
    """A loader expecting video35.mp4 where video35.avi was cached (re-encoded copies)."""
    cached = FrameCache(raw_cache).sampler(SPEC, bench / "videos", "test")
    frames, _ = cached.clip(bench / "videos" / "video35.mp4")
    assert torch.equal(frames, cached.clip(bench / "videos" / "video35.avi")[0])


# -- writing: resumable, settings fixed ------------------------------------------------------------


def test_an_interrupted_run_resumes_with_only_the_missing_clips(bench, tmp_path):
    first = prepare_frames(bench / "videos", tmp_path, RAW, workers=1, progress=False, limit=3)
    assert [r.status for r in first].count("cached") == 3
    manifest = tmp_path / MANIFEST
    with open(manifest, "a") as f:
        f.write('{"key": "video38.mp4", "status": "o')  # killed while writing a line
    assert len(read_manifest(tmp_path)) == 3
    second = prepare_frames(bench / "videos", tmp_path, RAW, workers=2, progress=False)
    statuses = {r.key: r.status for r in second}
    assert sorted(k for k, s in statuses.items() if s == "skipped") == sorted(
        r.key for r in first if r.status == "cached"
    )
    assert list(statuses.values()).count("cached") == 6 and statuses["video39.mp4"] == "failed"
    lines = manifest.read_text().splitlines()
    assert all(json.loads(line) for line in lines) and len(lines) == 10
    third = prepare_frames(bench / "videos", tmp_path, RAW, workers=1, progress=False)
    assert {r.status for r in third} == {"skipped", "failed"}  # broken files are tried again
    cached = FrameCache(tmp_path).sampler(SPEC, bench / "videos", "test")
    for i in LENGTHS:
        path = next((bench / "videos").glob(f"video{i}.*"))
        assert torch.equal(cached.clip(path)[0], FrameSampler(SPEC).clip(path)[0])


def test_resume_with_other_settings_is_refused(bench, tmp_path):
    prepare_frames(bench / "videos", tmp_path, RAW, workers=1, progress=False, limit=1)
    with pytest.raises(DataError, match="written with"):
        prepare_frames(bench / "videos", tmp_path, JPEG, workers=1, progress=False)


def test_cli_writes_a_cache_and_reports_failures(bench, tmp_path, capsys):
    code = main(["prepare-frames", "--src", str(bench / "videos"), "--dst", str(tmp_path),
                 "--frames", str(T), "--size", str(S), "--per-segment", "2", "--workers", "1",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1 and "9 cached" in out and "1 failed" in out and "video39.mp4" in out
    assert FrameCache(tmp_path).settings.per_segment == 2


# -- wiring: DataConfig.frame_cache -> datasets -> normalised on the device -------------------------


def data_setup_for(bench, cache, num_frames: int = T):
    cfg = DataConfig(dataset="msrvtt", annotations=str(bench / "ann"),
                     videos=str(bench / "videos"), frame_cache=str(cache) if cache else None,
                     num_frames=num_frames, num_workers=0)
    pre = Preprocess(S, SPEC.mean, SPEC.std, 77)
    return data_setup(cfg, pre, _tokenizer)


def _tokenizer(texts, context_length):
    return torch.zeros(len(texts), context_length, dtype=torch.long)


def test_data_frame_cache_feeds_the_loaders(bench, raw_cache):
    with_cache, without = data_setup_for(bench, raw_cache), data_setup_for(bench, None)
    ann = with_cache.split("test")  # the first batch holds video30-33, all readable
    a = next(iter(with_cache.video_loader(ann, 4)))
    b = next(iter(without.video_loader(ann, 4)))
    assert a["frames"].dtype == torch.uint8 and torch.equal(a["frames"], b["frames"])
    normalised = normalize_frames(a["frames"], SPEC.mean, SPEC.std, a["frame_mask"])
    direct = torch.stack([FrameSampler(SPEC)(v.path)[0] for v in ann.videos[:4]])
    torch.testing.assert_close(normalised, direct)
    train = with_cache.train_dataset(ann, seed=1)
    assert isinstance(train, PairDataset) and train[0]["frames"].dtype == torch.uint8


def test_an_incomplete_cache_or_other_frame_count_stops_the_setup(bench, tmp_path):
    prepare_frames(bench / "videos", tmp_path, RAW, workers=1, progress=False, limit=2)
    setup = data_setup_for(bench, tmp_path)
    with pytest.raises(DataError, match="not cached"):
        setup.video_loader(setup.split("test"), 4)
    with pytest.raises(DataError, match="T=6"):
        data_setup_for(bench, tmp_path, num_frames=8).sampler("test")


def test_normalize_frames_matches_the_cpu_path_and_passes_floats_through():
    x = torch.randint(0, 256, (2, 3, 3, 4, 4), dtype=torch.uint8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = normalize_frames(x, SPEC.mean, SPEC.std, mask)
    mean = torch.tensor(SPEC.mean).view(3, 1, 1)
    std = torch.tensor(SPEC.std).view(3, 1, 1)
    expected = (x.float() / 255 - mean) / std * mask[..., None, None, None]
    torch.testing.assert_close(out, expected)
    assert out.dtype == torch.float32 and not out[0, 2].any()
    f = torch.randn(2, 3, 3, 4, 4)
    assert normalize_frames(f, SPEC.mean, SPEC.std) is f
    assert np.allclose(normalize_frames(x, SPEC.mean, SPEC.std)[1, 2], ((x[1, 2] / 255 - mean) / std))


def test_evaluating_on_another_video_folder_drops_the_training_frame_cache(tmp_path):
    """A cache serves the folder it was written from: a checkpoint trained from one and
    evaluated on another benchmark decodes that benchmark's videos (it stops otherwise, with
    every test video 'not cached')."""
    from pathlib import Path

    from calm.engine.drivers import target_config
    from calm.experiments.recipe import Recipe, experiment_config

    domain = {"loader": "msrvtt", "annotations": "msrvtt/ann", "videos": "msrvtt/videos"}
    cfg = experiment_config(Recipe(), tmp_path, domain, "clip.safetensors", "none", 10,
                            frame_cache=tmp_path / "frames")
    assert cfg.data.frame_cache == str(tmp_path / "frames")
    # a cached clip is a memory copy: the runs read it in-process, the recipe's loader
    # processes are for decoding
    assert cfg.data.num_workers == 0 and Recipe().num_workers == 2
    decoding = experiment_config(Recipe(), tmp_path, domain, "clip.safetensors", "none", 10)
    assert decoding.data.num_workers == 2 and decoding.data.frame_cache is None
    other = target_config(cfg, "didemo", tmp_path / "didemo/ann", tmp_path / "didemo/videos")
    assert other.data.frame_cache is None
    same = target_config(cfg, "msrvtt", Path(cfg.data.annotations), Path(cfg.data.videos))
    assert same.data.frame_cache == str(tmp_path / "frames")
