"""The toy CLIP's pretraining: fresh pairs from a stream, held-out evaluation, the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from calm.data.synthetic import SCALES, Difficulty, generate
from calm.data.synthetic.pretrain_pairs import HELD_OUT, TRAINING, PretrainStream, pretrain_pair
from calm.demo.pretrain import PretrainConfig, cache_key, pretrain_clip, pretrained_clip


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("toyclip")
    generate(root, scale="tiny", seed=3)
    return root


def test_the_held_out_stream_is_the_written_split(synth):
    images = np.load(synth / "pretrain/images.npy")
    captions = json.loads((synth / "pretrain/captions.json").read_text())
    for i in (0, 5, len(captions) - 1):
        image, text, meta = pretrain_pair(3, i, SCALES["tiny"], Difficulty(), HELD_OUT)
        assert np.array_equal(image, images[i]) and text == captions[i]
        assert set(meta) == {"style", "time", "attributes", "mention"}


def test_the_training_stream_is_fresh_and_deterministic():
    scale = SCALES["tiny"]
    held = [pretrain_pair(3, i, scale, Difficulty(), HELD_OUT)[0] for i in range(8)]
    train = [pretrain_pair(3, i, scale, Difficulty(), TRAINING)[0] for i in range(8)]
    assert not any(np.array_equal(h, t) for h in held for t in train)
    stream = PretrainStream(10, seed=3, scale="tiny", start=4)
    image, text = stream[2]
    again, again_text = PretrainStream(10, seed=3, scale="tiny")[6]
    assert image.dtype == torch.uint8 and image.shape == (3, scale.size, scale.size)
    assert torch.equal(image, again) and text == again_text
    with pytest.raises(IndexError):
        stream[10]


def test_pretraining_writes_weights_and_a_held_out_report(synth, tmp_path):
    cfg = PretrainConfig(model="calm-micro", steps=2, batch_size=8, workers=0, eval_pairs=24,
                         scale="tiny")
    info = pretrain_clip(synth, tmp_path / "clip.safetensors", cfg, progress=False)
    assert (tmp_path / "clip.safetensors").is_file()
    report = json.loads((tmp_path / "clip.json").read_text())
    assert report["distinct_pairs"] == report["pairs_seen"] == 16
    held = report["heldout"]
    assert held["pairs"] == 24 and held["chance_R@1"] == pytest.approx(100 / 24, abs=0.01)
    assert 0 <= held["t2i"]["R@1"] <= 100 and 0 < held["oracle_t2i_R@1"] <= 100
    for key in ("anchor_map_image", "anchor_map_caption"):
        assert set(held[key]) == {"mAP", "n", "chance"} and 0 < held[key]["mAP"] <= 100
    assert info["train_cpu_s"] >= 0 and info["heldout"] == held


def test_the_cache_reuses_a_stream_clip_for_any_benchmark_folder(synth, tmp_path):
    other = tmp_path / "other"
    generate(other, scale="tiny", seed=4)
    cfg = PretrainConfig(model="calm-micro", steps=1, batch_size=4, workers=0, eval_pairs=8,
                         scale="tiny")
    assert cache_key(synth, cfg) == cache_key(other, cfg)
    assert cache_key(synth, cfg) != cache_key(synth, PretrainConfig(model="calm-micro", steps=2))
    split = PretrainConfig(model="calm-micro", steps=1, batch_size=4, source="split")
    assert cache_key(synth, split) != cache_key(other, split)
    path, first = pretrained_clip(synth, cfg, cache_dir=tmp_path / "cache", progress=False)
    again, second = pretrained_clip(other, cfg, cache_dir=tmp_path / "cache", progress=False)
    assert again == path and not first["cached"] and second["cached"]
    assert second["heldout"] == first["heldout"]


def test_the_fixed_split_source_still_trains(synth, tmp_path):
    cfg = PretrainConfig(model="calm-micro", steps=2, batch_size=8, source="split", eval_pairs=0)
    info = pretrain_clip(synth, tmp_path / "split.safetensors", cfg, progress=False)
    assert info["distinct_pairs"] == SCALES["tiny"].pretrain and info["heldout"] == {}
    with pytest.raises(ValueError, match="source"):
        PretrainConfig(source="web")
