"""`calm model-info --config FILE`: parameter counts of each component as JSON."""

from __future__ import annotations

import json

from calm.cli.common import add_config_args


def register(sub) -> None:
    p = sub.add_parser("model-info", help="print parameter counts of each model component as JSON")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from calm.config import ExperimentConfig, load
    from calm.model.factory import build_model
    from calm.model.info import parameter_counts

    cfg = load(ExperimentConfig, args.config, args.overrides, allow_missing=True)
    model = build_model(cfg)
    counts = parameter_counts(model)
    counts["config"] = {
        "task": cfg.task,
        "backbone": cfg.model.backbone.name,
        "fusion": cfg.model.fusion.name if hasattr(model, "fusion") else None,
        "alignment": cfg.model.alignment.name,
        "anchors": cfg.model.anchors.labels,
        "num_anchors": model.num_anchors,
        "latent_dim": cfg.model.vae.latent_dim,
    }
    print(json.dumps(counts, indent=2))
    return 0
