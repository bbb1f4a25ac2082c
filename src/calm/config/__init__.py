"""Typed configuration: dataclasses, YAML loading and `key=value` overrides."""

from calm.config.errors import ConfigError
from calm.config.loader import apply_overrides, dump_yaml, from_dict, load, to_dict
from calm.config.schema import (
    AlignmentConfig,
    AnchorConfig,
    BackboneConfig,
    CaptionConfig,
    DataConfig,
    ExperimentConfig,
    FusionConfig,
    ModelConfig,
    ScoreConfig,
    TrainConfig,
    VAEConfig,
)

__all__ = [
    "AlignmentConfig",
    "AnchorConfig",
    "BackboneConfig",
    "CaptionConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "FusionConfig",
    "ModelConfig",
    "ScoreConfig",
    "TrainConfig",
    "VAEConfig",
    "apply_overrides",
    "dump_yaml",
    "from_dict",
    "load",
    "to_dict",
]
