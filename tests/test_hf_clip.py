"""Hugging Face CLIPModel folders (`checkpoint_format: hf`) read into open_clip: same features."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from calm.config import ExperimentConfig, from_dict
from calm.config.schema import BackboneConfig
from calm.model.backbone import build_backbone
from calm.model.clip_weights import CheckpointError

transformers = pytest.importorskip("transformers")

TEXTS = ["a dog runs on the beach", "x", "two cats sleep under a warm red blanket today"]


def hf_clip(act: str = "quick_gelu", eos: int = 49407, eps: float = 1e-5):
    """A small random transformers CLIPModel (the CLIP BPE vocabulary, 16 text positions)."""
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=80, num_attention_heads=2,
                         num_hidden_layers=2, max_position_embeddings=16, vocab_size=49408,
                         hidden_act=act, eos_token_id=eos, layer_norm_eps=eps),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_attention_heads=3,
                           num_hidden_layers=2, image_size=32, patch_size=8, hidden_act=act,
                           layer_norm_eps=eps),
        projection_dim=24,
    )
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():  # random LayerNorm affine parts, so a swapped norm cannot pass
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _features(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def assert_same_features(hf, backbone) -> None:
    images = torch.randn(4, 3, 32, 32)
    tokens = backbone.tokenize(TEXTS)
    with torch.no_grad():
        want_img = _features(hf.get_image_features(pixel_values=images))
        want_txt = _features(hf.get_text_features(input_ids=tokens))
        got_img = backbone.encode_frames(images[None])[0]
        got_txt = backbone.encode_text(tokens)
    assert (got_img - want_img).abs().max() <= 1e-4
    assert (got_txt - want_txt).abs().max() <= 1e-4
    assert torch.allclose(backbone.logit_scale.detach(), hf.logit_scale.detach())


@pytest.mark.parametrize("act, eos, eps", [("quick_gelu", 49407, 1e-5), ("gelu", 2, 1e-6)])
def test_hf_folder_gives_the_same_features_as_transformers(tmp_path, act, eos, eps):
    hf = hf_clip(act, eos, eps)
    hf.save_pretrained(tmp_path / "clip")
    backbone = build_backbone(BackboneConfig(checkpoint=str(tmp_path / "clip"),
                                             checkpoint_format="hf")).eval()
    assert backbone.quick_gelu == (act == "quick_gelu")
    assert backbone.clip.text_pool_type == ("argmax" if eos == 2 else "eos")
    assert backbone.context_length == 16 and backbone.embed_dim == 24
    assert backbone.clip.ln_final.eps == eps and backbone.clip.visual.ln_post.eps == eps
    assert_same_features(hf, backbone)


def test_auto_format_and_pytorch_model_bin(tmp_path):
    hf = hf_clip()
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text(hf.config.to_json_string())
    torch.save(hf.state_dict(), folder / "pytorch_model.bin")
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "crop_size": 32}))
    backbone = build_backbone(BackboneConfig(checkpoint=str(folder))).eval()  # format auto
    assert backbone.preprocess.mean == (0.5, 0.5, 0.5)
    assert backbone.preprocess.std == (0.25, 0.25, 0.25)
    assert backbone.preprocess.image_size == 32
    assert_same_features(hf, backbone)


def test_a_calm_checkpoint_of_an_hf_backbone_needs_no_folder(tmp_path):
    from calm.engine.checkpoint import load_model, save_model
    from calm.engine.models import model_from_config

    hf = hf_clip()
    hf.save_pretrained(tmp_path / "clip")
    cfg = from_dict(ExperimentConfig, {"model": {
        "backbone": {"name": "ViT-B-32", "checkpoint": str(tmp_path / "clip"),
                     "checkpoint_format": "hf"},
        "fusion": {"name": "meanP"}, "anchors": {"labels": "coco"}, "alignment": {"name": "kl"}}})
    model, cfg, _ = model_from_config(cfg)
    save_model(tmp_path / "calm.safetensors", model, cfg)
    shutil.rmtree(tmp_path / "clip")
    loaded, stored, _ = load_model(tmp_path / "calm.safetensors")
    assert stored.model.backbone.checkpoint is None
    assert stored.model.backbone.architecture["model_cfg"]["embed_dim"] == 24
    assert_same_features(hf, loaded.backbone.eval())


def test_missing_folder_and_files_say_what_to_pass(tmp_path):
    def build(path):
        return build_backbone(BackboneConfig(checkpoint=str(path), checkpoint_format="hf"))

    with pytest.raises(CheckpointError, match="does not exist.*save_pretrained"):
        build(tmp_path / "nope")
    folder = tmp_path / "clip"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="no config.json.*checkpoint_format=hf"):
        build(folder)
    hf = hf_clip()
    (folder / "config.json").write_text(hf.config.to_json_string())
    with pytest.raises(CheckpointError, match="none of model.safetensors.*pytorch_model.bin"):
        build(folder)
    state = hf.state_dict()
    state.pop("visual_projection.weight")
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="missing weight 'visual_projection.weight'"):
        build(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type 'bert' is not 'clip'"):
        build(folder)


def test_weights_that_disagree_with_config_name_the_folder(tmp_path):
    hf = hf_clip()
    hf.save_pretrained(tmp_path / "clip")
    config = json.loads((tmp_path / "clip" / "config.json").read_text())
    config["projection_dim"] = 16
    (tmp_path / "clip" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match its config.json"):
        build_backbone(BackboneConfig(checkpoint=str(tmp_path / "clip"), checkpoint_format="hf"))
