"""The toy CLIP's pretraining: fresh pairs from a stream, held-out evaluation, the cache."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from calm.clock import cpu_seconds
from calm.config import BackboneConfig
from calm.data.synthetic import SCALES, Difficulty, generate
from calm.data.synthetic.pretrain_pairs import (
    ATTRIBUTE_CLASSES,
    HELD_OUT,
    NO_LABEL,
    TRAINING,
    PretrainStream,
    attribute_labels,
    group_theme,
    pretrain_pair,
)
from calm.model.backbone import build_backbone
from calm.toy_clip.pretrain import PretrainConfig, cache_key, pretrain_clip, pretrained_clip


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
    image, text, labels = stream[2]
    again, again_text, again_labels = PretrainStream(10, seed=3, scale="tiny")[6]
    assert image.dtype == torch.uint8 and image.shape == (3, scale.size, scale.size)
    assert torch.equal(image, again) and text == again_text and torch.equal(labels, again_labels)
    _, _, meta = pretrain_pair(3, 6, scale, Difficulty(), TRAINING)
    assert labels.tolist() == attribute_labels(meta["attributes"])
    with pytest.raises(IndexError):
        stream[10]


def test_attribute_labels_name_what_a_clip_shows():
    clip = {"background": "night", "second": None,
            "main": {"shape": "star", "colour": "red", "size": "large", "motion": "left"}}
    labels = dict(zip(ATTRIBUTE_CLASSES, attribute_labels(clip)))
    assert ATTRIBUTE_CLASSES["shape"][labels["shape"]] == "star"
    assert ATTRIBUTE_CLASSES["motion"][labels["motion"]] == "left"
    assert ATTRIBUTE_CLASSES["objects"][labels["objects"]] == "one"
    assert labels["second_shape"] == labels["second_colour"] == NO_LABEL


def test_grouped_pairs_share_background_and_colour():
    stream = PretrainStream(16, seed=3, scale="tiny", group=4)
    keys = list(ATTRIBUTE_CLASSES)
    for start in (0, 4, 8, 12):
        theme = group_theme(3, TRAINING, start // 4)
        for i in range(start, start + 4):
            labels = dict(zip(keys, stream[i][2].tolist()))
            assert ATTRIBUTE_CLASSES["background"][labels["background"]] == theme["background"]
            assert ATTRIBUTE_CLASSES["colour"][labels["colour"]] == theme["colour"]


def test_pretraining_writes_weights_and_a_held_out_report(synth, tmp_path):
    cfg = PretrainConfig(model="calm-micro", steps=2, batch_size=8, workers=0, eval_pairs=24,
                         scale="tiny", aux_weight=1.0)
    wall, cpu = time.perf_counter(), cpu_seconds()
    info = pretrain_clip(synth, tmp_path / "clip.safetensors", cfg, progress=False)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    report = json.loads((tmp_path / "clip.json").read_text())
    assert report["distinct_pairs"] == report["pairs_seen"] == 16
    held = report["heldout"]
    assert held["pairs"] == 24 and held["chance_R@1"] == pytest.approx(100 / 24, abs=0.01)
    assert 0 < held["oracle_t2i_R@1"] <= 100
    for key in ("anchor_map_image", "anchor_map_caption"):
        assert set(held[key]) == {"mAP", "n", "chance"} and 0 < held[key]["mAP"] <= 100
    assert info["heldout"] == held
    # the held-out numbers by hand, from the weights file as fine-tuning loads it and the first
    # 24 pairs of pretrain/: ranks counted per caption (row) and per image (column)
    backbone = build_backbone(BackboneConfig(name="calm-micro",
                                             checkpoint=str(tmp_path / "clip.safetensors"))).eval()
    images = np.load(synth / "pretrain/images.npy")[:24]
    captions = json.loads((synth / "pretrain/captions.json").read_text())[:24]
    pre = backbone.preprocess
    assert images.shape[1:3] == (pre.image_size, pre.image_size)  # no resize at the tiny scale
    pixels = (torch.from_numpy(images).float() / 255 - torch.tensor(pre.mean)) / torch.tensor(pre.std)
    with torch.no_grad():
        img = backbone.clip.encode_image(pixels.permute(0, 3, 1, 2))
        txt = backbone.encode_text(backbone.tokenize(captions))
    sim = (txt / txt.norm(dim=1, keepdim=True)) @ (img / img.norm(dim=1, keepdim=True)).T
    true = sim.diagonal()
    assert len(set(sim.flatten().tolist())) == sim.numel()  # no ties: plain ranks are exact
    t2i = 1 + (sim > true[:, None]).sum(dim=1)
    i2t = 1 + (sim > true[None, :]).sum(dim=0)
    for name, ranks in (("t2i", t2i), ("i2t", i2t)):
        assert held[name]["R@1"] == pytest.approx(100 * float((ranks == 1).float().mean()), abs=0.01)
        assert held[name]["R@5"] == pytest.approx(100 * float((ranks <= 5).float().mean()), abs=0.01)
        assert held[name]["MdR"] == pytest.approx(float(np.median(ranks.numpy())), abs=0.01)
    # the phase clock: some CPU was spent training, no more than the whole call took
    assert 0 < info["train_cpu_s"] <= cpu + 0.1 and 0 < info["train_wall_s"] <= wall + 0.1
    assert report["final_aux_loss"] > 0 and len(report["loss_curve"]) == 1


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
