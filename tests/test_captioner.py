"""The CALM captioner on a calm-micro backbone: shapes, padding, gradient paths, decoding and a
tiny memorisation run."""

from __future__ import annotations

import pytest
import torch

from calm.config import ConfigError, ModelConfig, from_dict
from calm.model.captioner import (
    IGNORE_INDEX,
    CALMCaptioner,
    caption_targets,
    clean_spaces,
)
from calm.model.losses import CALMLoss, captioning_task_loss

CAPTIONS = ["a man is cooking pasta", "a dog runs on the grass", "people dance at a party"]


def _cfg(alignment="vae", **backbone):
    return from_dict(ModelConfig, {
        "backbone": {"name": "calm-micro", **backbone},
        "anchors": {"labels": "coco"},
        "alignment": {"name": alignment},
        "vae": {"latent_dim": 16, "encoder_hidden": [32], "decoder_hidden": [32]},
        "caption": {"width": 64, "layers": 2, "heads": 2, "dropout": 0.0, "max_length": 16,
                    "beam_size": 3},
    })


def _model(alignment="vae", **backbone) -> CALMCaptioner:
    torch.manual_seed(0)
    return CALMCaptioner.from_config(_cfg(alignment, **backbone))


@pytest.fixture(scope="module")
def vae_model():
    return _model("vae")


@pytest.fixture(scope="module")
def none_model():
    return _model("none")


@pytest.fixture(scope="module")
def batch(vae_model):
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(3, 4, 3, 32, 32, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    return frames, mask, vae_model.tokenize(CAPTIONS)


def test_components_follow_the_alignment_switch(vae_model, none_model, batch):
    assert vae_model.anchors is not None and vae_model.vae is not None
    assert none_model.anchors is None and none_model.vae is None
    frames, mask, tokens = batch
    none_model.eval()
    out = none_model(frames, mask, tokens)
    assert out.anchors is None
    assert set(CALMLoss(captioning_task_loss)(out)) == {"task", "loss"}
    for name in ("kl", "ce", "mse"):
        model = CALMCaptioner.from_config(_cfg(name))
        assert model.anchors is not None and model.vae is None
    with pytest.raises(ConfigError, match="model.alignment.name"):
        CALMCaptioner.from_config(_cfg("nope"))


def test_parameter_names_and_tied_output(vae_model):
    keys = set(vae_model.state_dict())
    for key in ("decoder.token_embedding.weight", "decoder.positional_embedding",
                "decoder.frame_proj.weight", "decoder.frame_norm.weight", "decoder.ln_final.weight",
                "decoder.layers.layers.1.multihead_attn.in_proj_weight", "anchors.offset",
                "vae.encoder.0.weight", "backbone.clip.visual.conv1.weight"):
        assert key in keys, key
    # The output projection is the token embedding itself: no separate vocabulary-sized matrix.
    vocab_sized = [k for k, v in vae_model.decoder.state_dict().items() if v.shape[0] == 49408]
    assert vocab_sized == ["token_embedding.weight"]
    assert vae_model.vocab_size == 49408
    assert vae_model.decoder.positional_embedding.shape == (16, 64)


def test_tokenize_and_decode_round_trip(vae_model):
    tokens = vae_model.tokenize(["A man, cooking pasta!", "word " * 40])
    assert tokens.shape == (2, 16) and tokens.dtype == torch.long
    assert tokens[0, 0] == vae_model.sot and tokens[1, -1] == vae_model.eot  # truncated: ends in eot
    assert vae_model.decode(tokens[0]) == "a man, cooking pasta!"
    assert vae_model.decode(tokens[1].tolist()) == " ".join(["word"] * 14)
    # Generated ids may lack an end token; anything after an end token is dropped.
    ids = tokens[0].tolist()
    assert vae_model.decode(ids[: ids.index(vae_model.eot)]) == "a man, cooking pasta!"
    assert vae_model.decode([*ids[:3], vae_model.eot, 320, 320]) == "a man"
    assert clean_spaces(" it 's a ( big ) dog , ok ? ") == "it's a (big) dog, ok?"


def test_targets_ignore_only_positions_after_the_end_token(vae_model):
    # "!" (as in "!;") is token id 0, the padding id: it must stay a target before the end token.
    tokens = vae_model.tokenize(["wow!; a dog", "a cat"])
    assert 0 in tokens[0, : tokens[0].tolist().index(vae_model.eot)].tolist()
    targets = caption_targets(tokens, vae_model.eot)
    for row, tok in zip(targets, tokens):
        end = tok.tolist().index(vae_model.eot)
        assert row[: end].tolist() == tok[1 : end + 1].tolist()
        assert (row[end:] == IGNORE_INDEX).all()
    assert 0 in targets[0].tolist()


def test_forward_shapes(vae_model, batch):
    frames, mask, tokens = batch
    vae_model.eval()
    out = vae_model(frames, mask, tokens)
    length = int((tokens != 0).any(dim=0).nonzero().max()) + 1  # trailing padding columns are cut
    assert out.logits.shape == (3, length - 1, 49408)
    assert out.targets.shape == (3, length - 1)
    assert out.frames.shape == (3, 4, 64)
    assert out.anchors.video_logits.shape == out.anchors.text_logits.shape == (3, 91)
    assert out.anchors.vae.logits.shape == (3, 91)
    terms = CALMLoss(captioning_task_loss)(out)
    assert {"task", "rec", "kl_prior", "align", "loss"} <= set(terms)
    assert torch.allclose(terms["loss"], terms["task"] + terms["align"])


def test_padding_after_the_end_token_changes_nothing(vae_model, batch):
    frames, mask, tokens = batch
    vae_model.eval()
    loss_fn = CALMLoss(captioning_task_loss)
    with torch.no_grad():
        ref = loss_fn(vae_model(frames, mask, tokens))
        noisy = tokens.clone()
        after = torch.arange(tokens.shape[1]) > (tokens == vae_model.eot).long().argmax(1, True)
        noisy[after] = torch.randint(1, 49000, (int(after.sum()),))
        got = loss_fn(vae_model(frames, mask, noisy))
    for key in ref:
        assert torch.allclose(ref[key], got[key], atol=1e-5, rtol=1e-5), key


def test_masked_frames_are_ignored(vae_model, batch):
    frames, mask, tokens = batch
    vae_model.eval()
    other = frames.clone()
    other[~mask] = torch.randn_like(other[~mask])
    with torch.no_grad():
        a = vae_model(frames, mask, tokens).logits
        b = vae_model(other, mask, tokens).logits
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="at least one real frame"):
        vae_model(frames, torch.zeros_like(mask), tokens)


def test_gradient_reaches_every_trained_part(batch):
    model = _model("vae")
    model.train()
    frames, mask, tokens = batch
    CALMLoss(captioning_task_loss)(model(frames, mask, tokens))["loss"].backward()
    parts = {
        "backbone (vision)": model.backbone.clip.visual.conv1.weight,
        "anchor offsets": model.anchors.offset,
        "VAE encoder": model.vae.encoder[0].weight,
        "VAE decoder": model.vae.decoder[-1].weight,
        "token embedding": model.decoder.token_embedding.weight,
        "cross-attention": model.decoder.layers.layers[0].multihead_attn.in_proj_weight,
        "frame projection": model.decoder.frame_proj.weight,
    }
    for name, param in parts.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # The caption's S_p is a detached target (default): the text tower gets no gradient from it.
    assert model.backbone.clip.token_embedding.weight.grad is None


def test_generate_is_sorted_eval_and_no_grad(vae_model, batch):
    frames, mask, _ = batch
    vae_model.train()
    hyps = vae_model.generate(frames, mask, beam_size=3, max_length=6)
    assert vae_model.training  # the mode is restored
    assert len(hyps) == 3
    for video in hyps:
        assert 1 <= len(video) <= 3
        assert [h.score for h in video] == sorted((h.score for h in video), reverse=True)
        for h in video:
            assert len(h.tokens) <= 6 and h.tokens[0] == vae_model.sot
            assert vae_model.sot not in h.tokens[1:]
            assert h.text == vae_model.decode(h.tokens)
    greedy = vae_model.generate(frames, mask, beam_size=1, max_length=6)
    assert all(len(v) == 1 for v in greedy)
    with torch.enable_grad():
        assert vae_model.caption(frames, mask, max_length=6) == [v[0].text for v in hyps]


def test_memorises_a_tiny_set():
    model = _model("vae")
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(3, 2, 3, 32, 32, generator=g)
    mask = torch.ones(3, 2, dtype=torch.bool)
    tokens = model.tokenize(CAPTIONS)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-3)
    loss_fn = CALMLoss(captioning_task_loss)
    model.train()
    first = None
    for _ in range(120):
        terms = loss_fn(model(frames, mask, tokens))
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        first = terms["task"].item() if first is None else first
    assert terms["task"].item() < 0.1 * first
    assert model.caption(frames, mask, beam_size=1) == CAPTIONS
    beams = model.generate(frames, mask, beam_size=3)
    assert [v[0].text for v in beams] == CAPTIONS
    assert all(v[0].finished for v in beams)
