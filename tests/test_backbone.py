"""The open_clip backbone wrapper: text/frames encoding, preprocess, freezing, checkpoint loading."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, build_model_from_openai_state_dict
from safetensors.torch import save_file

from calm.config import BackboneConfig
from calm.model.backbone import build_backbone, trim_padding
from calm.model.clip_weights import CheckpointError, register_calm_configs

EOT = 49407
SOT = 49406

# An architecture OpenAI-format weights can be rebuilt into: heads = width // 64 as OpenAI's
# builder assumes, and no quick_gelu in the config so calm has to choose it for OpenAI weights.
OPENAI_TEST_NAME = "calm-test-openai64"
OPENAI_TEST_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(name="calm-micro")).eval()


@pytest.fixture(scope="module")
def openai_arch(tmp_path_factory):
    """Registers a test architecture with open_clip; returns its name."""
    folder = tmp_path_factory.mktemp("openclip_cfg")
    (folder / f"{OPENAI_TEST_NAME}.json").write_text(json.dumps(OPENAI_TEST_CFG))
    register_calm_configs()
    open_clip.add_model_config(folder)
    return OPENAI_TEST_NAME


@pytest.fixture(scope="module")
def openai_source(openai_arch):
    """An OpenAI-style CLIP (QuickGELU, OpenAI key names) built by open_clip's OpenAI builder."""
    torch.manual_seed(1)
    tiny = CLIP(
        embed_dim=64,
        vision_cfg=CLIPVisionCfg(layers=2, width=64, patch_size=8, image_size=32, head_width=64),
        text_cfg=CLIPTextCfg(context_length=32, vocab_size=49408, width=64, heads=1, layers=2),
        quick_gelu=True,
    )
    with torch.no_grad():  # make every weight non-trivial (LayerNorms start at 1/0)
        for p in tiny.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model = build_model_from_openai_state_dict(tiny.state_dict(), quick_gelu=True, cast_dtype=None)
    return model.float().eval()


def _inputs(image_size=32, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, image_size, image_size, generator=g)
    tokens = torch.zeros(n, 32, dtype=torch.long)
    for i, length in enumerate([5, 12, 30][:n]):
        tokens[i, 0] = SOT
        tokens[i, 1 : length - 1] = torch.randint(1, 49000, (length - 2,), generator=g)
        tokens[i, length - 1] = EOT
    return images, tokens


def _assert_same_features(clip_a, clip_b, image_size=32, atol=1e-5):
    images, tokens = _inputs(image_size)
    with torch.no_grad():
        torch.testing.assert_close(clip_a.encode_image(images), clip_b.encode_image(images),
                                   atol=atol, rtol=0)
        torch.testing.assert_close(clip_a.encode_text(tokens), clip_b.encode_text(tokens),
                                   atol=atol, rtol=0)


def _assert_different_features(clip_a, clip_b, image_size=32):
    images, tokens = _inputs(image_size)
    with torch.no_grad():
        diff = (clip_a.encode_image(images) - clip_b.encode_image(images)).abs().max()
    assert diff > 1e-3


# --------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------


def test_encode_text_matches_open_clip_on_real_captions(micro):
    captions = ["a man", "a woman is slicing a tomato in a small kitchen", "dog"]
    tokens = micro.tokenize(captions)
    assert tokens.shape == (3, 32)
    assert trim_padding(tokens).shape[1] < 32  # the wrapper really runs on fewer positions
    with torch.no_grad():
        ours = micro.encode_text(tokens)
        ref = micro.clip.encode_text(tokens)
    assert ours.shape == (3, micro.embed_dim)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # and passing the already-trimmed tokens gives the same answer
    with torch.no_grad():
        torch.testing.assert_close(micro.encode_text(trim_padding(tokens)), ref, atol=1e-5, rtol=0)


@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(2, 32), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_encode_text_trimmed_equals_full_property(micro, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), 32, dtype=torch.long)
    for i, n in enumerate(lengths):
        tokens[i, 0] = SOT
        tokens[i, 1 : n - 1] = torch.randint(1, SOT, (n - 2,), generator=g)
        tokens[i, n - 1] = EOT
    with torch.no_grad():
        torch.testing.assert_close(
            micro.encode_text(tokens), micro.clip.encode_text(tokens), atol=1e-5, rtol=0
        )


def test_trim_padding():
    tokens = torch.tensor([[5, 6, 0, 0, 0], [7, 0, 8, 0, 0]])
    assert trim_padding(tokens).tolist() == [[5, 6, 0], [7, 0, 8]]
    assert trim_padding(torch.zeros(2, 4, dtype=torch.long)).shape == (2, 1)


def test_tokenize_respects_context_length(micro):
    assert micro.tokenize(["a b c"]).shape == (1, 32)
    assert micro.tokenize(["a b c"], context_length=8).shape == (1, 8)
    assert micro.tokenize(["a b c"], context_length=500).shape == (1, 32)  # never beyond the model


# --------------------------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------------------------


def test_encode_frames_with_mask(micro):
    frames = torch.randn(3, 4, 3, 32, 32)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        feats = micro.encode_frames(frames, mask)
        real = micro.clip.encode_image(frames[mask])
        full = micro.encode_frames(frames)
    assert feats.shape == (3, 4, micro.embed_dim)
    torch.testing.assert_close(feats[mask], real, atol=1e-5, rtol=0)
    assert torch.all(feats[~mask] == 0)
    # without a mask every frame is encoded, and real frames agree
    torch.testing.assert_close(full[mask], feats[mask], atol=1e-5, rtol=0)
    assert full[~mask].abs().sum() > 0


def test_encode_frames_ignores_padded_pixels(micro):
    frames = torch.randn(2, 3, 3, 32, 32)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    other = frames.clone()
    other[~mask] = torch.randn_like(other[~mask]) * 50
    with torch.no_grad():
        torch.testing.assert_close(micro.encode_frames(frames, mask),
                                   micro.encode_frames(other, mask))


def test_encode_frames_gradient_flows_only_to_real_frames(micro):
    frames = torch.randn(1, 3, 3, 32, 32, requires_grad=True)
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    micro.encode_frames(frames, mask).sum().backward()
    assert frames.grad[0, :2].abs().sum() > 0
    assert torch.all(frames.grad[0, 2] == 0)


# --------------------------------------------------------------------------------------------
# preprocess settings, freezing
# --------------------------------------------------------------------------------------------


def test_preprocess_settings(micro):
    pre = micro.preprocess
    assert pre.image_size == 32
    assert pre.context_length == 32 == micro.context_length
    assert pre.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert pre.std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    assert micro.embed_dim == 64


def test_preprocess_follows_architecture():
    tiny = build_backbone(BackboneConfig(name="calm-tiny"))
    assert tiny.preprocess.image_size == 64
    assert tiny.embed_dim == 128


def _frozen_names(backbone):
    return {n for n, p in backbone.clip.named_parameters() if not p.requires_grad}


def test_freeze_options(micro):
    names = {n for n, _ in micro.clip.named_parameters()}
    visual = {n for n in names if n.startswith("visual.")}
    text = names - visual - {"logit_scale"}
    assert visual and text and "logit_scale" in names
    try:
        micro.freeze("vision")
        assert _frozen_names(micro) == visual
        micro.freeze("text")
        assert _frozen_names(micro) == text
        micro.freeze("all")
        assert _frozen_names(micro) == names
        micro.freeze("none")
        assert _frozen_names(micro) == set()
    finally:
        micro.freeze("none")


def test_freeze_from_config():
    backbone = build_backbone(BackboneConfig(name="calm-micro", freeze="vision"))
    params = dict(backbone.clip.named_parameters())
    assert not params["visual.conv1.weight"].requires_grad
    assert params["token_embedding.weight"].requires_grad
    assert params["logit_scale"].requires_grad


def test_unknown_backbone_name():
    with pytest.raises(CheckpointError, match="calm-micro"):
        build_backbone(BackboneConfig(name="ViT-Q-99"))


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------


def test_missing_checkpoint_says_what_to_pass(tmp_path):
    missing = tmp_path / "ViT-B-32.pt"
    with pytest.raises(CheckpointError) as info:
        build_backbone(BackboneConfig(name="calm-micro", checkpoint=str(missing)))
    message = str(info.value)
    assert str(missing) in message
    assert "model.backbone.checkpoint" in message


@pytest.mark.parametrize("suffix, fmt", [(".pt", "auto"), (".safetensors", "auto"),
                                         (".bin", "open_clip"), (".pt", "openai")])
def test_corrupt_checkpoint_names_the_file(tmp_path, suffix, fmt):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"\x00\x01this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError) as info:
        build_backbone(BackboneConfig(name="calm-micro", checkpoint=str(path),
                                      checkpoint_format=fmt))
    assert str(path) in str(info.value)


def test_checkpoint_of_other_architecture_is_an_error(tmp_path, micro):
    path = tmp_path / "micro.pt"
    torch.save(micro.clip.state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        build_backbone(BackboneConfig(name="calm-tiny", checkpoint=str(path)))
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def trained_micro():
    """A calm-micro CLIP whose weights differ from any fresh random init."""
    torch.manual_seed(5)
    clip = open_clip.create_model("calm-micro", pretrained=None).float().eval()
    with torch.no_grad():
        for p in clip.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return clip


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_open_clip_state_dict_loads(tmp_path, trained_micro, suffix):
    path = tmp_path / f"micro{suffix}"
    state = {k: v.contiguous() for k, v in trained_micro.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = build_backbone(BackboneConfig(name="calm-micro", checkpoint=str(path))).eval()
    _assert_same_features(loaded.clip, trained_micro)
    fresh = build_backbone(BackboneConfig(name="calm-micro")).eval()
    _assert_different_features(fresh.clip, trained_micro)  # the comparison above means something


def test_openai_key_names_load_with_identical_features(tmp_path, openai_arch, openai_source):
    path = tmp_path / "openai_state.pt"
    torch.save(openai_source.state_dict(), path)
    cfg = BackboneConfig(name=openai_arch, checkpoint=str(path), checkpoint_format="openai")
    loaded = build_backbone(cfg).eval()
    assert loaded.quick_gelu is True
    _assert_same_features(loaded.clip, openai_source)
    # through the wrapper too
    _, tokens = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), openai_source.encode_text(tokens),
                                   atol=1e-5, rtol=0)
    # QuickGELU matters: the same weights in a GELU model give other features
    gelu = build_backbone(BackboneConfig(name=openai_arch, checkpoint=str(path),
                                         checkpoint_format="openai", quick_gelu=False)).eval()
    _assert_different_features(gelu.clip, openai_source)


def test_openai_fp32_state_dict_keeps_full_precision(tmp_path, openai_arch):
    """An fp32 OpenAI-keyed state dict (a fine-tuned CLIP) must not be rounded to fp16 on load."""
    torch.manual_seed(3)
    source = open_clip.create_model(openai_arch, pretrained=None, force_quick_gelu=True).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path / "finetuned.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = build_backbone(BackboneConfig(name=openai_arch, checkpoint=str(path),
                                           checkpoint_format="openai")).eval()
    for (name, a), b in zip(loaded.clip.state_dict().items(), source.state_dict().values()):
        assert a.dtype == torch.float32, name
        assert torch.equal(a, b), name
    _assert_same_features(loaded.clip, source, atol=1e-6)


def test_torchscript_archive_loads_with_auto_format(tmp_path, openai_arch, openai_source):
    images, tokens = _inputs()
    traced = torch.jit.trace_module(
        openai_source, inputs={"encode_image": (images,), "encode_text": (tokens,)}
    )
    path = tmp_path / "ViT-test.pt"
    torch.jit.save(traced, str(path))
    loaded = build_backbone(BackboneConfig(name=openai_arch, checkpoint=str(path))).eval()
    assert loaded.quick_gelu is True  # auto: a TorchScript archive is OpenAI weights
    _assert_same_features(loaded.clip, openai_source)


def test_openai_format_rejects_a_non_clip_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as info:
        build_backbone(BackboneConfig(name="calm-micro", checkpoint=str(path),
                                      checkpoint_format="openai"))
    assert str(path) in str(info.value)
