"""Anchor distributions, the cross-modal VAE, the alignment objectives, and CALM's gradient paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Categorical, Normal, kl_divergence

from calm.config import AlignmentConfig, ModelConfig, VAEConfig, from_dict
from calm.model.core import CoreParts
from calm.model.distributions import anchor_logits
from calm.model.fusion import masked_mean
from calm.model.losses import ALIGNMENTS, CALMLoss, build_alignment, symmetric_info_nce
from calm.model.retrieval import CALM
from calm.model.vae import CrossModalVAE, VAEOutput, kl_to_standard_normal

OBJECTIVES = ("kl", "ce", "mse", "vae")


def _model(alignment="vae", refresh="epoch", **extra):
    torch.manual_seed(0)
    cfg = from_dict(ModelConfig, {
        "backbone": {"name": "calm-micro"},
        "alignment": {"name": alignment, **extra},
        "anchors": {"refresh": refresh},
        "vae": {"latent_dim": 16, "encoder_hidden": [32], "decoder_hidden": [32]},
    })
    return CALM.from_config(cfg)


@pytest.fixture(scope="module")
def calm_vae():
    return _model("vae")


@pytest.fixture(scope="module")
def calm_vae_step():
    return _model("vae", refresh="step")


@pytest.fixture(scope="module")
def calm_none():
    return _model("none")


@pytest.fixture(scope="module")
def batch(calm_vae):
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(3, 4, 3, 32, 32, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    tokens = calm_vae.backbone.tokenize(["a man cooks", "a dog runs on grass", "people dance"])
    return frames, mask, tokens


def _groups(model):
    """One representative parameter per place the gradient must reach."""
    clip = model.backbone.clip
    groups = {
        "vision": clip.visual.conv1.weight,
        "vision_last": clip.visual.proj,
        "text": clip.token_embedding.weight,
        "text_proj": clip.text_projection,
        "fusion": model.fusion.q_proj.weight,
        "fusion_v": model.fusion.v_proj.weight,
    }
    if model.anchors is not None:
        groups["anchor_offsets"] = model.anchors.offset
    if model.vae is not None:
        groups["vae_encoder"] = model.vae.encoder[0].weight
        groups["vae_decoder"] = model.vae.decoder[-1].weight
    return groups


def _grads(loss, params: dict):
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return dict(zip(params, grads))


def _nonzero(g):
    return g is not None and bool(g.abs().sum() > 0)


# --------------------------------------------------------------------------------------------
# distributions
# --------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), k=st.integers(1, 20), d=st.integers(2, 16),
       scale=st.floats(0.1, 100.0), seed=st.integers(0, 10_000))
def test_anchor_distributions_are_distributions(n, k, d, scale, seed):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, d, generator=g) * 10
    anchors = torch.randn(k, d, generator=g)
    probs = anchor_logits(feats, anchors, scale).softmax(-1)
    assert probs.shape == (n, k)
    assert torch.all(probs >= 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(n))
    # cosine based: the length of the features does not matter
    torch.testing.assert_close(anchor_logits(3.0 * feats, anchors, scale).softmax(-1), probs)
    logits = anchor_logits(feats, anchors, scale)
    assert logits.abs().max() <= scale * (1 + 1e-5)


def test_model_distributions(calm_vae, batch):
    """V_p uses the masked frame mean, S_p the sentence feature; both are on the simplex."""
    frames, mask, tokens = batch
    model = calm_vae.eval()
    with torch.no_grad():
        feats = model.encode_frames(frames, mask)
        text = model.encode_text(tokens)
        anchors = model.anchor_matrix()
        v_logits = model.video_anchor_logits(feats, mask, anchors)
        t_logits = model.text_anchor_logits(text, anchors)
        scale = model.anchors.scale
        ref_v = scale * F.normalize(masked_mean(feats, mask), dim=-1) @ F.normalize(anchors, dim=-1).t()
        ref_t = scale * F.normalize(text, dim=-1) @ F.normalize(anchors, dim=-1).t()
    assert v_logits.shape == t_logits.shape == (3, 157)
    torch.testing.assert_close(v_logits, ref_v, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(t_logits, ref_t, atol=1e-4, rtol=1e-5)
    for logits in (v_logits, t_logits):
        p = logits.softmax(-1)
        assert torch.all(p >= 0)
        torch.testing.assert_close(p.sum(-1), torch.ones(3))
    # the frame mean over real frames only: what padded frames hold is irrelevant
    other = feats.clone()
    other[~mask] = 5.0
    with torch.no_grad():
        torch.testing.assert_close(model.video_anchor_logits(other, mask, anchors), v_logits)


# --------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), d=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_kl_to_prior_closed_form(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    logvar = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    ours = kl_to_standard_normal(mu, logvar)
    sigma = (0.5 * logvar).exp()
    closed = 0.5 * (mu**2 + sigma**2 - 1 - 2 * sigma.log()).sum(-1)
    reference = kl_divergence(Normal(mu, sigma), Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    torch.testing.assert_close(ours, closed)
    torch.testing.assert_close(ours, reference.sum(-1))
    assert torch.all(ours >= -1e-9)
    assert torch.all(kl_to_standard_normal(torch.zeros(n, d), torch.zeros(n, d)) == 0)


def _vae(k=10, d=6):
    torch.manual_seed(0)
    return CrossModalVAE(k, VAEConfig(latent_dim=d, encoder_hidden=[16], decoder_hidden=[16]))


def _probs(n=4, k=10):
    return torch.randn(n, k).softmax(-1)


def test_vae_shapes_and_output():
    vae = _vae()
    out = vae(_probs())
    assert isinstance(out, VAEOutput)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (4, 6)
    assert out.logits.shape == (4, 10)
    assert torch.all(out.probs >= 0)
    torch.testing.assert_close(out.probs.sum(-1), torch.ones(4))


def test_predictive_is_the_mean_generation_over_the_posterior():
    """`predictive` averages the decoder's distribution over z ~ q(z | V_p): a distribution per
    video, the same on every call, equal to decoding z = mu when the posterior has no spread,
    and not equal to it when it has (the decoder is non-linear)."""
    vae = _vae().eval()
    probs = _probs()
    with torch.no_grad():
        pred = vae.predictive(probs, samples=64)
        torch.testing.assert_close(pred.sum(-1), torch.ones(4))
        torch.testing.assert_close(vae.predictive(probs, samples=64), pred)
        # a video's generation is its own: the same alone, in another order, in another batch
        torch.testing.assert_close(vae.predictive(probs[2:3], samples=64), pred[2:3])
        order = torch.tensor([3, 0, 2, 1])
        torch.testing.assert_close(vae.predictive(probs[order], samples=64), pred[order])
        at_mu = vae(probs, sample=False).probs
        assert not torch.allclose(pred, at_mu, atol=1e-4)
        # a collapsed spread (sigma ~ 1e-9): every draw is mu
        last = vae.encoder[-1]
        last.bias[vae.latent_dim:] = -40.0
        last.weight[vae.latent_dim:] = 0.0
        torch.testing.assert_close(vae.predictive(probs, samples=8), vae(probs, sample=False).probs)
        # many draws: close to the average of independently sampled generations
        torch.manual_seed(3)
        last.bias[vae.latent_dim:] = 0.0
        sampled = torch.stack([vae(probs, sample=True).probs for _ in range(4000)]).mean(0)
        torch.testing.assert_close(vae.predictive(probs, samples=4000), sampled, atol=5e-3, rtol=0)


def test_eval_mode_is_deterministic_mean():
    vae = _vae().eval()
    p = _probs()
    a, b = vae(p), vae(p)
    assert torch.equal(a.z, a.mu)
    assert torch.equal(a.logits, b.logits)
    torch.testing.assert_close(a.logits, vae.decoder(a.mu))


def test_train_mode_samples():
    vae = _vae().train()
    p = _probs()
    a, b = vae(p), vae(p)
    assert not torch.equal(a.z, a.mu)
    assert not torch.equal(a.z, b.z)
    torch.testing.assert_close(a.mu, b.mu)
    # reparameterisation: z - mu scales with sigma
    eps = (a.z - a.mu) / (0.5 * a.logvar).exp()
    assert eps.std() > 0.3
    # the flag overrides the mode both ways
    assert torch.equal(vae(p, sample=False).z, a.mu)
    vae.eval()
    assert not torch.equal(vae(p, sample=True).z, a.mu)


def test_uncertainty_is_mean_sigma():
    vae = _vae()
    out = vae(_probs())
    torch.testing.assert_close(out.uncertainty, out.logvar.mul(0.5).exp().mean(-1))
    manual = VAEOutput(torch.zeros(1, 2), torch.tensor([[0.0, 2 * torch.log(torch.tensor(3.0))]]),
                       torch.zeros(1, 2), torch.zeros(1, 3))
    torch.testing.assert_close(manual.uncertainty, torch.tensor([2.0]))


def test_vae_sizes_follow_config():
    vae = CrossModalVAE(157, VAEConfig())
    assert vae.latent_dim == 256
    assert vae.encoder[0].in_features == 157 and vae.encoder[-1].out_features == 512
    assert vae.decoder[0].in_features == 256 and vae.decoder[-1].out_features == 157


# --------------------------------------------------------------------------------------------
# alignment objectives
# --------------------------------------------------------------------------------------------


def test_registry_has_the_ablation_rows():
    assert set(ALIGNMENTS.names()) == {"none", *OBJECTIVES}
    with pytest.raises(KeyError, match="vae"):
        build_alignment(AlignmentConfig(name="dual"))


def _vae_out(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return VAEOutput(torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g),
                     torch.randn(n, 3, generator=g), torch.randn(n, k, generator=g))


@pytest.mark.parametrize("name", OBJECTIVES)
@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 5), k=st.integers(2, 20), seed=st.integers(0, 1000),
       spread=st.floats(0.1, 50.0))
def test_objectives_finite(name, n, k, seed, spread):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(n, k, generator=g) * spread
    text = torch.randn(n, k, generator=g) * spread
    terms = build_alignment(AlignmentConfig(name=name))(video, text, _vae_out(n, k, seed))
    assert "align" in terms
    for value in terms.values():
        assert value.dim() == 0 and torch.isfinite(value)
    assert terms["align"] >= -1e-5


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_objective_values(weight):
    g = torch.Generator().manual_seed(3)
    video = torch.randn(4, 9, generator=g) * 3
    text = torch.randn(4, 9, generator=g) * 3
    p_t, logp_v = text.softmax(-1), video.log_softmax(-1)
    cfg = {"weight": weight}

    kl = build_alignment(AlignmentConfig(name="kl", **cfg))(video, text)
    ref = kl_divergence(Categorical(logits=text), Categorical(logits=video)).mean()
    torch.testing.assert_close(kl["kl"], ref)
    torch.testing.assert_close(kl["align"], weight * ref)

    ce = build_alignment(AlignmentConfig(name="ce", **cfg))(video, text)
    torch.testing.assert_close(ce["ce"], -(p_t * logp_v).sum(-1).mean())

    mse = build_alignment(AlignmentConfig(name="mse", **cfg))(video, text)
    torch.testing.assert_close(mse["mse"], (video.softmax(-1) - p_t).pow(2).sum(-1).mean())

    out = _vae_out(4, 9)
    vae = build_alignment(AlignmentConfig(name="vae", alpha=0.1, **cfg))(video, text, out)
    rec = -(p_t * out.logits.log_softmax(-1)).sum(-1).mean()
    kl_prior = kl_to_standard_normal(out.mu, out.logvar).mean()
    torch.testing.assert_close(vae["rec"], rec)
    torch.testing.assert_close(vae["kl_prior"], kl_prior)
    torch.testing.assert_close(vae["align"], weight * (rec + 0.1 * kl_prior))
    # the reconstruction is of the text's distribution, not of the video's
    assert not torch.allclose(vae["rec"], -(video.softmax(-1) * out.logits.log_softmax(-1)).sum(-1).mean())


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 5), k=st.integers(2, 20), seed=st.integers(0, 1000),
       spread=st.floats(0.1, 30.0))
def test_equal_logits(n, k, seed, spread):
    logits = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * spread
    kl = build_alignment(AlignmentConfig(name="kl"))(logits, logits.clone())
    mse = build_alignment(AlignmentConfig(name="mse"))(logits, logits.clone())
    ce = build_alignment(AlignmentConfig(name="ce"))(logits, logits.clone())
    assert abs(float(kl["kl"])) < 1e-5
    assert abs(float(mse["mse"])) < 1e-6
    entropy = Categorical(logits=logits).entropy().mean()
    torch.testing.assert_close(ce["ce"], entropy, atol=1e-5, rtol=1e-5)


def test_vae_objective_needs_vae_output():
    with pytest.raises(ValueError, match="VAE"):
        build_alignment(AlignmentConfig(name="vae"))(torch.zeros(2, 3), torch.zeros(2, 3))


def test_none_objective_has_no_terms():
    none = build_alignment(AlignmentConfig(name="none"))
    assert not none.uses_anchors and not none.uses_vae
    with pytest.raises(RuntimeError):
        none(torch.zeros(2, 3), torch.zeros(2, 3))


@pytest.mark.parametrize("name", OBJECTIVES)
@pytest.mark.parametrize("detach", [True, False])
def test_detach_target(name, detach):
    g = torch.Generator().manual_seed(0)
    video = torch.randn(3, 7, generator=g).requires_grad_(True)
    text = torch.randn(3, 7, generator=g).requires_grad_(True)
    out = _vae_out(3, 7)
    out.logits.requires_grad_(True)
    terms = build_alignment(AlignmentConfig(name=name, detach_target=detach))(video, text, out)
    g_text, g_pred = torch.autograd.grad(
        terms["align"], [text, out.logits if name == "vae" else video], allow_unused=True)
    if detach:
        assert g_text is None or torch.all(g_text == 0)
    else:
        assert _nonzero(g_text)
    assert _nonzero(g_pred)  # the prediction side always learns


# --------------------------------------------------------------------------------------------
# CALM: wiring and gradient paths
# --------------------------------------------------------------------------------------------


def test_vae_model_gradient_reaches_every_part(calm_vae, batch):
    model = calm_vae.train()
    out = model(*batch)
    assert out.anchors is not None and out.anchors.vae is not None
    terms = CALMLoss()(out)
    assert set(terms) >= {"task", "rec", "kl_prior", "align", "loss"}
    torch.testing.assert_close(terms["loss"], terms["task"] + terms["align"])
    grads = _grads(terms["loss"], _groups(model))
    missing = [name for name, g in grads.items() if not _nonzero(g)]
    assert not missing, f"no gradient reaches {missing}"
    # the alignment term alone trains the vision tower, the offsets and the VAE
    align = _grads(CALMLoss()(model(*batch))["align"], _groups(model))
    for name in ("vision", "anchor_offsets", "vae_encoder", "vae_decoder"):
        assert _nonzero(align[name]), name


def test_none_model_is_plain_infonce(calm_none, batch):
    model = calm_none.eval()
    assert model.vae is None and model.anchors is None
    with torch.no_grad():
        out = model(*batch)
        terms = CALMLoss()(out)
        text = model.encode_text(batch[2])
        feats = model.encode_frames(batch[0], batch[1])
        sims = model.fusion.similarity(text, feats, batch[1])
    assert out.anchors is None
    assert set(terms) == {"task", "loss"}
    torch.testing.assert_close(out.sims, sims)
    torch.testing.assert_close(terms["loss"], symmetric_info_nce(sims, model.logit_scale))
    assert not any("anchors" in n or n.startswith("vae") for n, _ in model.named_parameters())


def test_none_model_gradient(calm_none, batch):
    model = calm_none.train()
    grads = _grads(CALMLoss()(model(*batch))["loss"], _groups(model))
    assert all(_nonzero(g) for g in grads.values())


def test_step_refresh_trains_text_encoder_through_anchors(calm_vae, calm_vae_step, batch):
    """The alignment term (target detached) reaches the text encoder only via re-encoded anchors."""
    text_params = {n: p for n, p in calm_vae_step.backbone.clip.named_parameters()
                   if n in ("token_embedding.weight", "text_projection",
                            "transformer.resblocks.0.mlp.c_fc.weight")}
    step = _grads(CALMLoss()(calm_vae_step.train()(*batch))["align"], text_params)
    assert all(_nonzero(g) for g in step.values())
    # anchors only: the anchor matrix's gradient reaches the text encoder
    anchors_only = _grads(calm_vae_step.anchor_matrix().sum(), text_params)
    assert all(_nonzero(g) for g in anchors_only.values())

    text_params = {n: p for n, p in calm_vae.backbone.clip.named_parameters() if n in text_params}
    calm_vae.anchors.invalidate()
    cached = _grads(CALMLoss()(calm_vae.train()(*batch))["align"], text_params)
    assert all(g is None or torch.all(g == 0) for g in cached.values())


def test_undetached_target_trains_text_encoder_through_captions(batch):
    model = _model("kl", detach_target=False).train()
    text_params = {"token_embedding.weight": model.backbone.clip.token_embedding.weight}
    grads = _grads(CALMLoss()(model(*batch))["align"], text_params)
    assert _nonzero(grads["token_embedding.weight"])


@pytest.mark.parametrize("name", ["kl", "ce", "mse"])
def test_direct_objectives_have_anchors_but_no_vae(name, batch):
    model = _model(name)
    assert model.anchors is not None and model.vae is None
    terms = CALMLoss()(model(*batch))
    assert name in terms and torch.isfinite(terms["loss"])
    torch.testing.assert_close(terms["loss"], terms["task"] + terms["align"])


def test_model_needs_its_parts(calm_vae):
    with pytest.raises(ValueError, match="VAE"):
        CALM(CoreParts(calm_vae.backbone, build_alignment(AlignmentConfig(name="vae")),
                       calm_vae.anchors, None), calm_vae.fusion)
    with pytest.raises(ValueError, match="anchor"):
        CALM(CoreParts(calm_vae.backbone, build_alignment(AlignmentConfig(name="kl")), None, None),
             calm_vae.fusion)
