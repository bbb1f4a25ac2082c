"""CALM's mechanism as options: multi-positive InfoNCE, the KL direction, KL warm-up and free
bits, fresh anchors at evaluation, and the anchor diagnostics of every evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.config import AlignmentConfig, ExperimentConfig, from_dict
from calm.engine.evaluation.anchors import anchor_diagnostics
from calm.engine.evaluation.retrieval import encode_split
from calm.engine.inputs import data_setup
from calm.engine.tasks import task_for
from calm.model.losses import build_alignment, multi_positive_info_nce, symmetric_info_nce
from calm.model.retrieval import CALM
from calm.model.vae import VAEOutput
from tests.engine_fixtures import tiny_config, write_tiny_msrvtt

# ---- multi-positive InfoNCE ---------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 7), st.integers(0, 2**31 - 1))
def test_all_modes_equal_plain_infonce_without_repeated_videos(n, seed):
    g = torch.Generator().manual_seed(seed)
    sims = torch.rand(n, n, generator=g) * 2 - 1
    scale = torch.tensor(math.log(20.0))
    plain = symmetric_info_nce(sims, scale)
    ids = torch.randperm(n, generator=g)  # every pair a different video
    for mode in ("negative", "positive", "masked"):
        torch.testing.assert_close(multi_positive_info_nce(sims, scale, ids, mode), plain)


def test_same_video_pairs_by_hand():
    # pairs 0 and 1 show the same video; pair 2 another one
    sims = torch.tensor([[0.9, 0.8, 0.1], [0.7, 0.6, 0.2], [0.3, 0.0, 0.5]])
    ids = torch.tensor([5, 5, 9])
    scale = torch.tensor(0.0)  # logits = sims
    e = sims.exp()
    # positive, text->video: row 0: -log((e00 + e01) / sum row 0), etc.
    t2v_pos = -torch.log(torch.stack([(e[0, 0] + e[0, 1]) / e[0].sum(),
                                      (e[1, 0] + e[1, 1]) / e[1].sum(),
                                      e[2, 2] / e[2].sum()])).mean()
    v2t_pos = -torch.log(torch.stack([(e[0, 0] + e[1, 0]) / e[:, 0].sum(),
                                      (e[0, 1] + e[1, 1]) / e[:, 1].sum(),
                                      e[2, 2] / e[:, 2].sum()])).mean()
    torch.testing.assert_close(multi_positive_info_nce(sims, scale, ids, "positive"),
                               0.5 * (t2v_pos + v2t_pos))
    # masked: the other same-video pair leaves the denominator
    t2v_m = -torch.log(torch.stack([e[0, 0] / (e[0, 0] + e[0, 2]), e[1, 1] / (e[1, 1] + e[1, 2]),
                                    e[2, 2] / e[2].sum()])).mean()
    v2t_m = -torch.log(torch.stack([e[0, 0] / (e[0, 0] + e[2, 0]), e[1, 1] / (e[1, 1] + e[2, 1]),
                                    e[2, 2] / e[:, 2].sum()])).mean()
    torch.testing.assert_close(multi_positive_info_nce(sims, scale, ids, "masked"),
                               0.5 * (t2v_m + v2t_m))
    # negative is plain InfoNCE, which pushes pair 0's text away from pair 1's clip
    torch.testing.assert_close(multi_positive_info_nce(sims, scale, ids, "negative"),
                               symmetric_info_nce(sims, scale))


def test_positive_mode_stops_pushing_same_video_pairs_apart():
    sims = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.5]], requires_grad=True)
    ids = torch.tensor([1, 1, 2])
    scale = torch.tensor(math.log(10.0))
    (g_neg,) = torch.autograd.grad(multi_positive_info_nce(sims, scale, ids, "negative"), sims)
    (g_pos,) = torch.autograd.grad(multi_positive_info_nce(sims, scale, ids, "positive"), sims)
    assert g_neg[0, 1] > 0  # plain InfoNCE lowers the same-video off-diagonal score
    assert g_pos[0, 1] < 0  # multi-positive raises it, as a positive


def test_the_training_loss_uses_the_batch_video_ids():
    cfg = from_dict(ExperimentConfig, {"train": {"same_video": "positive"}})
    loss = task_for(cfg).build_loss(cfg)

    class Out:
        sims = torch.tensor([[0.5, 0.4], [0.3, 0.6]])
        video_ids = torch.tensor([3, 3])
        logit_scale = torch.tensor(0.0)
        anchors = None

    expected = multi_positive_info_nce(Out.sims, Out.logit_scale, Out.video_ids, "positive")
    torch.testing.assert_close(loss(Out)["task"], expected)
    assert not torch.allclose(expected, symmetric_info_nce(Out.sims, Out.logit_scale))


# ---- the KL direction, warm-up and free bits -----------------------------------------------------


def test_kl_directions_by_hand():
    video = torch.tensor([[2.0, 0.0, -1.0]])
    text = torch.tensor([[0.0, 1.0, 0.0]])
    lv, lt = video.log_softmax(-1), text.log_softmax(-1)
    t2v = build_alignment(AlignmentConfig(name="kl"))(video, text)["kl"]
    v2t = build_alignment(AlignmentConfig(name="kl", kl_direction="video_to_text"))(video, text)
    torch.testing.assert_close(t2v, (lt.exp() * (lt - lv)).sum())
    torch.testing.assert_close(v2t["kl"], (lv.exp() * (lv - lt)).sum())


def test_detached_kl_and_ce_have_the_same_gradient():
    """Why the direction matters: with S_p detached, KL(S_p || V_p) = CE - H(S_p)."""
    video = torch.randn(4, 6, requires_grad=True)
    text = torch.randn(4, 6)
    g_kl, = torch.autograd.grad(build_alignment(AlignmentConfig(name="kl"))(video, text)["align"],
                                video)
    g_ce, = torch.autograd.grad(build_alignment(AlignmentConfig(name="ce"))(video, text)["align"],
                                video)
    torch.testing.assert_close(g_kl, g_ce)
    rev = build_alignment(AlignmentConfig(name="kl", kl_direction="video_to_text"))
    g_rev, = torch.autograd.grad(rev(video, text)["align"], video)
    assert not torch.allclose(g_rev, g_ce)


def _vae_out(mu, logvar, k=5):
    return VAEOutput(mu, logvar, mu, torch.zeros(mu.shape[0], k))


def test_kl_warmup_ramps_alpha_over_training_steps():
    objective = build_alignment(AlignmentConfig(name="vae", alpha=0.1, kl_warmup_steps=4)).train()
    mu, logvar = torch.ones(2, 3), torch.zeros(2, 3)  # KL = 0.5 * 3 per sample
    logits = torch.zeros(2, 5)
    weights = []
    for _ in range(6):
        terms = objective(logits, logits, _vae_out(mu, logvar))
        weights.append(float((terms["align"] - terms["rec"]) / terms["kl_prior"]))
        objective.step_done()  # the training loop's after-step hook
    assert weights == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1])
    objective(logits, logits, _vae_out(mu, logvar))  # a forward alone (evaluation, a skipped
    assert int(objective.steps_seen) == 6  # non-finite step) does not advance the ramp


def test_free_bits_floor_each_latent_dimension():
    objective = build_alignment(AlignmentConfig(name="vae", alpha=1.0, free_bits=0.5))
    mu = torch.tensor([[2.0, 0.0, 0.0]])  # KL per dim: 2.0, 0, 0
    terms = objective(torch.zeros(1, 5), torch.zeros(1, 5), _vae_out(mu, torch.zeros(1, 3)))
    assert float(terms["kl_prior"]) == pytest.approx(2.0)  # reported unfloored
    assert float(terms["align"] - terms["rec"]) == pytest.approx(2.0 + 0.5 + 0.5)


# ---- fresh anchors at evaluation, and the diagnostics ---------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    ann, vid = write_tiny_msrvtt(root)
    cfg = from_dict(ExperimentConfig, tiny_config(ann, vid))
    model = task_for(cfg).build_model(cfg.model)
    data = data_setup(cfg.data, model.backbone.preprocess, model.backbone.tokenizer,
                      cfg.data.text_length)
    return model, cfg, data


def test_evaluation_scores_with_anchors_from_the_current_text_encoder(tiny):
    model, cfg, _ = tiny
    model.train()
    training_cache = model.anchor_matrix().detach()  # cached (refresh: epoch) at this encoder
    with torch.no_grad():  # the text encoder moves on, as during an epoch
        model.backbone.clip.token_embedding.weight.add_(0.05)
    model.eval()
    with torch.no_grad():
        current = model.backbone.encode_text(model.anchors.tokens) + model.anchors.offset
        stale = model.anchor_matrix()
        with model.evaluation_anchors():
            fresh = model.anchor_matrix()
        after = model.anchor_matrix()
    torch.testing.assert_close(fresh, current)
    torch.testing.assert_close(stale, training_cache)
    torch.testing.assert_close(after, training_cache)  # training's cache is put back
    assert not torch.allclose(fresh, stale)


def test_eval_metrics_carry_the_anchors_block(tiny):
    model, cfg, data = tiny
    ann = data.split("test")
    metrics = task_for(cfg).evaluate(model, ann, data, cfg, torch.device("cpu"))
    block = metrics["anchors"]
    k = model.anchors.num_anchors
    assert block["rec_ce_uniform"] == pytest.approx(math.log(k))
    for key in ("rec_ce", "kl", "entropy_vp", "entropy_sp", "top1_agreement"):
        assert math.isfinite(block[key]), key
    assert 0 <= block["active_dims"] <= block["latent_dim"]
    assert 0 <= block["entropy_sp"] <= math.log(k) + 1e-6
    assert block["rec_ce"] >= block["entropy_sp"] - 1e-4  # cross-entropy >= entropy


def test_diagnostics_by_hand(tiny):
    """rec_ce and the marginal baseline against a direct computation on the cached split."""
    model, cfg, data = tiny
    model.eval()
    ann = data.split("val")
    emb = encode_split(model, ann, data, 16, torch.device("cpu"))
    model.anchors.text_marginal_sum.fill_(1.0)  # a uniform training marginal
    model.anchors.text_marginal_count.fill_(model.anchors.num_anchors)
    with torch.no_grad(), model.evaluation_anchors():
        block = anchor_diagnostics(model, emb, torch.device("cpu"))
        p = model.anchor_matrix()
        sp = model.text_anchor_logits(emb.text, p).softmax(-1)
        vp = model.video_anchor_logits(emb.frames, emb.mask, p).softmax(-1)
        at_mu = model.vae(vp, sample=False).probs
        # the predictive by hand: 32 draws of z, the same standard-normal draws for every video
        mu, logvar = model.vae.encode(vp)
        eps = torch.randn((32, 1, mu.shape[-1]), generator=torch.Generator().manual_seed(0))
        predictive = model.vae.decoder(mu + (0.5 * logvar).exp() * eps).softmax(-1).mean(0)
    pairs = torch.as_tensor(emb.text_to_video)

    def ce(pred):
        return float(-(sp * pred.log()).sum(-1).mean())

    assert block["rec_ce"] == pytest.approx(ce(predictive[pairs]), rel=1e-4)
    assert block["rec_ce_mu"] == pytest.approx(ce(at_mu[pairs]), rel=1e-4)
    assert block["rec_ce"] != pytest.approx(block["rec_ce_mu"], rel=1e-6)
    assert block["rec_ce_marginal"] == pytest.approx(math.log(model.anchors.num_anchors), rel=1e-5)
    assert block["rec_ce_split_marginal"] == pytest.approx(ce(sp.mean(0, keepdim=True)), rel=1e-5)
    # the split's own mean S_p is the best constant: no better than it, the uniform marginal
    assert block["rec_ce_split_marginal"] <= block["rec_ce_marginal"] + 1e-6
    entropy = -(sp * sp.log()).sum(-1).mean()
    assert block["entropy_sp"] == pytest.approx(float(entropy), rel=1e-4)
    agree = (vp[pairs].argmax(-1) == sp.argmax(-1)).float().mean() * 100
    assert block["top1_agreement"] == pytest.approx(float(agree))


def test_kl_and_active_dims_by_hand(tiny):
    """Ten latent means made to vary over the videos (their encoder rows scaled by 1e6), the
    other means held at exactly 0 (rows and biases zeroed): active_dims is exactly 10, and the
    KL is the closed form. The construction does not depend on the random initialisation."""
    import copy

    model, cfg, data = tiny
    model = copy.deepcopy(model).eval()
    latent = model.vae.latent_dim
    with torch.no_grad():
        last = model.vae.encoder[-1]  # its first latent_dim outputs are mu
        last.weight[:10].mul_(1e6)
        last.weight[10:latent].zero_()
        last.bias[10:latent].zero_()
    emb = encode_split(model, data.split("val"), data, 16, torch.device("cpu"))
    with torch.no_grad(), model.evaluation_anchors():
        block = anchor_diagnostics(model, emb, torch.device("cpu"))
        vp = model.video_anchor_logits(emb.frames, emb.mask, model.anchor_matrix()).softmax(-1)
        mu, logvar = model.vae.encode(vp)
    mu, var = mu.double().numpy(), logvar.double().exp().numpy()
    spread = mu.var(axis=0, ddof=1)
    assert spread[:10].min() > 1.0 and spread[10:].max() == 0.0  # the construction holds
    assert block["active_dims"] == 10 and block["latent_dim"] == mu.shape[1]
    kl = 0.5 * (var + mu**2 - 1.0 - np.log(var)).sum(axis=1).mean()
    assert block["kl"] == pytest.approx(kl, rel=1e-5)


def test_the_training_marginal_spans_the_last_complete_epoch_and_the_current_one():
    """A run that stops a few batches into an epoch still compares against a whole epoch's
    marginal (restarting at every epoch alone left those few batches)."""
    from calm.config.schema import AnchorConfig
    from calm.model.anchors import build_anchors

    bank = build_anchors(AnchorConfig(labels="coco"), lambda texts: torch.zeros(len(texts), 8), 8)
    k = bank.num_anchors
    assert bank.text_marginal() is None
    first = torch.softmax(torch.randn(30, k, generator=torch.Generator().manual_seed(1)), -1)
    bank.start_epoch()
    bank.observe_text(first[:20])
    bank.observe_text(first[20:])
    torch.testing.assert_close(bank.text_marginal(), first.mean(0))
    second = torch.softmax(torch.randn(4, k, generator=torch.Generator().manual_seed(2)), -1)
    bank.start_epoch()  # epoch 1 is complete: it stays in the marginal while epoch 2 begins
    torch.testing.assert_close(bank.text_marginal(), first.mean(0))
    bank.observe_text(second)
    torch.testing.assert_close(bank.text_marginal(), torch.cat([first, second]).mean(0))
    bank.start_epoch()  # epoch 2 (4 rows) replaces epoch 1 as the last complete one
    torch.testing.assert_close(bank.text_marginal(), second.mean(0))


def test_a_checkpoint_without_the_last_epoch_marginal_still_loads(tiny):
    model, cfg, _ = tiny
    state = {k: v for k, v in model.state_dict().items() if "text_marginal_last" not in k}
    clone = task_for(cfg).build_model(cfg.model)
    clone.load_state_dict(state, strict=True)
    assert float(clone.anchors.text_marginal_last_count) == 0


def test_a_training_step_accumulates_the_text_marginal():
    from calm.engine.state import TrainState
    from calm.engine.train import train_step
    from calm.model.losses import CALMLoss

    torch.manual_seed(0)
    cfg = from_dict(ExperimentConfig, {"model": {
        "backbone": {"name": "calm-micro"}, "anchors": {"labels": "coco"},
        "alignment": {"name": "ce"}}})
    model = CALM.from_config(cfg.model).train()
    frames = torch.randint(0, 255, (2, 2, 3, 32, 32), dtype=torch.uint8)
    batch = {"frames": frames, "frame_mask": torch.ones(2, 2, dtype=torch.bool),
             "tokens": model.backbone.tokenize(["a cat", "two dogs"]),
             "text_index": torch.tensor([0, 1])}
    with torch.no_grad():
        expected = model.text_anchor_logits(model.encode_text(batch["tokens"])).softmax(-1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    train_step(model, model, CALMLoss(), batch, opt, torch.amp.GradScaler("cpu", enabled=False),
               torch.device("cpu"), cfg.train, TrainState())
    torch.testing.assert_close(model.anchors.text_marginal(), expected.mean(0))


def test_zero_shot_diagnostics_of_a_model_without_anchors(tiny):
    from calm.engine.evaluation.anchors import zero_shot_anchor_diagnostics

    _, cfg, data = tiny
    base_cfg = from_dict(ExperimentConfig, {**tiny_config(cfg.data.annotations, cfg.data.videos),
                                            "model": {"backbone": {"name": "calm-micro"},
                                                      "alignment": {"name": "none"}}})
    model = task_for(base_cfg).build_model(base_cfg.model).eval()
    emb = encode_split(model, data.split("val"), data, 16, torch.device("cpu"))
    block = zero_shot_anchor_diagnostics(model, cfg.model.anchors, emb, torch.device("cpu"))
    assert model.anchors is None  # the borrowed bank is gone again
    assert block["num_anchors"] == 91 and block["rec_ce"] is None and block["kl"] is None
    assert 0 <= block["top1_agreement"] <= 100 and block["entropy_vp"] > 0
