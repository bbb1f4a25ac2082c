"""The anchor branch's one home (`calm.model.anchor_branch`): distributions over cached features,
the joint caption + prompt encoding of per-step anchors, and the bank's lifecycle hooks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.config import ConfigError, ModelConfig, from_dict
from calm.model.retrieval import CALM

N_V, N_T, T, D = 7, 5, 4, 64


def _model(refresh: str = "epoch", step_subset: int = 0, alignment: str = "vae") -> CALM:
    torch.manual_seed(0)
    cfg = from_dict(ModelConfig, {
        "backbone": {"name": "calm-micro"}, "fusion": {"name": "xpool"},
        "alignment": {"name": alignment},
        "anchors": {"refresh": refresh, "labels": "coco", "step_subset": step_subset},
        "vae": {"latent_dim": 8, "encoder_hidden": [16], "decoder_hidden": [16]},
    })
    model = CALM.from_config(cfg)
    with torch.no_grad():  # a VAE that is not at its initial symmetric point
        for p in model.vae.parameters() if model.vae is not None else ():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def model():
    return _model().eval()


def _features(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(N_T, D, generator=g)
    frames = torch.randn(N_V, T, D, generator=g)
    mask = torch.ones(N_V, T, dtype=torch.bool)
    mask[1, 2:] = False
    mask[4, 1:] = False
    return text, frames, mask


def test_distributions_by_hand(model):
    text, frames, mask = _features()
    d = model.anchor_distributions(text, frames, mask)
    with torch.no_grad():
        anchors = model.anchor_matrix()
        # the frame mean over real frames only, then the scaled cosine softmax
        means = torch.stack([frames[i][mask[i]].mean(0) for i in range(N_V)])
        cos = torch.nn.functional.normalize(means, dim=-1) @ torch.nn.functional.normalize(
            anchors, dim=-1).t()
        vp = (model.anchors.scale * cos).softmax(-1)
        mu, logvar = model.vae.encode(vp)
    torch.testing.assert_close(d.vp, vp)
    torch.testing.assert_close(d.mu, mu)
    torch.testing.assert_close(d.sigma, (0.5 * logvar).exp().mean(-1))
    torch.testing.assert_close(d.s_hat, model.vae.predictive(vp))
    for probs in (d.vp, d.sp, d.s_hat, d.s_hat_mu):
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[0]))


def test_padding_frames_do_not_change_a_video(model):
    text, frames, mask = _features()
    changed = frames.clone()
    changed[1, 2:] += 100.0  # padding of the short clip
    a = model.anchor_distributions(text, frames, mask)
    b = model.anchor_distributions(text, changed, mask)
    torch.testing.assert_close(a.vp, b.vp)
    torch.testing.assert_close(a.s_hat, b.s_hat)
    changed[1, 0] += 1.0  # a real frame does
    assert not torch.allclose(model.anchor_distributions(text, changed, mask).vp[1], a.vp[1])


@settings(max_examples=6, deadline=None)
@given(video_chunk=st.integers(1, N_V + 1), text_chunk=st.integers(1, N_T + 1),
       perm=st.permutations(range(N_V)))
def test_rows_depend_on_their_own_video_alone(model, video_chunk, text_chunk, perm):
    text, frames, mask = _features(seed=3)
    ref = model.anchor_distributions(text, frames, mask)
    perm = torch.tensor(perm)
    got = model.anchor_distributions(text, frames[perm], mask[perm], video_chunk=video_chunk,
                                     text_chunk=text_chunk)
    for name in ("vp", "s_hat", "s_hat_mu", "mu", "logvar"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name)[perm])
    torch.testing.assert_close(got.sp, ref.sp)


def test_parts_equal_the_whole(model):
    text, frames, mask = _features()
    d = model.anchor_distributions(text, frames, mask)
    torch.testing.assert_close(model.video_anchor_probs(frames, mask), d.vp)
    torch.testing.assert_close(model.text_anchor_probs(text), d.sp)
    torch.testing.assert_close(model.generated_anchor_probs(frames, mask), d.s_hat)
    torch.testing.assert_close(model.video_uncertainty(frames, mask, signal="sigma"), d.sigma)


def test_a_model_without_a_vae_refuses_its_generation():
    kl = _model(alignment="kl").eval()
    _, frames, mask = _features()
    with pytest.raises(ValueError, match="VAE"):
        kl.video_uncertainty(frames, mask)
    assert kl.anchor_distributions(None, frames, mask).s_hat is None


class CountingEncoder:
    def __init__(self, model):
        self.model, self.calls, self.rows = model, 0, []
        self.original = model.backbone.encode_text

    def __call__(self, tokens):
        self.calls += 1
        self.rows.append(tokens.shape[0])
        return self.original(tokens)


@pytest.mark.parametrize("step_subset", [0, 16])
def test_per_step_anchors_come_from_the_captions_call(step_subset):
    model = _model("step", step_subset).train()
    tokens = model.backbone.tokenize(["a red circle moves left", "two dogs", "a blue star"], 16)
    k = 16 if step_subset else model.num_anchors
    with torch.no_grad():  # the reference: two calls (with a window, this fills its cache)
        separate_text = model.backbone.encode_text(tokens)
        separate_p = model.anchors.with_step_encodings(
            model.backbone.encode_text(model.anchors.step_prompt_tokens()),
            model.backbone.encode_text)
        model.anchors.cursor.zero_()
    counter = CountingEncoder(model)
    model.backbone.encode_text = counter
    try:
        text, joint_p = model.encode_text_and_anchors(tokens)
    finally:
        del model.backbone.encode_text
    assert counter.calls == 1 and counter.rows == [3 + k]  # one call: captions and prompts
    torch.testing.assert_close(text, separate_text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(joint_p, separate_p, atol=1e-5, rtol=1e-5)
    # the anchors carry the text tower's gradient
    grad = torch.autograd.grad(joint_p.sum(), model.backbone.clip.token_embedding.weight)[0]
    assert grad.abs().sum() > 0


def test_epoch_anchors_need_no_joint_call():
    model = _model("epoch").train()
    tokens = model.backbone.tokenize(["a red circle"], 16)
    text, anchors = model.encode_text_and_anchors(tokens)
    assert anchors is None and text.shape == (1, model.backbone.embed_dim)


def test_evaluation_anchors_restore_the_training_cache():
    model = _model("epoch").train()
    model.start_epoch()
    trained = model.anchor_matrix().detach().clone()
    with torch.no_grad():
        model.backbone.clip.token_embedding.weight.add_(0.5)  # as after optimizer steps
    with model.evaluation_anchors():
        fresh = model.anchor_matrix().detach()
    assert not torch.allclose(fresh, trained)  # evaluation sees the current encoder
    torch.testing.assert_close(model.anchor_matrix().detach(), trained)  # training does not
    model.start_epoch()
    torch.testing.assert_close(model.anchor_matrix().detach(), fresh)


def test_resume_state_round_trips():
    a = _model("epoch")
    a.start_epoch()
    a.anchor_matrix()
    saved = a.anchor_resume_state()
    b = _model("epoch")
    with torch.no_grad():
        b.backbone.clip.token_embedding.weight.add_(0.5)
    b.restore_anchor_resume_state(saved)
    torch.testing.assert_close(b.anchor_matrix().detach(), a.anchor_matrix().detach())


def test_zero_shot_anchors_are_lent_and_taken_back():
    none = _model(alignment="none").eval()
    assert not none.has_anchors
    cfg = from_dict(ModelConfig, {"anchors": {"labels": "coco"}}).anchors
    _, frames, mask = _features()
    with none.zero_shot_anchors(cfg):
        assert none.num_anchors == 91 and not none.has_vae
        vp = none.video_anchor_probs(frames, mask)
        assert vp.shape == (N_V, 91)
    assert not none.has_anchors and none.anchors is None


def test_observe_step_feeds_the_training_marginal():
    model = _model("epoch").train()
    model.start_epoch()
    tokens = model.backbone.tokenize(["a cat", "two dogs"], 16)
    frames = torch.randn(2, 2, 3, 32, 32)
    out = model(frames, torch.ones(2, 2, dtype=torch.bool), tokens)
    model.observe_step(out, lambda x: x)
    torch.testing.assert_close(model.text_marginal(),
                               out.anchors.text_logits.detach().softmax(-1).mean(0))


def test_the_once_policy_is_gone():
    with pytest.raises(ConfigError, match=r"^anchors\.refresh: .once. is not one of \[.step., .epoch.\]"):
        from_dict(ModelConfig, {"anchors": {"refresh": "once"}})
