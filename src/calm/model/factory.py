"""The model of each task, built by name: the one place that maps `task:` to a model class.

Tasks (`calm.engine.tasks`) add their loss and evaluation on top, but building a model, e.g.
to read a checkpoint back, needs nothing above `calm.model`.
"""

from __future__ import annotations

from torch import nn

from calm.config.errors import ConfigError
from calm.config.schema import ExperimentConfig
from calm.model.captioner import CALMCaptioner
from calm.model.retrieval import CALM
from calm.registry import Registry

MODELS: Registry[nn.Module] = Registry("task")
MODELS.register("retrieval")(CALM.from_config)
MODELS.register("captioning")(CALMCaptioner.from_config)


def check_task(name: str) -> None:
    if name not in MODELS:
        raise ConfigError(f"task: {name!r} is not a registered task; choose one of "
                          f"{MODELS.names()}")


def build_model(cfg: ExperimentConfig) -> nn.Module:
    """The untrained model `cfg` describes (backbone weights from `model.backbone`)."""
    check_task(cfg.task)
    return MODELS.build(cfg.task, cfg.model)
