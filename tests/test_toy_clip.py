"""The toy CLIP's pretraining: fresh pairs from a stream, held-out evaluation, the cache."""

from __future__ import annotations

import contextlib
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
from calm.toy_clip.pretrain import (
    PretrainConfig,
    cache_key,
    machine_plan,
    pretrain_clip,
    pretrained_clip,
)


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
    # the phase clock: no more than the whole call took (both are rounded to 0.1 s, so two steps
    # of the micro model on a fast core can read 0.0)
    assert 0 <= info["train_cpu_s"] <= cpu + 0.1 and 0 <= info["train_wall_s"] <= wall + 0.1
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


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_pretraining_gives_the_same_weights_with_0_and_2_workers(synth, tmp_path):
    """Step n's batch is pairs n*B..(n+1)*B-1 of the stream whoever renders them, and torch's
    thread count does not follow the worker count: the weights are bit-identical."""
    runs = {}
    for workers in (0, 2):
        cfg = PretrainConfig(steps=3, batch_size=16, workers=workers, eval_pairs=0, scale="tiny",
                             device="cpu")
        info = pretrain_clip(synth, tmp_path / f"w{workers}.safetensors", cfg, progress=False)
        assert info["machine"]["workers"] == workers
        runs[workers] = (info, _weights(tmp_path / f"w{workers}.safetensors"))
    (info0, w0), (info2, w2) = runs[0], runs[2]
    assert info0["machine"]["threads"] == info2["machine"]["threads"]
    assert info0["loss_curve"] == info2["loss_curve"] and info0["first_loss"] == info2["first_loss"]
    assert w0.keys() == w2.keys() and all(torch.equal(w0[k], w2[k]) for k in w0)
    assert not torch.equal(w0["token_embedding.weight"],
                           load_clip_weights("calm-rn16-32")["token_embedding.weight"])
    cfg0 = PretrainConfig(workers=0)
    assert cache_key(synth, cfg0) == cache_key(synth, PretrainConfig(workers=2))  # one cache entry
    assert cache_key(synth, cfg0) != cache_key(synth, PretrainConfig(workers=0, lr=2e-3))


def load_clip_weights(model: str) -> dict[str, torch.Tensor]:
    """The weights pretraining starts from (seeded as pretrain_clip seeds them)."""
    from calm.engine.runtime import seed_everything
    from calm.toy_clip.pretrain import build_backbone

    seed_everything(0)
    return {k: v.clone() for k, v in build_backbone(model).clip.state_dict().items()}


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 16, 64])
def test_the_machine_plan_does_not_oversubscribe_and_ignores_the_worker_count(cores):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    workers, threads = machine_plan(PretrainConfig(), cpu, cores)
    # renderers block on a full queue: one beyond the free cores fills the model's idle time
    assert threads + workers <= cores + 1 and threads == max(1, cores // 2) and workers >= 1
    for chosen in range(workers + 1):  # up to the automatic count: the same thread count
        assert machine_plan(PretrainConfig(workers=chosen), cpu, cores) == (chosen, threads)
    many, few = machine_plan(PretrainConfig(workers=workers + 3), cpu, cores)
    assert many == workers + 3 and few == max(1, threads - 3)  # more workers: fewer threads
    assert machine_plan(PretrainConfig(), cuda, cores) == (max(1, cores - 1), 1)  # GPU: 1 feeder
    assert machine_plan(PretrainConfig(source="split"), cpu, cores) == (0, cores)
    with pytest.raises(ValueError, match="workers"):
        PretrainConfig(workers="many")


def test_training_the_used_token_rows_is_training_the_table():
    """A compact table of the tokens seen so far, trained by AdamW, ends where training the
    whole 49,408-row table would: untouched rows stay exactly as they were."""
    from calm.toy_clip.token_rows import used_token_rows

    torch.manual_seed(0)
    batches = [torch.randint(0, 300, (8, 6)), torch.randint(200, 500, (8, 6)),
               torch.randint(0, 50, (8, 6))]
    target = torch.randn(8, 6, 16)

    def train(compact: bool) -> torch.Tensor:
        torch.manual_seed(1)
        clip = torch.nn.Module()
        clip.token_embedding = torch.nn.Embedding(49408, 16)
        with used_token_rows(clip) if compact else contextlib.nullcontext() as rows:
            params = [p for p in clip.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.0, fused=True)
            for tokens in batches:
                if rows is not None:
                    rows.admit(tokens)
                loss = (clip.token_embedding(tokens) - target).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        assert clip.token_embedding.weight.requires_grad
        return clip.token_embedding.weight.detach()

    full, compact = train(False), train(True)
    torch.manual_seed(1)
    initial = torch.nn.Embedding(49408, 16).weight.detach()
    used = torch.unique(torch.cat([b.flatten() for b in batches]))
    unused = torch.ones(49408, dtype=torch.bool)
    unused[used] = False
    assert torch.equal(compact[unused], initial[unused]) and torch.equal(full[unused], initial[unused])
    assert not torch.equal(compact[used], initial[used])
    torch.testing.assert_close(compact, full, rtol=0, atol=1e-6)
