"""Zero-shot models: `calm eval --config` without a checkpoint, and plain CLIP weights loaded as a
model (`open_model`, what `calm.load` builds on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import save_file

from calm.cli.main import main
from calm.config import ConfigError
from calm.data.synthetic import generate
from calm.engine.checkpoint import save_model
from calm.engine.drivers import evaluate_checkpoint, load_config
from calm.engine.models import is_calm_checkpoint, model_from_config, open_model
from calm.model.clip_weights import load_clip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("zeroshot")
    generate(root, scale="tiny", seed=6)
    return root / "msrvtt" / "annotations", root / "msrvtt" / "videos"


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:
    """Plain open_clip weights of the calm-micro architecture (what pretrain-clip writes)."""
    path = tmp_path_factory.mktemp("clip") / "micro.safetensors"
    save_file({k: v.contiguous() for k, v in load_clip("calm-micro").state_dict().items()}, path)
    return path


def _config(tmp_path: Path, backbone: dict, data: dict | None = None) -> Path:
    cfg = {"model": {"backbone": {"name": "calm-micro", **backbone}, "fusion": {"name": "meanP"},
                     "anchors": {"labels": "coco"}, "alignment": {"name": "kl"}},
           "data": {"num_frames": 4, "num_workers": 0, **(data or {})},
           "train": {"eval_batch_size": 8}}
    path = tmp_path / "zero.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["eval", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_config_without_checkpoint(data, tmp_path, clip_file, capsys):
    ann, vids = data
    cfg = _config(tmp_path, {"checkpoint": str(clip_file)},
                  {"dataset": "msrvtt", "annotations": str(ann), "videos": str(vids)})
    out = _run(capsys, "--config", cfg, "--split", "test")
    assert out["checkpoint"] == f"zero-shot:{clip_file}"
    assert out["zero_shot"]["fusion"] == "meanP" and not out["zero_shot"]["untrained_parts"]
    assert out["n_texts"] == 6 and 0 <= out["t2v"]["R@1"] <= 100
    # deterministic: the same weights through the plain-CLIP loader give the same numbers
    loaded = open_model(clip_file, name="calm-micro",
                                overrides=["data.num_frames=4", "data.num_workers=0"])
    assert loaded[2]["zero_shot"] and loaded[1].model.fusion.name == "meanP"
    again = evaluate_checkpoint("x", "msrvtt", ann, vids, "test", loaded=loaded)
    assert again["t2v"] == out["t2v"] and again["v2t"] == out["v2t"]
    # data flags and --set override the config's data section
    flagged = _run(capsys, "--config", cfg, "--dataset", "msrvtt", "--annotations", ann,
                   "--videos", vids, "--split", "val", "--set", "data.options.val_size=3")
    assert flagged["n_videos"] == 3 and flagged["split"] == "val"


def test_random_init_config_is_labelled_and_needs_data(data, tmp_path, capsys):
    ann, vids = data
    cfg = _config(tmp_path, {"checkpoint": None})
    out = _run(capsys, "--config", cfg, "--dataset", "msrvtt", "--annotations", ann,
               "--videos", vids)
    assert out["checkpoint"] == "zero-shot:calm-micro (random init)"
    assert main(["eval", "--config", str(cfg)]) == 2
    assert "data.annotations: required" in capsys.readouterr().err


def test_eval_refuses_both_or_neither_and_checkpoint_needs_data(tmp_path, capsys):
    cfg = _config(tmp_path, {})
    assert main(["eval", "--split", "test"]) == 2
    assert "give --checkpoint" in capsys.readouterr().err
    assert main(["eval", "--config", str(cfg), "--checkpoint", "x.safetensors"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", "x.safetensors", "--dataset", "msrvtt"]) == 2
    assert "--annotations, --videos" in capsys.readouterr().err


def test_a_required_backbone_checkpoint_is_never_silently_random(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"backbone": {"checkpoint": "???"}}}))
    with pytest.raises(ConfigError, match="model.backbone.checkpoint: required"):
        load_config(path)
    cfg = load_config(_config(tmp_path, {"checkpoint": str(tmp_path / "missing.pt")}))
    with pytest.raises(ConfigError, match="model.backbone.checkpoint.*does not exist"):
        model_from_config(cfg)


def test_open_model_tells_calm_checkpoints_from_clip_weights(tmp_path, clip_file):
    assert not is_calm_checkpoint(clip_file)
    model, cfg, meta = open_model(clip_file, name="calm-micro")
    assert meta["zero_shot"] and model.anchors.labels and model.vae is None
    ckpt = save_model(tmp_path / "calm.safetensors", model, cfg, {"step": 7})
    assert is_calm_checkpoint(ckpt)
    again, _, meta = open_model(ckpt)
    assert meta == {"step": 7} and again.anchors.labels == model.anchors.labels
    with pytest.raises(FileNotFoundError, match="calm checkpoint.*CLIP weights"):
        open_model(tmp_path / "nothing.pt")


def test_calm_load_gives_a_zero_shot_model_from_plain_clip_weights(tmp_path, clip_file):
    import calm
    from tests.videos import moving_image, write_clip

    video = write_clip(tmp_path / "v.mp4", num_frames=8, width=40, height=32,
                       frame_fn=lambda k, w, h: moving_image(k, w, h))
    model = calm.load(clip_file, name="calm-micro")
    videos = model.encode_videos([video])
    top = model.anchors_of(videos, k=3)
    assert len(top) == 1 and len(top[0]) == 3 and top[0][0][0] in model.model.anchors.labels
    assert model.score(["a red circle"], videos).shape == (1, 1)
    with pytest.raises(calm.CapabilityError, match="VAE"):
        model.uncertainty(videos, signal="sigma")
    # the default signal is the retrieval's own top-1 probability: a zero-shot model has it
    assert model.uncertainty(videos, texts=["a red circle", "a blue box"]).shape == (1,)
