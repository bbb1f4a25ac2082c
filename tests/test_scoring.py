"""Chunked text x video scoring: chunk sizes, candidate order and counts never change a score."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.config import (
    AlignmentConfig,
    BackboneConfig,
    ExperimentConfig,
    FusionConfig,
    ModelConfig,
    ScoreConfig,
    from_dict,
)
from calm.model.backbone import build_backbone
from calm.model.core import CoreParts
from calm.model.fusion import build_fusion
from calm.model.losses import build_alignment
from calm.model.retrieval import CALM
from calm.model.scoring import (
    similarity_matrix,
)

HEADS = ("meanP", "seqTransf", "xpool")
N_T, N_V, T = 9, 7, 4
ATOL = 1e-5


def _perturb(module, seed=7, std=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return module


@pytest.fixture(scope="module")
def models():
    """One calm-micro backbone shared by a baseline model per fusion head."""
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(name="calm-micro"))
    none = build_alignment(AlignmentConfig(name="none"))
    out = {}
    for name in HEADS:
        fusion = _perturb(build_fusion(FusionConfig(name=name, layers=1), backbone.embed_dim))
        out[name] = CALM(CoreParts(backbone, none, None, None), fusion).eval()
    return out


@pytest.fixture(scope="module")
def calm_vae():
    torch.manual_seed(0)
    cfg = from_dict(ModelConfig, {
        "backbone": {"name": "calm-micro"},
        "anchors": {"labels": "coco"},
        "vae": {"latent_dim": 16, "encoder_hidden": [32], "decoder_hidden": [32]},
    })
    model = CALM.from_config(cfg)
    _perturb(model.vae, std=0.3)
    _perturb(model.fusion)
    return model.eval()


def _features(n_t=N_T, n_v=N_V, dim=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(n_t, dim, generator=g)
    frames = torch.randn(n_v, T, dim, generator=g)
    lengths = torch.randint(1, T + 1, (n_v,), generator=g)
    mask = torch.arange(T)[None] < lengths[:, None]
    return text, frames * mask[..., None], mask


def _whole(model, text, frames, mask):
    with torch.no_grad():
        return model.fusion.similarity(text, frames, mask)


@pytest.mark.parametrize("name", HEADS)
def test_equals_whole_similarity(models, name):
    model = models[name]
    text, frames, mask = _features()
    scores = similarity_matrix(model, text, frames, mask, ScoreConfig(text_chunk=4, video_chunk=3))
    assert scores.shape == (N_T, N_V) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, _whole(model, text, frames, mask), atol=ATOL, rtol=0)
    # the default chunk sizes (larger than the inputs) too
    torch.testing.assert_close(similarity_matrix(model, text, frames, mask),
                               _whole(model, text, frames, mask), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", HEADS)
@settings(max_examples=15, deadline=None)
@given(text_chunk=st.integers(1, N_T + 2), video_chunk=st.integers(1, N_V + 2),
       seed=st.integers(0, 1000))
def test_chunk_sizes_do_not_change_scores(models, name, text_chunk, video_chunk, seed):
    model = models[name]
    text, frames, mask = _features(seed=seed)
    ref = similarity_matrix(model, text, frames, mask, ScoreConfig(text_chunk=N_T, video_chunk=N_V))
    got = similarity_matrix(model, text, frames, mask,
                            ScoreConfig(text_chunk=text_chunk, video_chunk=video_chunk))
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", HEADS)
@settings(max_examples=10, deadline=None)
@given(perm=st.permutations(range(N_V)), video_chunk=st.integers(1, N_V))
def test_permuting_videos_permutes_columns(models, name, perm, video_chunk):
    model = models[name]
    text, frames, mask = _features()
    perm = torch.tensor(perm)
    cfg = ScoreConfig(text_chunk=5, video_chunk=video_chunk)
    ref = similarity_matrix(model, text, frames, mask, cfg)
    got = similarity_matrix(model, text, frames[perm], mask[perm], cfg)
    torch.testing.assert_close(got, ref[:, perm], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("n_t, n_v", [(N_T, 2), (1, N_V), (5, 1)])
def test_unequal_counts(models, name, n_t, n_v):
    model = models[name]
    text, frames, mask = _features()
    ref = similarity_matrix(model, text, frames, mask)
    got = similarity_matrix(model, text[:n_t], frames[-n_v:], mask[-n_v:],
                            ScoreConfig(text_chunk=2, video_chunk=2))
    assert got.shape == (n_t, n_v)
    torch.testing.assert_close(got, ref[:n_t, -n_v:], atol=ATOL, rtol=0)


def test_no_mask_means_all_frames_real(models):
    text, frames, _ = _features()
    for model in models.values():
        full = torch.ones(N_V, T, dtype=torch.bool)
        torch.testing.assert_close(similarity_matrix(model, text, frames, None),
                                   similarity_matrix(model, text, frames, full), atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------
# anchor agreement
# --------------------------------------------------------------------------------------------


def _manual_agreement(model, text, frames, mask):
    with torch.no_grad():
        anchors = model.anchor_matrix()
        v = model.video_anchor_logits(frames, mask, anchors).softmax(-1)
        # the predictive: the decoder averaged over 32 shared draws of z ~ q(z | V_p)
        mu, logvar = model.vae.encode(v)
        eps = torch.randn((32, 1, mu.shape[-1]), generator=torch.Generator().manual_seed(0))
        generated = model.vae.decoder(mu + (0.5 * logvar).exp() * eps).softmax(-1).mean(0)
        s = model.text_anchor_logits(text, anchors).softmax(-1)
    return s.sqrt() @ generated.sqrt().t()  # Bhattacharyya coefficient


def test_anchor_agreement_is_base_plus_weighted_bc(calm_vae):
    model = calm_vae
    text, frames, mask = _features()
    base = similarity_matrix(model, text, frames, mask, ScoreConfig(mode="base"))
    w = 0.3
    got = similarity_matrix(model, text, frames, mask,
                            ScoreConfig(mode="anchor_agreement", anchor_weight=w))
    bc = _manual_agreement(model, text, frames, mask)
    assert torch.all(bc >= 0) and torch.all(bc <= 1 + 1e-5)
    assert bc.std() > 1e-4  # the term really varies across pairs
    torch.testing.assert_close(got, base + w * bc, atol=ATOL, rtol=0)
    # base mode really is the fusion head alone
    torch.testing.assert_close(base, _whole(model, text, frames, mask), atol=ATOL, rtol=0)


@settings(max_examples=8, deadline=None)
@given(text_chunk=st.integers(1, N_T + 1), video_chunk=st.integers(1, N_V + 1),
       perm=st.permutations(range(N_V)))
def test_anchor_agreement_chunks_and_permutation(calm_vae, text_chunk, video_chunk, perm):
    text, frames, mask = _features(seed=3)
    cfg = ScoreConfig(mode="anchor_agreement", text_chunk=text_chunk, video_chunk=video_chunk)
    ref = similarity_matrix(calm_vae, text, frames, mask, ScoreConfig(mode="anchor_agreement"))
    torch.testing.assert_close(similarity_matrix(calm_vae, text, frames, mask, cfg), ref,
                               atol=ATOL, rtol=0)
    perm = torch.tensor(perm)
    torch.testing.assert_close(similarity_matrix(calm_vae, text, frames[perm], mask[perm], cfg),
                               ref[:, perm], atol=ATOL, rtol=0)


def test_anchor_agreement_needs_a_vae(models):
    text, frames, mask = _features()
    with pytest.raises(ValueError, match="VAE"):
        similarity_matrix(models["xpool"], text, frames, mask, ScoreConfig(mode="anchor_agreement"))


# a score mode that needs a VAE with an objective that trains none: tests/test_contracts.py


def test_anchor_agreement_model_from_config_trains_its_vae():
    """One real training step: every VAE weight gets a gradient from the loss and moves, so the
    VAE that anchor_agreement scores with is the one the objective trains."""
    from calm.engine.optim import build_optimizer
    from calm.engine.state import TrainState
    from calm.engine.tasks import task_for
    from calm.engine.train import train_step

    cfg = from_dict(ExperimentConfig, {
        "model": {"backbone": {"name": "calm-micro"}, "anchors": {"labels": "coco"},
                  "alignment": {"name": "vae"}, "score": {"mode": "anchor_agreement"}},
        "train": {"lr": 1e-3, "backbone_lr": 0.0},
    })
    task = task_for(cfg)
    torch.manual_seed(0)
    model = task.build_model(cfg.model).train()
    before = {n: p.detach().clone() for n, p in model.vae.named_parameters()}
    g = torch.Generator().manual_seed(1)
    batch = {"frames": torch.randint(0, 255, (4, 2, 3, 32, 32), dtype=torch.uint8, generator=g),
             "frame_mask": torch.ones(4, 2, dtype=torch.bool),
             "tokens": model.backbone.tokenize(["a cat", "two dogs", "a red car", "rain"]),
             "text_index": torch.arange(4)}
    terms = train_step(model, model, task.build_loss(cfg), batch, build_optimizer(model, cfg.train),
                       torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"), cfg.train,
                       TrainState())
    assert terms is not None
    for name, param in model.vae.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name
        assert not torch.equal(param.detach(), before[name]), f"vae.{name} did not move"


def test_anchor_probability_helpers(calm_vae):
    text, frames, mask = _features()
    gen = calm_vae.generated_anchor_probs(frames, mask, chunk=3)
    s_p = calm_vae.text_anchor_probs(text, chunk=4)
    assert gen.shape == (N_V, 91) and s_p.shape == (N_T, 91)
    for p in (gen, s_p):
        assert torch.all(p >= 0)
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[0]))
    torch.testing.assert_close(calm_vae.generated_anchor_probs(frames, mask, chunk=100), gen)
    sigma = calm_vae.video_uncertainty(frames, mask, chunk=2, signal="sigma")
    with torch.no_grad():
        anchors = calm_vae.anchor_matrix()
        v = calm_vae.video_anchor_logits(frames, mask, anchors).softmax(-1)
        ref = calm_vae.vae(v, sample=False).uncertainty
    assert sigma.shape == (N_V,) and torch.all(sigma > 0)
    torch.testing.assert_close(sigma, ref)
