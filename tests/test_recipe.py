"""The synthetic recipe has one home: the demo, the grids' base and configs/synthetic/ read it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import yaml

from calm.experiments.grid import parse_grid
from calm.experiments.recipe import (
    SYNTHETIC_CONFIGS,
    Recipe,
    recipe_values,
    synthetic_config,
)

ROOT = Path(__file__).resolve().parents[1]


def test_recipe_defaults_are_the_file():
    values = recipe_values()
    recipe = asdict(Recipe())
    assert recipe == values  # every field, the toy CLIP's section included


def test_grid_base_merges_over_the_recipe():
    grid = parse_grid({"base": {"steps": 7, "pretrain": {"steps": 2}}, "seeds": [0],
                       "grid": {"model.alignment.name": ["none"]}})
    assert grid.base.steps == 7 and grid.base.pretrain.steps == 2
    # untouched fields, also inside the merged pretrain section, keep the file's values
    assert grid.base.backbone_lr == recipe_values()["backbone_lr"]
    assert grid.base.pretrain.aux_weight == recipe_values()["pretrain"]["aux_weight"]


def test_shipped_synthetic_configs_are_the_recipe():
    for name, alignment in SYNTHETIC_CONFIGS.items():
        shipped = yaml.safe_load((ROOT / "configs" / "synthetic" / name).read_text())
        assert shipped == synthetic_config(alignment), (
            f"configs/synthetic/{name} drifted from the recipe; rewrite it with "
            "`python -m calm.experiments.recipe configs/synthetic`")


def test_a_changed_recipe_changes_the_config():
    changed = synthetic_config("vae", Recipe().replace(backbone_lr=3e-4))
    assert changed["train"]["backbone_lr"] == 3e-4
    assert changed != synthetic_config("vae")
