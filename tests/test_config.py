"""Typed config: unknown keys and bad values name the dotted key; overrides; YAML round trip."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.config import (
    ConfigError,
    ExperimentConfig,
    FusionConfig,
    ModelConfig,
    apply_overrides,
    dump_yaml,
    from_dict,
    load,
    to_dict,
)

# --------------------------------------------------------------------------------------------
# unknown keys and bad values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, key",
    [
        ({"modle": {}}, "modle"),
        ({"train": {"learning_rate": 1e-4}}, "train.learning_rate"),
        ({"model": {"fusion": {"nmae": "xpool"}}}, "model.fusion.nmae"),
        ({"model": {"vae": {"latent": 8}}}, "model.vae.latent"),
    ],
)
def test_unknown_key_is_named(data, key):
    with pytest.raises(ConfigError) as info:
        from_dict(ExperimentConfig, data)
    assert repr(key) in str(info.value) or key in str(info.value)
    assert "unknown" in str(info.value)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"model": {"fusion": {"name": 3}}}, "model.fusion.name"),
        ({"model": {"fusion": {"dropout": 1.5}}}, "model.fusion.dropout"),
        ({"model": {"fusion": {"layers": 0}}}, "model.fusion.layers"),
        ({"train": {"lr": -1.0}}, "train.lr"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"epochs": 2.5}}, "train.epochs"),
        ({"train": {"epochs": True}}, "train.epochs"),
        ({"train": {"precision": "fp8"}}, "train.precision"),
        ({"model": {"anchors": {"refresh": "sometimes"}}}, "model.anchors.refresh"),
        ({"model": {"anchors": {"template": "no slot"}}}, "model.anchors.template"),
        ({"model": {"anchors": {"learnable": "yes"}}}, "model.anchors.learnable"),
        ({"model": {"backbone": {"freeze": "half"}}}, "model.backbone.freeze"),
        ({"model": {"backbone": {"checkpoint_format": "onnx"}}}, "model.backbone.checkpoint_format"),
        ({"model": {"vae": {"encoder_hidden": [64, -1]}}}, "model.vae.encoder_hidden"),
        ({"model": {"vae": {"encoder_hidden": 64}}}, "model.vae.encoder_hidden"),
        ({"model": {"score": {"mode": "dual_softmax"}}}, "model.score.mode"),
        ({"model": {"fusion": "xpool"}}, "model.fusion"),
    ],
)
def test_bad_value_names_dotted_key(data, key):
    with pytest.raises(ConfigError) as info:
        from_dict(ExperimentConfig, data)
    assert str(info.value).startswith(key), str(info.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_valid_nested_config_builds_typed_values():
    cfg = from_dict(
        ExperimentConfig,
        {
            "model": {"fusion": {"name": "meanP"}, "vae": {"latent_dim": 8, "encoder_hidden": [16]}},
            "train": {"lr": 1, "max_steps": None},
        },
    )
    assert cfg.model.fusion == FusionConfig(name="meanP")
    assert cfg.model.vae.latent_dim == 8 and cfg.model.vae.encoder_hidden == [16]
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0  # int widened to float
    assert cfg.train.max_steps is None
    assert cfg.data == ExperimentConfig().data  # untouched sections keep their defaults


# --------------------------------------------------------------------------------------------
# --set style overrides
# --------------------------------------------------------------------------------------------


def test_overrides_are_yaml_typed():
    cfg = load(
        ExperimentConfig,
        None,
        [
            "train.epochs=3",
            "train.lr=0.001",
            "train.max_steps=null",
            "model.anchors.learnable=false",
            "model.anchors.template=A video of {}.",
            "model.vae.encoder_hidden=[128, 64]",
            "model.fusion.name=seqTransf",
            "model.backbone.checkpoint=/weights/ViT-B-32.pt",
            "data.options={fps: 3}",
        ],
    )
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == pytest.approx(0.001) and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps is None
    assert cfg.model.anchors.learnable is False
    assert cfg.model.anchors.template == "A video of {}."
    assert cfg.model.vae.encoder_hidden == [128, 64]
    assert cfg.model.fusion.name == "seqTransf"
    assert cfg.model.backbone.checkpoint == "/weights/ViT-B-32.pt"
    assert cfg.data.options == {"fps": 3}


def test_override_exponent_without_dot_is_a_number(tmp_path):
    # PyYAML (YAML 1.1) reads '1e-5' as a string; float fields accept it, other strings not
    assert load(ExperimentConfig, None, ["train.lr=1e-5"]).train.lr == pytest.approx(1e-5)
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  lr: 1e-5\n")
    assert load(ExperimentConfig, path).train.lr == pytest.approx(1e-5)
    with pytest.raises(ConfigError, match="train.lr"):
        load(ExperimentConfig, None, ["train.lr=fast"])


def test_override_exponent_with_dot_is_a_number():
    assert load(ExperimentConfig, None, ["train.lr=1.0e-5"]).train.lr == pytest.approx(1e-5)


def test_overrides_win_over_file_and_create_sections(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  epochs: 7\n  lr: 0.5\nmodel:\n  fusion:\n    name: meanP\n")
    cfg = load(ExperimentConfig, path, ["train.epochs=2", "model.anchors.scale=20"])
    assert cfg.train.epochs == 2  # override wins
    assert cfg.train.lr == 0.5  # file value kept
    assert cfg.model.fusion.name == "meanP"
    assert cfg.model.anchors.scale == 20.0  # section created by the override


def test_apply_overrides_on_plain_mapping():
    data = {"a": {"b": 1}}
    out = apply_overrides(data, ["a.c=[1, 2]", "d.e.f=x y"])
    assert out == {"a": {"b": 1, "c": [1, 2]}, "d": {"e": {"f": "x y"}}}


@pytest.mark.parametrize("text", ["train.lr", "=3"])
def test_malformed_override(text):
    with pytest.raises(ConfigError):
        apply_overrides({}, [text])


def test_override_through_a_value_is_an_error():
    with pytest.raises(ConfigError, match="section"):
        apply_overrides({"train": {"lr": 1.0}}, ["train.lr.x=3"])


def test_bad_override_value_is_named():
    with pytest.raises(ConfigError) as info:
        load(ExperimentConfig, None, ["train.lr=-2"])
    assert str(info.value).startswith("train.lr")
    with pytest.raises(ConfigError) as info:
        load(ExperimentConfig, None, ["model.fusion.nmae=xpool"])
    assert "model.fusion.nmae" in str(info.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(ExperimentConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(ExperimentConfig, bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load(ExperimentConfig, top)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load(ExperimentConfig, empty) == ExperimentConfig()


# --------------------------------------------------------------------------------------------
# dump -> load round trip
# --------------------------------------------------------------------------------------------


def test_dump_load_round_trip(tmp_path):
    cfg = load(
        ExperimentConfig,
        None,
        [
            "task=captioning",
            "model.fusion.name=seqTransf",
            "model.fusion.layers=2",
            "model.backbone.checkpoint=/w/clip.pt",
            "model.backbone.quick_gelu=true",
            "model.vae.decoder_hidden=[32, 16]",
            "model.alignment.name=vae",
            "model.alignment.detach_target=false",
            "model.score.mode=anchor_agreement",
            "train.max_steps=100",
            "train.lr=0.0003",
            "data.options={fps: 2, root: /x}",
        ],
    )
    path = tmp_path / "cfg.yaml"
    dump_yaml(cfg, path)
    again = load(ExperimentConfig, path)
    assert again == cfg
    assert to_dict(again) == to_dict(cfg)
    assert again != ExperimentConfig()


@settings(max_examples=25, deadline=None)
@given(
    epochs=st.integers(1, 1000),
    lr=st.floats(0, 10, allow_nan=False, allow_infinity=False),
    dropout=st.floats(0, 0.99, allow_nan=False),
    hidden=st.lists(st.integers(1, 4096), max_size=3),
    template=st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20
    ).map(lambda s: s + " {}"),
    learnable=st.booleans(),
    max_steps=st.none() | st.integers(1, 10**6),
)
def test_round_trip_property(tmp_path_factory, epochs, lr, dropout, hidden, template, learnable,
                             max_steps):
    cfg = ExperimentConfig()
    cfg.train.epochs = epochs
    cfg.train.lr = lr
    cfg.train.max_steps = max_steps
    cfg.model.fusion.dropout = dropout
    cfg.model.vae.encoder_hidden = hidden
    cfg.model.anchors.template = template
    cfg.model.anchors.learnable = learnable
    path = tmp_path_factory.mktemp("rt") / "cfg.yaml"
    dump_yaml(cfg, path)
    assert load(ExperimentConfig, path) == cfg


def test_from_dict_of_to_dict_is_identity():
    cfg = ModelConfig()
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg
    assert set(to_dict(cfg)) == {f.name for f in dataclasses.fields(ModelConfig)}


def test_required_fields_marked_with_question_marks(tmp_path):
    path = tmp_path / "shipped.yaml"
    path.write_text("model:\n  backbone:\n    checkpoint: '???'\ndata:\n  videos: '???'\n")
    with pytest.raises(ConfigError) as info:
        load(ExperimentConfig, path)
    message = str(info.value)
    # the key is named after the file that set it
    assert message.startswith((f"{path}: model.backbone.checkpoint", f"{path}: data.videos"))
    assert "--set" in message
    filled = load(ExperimentConfig, path, ["model.backbone.checkpoint=/w/ViT-B-32.pt",
                                           "data.videos=/data/videos"])
    assert filled.model.backbone.checkpoint == "/w/ViT-B-32.pt"
    assert filled.data.videos == "/data/videos"
    lenient = load(ExperimentConfig, path, allow_missing=True)
    assert lenient.model.backbone.checkpoint is None and lenient.data.videos is None


@pytest.mark.parametrize("override, key", [
    ("model.fusion.name=maxP", "model.fusion.name"),
    ("model.alignment.name=l2", "model.alignment.name"),
    ("model.anchors.labels=/no/such/labels.txt", "model.anchors.labels"),
])
def test_unknown_component_names_are_config_errors_naming_the_key(override, key):
    from calm.model.retrieval import CALM

    cfg = load(ExperimentConfig, None, ["model.backbone.name=calm-micro", override])
    with pytest.raises(ConfigError, match=key):
        CALM.from_config(cfg.model)


@pytest.mark.parametrize("value", [".nan", ".inf", "nan"])
def test_non_finite_numbers_are_rejected(value):
    with pytest.raises(ConfigError, match="train.lr"):
        load(ExperimentConfig, None, [f"train.lr={value}"])
