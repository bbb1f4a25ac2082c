"""Extension points are contracts: registries validate names (listing what is registered),
components own the config fields they read (a setting the chosen component ignores is said, not
silently dropped), and fusion heads declare capabilities that search, zero-shot loading and the
optimiser read instead of names."""

from __future__ import annotations

import warnings

import pytest
import torch

from calm.config import ConfigError, ExperimentConfig, from_dict
from calm.config.schema import AlignmentConfig, FusionConfig, ModelConfig
from calm.engine.optim import decayed_names
from calm.engine.tasks import TASKS, task_for
from calm.model.factory import MODELS, build_model
from calm.model.fusion import FUSION_HEADS, build_fusion
from calm.model.losses import ALIGNMENTS, build_alignment
from calm.model.retrieval import CALM
from calm.registry import IgnoredSettingWarning, ignored_options


def test_tasks_and_models_are_registered_under_the_same_names():
    assert TASKS.names() == MODELS.names() == ["captioning", "retrieval"]


@pytest.mark.parametrize("build", [task_for, build_model])
def test_an_unknown_task_lists_the_registered_ones(build):
    cfg = from_dict(ExperimentConfig, {"task": "segmentation"})
    with pytest.raises(ConfigError, match=r"^task: 'segmentation'.*captioning.*retrieval"):
        build(cfg)


@pytest.mark.parametrize(("registry", "section"), [(ALIGNMENTS, "alignment"),
                                                   (FUSION_HEADS, "fusion")])
def test_an_unknown_component_lists_the_registered_ones(registry, section):
    cfg = from_dict(ModelConfig, {"backbone": {"name": "calm-micro"},
                                  section: {"name": "nonesuch"}})
    with pytest.raises(ConfigError, match=rf"model\.{section}\.name") as info:
        CALM.from_config(cfg)
    for name in registry.names():
        assert name in str(info.value)


@pytest.mark.parametrize(("name", "field", "value"), [
    ("kl", "free_bits", 0.05), ("none", "alpha", 0.5), ("ce", "kl_direction", "video_to_text"),
    ("mse", "kl_warmup_steps", 10),
])
def test_an_alignment_says_which_setting_it_ignores(name, field, value):
    # switching components by --set must keep working, so an ignored setting warns, naming it
    with pytest.warns(IgnoredSettingWarning, match=rf"^model\.alignment\.{field}=.* '{name}'"):
        objective = build_alignment(AlignmentConfig(name=name, **{field: value}))
    assert objective.cfg.name == name


@pytest.mark.parametrize(("name", "field", "value"), [
    ("vae", "free_bits", 0.05), ("vae", "kl_warmup_steps", 10), ("kl", "kl_direction",
                                                                "video_to_text"),
    ("ce", "detach_target", False),
])
def test_an_alignment_reads_its_own_settings_silently(name, field, value):
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredSettingWarning)
        assert build_alignment(AlignmentConfig(name=name, **{field: value})).cfg.name == name
    assert ignored_options(AlignmentConfig(name=name, **{field: value}),
                           ALIGNMENTS.get(name).options) == []


def test_fusion_heads_own_their_settings():
    with pytest.warns(IgnoredSettingWarning, match=r"^model\.fusion\.layers=2 .*'meanP'"):
        build_fusion(FusionConfig(name="meanP", layers=2), 32)
    with pytest.warns(IgnoredSettingWarning, match=r"^model\.fusion\.max_frames=8 .*'xpool'"):
        build_fusion(FusionConfig(name="xpool", max_frames=8), 32)
    assert ignored_options(FusionConfig(name="seqTransf", layers=1, max_frames=8),
                           FUSION_HEADS.get("seqTransf").options) == []
    assert ignored_options(FusionConfig(name="xpool", layers=1, heads=2),
                           FUSION_HEADS.get("xpool").options) == ["layers"]


def test_fusion_capabilities_are_declared():
    caps = {name: (FUSION_HEADS.get(name).text_conditioned, FUSION_HEADS.get(name).has_frame_weights,
                   FUSION_HEADS.get(name).parameter_free) for name in FUSION_HEADS.names()}
    assert caps == {"meanP": (False, False, True), "seqTransf": (False, False, False),
                    "xpool": (True, True, False)}
    # a declared capability is backed by the method it promises, and only then
    text = torch.randn(3, 32)
    frames = torch.randn(2, 4, 32)
    for name in FUSION_HEADS.names():
        head = build_fusion(FusionConfig(name=name), 32).eval()
        assert (len(list(head.parameters())) == 0) == head.parameter_free
        state = head.video_state(frames, None)
        if head.has_frame_weights:
            weights = head.frame_weights(text, state)
            assert weights.shape == (3, 2, 4)
            torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2))
        else:
            with pytest.raises(NotImplementedError):
                head.frame_weights(text, state)


def test_weight_decay_follows_what_modules_declare():
    cfg = from_dict(ModelConfig, {"backbone": {"name": "calm-micro"}, "anchors": {"labels": "coco"},
                                  "fusion": {"name": "seqTransf"}, "alignment": {"name": "vae"}})
    model = CALM.from_config(cfg)
    decayed = decayed_names(model)
    assert "anchors.offset" not in decayed  # an additive embedding (AnchorBank.no_weight_decay)
    assert "fusion.frame_position.weight" not in decayed  # an nn.Embedding table
    assert not any(n.endswith(("positional_embedding", "class_embedding")) for n in decayed)
    assert "fusion.transformer.layers.0.linear1.weight" in decayed
    assert "vae.encoder.0.weight" in decayed
    assert all(p.ndim >= 2 for n, p in model.named_parameters() if n in decayed)


def test_anchor_agreement_needs_an_objective_with_a_vae():
    for alignment in ("none", "kl", "ce", "mse"):
        cfg = from_dict(ModelConfig, {"backbone": {"name": "calm-micro"},
                                      "anchors": {"labels": "coco"},
                                      "alignment": {"name": alignment},
                                      "score": {"mode": "anchor_agreement"}})
        with pytest.raises(ConfigError, match=r"^model\.score\.mode: .*\['vae'\]"):
            CALM.from_config(cfg)
