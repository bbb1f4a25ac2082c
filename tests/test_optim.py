"""Which parameters get weight decay and which learning rate."""

from __future__ import annotations

import pytest

from calm.config import ExperimentConfig, from_dict
from calm.engine.optim import param_groups
from calm.engine.tasks import task_for


@pytest.fixture(scope="module")
def seqtransf_calm():
    cfg = from_dict(ExperimentConfig, {
        "model": {"backbone": {"name": "calm-micro"},
                  "fusion": {"name": "seqTransf", "layers": 1},
                  "alignment": {"name": "vae"},
                  "vae": {"latent_dim": 8, "encoder_hidden": [16], "decoder_hidden": [16]}},
        "train": {"lr": 1e-3, "backbone_lr": 1e-4, "weight_decay": 0.2},
    })
    return task_for(cfg).build_model(cfg.model), cfg


def _group_of(model, cfg) -> dict[str, dict]:
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: g for g in param_groups(model, cfg.train) for p in g["params"]}


def test_embeddings_positions_offsets_and_gains_are_not_decayed(seqtransf_calm):
    model, cfg = seqtransf_calm
    group = _group_of(model, cfg)
    for name in ("fusion.frame_position.weight", "anchors.offset",
                 "backbone.clip.token_embedding.weight", "backbone.clip.positional_embedding"):
        assert group[name]["weight_decay"] == 0.0, name
    biases_and_gains = [n for n, p in model.named_parameters() if p.ndim < 2 and p.requires_grad]
    assert biases_and_gains and all(group[n]["weight_decay"] == 0.0 for n in biases_and_gains)


def test_weight_matrices_are_decayed_with_their_module_rate(seqtransf_calm):
    model, cfg = seqtransf_calm
    group = _group_of(model, cfg)
    vae_weights = [n for n, p in model.named_parameters() if n.startswith("vae.") and p.ndim == 2]
    assert vae_weights and all(group[n]["weight_decay"] == 0.2 and group[n]["lr"] == 1e-3
                               for n in vae_weights)
    attn = "fusion.transformer.layers.0.self_attn.in_proj_weight"
    assert group[attn]["weight_decay"] == 0.2 and group[attn]["lr"] == 1e-3
    backbone = [n for n, p in model.named_parameters() if n.startswith("backbone.") and p.ndim == 2
                and "embedding" not in n and "positional" not in n]
    assert backbone and all(group[n]["lr"] == 1e-4 for n in backbone)


def test_the_vae_can_have_its_own_rate_and_decay():
    from calm.config import ExperimentConfig, from_dict

    cfg = from_dict(ExperimentConfig, {
        "model": {"backbone": {"name": "calm-micro"}, "alignment": {"name": "vae"},
                  "vae": {"latent_dim": 8, "encoder_hidden": [16], "decoder_hidden": [16]}},
        "train": {"lr": 1e-3, "vae_lr": 1e-2, "vae_weight_decay": 0.0, "weight_decay": 0.2},
    })
    model = task_for(cfg).build_model(cfg.model)
    group = _group_of(model, cfg)
    for name, _ in model.named_parameters():
        if name.startswith("vae."):
            assert group[name]["lr"] == 1e-2 and group[name]["weight_decay"] == 0.0, name
    assert group["fusion.q_proj.weight"]["lr"] == 1e-3
    assert group["fusion.q_proj.weight"]["weight_decay"] == 0.2
