"""The grid of `calm experiment`: which runs make up an experiment, and each run's configuration.

A grid file (YAML) gives its cells either as a product of axes (`grid:`) or by name (`variants:`):

```yaml
base:                       # the demo's recipe (Recipe fields); omitted ones keep its defaults
  scale: default            # synthetic benchmark scale: tiny | small | default | large
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

```yaml
base: {scale: default}
seeds: [0, 1, 2]
set: {model.alignment.name: vae}       # model.alignment.name: here or in every variant
variants:                              # cell name -> dotted keys set on top of `set`
  paper: {}
  step_anchors: {model.anchors.refresh: step, model.anchors.step_subset: 16}
reference: paper                       # optional; default: the first variant
compare:                               # optional: more pairs [cell, against], each compared
  - [step_anchors, live]               # as a cell is with its reference
```

A cell may also change the recipe itself: a key under `recipe.` names a `Recipe` field
(`recipe.pretrain.steps: 1000`, `recipe.steps: 600`), so a grid on the dev split can compare the
toy CLIP's pretraining budget or the fine-tuning budget beside the model's settings. The runner
pretrains (or reads from the cache) one toy CLIP per distinct `pretrain` section. The benchmark
stays one per grid: `recipe.scale` and `recipe.data_seed` belong in `base:`.

A *cell* is one combination of axis values, or one variant; a *run* is a cell with one seed. Each
run's config is exactly the demo's (`experiment_config`: train on the first domain, the cached toy
CLIP) with `set` and then the cell's own values applied on top, so an experiment over `none` and
`vae` with the demo's seed reproduces the demo's two runs.

Every cell but the reference is compared with one reference cell: the one named by `reference:`;
without it, for `grid:` the `none` cell with the same other axis values (if the grid has `none`),
for `variants:` the first variant.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from calm.config import ConfigError, ExperimentConfig, from_dict, to_dict
from calm.config.loader import merged, set_key
from calm.data.synthetic import SCALES
from calm.experiments.recipe import Recipe, experiment_config
from calm.model.fusion import FUSION_HEADS
from calm.model.losses import ALIGNMENTS

ALIGNMENT_KEY = "model.alignment.name"
REFERENCE = "none"  # a `grid:` file's default reference: `none` with the same other axis values
TOP_LEVEL = ("base", "seeds", "grid", "variants", "set", "reference", "bootstrap", "tuning",
             "compare")
TUNING_SPLITS = ("dev",)
# Keys the grid sets itself: the seed comes from `seeds`, the methods from the cells.
RUNNER_OWNED_BASE = ("seed", "methods")
RUNNER_OWNED_KEYS = ("train.seed",)
# A cell's `recipe.<field>` keys change the Recipe it runs with (see the module docstring); the
# benchmark's fields are the grid's, shared by every cell.
RECIPE_PREFIX = "recipe."
PER_GRID_RECIPE = ("scale", "data_seed")
# A variant's name is its run folder and a column of the tables: no path separators, no leading
# dot or dash (hidden files, options), nothing a shell or Markdown table would mangle.
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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
class Tuning:
    """Where the recipe a grid runs with was chosen (issue 20: never on a test split).

    `benchmark_seed` is the seed of the dev benchmark: `calm synth --seed N` draws the same world
    with other clips, and its test split is the dev split every recipe choice is made on. A grid
    whose own benchmark (`base.data_seed`) is that seed *is* a tuning grid: its numbers are dev
    numbers. Any other grid reads its test split once, with the recipe the dev grid chose.
    `results` names the committed results of the tuning grid (docs/experiments/<grid>.json).
    """

    split: str = "dev"
    benchmark_seed: int = 1
    results: str | None = None

    def __post_init__(self):
        if self.split not in TUNING_SPLITS:
            raise ConfigError(f"tuning.split: {self.split!r} is not one of {list(TUNING_SPLITS)}"
                              " (a recipe is never chosen on a test split)")

    def is_tuning_grid(self, data_seed: int) -> bool:
        return data_seed == self.benchmark_seed


@dataclass(frozen=True)
class Cell:
    """One combination of axis values, or one variant; `name` is its folder and its row in the
    tables, `values` its own dotted keys (applied on top of `set`), `alignment` the alignment it
    trains with (its own value, else the one in `set`)."""

    name: str
    values: tuple[tuple[str, Any], ...]
    alignment: str

    def with_value(self, key: str, value: Any, grid: Grid) -> Cell:
        return grid.cell({**dict(self.values), key: value})


@dataclass
class Grid:
    base: Recipe
    axes: dict[str, list]  # empty for a `variants:` file
    seeds: list[int]
    fixed: dict[str, Any] = field(default_factory=dict)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    source: str = "<grid>"
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> overrides
    reference_name: str | None = None  # `reference:` as given (None: the default rule)
    tuning: Tuning | None = None  # where the recipe was chosen (`tuning:`)
    # `compare:` pairs (cell, against) compared beside each cell's reference: on a tuning grid
    # a recipe choice is often a cell against another cell than the reference
    pairs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def reads(self) -> str:
        """`dev` for a tuning grid (its benchmark is the dev benchmark), else `test`."""
        return "dev" if self.tuning and self.tuning.is_tuning_grid(self.base.data_seed) else "test"

    def cell(self, values: dict[str, Any]) -> Cell:
        """The cell of a `grid:` file with these axis values."""
        return Cell(cell_name(values, list(self.axes)), tuple((k, values[k]) for k in self.axes),
                    values[ALIGNMENT_KEY])

    def variant(self, name: str) -> Cell:
        overrides = self.variants[name]
        alignment = {**self.fixed, **overrides}[ALIGNMENT_KEY]
        return Cell(name, tuple(overrides.items()), alignment)

    def cells(self) -> list[Cell]:
        """The variants in file order, or every combination of the axes in the order of the axes
        and their values in the file."""
        if self.variants:
            return [self.variant(name) for name in self.variants]
        return [self.cell(dict(zip(self.axes, combo)))
                for combo in itertools.product(*self.axes.values())]

    def runs(self) -> list[tuple[Cell, int]]:
        return [(cell, seed) for cell in self.cells() for seed in self.seeds]

    def reference(self, cell: Cell) -> Cell | None:
        """The cell `cell` is compared with (see the module docstring); None for the reference
        itself, and in a `grid:` file without `reference:` and without a `none` value."""
        if self.reference_name is not None:
            ref = next(c for c in self.cells() if c.name == self.reference_name)
        elif self.variants:
            ref = self.cells()[0]
        elif REFERENCE in self.axes[ALIGNMENT_KEY]:
            ref = cell.with_value(ALIGNMENT_KEY, REFERENCE, self)
        else:
            return None
        return None if ref.name == cell.name else ref

    def where(self, cell: Cell) -> str:
        """Where a cell comes from in the file, for error messages."""
        return f"variants.{cell.name}" if self.variants else f"cell {cell.name}"

    def cell_recipe(self, cell: Cell, seed: int) -> Recipe:
        """The base recipe with `set`'s and the cell's `recipe.` keys on top, and the seed."""
        changes: dict[str, Any] = {}
        for key, value in [*self.fixed.items(), *cell.values]:
            if key.startswith(RECIPE_PREFIX):
                set_key(changes, key[len(RECIPE_PREFIX):], value)
        if not changes:
            return dataclasses.replace(self.base, seed=seed)
        try:
            recipe = from_dict(Recipe, merged(dataclasses.asdict(self.base), changes),
                               prefix="recipe")
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: {self.where(cell)}: {exc}") from None
        return dataclasses.replace(recipe, seed=seed)

    def recipe(self, cell: Cell, seed: int) -> dict:
        """Everything the grid decides about one run; a finished run is reused only if this is
        unchanged."""
        base = {k: v for k, v in dataclasses.asdict(self.base).items()
                if k not in RUNNER_OWNED_BASE}
        return {"base": base, "cell": dict(cell.values), "set": dict(self.fixed), "seed": seed}

    def to_dict(self) -> dict:
        """The grid as a file would give it, defaults filled in (`parse_grid` reads it back)."""
        base = {k: v for k, v in dataclasses.asdict(self.base).items()
                if k not in RUNNER_OWNED_BASE}
        out: dict[str, Any] = {"base": base, "seeds": list(self.seeds)}
        if self.variants:
            out["variants"] = {name: dict(values) for name, values in self.variants.items()}
        else:
            out["grid"] = dict(self.axes)
        out["set"] = dict(self.fixed)
        if self.reference_name is not None:
            out["reference"] = self.reference_name
        out["bootstrap"] = dataclasses.asdict(self.bootstrap)
        if self.tuning is not None:
            out["tuning"] = dataclasses.asdict(self.tuning)
        if self.pairs:
            out["compare"] = [list(pair) for pair in self.pairs]
        return out


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


def run_config(grid: Grid, cell: Cell, seed: int, data_root: Path, domain: dict,
               clip_path: Path, steps_per_epoch: int,
               frame_cache: Path | None = None) -> ExperimentConfig:
    """The demo's configuration for one run (with the cell's recipe), with `set` and then the
    cell's values on top."""
    demo = grid.cell_recipe(cell, seed)
    cfg = to_dict(experiment_config(demo, data_root, domain, clip_path, cell.alignment,
                                    steps_per_epoch, frame_cache))
    for key, value in [*grid.fixed.items(), *cell.values]:
        if not key.startswith(RECIPE_PREFIX):
            set_key(cfg, key, value)
    try:
        return from_dict(ExperimentConfig, cfg)
    except ConfigError as exc:
        raise ConfigError(f"{grid.source}: {grid.where(cell)}: {exc}") from None


def _mapping(data: dict, key: str, source: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}: expected a mapping, got {value!r}")
    return value


def _check_recipe_keys(keys, where: str) -> None:
    """`recipe.<field>` keys may not move the benchmark or what the grid sets itself."""
    for key in keys:
        if not key.startswith(RECIPE_PREFIX):
            continue
        top = key[len(RECIPE_PREFIX):].split(".", 1)[0]
        if top in PER_GRID_RECIPE:
            raise ConfigError(f"{where}.{key}: a grid has one benchmark; set {top} under base:")
        if top in RUNNER_OWNED_BASE:
            raise ConfigError(f"{where}.{key} is set by the grid (seeds: and the cells' "
                              f"{ALIGNMENT_KEY})")


def _parse_axes(data: dict, source: str) -> dict[str, list]:
    axes = _mapping(data, "grid", source)
    if ALIGNMENT_KEY not in axes:
        raise ConfigError(f"{source}: grid: the axis {ALIGNMENT_KEY} is required "
                          f"(e.g. [{REFERENCE}, vae])")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: grid.{key}: expected a non-empty list, got {values!r}")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{source}: grid.{key}: {values} repeats a value")
    return {ALIGNMENT_KEY: axes[ALIGNMENT_KEY],
            **{k: v for k, v in axes.items() if k != ALIGNMENT_KEY}}


def _parse_variants(data: dict, fixed: dict, source: str) -> dict[str, dict[str, Any]]:
    variants = data["variants"]
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"{source}: variants: expected a non-empty mapping of cell names to "
                          f"{{dotted config key: value}}, got {variants!r}")
    parsed: dict[str, dict[str, Any]] = {}
    folded: dict[str, str] = {}
    for name, overrides in variants.items():
        if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
            raise ConfigError(
                f"{source}: variants: {name!r} cannot name a cell (its run folder): use letters, "
                "digits, '.', '_' and '-', starting with a letter or digit")
        if name.lower() in folded:
            raise ConfigError(f"{source}: variants: {folded[name.lower()]!r} and {name!r} would "
                              "share a run folder on a case-insensitive file system")
        folded[name.lower()] = name
        overrides = {} if overrides is None else overrides
        if not isinstance(overrides, dict):
            raise ConfigError(f"{source}: variants.{name}: expected a mapping of dotted config "
                              f"keys to values ({{}} for none), got {overrides!r}")
        for key in overrides:
            if not isinstance(key, str):
                raise ConfigError(f"{source}: variants.{name}: {key!r} is not a dotted config key")
            if key in RUNNER_OWNED_KEYS:
                raise ConfigError(f"{source}: variants.{name}.{key} is set by the grid; list the "
                                  "seeds under seeds:")
        if ALIGNMENT_KEY not in overrides and ALIGNMENT_KEY not in fixed:
            raise ConfigError(f"{source}: variants.{name}: {ALIGNMENT_KEY} is required, in the "
                              "variant or in set:")
        parsed[name] = dict(overrides)
    return parsed


def parse_grid(data: dict, source: str = "<grid>") -> Grid:
    """Checks a grid mapping fully, including every cell's config, before anything runs."""
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; a grid has {list(TOP_LEVEL)}")
    base = _mapping(data, "base", source)
    owned = sorted(set(base) & set(RUNNER_OWNED_BASE))
    if owned:
        raise ConfigError(f"{source}: base.{owned[0]} is set by the grid (seeds: and the "
                          f"cells' {ALIGNMENT_KEY}); remove it from base")
    try:
        demo = Recipe.from_overrides(base, prefix="base")
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

    if ("grid" in data) == ("variants" in data):
        raise ConfigError(f"{source}: give the cells either as grid: (axes, with "
                          f"{ALIGNMENT_KEY}) or as variants: (named cells), "
                          + ("not both" if "grid" in data else "found neither"))
    fixed = _mapping(data, "set", source)
    for key in fixed:
        if key in RUNNER_OWNED_KEYS:
            raise ConfigError(f"{source}: {key} is set by the grid; list the seeds under seeds:")
    _check_recipe_keys(fixed, f"{source}: set")
    axes: dict[str, list] = {}
    variants: dict[str, dict[str, Any]] = {}
    if "grid" in data:
        axes = _parse_axes(data, source)
        for key in axes:
            if key in RUNNER_OWNED_KEYS:
                raise ConfigError(f"{source}: {key} is set by the grid; list the seeds under "
                                  "seeds:")
        _check_recipe_keys(axes, f"{source}: grid")
        both = sorted(set(axes) & set(fixed))
        if both:
            raise ConfigError(f"{source}: {both[0]} is both an axis (grid:) and fixed (set:)")
    else:
        variants = _parse_variants(data, fixed, source)
        for name, overrides in variants.items():
            _check_recipe_keys(overrides, f"{source}: variants.{name}")
    try:
        bootstrap = from_dict(BootstrapConfig, _mapping(data, "bootstrap", source),
                              prefix="bootstrap")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None

    tuning = None
    if "tuning" in data:
        try:
            tuning = from_dict(Tuning, _mapping(data, "tuning", source), prefix="tuning")
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    grid = Grid(demo, axes, seeds, fixed, bootstrap, source, variants, tuning=tuning)
    names = [c.name for c in grid.cells()]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: two cells would share a folder name: {names}")
    reference = data.get("reference")
    if reference is not None:
        if not isinstance(reference, str) or reference not in names:
            raise ConfigError(f"{source}: reference: {reference!r} is not one of the cells "
                              f"{names}")
        grid.reference_name = reference
    grid.pairs = _parse_pairs(data.get("compare"), names, source)
    placeholder = {"loader": "msrvtt", "annotations": "annotations", "videos": "videos"}
    for cell in grid.cells():  # a typo in a key or a bad value fails now, not hours later
        cfg = run_config(grid, cell, seeds[0], Path("data"), placeholder, Path("clip"), 1)
        for key, name, registry in (
            (ALIGNMENT_KEY, cfg.model.alignment.name, ALIGNMENTS),
            ("model.fusion.name", cfg.model.fusion.name, FUSION_HEADS),
        ):
            if name not in registry:
                raise ConfigError(f"{source}: {grid.where(cell)}: {key}: {name!r} is not one "
                                  f"of {registry.names()}")
    return grid


def _parse_pairs(value, names: list[str], source: str) -> list[tuple[str, str]]:
    """`compare:` as a list of (cell, against) pairs of two different cells of the grid."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{source}: compare: expected a list of [cell, against] pairs, got "
                          f"{value!r}")
    pairs = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ConfigError(f"{source}: compare[{i}]: expected [cell, against], got {pair!r}")
        for name in pair:
            if name not in names:
                raise ConfigError(f"{source}: compare[{i}]: {name!r} is not one of the cells "
                                  f"{names}")
        if pair[0] == pair[1]:
            raise ConfigError(f"{source}: compare[{i}]: a cell against itself")
        if tuple(pair) in pairs:
            raise ConfigError(f"{source}: compare[{i}]: {pair} is listed twice")
        pairs.append(tuple(pair))
    return pairs


def run_folder(out: str | Path, cell: Cell, seed: int) -> Path:
    """Where one run keeps its training run, similarity matrices and `result.json`."""
    return Path(out) / "cells" / cell.name / f"seed{seed}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML keeps the last of two equal keys without a word; in a grid file that would drop a
    variant or an axis, so a repeated key is an error here."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: construct_mapping says so
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} appears twice in one mapping (first on line "
                f"{first + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_grid_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"grid file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"grid file {path} must hold a mapping at the top level")
    return data


def load_grid(path: str | Path) -> Grid:
    return parse_grid(read_grid_file(path), str(path))
