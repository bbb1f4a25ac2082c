"""Class anchors: label sets, label files, prompts, refresh policies, offsets and scale."""

from __future__ import annotations

import math
from importlib import resources

import pytest
import torch

from calm.config import AnchorConfig, BackboneConfig, ConfigError
from calm.model.anchors import (
    AnchorBank,
    build_anchors,
    charades_labels,
    coco_labels,
    load_labels,
    parse_charades,
)
from calm.model.backbone import build_backbone


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(name="calm-micro")).eval()


def _text_params(backbone):
    return {n: p for n, p in backbone.clip.named_parameters()
            if not n.startswith("visual.") and n != "logit_scale"}


def _grads_of(loss, params):
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)))


class CountingEncoder:
    def __init__(self, backbone):
        self.backbone = backbone
        self.calls = 0

    def __call__(self, tokens):
        self.calls += 1
        return self.backbone.encode_text(tokens)


# --------------------------------------------------------------------------------------------
# label sets
# --------------------------------------------------------------------------------------------


def test_charades_package_file():
    text = resources.files("calm.model").joinpath("labels/charades.txt").read_text("utf-8")
    entries = parse_charades(text)
    ids = [cid for cid, _ in entries]
    assert len(entries) == 157
    assert len(set(ids)) == 157
    assert set(ids) == {f"c{i:03d}" for i in range(157)}
    assert dict(entries)["c002"] == "Taking some clothes from somewhere"
    assert all(label and not label[0].isspace() for _, label in entries)
    labels = charades_labels()
    assert labels == [label for _, label in entries]
    assert len(set(labels)) == 157
    assert load_labels("charades") == labels


def test_parse_charades_rejects_duplicates_and_bad_lines():
    with pytest.raises(ValueError, match="duplicate id c001"):
        parse_charades("c000 Holding a cup\nc001 Drinking\nc001 Eating\n")
    with pytest.raises(ValueError, match="line 2"):
        parse_charades("c000 Holding a cup\nHolding a cup\n")
    assert parse_charades("\nc007 Sitting\n\n") == [("c007", "Sitting")]


def test_coco_set():
    labels = coco_labels()
    assert len(labels) == 91
    assert len(set(labels)) == 91
    assert labels[0] == "person"
    assert load_labels("coco") == labels


def test_the_vocabulary_ablation_sets():
    """Issue 20's anchor vocabularies: COCO 2017's 80 annotated categories and ImageNet-1k's
    1,000 class names, each label its own."""
    coco80 = load_labels("coco80")
    assert len(coco80) == len(set(coco80)) == 80
    assert "street sign" not in coco80 and "toothbrush" in coco80 and "person" in coco80
    imagenet = load_labels("imagenet1k")
    assert len(imagenet) == len(set(imagenet)) == 1000
    assert imagenet[0] == "tench" and imagenet[-1] == "toilet paper"
    assert sum("(class " in label for label in imagenet) == 2  # the two repeated names


def test_label_file_path(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("# my classes\ncooking\n\n  dancing  \nplaying guitar\n")
    assert load_labels(str(path)) == ["cooking", "dancing", "playing guitar"]


def test_charades_style_label_file(tmp_path):
    path = tmp_path / "charades_subset.txt"
    path.write_text("c010 Opening a door\nc011 Closing a door\n")
    assert load_labels(str(path)) == ["Opening a door", "Closing a door"]


@pytest.mark.parametrize("content, match", [
    ("", "no labels"),
    ("\n# only a comment\n\n", "no labels"),
    ("cooking\ndancing\ncooking\n", "duplicate"),
])
def test_bad_label_files(tmp_path, content, match):
    path = tmp_path / "labels.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        load_labels(str(path))
    assert str(path) in str(info.value)


def test_unknown_label_set_lists_choices(tmp_path):
    with pytest.raises(ValueError) as info:
        load_labels(str(tmp_path / "missing.txt"))
    assert "charades" in str(info.value) and "coco" in str(info.value)


# --------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------


def test_template_applied(backbone, tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cooking\ndancing\n")
    seen = []

    def tokenize(prompts):
        seen.extend(prompts)
        return backbone.tokenize(prompts)

    bank = build_anchors(AnchorConfig(labels=str(path), template="A video of {}."), tokenize, 64)
    assert seen == ["A video of cooking.", "A video of dancing."]
    assert bank.labels == ["cooking", "dancing"]
    assert torch.equal(bank.tokens, backbone.tokenize(seen))


def test_default_template_is_the_papers(backbone):
    seen = []

    def tokenize(prompts):
        seen.extend(prompts)
        return backbone.tokenize(prompts)

    bank = build_anchors(AnchorConfig(), tokenize, 64)
    assert bank.num_anchors == 157
    assert seen[2] == "The content of Taking some clothes from somewhere"
    assert bank.offset.shape == (157, 64)


def test_template_without_slot_is_a_config_error():
    with pytest.raises(ConfigError, match="template"):
        AnchorConfig(template="The content of")


# --------------------------------------------------------------------------------------------
# refresh policies and gradients
# --------------------------------------------------------------------------------------------


def _bank(backbone, **kwargs):
    cfg = AnchorConfig(labels="coco", **kwargs)
    return build_anchors(cfg, backbone.tokenize, backbone.embed_dim)


def test_step_refresh_gives_text_encoder_gradient(backbone):
    bank = _bank(backbone, refresh="step")
    params = _text_params(backbone)
    anchors = bank(backbone.encode_text)
    assert anchors.shape == (91, backbone.embed_dim)
    grads = _grads_of(anchors.sum(), params)
    assert grads["token_embedding.weight"] is not None
    assert grads["token_embedding.weight"].abs().sum() > 0
    assert grads["transformer.resblocks.0.attn.in_proj_weight"].abs().sum() > 0
    assert grads["text_projection"].abs().sum() > 0
    # vision never sees the anchors
    vis = [p for n, p in backbone.clip.named_parameters() if n.startswith("visual.")]
    assert all(g is None for g in torch.autograd.grad(
        bank(backbone.encode_text).sum(), vis, allow_unused=True))


def test_step_refresh_reencodes_every_call(backbone):
    bank = _bank(backbone, refresh="step")
    enc = CountingEncoder(backbone)
    bank(enc)
    bank(enc)
    assert enc.calls == 2


@pytest.mark.parametrize("refresh", ["epoch"])
def test_cached_refresh_gives_no_encoder_gradient(backbone, refresh):
    bank = _bank(backbone, refresh=refresh)
    params = _text_params(backbone)
    anchors = bank(backbone.encode_text)
    grads = _grads_of(anchors.sum(), {**params, "offset": bank.offset})
    assert all(grads[n] is None for n in params)
    assert grads["offset"] is not None and torch.all(grads["offset"] == 1)


@pytest.mark.parametrize("refresh", ["epoch"])
def test_cache_reused_until_invalidate(backbone, refresh):
    bank = _bank(backbone, refresh=refresh)
    enc = CountingEncoder(backbone)
    first = bank(enc).detach().clone()
    second = bank(enc)
    assert enc.calls == 1
    torch.testing.assert_close(first, second)
    # a changed encoder is not seen until the cache is invalidated
    proj = backbone.clip.text_projection
    saved = proj.detach().clone()
    try:
        with torch.no_grad():
            proj.mul_(2.0)
        torch.testing.assert_close(bank(enc).detach(), first)
        assert enc.calls == 1
        bank.invalidate()
        third = bank(enc).detach()
        assert enc.calls == 2
        torch.testing.assert_close(third, 2.0 * first, atol=1e-5, rtol=1e-5)  # offsets are zero
    finally:
        with torch.no_grad():
            proj.copy_(saved)


def test_cached_anchors_equal_fresh_encoding(backbone):
    cached = _bank(backbone, refresh="epoch")
    fresh = _bank(backbone, refresh="step")
    with torch.no_grad():
        torch.testing.assert_close(cached(backbone.encode_text), fresh(backbone.encode_text))
        torch.testing.assert_close(cached(backbone.encode_text),
                                   backbone.encode_text(cached.tokens))


def test_offset_is_added(backbone):
    bank = _bank(backbone, refresh="epoch")
    base = bank(backbone.encode_text).detach().clone()
    with torch.no_grad():
        bank.offset.fill_(0.5)
    torch.testing.assert_close(bank(backbone.encode_text).detach(), base + 0.5)


@pytest.mark.parametrize("learnable", [True, False])
def test_learnable_flag(backbone, learnable):
    bank = _bank(backbone, learnable=learnable)
    assert bank.offset.requires_grad is learnable
    assert torch.all(bank.offset == 0)
    trainable = {n for n, p in bank.named_parameters() if p.requires_grad}
    assert ("offset" in trainable) is learnable


@pytest.mark.parametrize("scale", [20.0, 100.0])
def test_a_fixed_scale_is_the_configured_one(backbone, scale):
    bank = _bank(backbone, scale=scale)
    assert float(bank.scale) == pytest.approx(scale)
    assert not bank.log_scale.requires_grad


def test_a_scale_beyond_clips_ceiling_is_refused():
    with pytest.raises(ConfigError, match="scale: at most 100"):
        AnchorConfig(scale=500.0)
    with pytest.raises(ConfigError, match="text_scale: at most 100"):
        AnchorConfig(text_scale=101.0)
    with pytest.raises(ConfigError, match=r"learned scale starts within \[1, 100\]"):
        AnchorConfig(scale=0.5, learn_scale=True)


def test_learned_scale_is_clamped_after_a_step_not_in_the_forward_pass(backbone):
    bank = _bank(backbone, scale=10.0, learn_scale=True)
    assert bank.log_scale.requires_grad
    with torch.no_grad():
        bank.log_scale.fill_(math.log(1000.0))
    assert float(bank.scale.detach()) == pytest.approx(1000.0)  # the forward pass leaves it
    bank.clamp_scales_()
    assert float(bank.scale.detach()) == pytest.approx(100.0)


def test_anchor_bank_direct_construction():
    tokens = torch.ones(3, 4, dtype=torch.long)
    bank = AnchorBank(["a", "b", "c"], tokens, 8, AnchorConfig(refresh="step"))
    out = bank(lambda t: torch.full((t.shape[0], 8), 2.0))
    assert out.shape == (3, 8) and torch.all(out == 2.0)
    assert "tokens" not in bank.state_dict()  # rebuilt from labels, not saved
