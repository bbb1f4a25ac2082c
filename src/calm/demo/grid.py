"""The grid of `calm experiment`: which runs make up an experiment, and each run's configuration.

A grid file (YAML) holds:

```yaml
base:                       # the demo's recipe (DemoConfig fields); omitted ones keep its defaults
  scale: default            # synthetic benchmark scale: tiny | small | default
  steps: 300
  pretrain: {steps: 2500}
seeds: [0, 1, 2]            # fine-tuning seeds; every cell runs each of them
grid:                       # axes: dotted ExperimentConfig key -> the values to try
  model.alignment.name: [none, kl, ce, mse, vae]   # required
  model.anchors.refresh: [epoch, step]             # optional extra axes
set:                        # dotted ExperimentConfig keys fixed in every run
  model.alignment.weight: 1.0
bootstrap: {resamples: 10000, confidence: 0.95, seed: 0}
```

A *cell* is one combination of axis values; a *run* is a cell with one seed. Each run's config is
exactly the demo's (`experiment_config`: train on the first domain, the cached toy CLIP) with the
cell's values and `set` applied on top, so an experiment over `none` and `vae` with the demo's
seed reproduces the demo's two runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calm.config import ConfigError, ExperimentConfig, from_dict, to_dict
from calm.config.loader import read_yaml
from calm.data.synthetic import SCALES
from calm.demo.run import DemoConfig, experiment_config
from calm.model.fusion import FUSION_HEADS
from calm.model.losses import ALIGNMENTS

ALIGNMENT_KEY = "model.alignment.name"
REFERENCE = "none"  # every other alignment is compared against this one
TOP_LEVEL = ("base", "seeds", "grid", "set", "bootstrap")
# Keys the grid sets itself: the seed comes from `seeds`, the methods from the alignment axis.
RUNNER_OWNED_BASE = ("seed", "methods")
RUNNER_OWNED_KEYS = ("train.seed",)


@dataclass(frozen=True)
class BootstrapConfig:
    resamples: int = 10_000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        if self.resamples < 1:
            raise ConfigError(f"bootstrap.resamples: must be >= 1, got {self.resamples}")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"bootstrap.confidence: must lie in (0, 1), got {self.confidence}")


@dataclass(frozen=True)
class Cell:
    """One combination of axis values; `name` is its folder and its row in the tables."""

    name: str
    values: tuple[tuple[str, Any], ...]

    @property
    def alignment(self) -> str:
        return dict(self.values)[ALIGNMENT_KEY]

    def with_value(self, key: str, value: Any, grid: Grid) -> Cell:
        return grid.cell({**dict(self.values), key: value})


@dataclass
class Grid:
    base: DemoConfig
    axes: dict[str, list]
    seeds: list[int]
    fixed: dict[str, Any] = field(default_factory=dict)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    source: str = "<grid>"

    def cell(self, values: dict[str, Any]) -> Cell:
        return Cell(cell_name(values, list(self.axes)), tuple((k, values[k]) for k in self.axes))

    def cells(self) -> list[Cell]:
        """Every combination, in the order of the axes and their values in the file."""
        return [self.cell(dict(zip(self.axes, combo)))
                for combo in itertools.product(*self.axes.values())]

    def runs(self) -> list[tuple[Cell, int]]:
        return [(cell, seed) for cell in self.cells() for seed in self.seeds]

    def reference(self, cell: Cell) -> Cell | None:
        """The `none` cell with the same other axis values, if the grid has one (and it is not
        `cell` itself)."""
        if cell.alignment == REFERENCE or REFERENCE not in self.axes[ALIGNMENT_KEY]:
            return None
        return cell.with_value(ALIGNMENT_KEY, REFERENCE, self)

    def recipe(self, cell: Cell, seed: int) -> dict:
        """Everything the grid decides about one run; a finished run is reused only if this is
        unchanged."""
        base = {k: v for k, v in dataclasses.asdict(self.base).items()
                if k not in RUNNER_OWNED_BASE}
        return {"base": base, "cell": dict(cell.values), "set": dict(self.fixed), "seed": seed}

    def to_dict(self) -> dict:
        base = {k: v for k, v in dataclasses.asdict(self.base).items()
                if k not in RUNNER_OWNED_BASE}
        return {"base": base, "seeds": list(self.seeds), "grid": dict(self.axes),
                "set": dict(self.fixed), "bootstrap": dataclasses.asdict(self.bootstrap)}


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(value)).strip("-") or "x"


def cell_name(values: dict[str, Any], keys: list[str]) -> str:
    """`vae`, or `vae+refresh=step` with extra axes (the key's last part, or all of it where two
    axes share a last part)."""
    extras = [k for k in keys if k != ALIGNMENT_KEY]
    shorts = [_short(k) for k in extras]
    parts = [_slug(values[ALIGNMENT_KEY])]
    for key, short in zip(extras, shorts):
        label = short if shorts.count(short) == 1 else key
        parts.append(f"{label}={_slug(values[key])}")
    return "+".join(parts)


def set_dotted(data: dict, key: str, value: Any) -> None:
    """data['a']['b'] = value for key 'a.b' (sections must exist: keys are checked afterwards)."""
    *path, last = key.split(".")
    node = data
    for part in path:
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is not a config section")
        node = child
    node[last] = value


def run_config(grid: Grid, cell: Cell, seed: int, data_root: Path, domain: dict,
               clip_path: Path, steps_per_epoch: int) -> ExperimentConfig:
    """The demo's configuration for one run, with the cell's values and `set` on top."""
    demo = dataclasses.replace(grid.base, seed=seed)
    cfg = to_dict(experiment_config(demo, data_root, domain, clip_path, cell.alignment,
                                    steps_per_epoch))
    for key, value in [*grid.fixed.items(), *cell.values]:
        set_dotted(cfg, key, value)
    try:
        return from_dict(ExperimentConfig, cfg)
    except ConfigError as exc:
        raise ConfigError(f"{grid.source}: cell {cell.name}: {exc}") from None


def _mapping(data: dict, key: str, source: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}: expected a mapping, got {value!r}")
    return value


def parse_grid(data: dict, source: str = "<grid>") -> Grid:
    """Checks a grid mapping fully, including every cell's config, before anything runs."""
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; a grid has {list(TOP_LEVEL)}")
    base = _mapping(data, "base", source)
    owned = sorted(set(base) & set(RUNNER_OWNED_BASE))
    if owned:
        raise ConfigError(f"{source}: base.{owned[0]} is set by the grid (seeds: and the "
                          f"{ALIGNMENT_KEY} axis); remove it from base")
    try:
        demo = from_dict(DemoConfig, base, prefix="base")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if demo.scale not in SCALES:
        raise ConfigError(f"{source}: base.scale: {demo.scale!r} is not one of {list(SCALES)}")

    seeds = data.get("seeds", [demo.seed])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ConfigError(f"{source}: seeds: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{source}: seeds: {seeds} repeats a seed")

    axes = _mapping(data, "grid", source)
    if ALIGNMENT_KEY not in axes:
        raise ConfigError(f"{source}: grid: the axis {ALIGNMENT_KEY} is required "
                          f"(e.g. [{REFERENCE}, vae])")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: grid.{key}: expected a non-empty list, got {values!r}")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{source}: grid.{key}: {values} repeats a value")
    axes = {ALIGNMENT_KEY: axes[ALIGNMENT_KEY],
            **{k: v for k, v in axes.items() if k != ALIGNMENT_KEY}}
    fixed = _mapping(data, "set", source)
    for key in [*axes, *fixed]:
        if key in RUNNER_OWNED_KEYS:
            raise ConfigError(f"{source}: {key} is set by the grid; list the seeds under seeds:")
    both = sorted(set(axes) & set(fixed))
    if both:
        raise ConfigError(f"{source}: {both[0]} is both an axis (grid:) and fixed (set:)")
    try:
        bootstrap = from_dict(BootstrapConfig, _mapping(data, "bootstrap", source),
                              prefix="bootstrap")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None

    grid = Grid(demo, axes, seeds, fixed, bootstrap, source)
    names = [c.name for c in grid.cells()]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: two cells would share a folder name: {names}")
    placeholder = {"loader": "msrvtt", "annotations": "annotations", "videos": "videos"}
    for cell in grid.cells():  # a typo in a key or a bad value fails now, not hours later
        cfg = run_config(grid, cell, seeds[0], Path("data"), placeholder, Path("clip"), 1)
        for key, name, registry in (
            (ALIGNMENT_KEY, cfg.model.alignment.name, ALIGNMENTS),
            ("model.fusion.name", cfg.model.fusion.name, FUSION_HEADS),
        ):
            if name not in registry:
                raise ConfigError(f"{source}: cell {cell.name}: {key}: {name!r} is not one of "
                                  f"{registry.names()}")
    return grid


def run_folder(out: str | Path, cell: Cell, seed: int) -> Path:
    """Where one run keeps its training run, similarity matrices and `result.json`."""
    return Path(out) / "cells" / cell.name / f"seed{seed}"


def load_grid(path: str | Path) -> Grid:
    return parse_grid(read_yaml(path), str(path))
