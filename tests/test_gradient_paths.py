"""Which parameter groups the alignment term alone reaches, for every gradient-path option.

The options (model.anchors.refresh, model.alignment.detach_target, model.anchors.video_source)
decide whether CALM's alignment trains only the image tower or both towers and the fusion head.
Each row of the table below is asserted exactly: a group gets a non-zero gradient from L_align
if and only if the table says so.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from calm.config import ModelConfig, from_dict
from calm.model.losses import CALMLoss
from calm.model.retrieval import CALM
from tests.engine_fixtures import three_clip_batch


def _model(refresh: str, detach: bool, source: str, step_subset: int = 0) -> CALM:
    torch.manual_seed(0)
    cfg = from_dict(ModelConfig, {
        "backbone": {"name": "calm-micro"},
        "fusion": {"name": "xpool"},
        "alignment": {"name": "vae", "detach_target": detach},
        "anchors": {"refresh": refresh, "video_source": source, "labels": "coco",
                    "step_subset": step_subset},
        "vae": {"latent_dim": 8, "encoder_hidden": [16], "decoder_hidden": [16]},
    })
    return CALM.from_config(cfg).train()


def _groups(model: CALM) -> dict[str, list[torch.nn.Parameter]]:
    clip = model.backbone.clip
    visual = [p for n, p in clip.named_parameters() if n.startswith("visual.")]
    text = [p for n, p in clip.named_parameters()
            if not n.startswith("visual.") and n != "logit_scale"]
    fusion = model.fusion
    return {
        "image_tower": visual,
        "text_tower": text,
        "fusion_values": [*fusion.v_proj.parameters(), *fusion.out_proj.parameters(),
                          *fusion.linear.parameters()],
        "fusion_queries": [*fusion.q_proj.parameters(), *fusion.k_proj.parameters()],
        "anchor_offsets": [model.anchors.offset],
        "vae": list(model.vae.parameters()),
        "logit_scale": [clip.logit_scale],
    }


def _reached(model: CALM) -> set[str]:
    align = CALMLoss()(model(*three_clip_batch(model)))["align"]
    groups = _groups(model)
    params = [p for ps in groups.values() for p in ps]
    grads = torch.autograd.grad(align, params, allow_unused=True)
    by_param = {id(p): g for p, g in zip(params, grads)}
    return {name for name, ps in groups.items()
            if any(by_param[id(p)] is not None and by_param[id(p)].abs().sum() > 0 for p in ps)}


SETTINGS = list(itertools.product(["epoch", "step"], [True, False], ["frame_mean", "fused"]))


@pytest.mark.parametrize(("refresh", "detach", "source"), SETTINGS)
def test_alignment_reaches_exactly_the_expected_groups(refresh, detach, source):
    expected = {"image_tower", "anchor_offsets", "vae"}
    if refresh == "step" or not detach:  # re-encoded anchors, or a live S_p, carry it to text
        expected.add("text_tower")
    if source == "fused":  # V_p from the fusion head's text-free embedding
        expected.add("fusion_values")
    assert _reached(_model(refresh, detach, source)) == expected


def test_a_rotating_anchor_window_still_trains_the_text_tower():
    model = _model("step", True, "frame_mean", step_subset=10)
    assert "text_tower" in _reached(model)
    assert int(model.anchors.cursor) == 10  # the window moved on for the next step


def test_anchor_window_keeps_every_anchor_current_within_a_cycle():
    model = _model("step", True, "frame_mean", step_subset=30)  # coco: 91 anchors, 4 steps
    model.anchor_matrix()  # fills the cache, then re-encodes window 0
    with torch.no_grad():  # the text encoder changes, as after an optimizer step
        model.backbone.clip.token_embedding.weight.add_(0.1)
    stale = model.anchors.cached_encodings()
    for _ in range(4):
        model.anchor_matrix()
    with torch.no_grad():
        expected = model.backbone.encode_text(model.anchors.tokens).float()
    assert not torch.allclose(stale, expected)
    torch.testing.assert_close(model.anchors.cached_encodings(), expected)
