"""Parameter counts: CALM's overhead at ViT-B/32 size, and `calm model-info` on the command line."""

from __future__ import annotations

import json

import pytest
import torch

from calm.cli.main import main
from calm.config import AlignmentConfig, ModelConfig, from_dict
from calm.model.core import CoreParts
from calm.model.info import count, parameter_counts
from calm.model.losses import build_alignment
from calm.model.retrieval import CALM

CLIP_VIT_B_32 = 151_277_313  # open_clip ViT-B-32 (= OpenAI CLIP ViT-B/32) parameters
XPOOL_POOLING = 1_316_352  # X-Pool's attention pooling at D = 512
BASELINE_TOTAL = 152_593_665  # the paper's 152.6M baseline
CALM_EXTRA = 497_310  # anchors (157 x 512 offsets + scale) and the VAE


@pytest.fixture(scope="module")
def vit_b_32():
    """The default config (ViT-B-32, xpool, Charades, VAE d=256), built once."""
    torch.manual_seed(0)
    return CALM.from_config(ModelConfig())


def test_vit_b_32_dimensions(vit_b_32):
    model = vit_b_32
    assert model.anchors.num_anchors == 157  # K
    assert model.backbone.embed_dim == 512  # D
    assert model.anchors.offset.shape == (157, 512)
    assert model.vae.latent_dim == 256  # d
    assert model.backbone.preprocess.image_size == 224


def test_vit_b_32_parameter_budget(vit_b_32):
    counts = parameter_counts(vit_b_32)
    assert counts["backbone"] == CLIP_VIT_B_32
    assert counts["fusion"] == XPOOL_POOLING
    assert counts["calm_extra"] == counts["anchors"] + counts["vae"] == CALM_EXTRA
    assert counts["total"] == counts["backbone"] + counts["fusion"] + counts["calm_extra"]
    assert counts["trainable"] == counts["total"] - 1  # the fixed anchor softmax scale

    # the same baseline: alignment `none` over the same backbone and fusion head
    baseline = CALM(CoreParts(vit_b_32.backbone, build_alignment(AlignmentConfig(name="none")),
                               None, None), vit_b_32.fusion)
    base_counts = parameter_counts(baseline)
    assert base_counts["total"] == BASELINE_TOTAL
    assert base_counts["anchors"] == base_counts["vae"] == base_counts["calm_extra"] == 0
    extra = counts["total"] - base_counts["total"]
    assert extra == CALM_EXTRA
    assert extra <= 600_000  # the paper: +0.5M (152.6M -> 153.1M)
    assert round(counts["total"] / 1e6, 1) == 153.1
    assert round(base_counts["total"] / 1e6, 1) == 152.6


def test_count_helper():
    assert count(None) == 0
    assert count(torch.nn.Linear(3, 2)) == 8


def _write_config(tmp_path, alignment="vae"):
    path = tmp_path / "micro.yaml"
    path.write_text(
        "model:\n"
        "  backbone:\n    name: calm-micro\n"
        "  anchors:\n    labels: coco\n"
        f"  alignment:\n    name: {alignment}\n"
        "  vae:\n    latent_dim: 16\n    encoder_hidden: [32]\n    decoder_hidden: [24]\n"
    )
    return path


def test_cli_prints_json_counts(tmp_path, capsys):
    path = _write_config(tmp_path)
    assert main(["model-info", "--config", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("backbone", "fusion", "anchors", "vae", "calm_extra", "total", "trainable"):
        assert isinstance(data[key], int), key
    assert data["total"] == data["backbone"] + data["fusion"] + data["anchors"] + data["vae"]
    # the numbers are those of the model the config describes
    k, d_model, d_latent = 91, 64, 16
    assert data["anchors"] == k * d_model + 1
    vae = (k * 32 + 32) + (32 * 2 * d_latent + 2 * d_latent) + (d_latent * 24 + 24) + (24 * k + k)
    assert data["vae"] == vae
    cfg = from_dict(ModelConfig, {"backbone": {"name": "calm-micro"}, "anchors": {"labels": "coco"}})
    assert data["backbone"] == parameter_counts(CALM.from_config(cfg))["backbone"]
    assert data["config"]["backbone"] == "calm-micro"
    assert data["config"]["num_anchors"] == k
    assert data["config"]["latent_dim"] == d_latent
    assert data["config"]["alignment"] == "vae"


def test_cli_overrides(tmp_path, capsys):
    path = _write_config(tmp_path)
    argv = ["model-info", "--config", str(path), "--set", "model.alignment.name=none",
            "--set", "model.fusion.name=meanP"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["anchors"] == data["vae"] == data["calm_extra"] == data["fusion"] == 0
    assert data["total"] == data["backbone"]
    assert data["config"]["fusion"] == "meanP" and data["config"]["num_anchors"] == 0


def test_cli_bad_key_is_reported(tmp_path, capsys):
    path = _write_config(tmp_path)
    assert main(["model-info", "--config", str(path), "--set", "model.vae.latnet_dim=8"]) == 2
    captured = capsys.readouterr()
    assert "model.vae.latnet_dim" in captured.err
    assert captured.out == ""
