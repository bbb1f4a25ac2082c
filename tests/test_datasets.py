"""Torch datasets on a real loader's output and real tiny clips: shapes, pairing, determinism,
the skip and error policies for missing or corrupt videos, collate and the evaluation indices."""

from __future__ import annotations

import json

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer
from torch.utils.data import DataLoader

from calm.data.benchmarks.common import load_split
from calm.data.errors import DataError, VideoDecodeError
from calm.data.samples import (
    PairDataset,
    SkipLog,
    SkippedVideo,
    TextDataset,
    VideoDataset,
    collate,
)
from calm.data.video import FrameSampler, FrameSpec
from tests.fixtures_benchmarks import MSVD_SPLITS, write_msvd
from tests.videos import write_clip, write_garbage

T, S, L = 4, 32, 16
WORKER_TIMEOUT = 60  # seconds: a worker that hangs (e.g. state broken by fork) fails the test
SPEC = FrameSpec(num_frames=T, image_size=S)


@pytest.fixture(scope="module")
def tokenize():
    return SimpleTokenizer(context_length=L)


@pytest.fixture(scope="module")
def msvd(tmp_path_factory):
    """MSVD train split (6 videos, 2-5 captions each) with a real 8-frame clip per video."""
    root = tmp_path_factory.mktemp("msvd")
    write_msvd(root / "ann", "pkl")
    for vid in MSVD_SPLITS["train"]:
        write_clip(root / "videos" / f"{vid}.avi", num_frames=8, width=S, height=S)
    return root


def _split(msvd):
    return load_split("msvd", msvd / "ann", msvd / "videos", "train")


@pytest.fixture
def broken(tmp_path):
    """The train split with video 1 missing and video 3 replaced by random bytes."""
    ids = MSVD_SPLITS["train"]
    for j, vid in enumerate(ids):
        if j == 3:
            write_garbage(tmp_path / "videos" / f"{vid}.avi")
        elif j != 1:
            write_clip(tmp_path / "videos" / f"{vid}.avi", num_frames=6, width=S, height=S)
    write_msvd(tmp_path / "ann")
    return load_split("msvd", tmp_path / "ann", tmp_path / "videos", "train")


def test_pairs_all_gives_every_caption_with_its_video(msvd, tokenize):
    ann = _split(msvd)
    ds = PairDataset(ann, FrameSampler(SPEC, mode="train"), tokenize, pairs="all")
    assert len(ds) == len(ann.texts)
    item = ds[5]
    assert item["frames"].shape == (T, 3, S, S) and item["frames"].dtype == torch.uint8
    assert item["frame_mask"].dtype == torch.bool and item["frame_mask"].all()
    assert item["tokens"].shape == (L,) and item["tokens"].dtype == torch.long
    assert item["text_index"] == 5 and item["video_index"] == ann.texts[5].video_index
    assert torch.equal(item["tokens"], tokenize([ann.texts[5].text])[0])


def test_one_per_video_is_deterministic_per_seed_epoch_index(msvd, tokenize):
    ann = _split(msvd)
    groups = ann.captions_per_video()

    def choices(seed, epoch):
        ds = PairDataset(ann, FrameSampler(SPEC, mode="test"), tokenize, "one_per_video", seed=seed)
        ds.set_epoch(epoch)
        return [ds[i]["text_index"] for i in range(len(ds))]

    assert len(choices(0, 0)) == len(ann.videos)
    for v, t in enumerate(choices(0, 0)):
        assert t in groups[v]
    assert choices(0, 1) == choices(0, 1)
    assert len({tuple(choices(0, e)) for e in range(6)}) > 1  # epochs draw different captions
    assert len({tuple(choices(s, 0)) for s in range(6)}) > 1


def test_training_frames_repeat_for_the_same_item_and_epoch(msvd, tokenize):
    ann = _split(msvd)
    ds = PairDataset(ann, FrameSampler(SPEC, mode="train", augment=True), tokenize, seed=7)
    a, b = ds[2], ds[2]
    assert torch.equal(a["frames"], b["frames"])
    differs = []
    for epoch in (1, 2, 3):
        ds.set_epoch(epoch)
        differs.append(not torch.equal(ds[2]["frames"], a["frames"]))
    assert any(differs)  # another epoch draws other offsets, crops or flips


def test_workers_see_the_same_epoch_as_the_main_process(msvd, tokenize):
    ann = _split(msvd)
    ds = PairDataset(ann, FrameSampler(SPEC, mode="test"), tokenize, "one_per_video", seed=3)
    ds.set_epoch(2)
    # Decoding in the main process first, then forking workers, is what an engine may do.
    expected = [ds[i]["text_index"] for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate, timeout=WORKER_TIMEOUT)
    got = [i for batch in loader for i in batch["text_index"].tolist()]
    assert got == expected


def test_eval_datasets_and_collate(msvd, tokenize):
    ann = _split(msvd)
    videos = VideoDataset(ann, FrameSampler(SPEC, mode="test"))
    texts = TextDataset(ann, tokenize)
    assert len(videos) == len(ann.videos) and len(texts) == len(ann.texts)
    batch = collate([videos[i] for i in range(3)])
    assert batch["size"] == 3 and batch["skipped"] == []
    assert batch["frames"].shape == (3, T, 3, S, S) and batch["frame_mask"].shape == (3, T)
    assert batch["video_index"].tolist() == [0, 1, 2]
    tbatch = collate([texts[i] for i in range(4)])
    assert tbatch["tokens"].shape == (4, L) and tbatch["text_index"].dtype == torch.long


def test_short_clip_is_padded_and_masked(tmp_path, tokenize):
    write_msvd(tmp_path / "ann")
    vid = MSVD_SPLITS["val"][0]
    write_clip(tmp_path / "videos" / f"{vid}.avi", num_frames=2, width=S, height=S)
    ann = load_split("msvd", tmp_path / "ann", tmp_path / "videos", "val")
    item = VideoDataset(ann, FrameSampler(SPEC))[0]
    assert item["frame_mask"].tolist() == [True, True, False, False]
    assert item["frames"][2:].abs().sum() == 0


def test_skip_policy_drops_and_records_missing_and_corrupt(broken, tokenize, tmp_path):
    ds = VideoDataset(broken, FrameSampler(SPEC), missing_video="skip")
    missing, corrupt = ds[1], ds[3]
    assert isinstance(missing, SkippedVideo) and isinstance(corrupt, SkippedVideo)
    assert missing.video_id == MSVD_SPLITS["train"][1] and missing.path.endswith(".avi")
    assert "does not exist" in missing.reason and corrupt.reason
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate,
                        timeout=WORKER_TIMEOUT)
    log, kept = SkipLog(), []
    for batch in loader:
        log.update(batch["skipped"])
        if batch["size"]:
            kept += batch["video_index"].tolist()
    assert kept == [0, 2, 4, 5]
    assert len(log) == 2 and log.samples == 2
    written = json.loads(log.write(tmp_path / "run" / "skipped_videos.json").read_text())
    assert written["skipped_videos"] == 2
    assert [r["video_index"] for r in written["videos"]] == [1, 3]


def test_skip_policy_in_pairs_counts_every_dropped_sample(broken, tokenize):
    ds = PairDataset(broken, FrameSampler(SPEC, mode="train"), tokenize, missing_video="skip")
    log = SkipLog()
    n_kept = 0
    for batch in DataLoader(ds, batch_size=5, collate_fn=collate):
        log.update(batch["skipped"])
        n_kept += batch["size"]
        if batch["size"]:
            assert batch["tokens"].shape == (batch["size"], L)
            assert not set(batch["video_index"].tolist()) & {1, 3}
    groups = broken.captions_per_video()
    assert log.samples == len(groups[1]) + len(groups[3]) and len(log) == 2
    assert n_kept == len(broken.texts) - log.samples


def test_a_batch_of_only_skips_has_size_zero_and_no_tensors(broken):
    ds = VideoDataset(broken, FrameSampler(SPEC), missing_video="skip")
    batch = collate([ds[1], None, ds[3]])  # a bare None (no record) is dropped as well
    assert batch["size"] == 0 and len(batch["skipped"]) == 2
    assert set(batch) == {"size", "skipped"}


def test_error_policy_raises_naming_the_path(broken, tokenize):
    ds = PairDataset(broken, FrameSampler(SPEC), tokenize)
    bad = next(i for i, t in enumerate(broken.texts) if t.video_index == 1)
    with pytest.raises(VideoDecodeError) as info:
        ds[bad]
    assert info.value.path == str(broken.videos[1].path)
    assert str(broken.videos[1].path) in str(info.value)
    with pytest.raises(VideoDecodeError, match=MSVD_SPLITS["train"][3]):
        VideoDataset(broken, FrameSampler(SPEC))[3]


def test_error_policy_in_a_worker_still_names_the_path(broken):
    loader = DataLoader(VideoDataset(broken, FrameSampler(SPEC)), batch_size=2, num_workers=1,
                        collate_fn=collate, timeout=WORKER_TIMEOUT)
    with pytest.raises(Exception, match=MSVD_SPLITS["train"][1]):
        list(loader)


def test_bad_policy_or_pair_mode_is_a_data_error(msvd, tokenize):
    ann = _split(msvd)
    with pytest.raises(DataError, match="missing_video"):
        VideoDataset(ann, FrameSampler(SPEC), missing_video="ignore")
    with pytest.raises(DataError, match="pairs"):
        PairDataset(ann, FrameSampler(SPEC), tokenize, pairs="some")
