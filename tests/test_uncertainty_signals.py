"""Issue 19: the VAE's uncertainty signals, the conditional VAE (its KL and its prior at test
time), the VAE's own input temperature, frame-level V_p, and a learned anchor scale that moves."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Normal, kl_divergence

from calm.config import ConfigError, ModelConfig, from_dict
from calm.engine.tasks import RetrievalTask
from calm.model.anchor_branch import SIGNALS, UNCERTAINTY_SIGNAL, entropy
from calm.model.losses import CALMLoss
from calm.model.retrieval import CALM
from calm.model.vae import ACTIVE_VARIANCE, kl_per_dimension
from tests.engine_fixtures import three_clip_batch

N_V, T, D = 6, 4, 64


def _model(vae: dict | None = None, anchors: dict | None = None, seed: int = 0) -> CALM:
    torch.manual_seed(seed)
    cfg = from_dict(ModelConfig, {
        "backbone": {"name": "calm-micro"}, "fusion": {"name": "xpool"},
        "alignment": {"name": "vae"},
        "anchors": {"labels": "coco", **(anchors or {})},
        "vae": {"latent_dim": 8, "encoder_hidden": [16], "decoder_hidden": [16], **(vae or {})},
    })
    model = CALM.from_config(cfg)
    with torch.no_grad():  # a VAE away from its initial symmetric point
        for p in model.vae.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def _features(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(N_V, T, D, generator=g)
    mask = torch.ones(N_V, T, dtype=torch.bool)
    mask[1, 2:] = False
    mask[4, 1:] = False
    return torch.randn(5, D, generator=g), frames, mask


# ---- the conditional VAE ---------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(0, 10_000))
def test_the_kl_to_a_learned_prior_is_torch_distributions_closed_form(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    mu, prior_mu = 3 * torch.randn(n, d, generator=g), 3 * torch.randn(n, d, generator=g)
    logvar, prior_logvar = 4 * torch.randn(n, d, generator=g), 4 * torch.randn(n, d, generator=g)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()),
                             Normal(prior_mu, (0.5 * prior_logvar).exp()))
    torch.testing.assert_close(kl_per_dimension(mu, logvar, prior_mu, prior_logvar), expected,
                               rtol=1e-4, atol=1e-4)
    standard = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0))
    torch.testing.assert_close(kl_per_dimension(mu, logvar), standard, rtol=1e-4, atol=1e-4)


def test_the_conditional_objective_penalises_kl_to_its_prior():
    model = _model({"posterior": "conditional"}).train()
    out = model(*three_clip_batch(model))
    vae = out.anchors.vae
    assert vae.prior_mu is not None  # the posterior saw S_p; the prior sat beside it
    expected = kl_divergence(Normal(vae.mu, (0.5 * vae.logvar).exp()),
                             Normal(vae.prior_mu, (0.5 * vae.prior_logvar).exp())).sum(-1).mean()
    torch.testing.assert_close(out.anchors.terms["kl_prior"], expected, rtol=1e-4, atol=1e-4)
    # and the posterior sees the caption: another S_p, another posterior, the same prior
    probs = model.vae.input_probs(out.anchors.video_logits)
    other = model.vae(probs, torch.full_like(probs, 1.0 / probs.shape[1]))
    torch.testing.assert_close(other.prior_mu, vae.prior_mu)
    assert not torch.allclose(other.mu, vae.mu)
    # gradient reaches the posterior network and the prior network
    CALMLoss()(out)["align"].backward()
    for net in (model.vae.posterior, model.vae.encoder):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_the_prior_generates_at_test_time_and_the_posterior_never_does():
    model = _model({"posterior": "conditional"})
    text, frames, mask = _features()
    before = model.anchor_distributions(text, frames, mask)
    with torch.no_grad():
        for p in model.vae.posterior.parameters():
            p.add_(torch.randn_like(p))
    after = model.anchor_distributions(text, frames, mask)
    for key in ("s_hat", "mu", "logvar", "mutual_info"):
        torch.testing.assert_close(getattr(after, key), getattr(before, key))
    # what generates is the prior network on V_p
    mu, logvar = model.vae.encode(before.vp)
    torch.testing.assert_close(before.mu, mu)
    torch.testing.assert_close(before.s_hat, model.vae.predictive_from(mu, logvar))
    with torch.no_grad():
        for p in model.vae.encoder.parameters():
            p.add_(torch.randn_like(p))
    assert not torch.allclose(model.anchor_distributions(text, frames, mask).mu, before.mu)


def test_the_paper_vae_has_no_prior_network_and_no_prior_in_its_output():
    model = _model().train()
    assert model.vae.posterior is None
    assert model(*three_clip_batch(model)).anchors.vae.prior_mu is None


# ---- the signals ------------------------------------------------------------------------------
def test_every_signal_by_hand():
    model = _model()
    text, frames, mask = _features()
    with torch.no_grad():
        model.vae.latent_activity.copy_(torch.tensor([0.5, 0, 0.02, 0, 0, 1, 0, 0.001]))
        model.vae.activity_steps.fill_(10)
    d = model.anchor_distributions(text, frames, mask)
    signals = d.signals()
    assert list(signals) == list(SIGNALS)
    active = torch.tensor([True, False, True, False, False, True, False, False])
    assert torch.equal(d.active, active)
    sigma = (0.5 * d.logvar).exp()
    torch.testing.assert_close(signals["sigma"], sigma.mean(-1))
    torch.testing.assert_close(signals["sigma_active"], sigma[:, active].mean(-1))
    torch.testing.assert_close(signals["log_sigma_sum"], sigma.log().sum(-1))
    draws = model.vae.predictive_draws(d.mu, d.logvar)
    mean = draws.mean(0)
    h = lambda p: -(p * p.log()).sum(-1)  # noqa: E731
    torch.testing.assert_close(signals["s_hat_entropy"], h(mean))
    torch.testing.assert_close(signals["mutual_info"], h(mean) - h(draws).mean(0))
    assert bool((signals["mutual_info"] > 0).all())  # Jensen: the mixture is more uncertain
    for name in SIGNALS:
        torch.testing.assert_close(model.video_uncertainty(frames, mask, signal=name),
                                   signals[name])
    torch.testing.assert_close(model.video_uncertainty(frames, mask), signals[UNCERTAINTY_SIGNAL])
    with pytest.raises(ValueError, match="not one of"):
        model.video_uncertainty(frames, mask, signal="nope")


def test_a_signal_depends_on_its_own_video_alone():
    model = _model({"posterior": "conditional"})
    _, frames, mask = _features()
    whole = model.anchor_distributions(None, frames, mask).signals()
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    part = model.anchor_distributions(None, frames[order], mask[order], video_chunk=2).signals()
    for name in SIGNALS:
        torch.testing.assert_close(part[name], whole[name][order])


def test_activity_counts_the_dimensions_whose_generating_mean_varies_in_training():
    model = _model({"posterior": "conditional"}).train()
    assert bool(model.vae.active_dimensions().all())  # before any statistics: every dimension
    out = model(*three_clip_batch(model))
    model.observe_step(out, lambda x: x)
    prior_var = out.anchors.vae.prior_mu.detach().var(0)  # the prior generates at test time
    torch.testing.assert_close(model.vae.latent_activity, prior_var)
    # a random-init batch moves no dimension past the threshold: a fully collapsed VAE counts
    # every dimension rather than none
    assert not bool((prior_var > ACTIVE_VARIANCE).any())
    assert bool(model.vae.active_dimensions().all())
    model.observe_step(out, lambda x: x)  # the running variance: momentum over the steps
    assert int(model.vae.activity_steps) == 2
    torch.testing.assert_close(model.vae.latent_activity, prior_var)
    state = model.state_dict()
    del state["vae.latent_activity"], state["vae.activity_steps"]
    model.load_state_dict(state)  # a checkpoint from before the statistics still loads
    assert bool(model.vae.active_dimensions().all())


def test_entropy_counts_zero_probability_as_zero():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    torch.testing.assert_close(entropy(p), torch.tensor([0.0, math.log(2)]))


# ---- a softer input for the VAE -----------------------------------------------------------------
def test_the_vae_reads_v_p_at_its_own_temperature():
    model = _model({"input_temperature": 4.0})
    text, frames, mask = _features()
    d = model.anchor_distributions(text, frames, mask)
    logits = model.video_anchor_logits(frames, mask)
    torch.testing.assert_close(d.vp, logits.softmax(-1))  # V_p itself is unchanged
    mu, _ = model.vae.encode((logits / 4.0).softmax(-1))
    torch.testing.assert_close(d.mu, mu)
    assert entropy((logits / 4.0).softmax(-1)).mean() > entropy(d.vp).mean()
    with pytest.raises(ConfigError, match="input_temperature"):
        from_dict(ModelConfig, {"vae": {"input_temperature": 0.0}})


# ---- frame-level V_p ----------------------------------------------------------------------------
def test_frame_anchor_probs_have_one_distribution_per_real_frame():
    model = _model()
    _, frames, mask = _features()
    probs = model.frame_anchor_probs(frames, mask, chunk=4)
    assert probs.shape == (N_V, T, model.num_anchors)
    torch.testing.assert_close(probs.sum(-1), mask.float())  # rows of real frames sum to 1
    with torch.no_grad():
        cos = torch.nn.functional.normalize(frames[0, 2], dim=-1) @ torch.nn.functional.normalize(
            model.anchor_matrix(), dim=-1).t()
    torch.testing.assert_close(probs[0, 2], (model.anchors.scale * cos).softmax(-1))


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_frame_level_v_p_is_the_mixture_over_real_frames(pooling):
    model = _model(anchors={"video_source": "frames", "frame_pooling": pooling})
    _, frames, mask = _features()
    per_frame = model.frame_anchor_probs(frames, mask)
    vp = model.video_anchor_probs(frames, mask)
    # a zero attention query starts at the mean over the clip's real frames
    mean = per_frame.sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(vp, mean)
    # what padding holds never matters
    noisy = frames.clone()
    noisy[~mask] = 100 * torch.randn_like(noisy[~mask])
    torch.testing.assert_close(model.video_anchor_probs(noisy, mask), vp)
    if pooling == "attention":
        with torch.no_grad():
            model.anchors.frame_query.copy_(5 * torch.randn(D))
        weights = model.frame_weights(frames, mask)
        torch.testing.assert_close(weights.sum(1), torch.ones(N_V))
        assert bool((weights[~mask] == 0).all())
        mixed = (weights.unsqueeze(-1) * per_frame).sum(1)
        torch.testing.assert_close(model.video_anchor_probs(frames, mask), mixed)
        assert not torch.allclose(mixed, mean, atol=1e-4)


def test_the_frame_attention_query_trains_and_only_exists_when_asked_for():
    assert _model().anchors.frame_query is None
    assert _model(anchors={"video_source": "frames"}).anchors.frame_query is None
    model = _model(anchors={"video_source": "frames", "frame_pooling": "attention"}).train()
    CALMLoss()(model(*three_clip_batch(model)))["align"].backward()
    assert model.anchors.frame_query.grad.abs().sum() > 0


# ---- the learned anchor scale --------------------------------------------------------------------
def test_a_learned_scale_at_the_clamp_still_gets_gradient():
    model = _model(anchors={"learn_scale": True}).train()  # s = 100, the paper's, at the clamp
    CALMLoss()(model(*three_clip_batch(model)))["loss"].backward()
    assert model.anchors.log_scale.grad is not None and model.anchors.log_scale.grad.abs() > 0


def test_the_learned_scale_moves_in_training_and_is_clamped_after_each_step():
    model = _model(anchors={"learn_scale": True, "scale": 50.0}).train()
    start = model.anchors.log_scale.item()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    task = RetrievalTask()
    for _ in range(3):
        optimizer.zero_grad()
        CALMLoss()(model(*three_clip_batch(model)))["loss"].backward()
        optimizer.step()
        task.after_step(model)
    assert abs(float(model.anchors.log_scale) - start) > 1e-3
    with torch.no_grad():
        model.anchors.log_scale.fill_(math.log(400.0))  # an optimizer step past the bound
    task.after_step(model)
    assert float(model.anchors.scale) == pytest.approx(100.0)


def test_a_fixed_scale_is_never_touched_by_the_step_hook():
    model = _model(anchors={"scale": 0.5})
    RetrievalTask().after_step(model)
    assert float(model.anchors.scale) == pytest.approx(0.5)
