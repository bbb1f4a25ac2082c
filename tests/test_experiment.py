"""`calm experiment`: the grid, its resumable runner, the results files and the paired bootstrap.

The runner is exercised for real on the tiny grid (configs/experiments/tiny.yaml: 2 alignments x 2
seeds, tiny synthetic benchmark, a calm-micro CLIP pretrained for 2 steps); the statistics are
checked against cases small enough to work out by hand.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.config import ConfigError
from calm.metrics.bootstrap import mean_std, paired_bootstrap

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "configs" / "experiments"
TINY = EXPERIMENTS / "tiny.yaml"
ALIGNMENT = EXPERIMENTS / "alignment.yaml"
DOMAINS = ["msrvtt", "didemo", "lsmdc"]


# ---- the paired bootstrap, by hand --------------------------------------------------------------


def test_bootstrap_interval_of_a_clear_gain_worked_out_by_hand():
    # per-query differences d = [1, 1, 1, 0] (x100). A resample mean is k/4 with k ~ Bin(4, 3/4):
    # P(0) = 0.4%, P(1/4) = 4.7%, so the 2.5% quantile is 25; P(1) = 31.6%, so the 97.5% is 100.
    res = paired_bootstrap([100, 100, 100, 0], [0, 0, 0, 0], n_resamples=10_000)
    assert res["diff"] == 75.0
    assert (res["low"], res["high"]) == (25.0, 100.0)
    assert res["excludes_zero"] is True
    assert res["n_queries"] == 4 and res["n_seeds"] == 1


def test_bootstrap_interval_of_no_gain_worked_out_by_hand():
    # d = [-1, 0, 1]: the mean of three draws is -1 or +1 with probability 1/27 = 3.7% each
    # (> 2.5%), so the interval is the whole range [-100, 100] and it contains 0.
    res = paired_bootstrap([0, 100, 100], [100, 100, 0], n_resamples=10_000)
    assert res["diff"] == 0.0
    assert (res["low"], res["high"]) == (-100.0, 100.0)
    assert res["excludes_zero"] is False


def test_a_bound_that_is_zero_up_to_float_rounding_does_not_exclude_zero():
    # hits of 0.3, 0, 0 against 0, 0.1, 0.2 over three seeds: the mean difference is 0, but the
    # float sum gives -9e-18, which once flagged an interval [-5.0, -0.0] as excluding 0
    out = paired_bootstrap([[0.3], [0.0], [0.0]], [[0.0], [0.1], [0.2]], n_resamples=50)
    assert out["high"] < 0 and out["high"] == pytest.approx(0.0, abs=1e-15)
    assert not out["excludes_zero"]
    assert paired_bootstrap([[0.3], [0.0]], [[0.0], [0.1]], n_resamples=50)["excludes_zero"]


def test_bootstrap_pools_seeds_per_query_with_one_draw_shared_by_all_seeds():
    # two seeds, two queries. Seed-averaged differences per query: q0 = (1 + 0) / 2 = 0.5,
    # q1 = (0 - 1) / 2 = -0.5, so resample means are -0.5, 0, 0.5 with probability 1/4, 1/2, 1/4.
    scores = [[1, 1], [1, 0]]
    reference = [[0, 1], [1, 1]]
    res = paired_bootstrap(scores, reference, n_resamples=10_000)
    assert res["diff"] == 0.0
    assert (res["low"], res["high"]) == (-0.5, 0.5)
    assert res["n_seeds"] == 2 and res["n_queries"] == 2
    # per-seed differences [1, -1] and [-1, 1]: every query's seed average is 0, so one shared
    # draw gives exactly [0, 0]; drawing each seed's queries on its own would give [-1, 1]
    # (both seeds at their extreme together with probability 1/16 > 2.5%)
    res = paired_bootstrap([[1, 0], [0, 1]], [[0, 1], [1, 0]], n_resamples=10_000)
    assert (res["diff"], res["low"], res["high"]) == (0.0, 0.0, 0.0)


def test_bootstrap_is_reproducible_and_checks_its_input():
    a, b = np.random.default_rng(0).integers(0, 2, (2, 50)), np.zeros((2, 50))
    assert paired_bootstrap(a, b, 500, seed=3) == paired_bootstrap(a, b, 500, seed=3)
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap(np.zeros((2, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        paired_bootstrap([1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1.0], [0.0], confidence=1.0)
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap(np.zeros((2, 0)), np.zeros((2, 0)))


def test_mean_std_by_hand():
    stats = mean_std([1, 2, 3, 4])
    assert stats["mean"] == 2.5
    assert stats["std"] == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, over n - 1 = 3
    assert mean_std([7.0])["std"] == 0.0
    with pytest.raises(ValueError):
        mean_std([])


hits = st.integers(1, 3).flatmap(lambda seeds: st.integers(1, 25).flatmap(
    lambda queries: st.lists(st.lists(st.sampled_from([0.0, 100.0]), min_size=queries,
                                      max_size=queries), min_size=seeds, max_size=seeds)))


@settings(max_examples=40, deadline=None)
@given(hits, st.integers(0, 2**16))
def test_identical_methods_give_the_interval_zero_zero(scores, seed):
    res = paired_bootstrap(scores, scores, n_resamples=200, seed=seed)
    assert (res["diff"], res["low"], res["high"]) == (0.0, 0.0, 0.0)
    assert res["excludes_zero"] is False


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(0, 2**16))
def test_interval_contains_the_point_estimate(data, seed):
    scores = data.draw(hits)
    shape = (len(scores), len(scores[0]))
    values = st.one_of(st.sampled_from([0.0, 100.0]), st.floats(-5, 5))
    reference = data.draw(st.lists(st.lists(values, min_size=shape[1], max_size=shape[1]),
                                   min_size=shape[0], max_size=shape[0]))
    res = paired_bootstrap(scores, reference, n_resamples=2000, seed=seed)
    assert res["low"] - 1e-9 <= res["diff"] <= res["high"] + 1e-9
    assert res["excludes_zero"] == (res["low"] > 0 or res["high"] < 0)


# ---- the grid file --------------------------------------------------------------------------------


def _grid(tmp_path, **sections):
    from calm.experiments.grid import load_grid

    data = {"base": {"scale": "tiny"}, "seeds": [0, 1],
            "grid": {"model.alignment.name": ["none", "kl"]}, **sections}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_grid(path)


def test_shipped_grids_parse():
    from calm.experiments.grid import load_grid

    full = load_grid(ALIGNMENT)
    assert [c.name for c in full.cells()] == ["none", "vae", "kl", "ce", "mse"]
    assert len(full.runs()) == 25 and full.base.scale == "large" and full.reads == "test"
    # issue 20: the evidence grids read the reported benchmark's test split with a recipe chosen
    # on the dev benchmark, which the tuning grid reads
    tuning = load_grid(Path(ALIGNMENT).with_name("tuning.yaml"))
    assert tuning.reads == "dev" and tuning.base.data_seed == tuning.tuning.benchmark_seed == 1
    for name in ("alignment.yaml", "ablations.yaml", "uncertainty.yaml"):
        grid = load_grid(Path(ALIGNMENT).with_name(name))
        assert grid.reads == "test" and grid.tuning.benchmark_seed == 1 != grid.base.data_seed
    tiny = load_grid(TINY)
    assert [c.name for c in tiny.cells()] == ["none", "vae"] and tiny.seeds == [0, 1]


def test_extra_axes_name_cells_and_match_references(tmp_path):
    grid = _grid(tmp_path, grid={"model.alignment.name": ["none", "kl"],
                                 "model.anchors.refresh": ["epoch", "step"]},
                 set={"model.alignment.weight": 0.5})
    names = [c.name for c in grid.cells()]
    assert names == ["none+refresh=epoch", "none+refresh=step", "kl+refresh=epoch",
                     "kl+refresh=step"]
    kl_step = grid.cells()[3]
    assert grid.reference(kl_step).name == "none+refresh=step"
    assert grid.reference(grid.cells()[0]) is None
    from calm.experiments.grid import run_config

    cfg = run_config(grid, kl_step, 1, Path("d"), {"loader": "msrvtt", "annotations": "a",
                                                   "videos": "v"}, Path("clip"), 3)
    assert cfg.model.alignment.name == "kl" and cfg.model.anchors.refresh == "step"
    assert cfg.model.alignment.weight == 0.5 and cfg.train.seed == 1


def test_a_run_is_configured_exactly_as_the_demo_configures_it(tmp_path):
    from calm.experiments.grid import run_config
    from calm.experiments.recipe import Recipe, experiment_config

    grid = _grid(tmp_path)
    domain = {"loader": "msrvtt", "annotations": "a", "videos": "v"}
    demo = experiment_config(Recipe(scale="tiny", seed=1), Path("d"), domain, Path("c"), "kl",
                             7)
    assert run_config(grid, grid.cells()[1], 1, Path("d"), domain, Path("c"), 7) == demo


def test_a_cell_may_change_the_recipe_itself(tmp_path):
    """`recipe.` keys: the pretraining budget or the fine-tuning budget of one cell, the other
    cells and the base keep theirs; the benchmark and the seed stay the grid's."""
    from calm.experiments.grid import run_config

    grid = _variants(tmp_path, variants={
        "paper": {}, "short": {"recipe.pretrain.steps": 7, "recipe.steps": 40}})
    paper, short = grid.cells()
    assert grid.cell_recipe(short, 3).pretrain.steps == 7
    assert grid.cell_recipe(short, 3).pretrain.model == grid.base.pretrain.model
    assert grid.cell_recipe(short, 3).seed == 3 and grid.cell_recipe(paper, 3).seed == 3
    assert grid.cell_recipe(paper, 0).pretrain == grid.base.pretrain
    configs = [run_config(grid, c, 0, Path("d"), PLACEHOLDER_DOMAIN, Path("c"), 3)
               for c in (paper, short)]
    assert [c.train.max_steps for c in configs] == [grid.base.steps, 40]
    assert configs[0].model == configs[1].model  # recipe keys are not config keys
    assert grid.recipe(short, 0)["cell"] == {"recipe.pretrain.steps": 7, "recipe.steps": 40}


@pytest.mark.parametrize("variant, message", [
    ({"recipe.scale": "small"}, "one benchmark"),
    ({"recipe.data_seed": 4}, "one benchmark"),
    ({"recipe.seed": 4}, "set by the grid"),
    ({"recipe.pretrain.stepz": 4}, "stepz"),
    ({"recipe.stepz": 4}, "stepz"),
])
def test_recipe_keys_that_would_move_the_benchmark_or_do_not_exist_are_errors(
        tmp_path, variant, message):
    with pytest.raises(ConfigError, match=message) as info:
        _variants(tmp_path, variants={"paper": {}, "bad": variant})
    assert "grid.yaml" in str(info.value) and "variants.bad" in str(info.value)


@pytest.mark.slow
def test_cells_with_their_own_pretraining_budget_train_on_their_own_toy_clip(tmp_path,
                                                                            monkeypatch):
    """One toy CLIP per distinct pretrain section, each run trained from its own."""
    from calm.cli.main import main

    data = yaml.safe_load(TINY.read_text())
    data.pop("grid")
    data.update(seeds=[0], variants={"none": {"model.alignment.name": "none"},
                                     "none_pretrain3": {"model.alignment.name": "none",
                                                        "recipe.pretrain.steps": 3}})
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    assert main(["experiment", "--config", str(path), "--out", str(tmp_path / "exp"),
                 "--data", str(tmp_path / "data"), "--no-progress"]) == 0
    used = {}
    for cell in ("none", "none_pretrain3"):
        run = tmp_path / "exp" / "cells" / cell / "seed0" / "train"
        resolved = yaml.safe_load((run / "config.yaml").read_text())
        used[cell] = resolved["model"]["backbone"]["checkpoint"]
        report = json.loads(Path(used[cell]).with_suffix(".json").read_text())
        assert report["config"]["steps"] == (3 if cell == "none_pretrain3" else 2)
    assert used["none"] != used["none_pretrain3"]


@pytest.mark.parametrize("sections, message", [
    ({"sweep": {}}, "unknown key"),
    ({"grid": {"model.anchors.refresh": ["step"]}}, "model.alignment.name"),
    ({"grid": {"model.alignment.name": ["none"], "model.anchors.refrsh": ["step"]}}, "refrsh"),
    ({"grid": {"model.alignment.name": ["none"], "model.anchors.refresh": ["sometimes"]}},
     "sometimes"),
    ({"grid": {"model.alignment.name": []}}, "non-empty"),
    ({"grid": {"model.alignment.name": ["none", "vea"]}}, "vea"),
    ({"base": {"scale": "tiny", "fusion": "xpol"}}, "xpol"),
    ({"base": {"scale": "tiny", "seed": 3}}, "base.seed"),
    ({"base": {"scale": "huge"}}, "base.scale"),
    ({"base": {"scael": "tiny"}}, "scael"),
    ({"set": {"train.seed": 3}}, "train.seed"),
    ({"seeds": [0, 0]}, "repeats"),
    ({"bootstrap": {"confidence": 2}}, "confidence"),
])
def test_grid_mistakes_are_errors_that_name_the_key(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message) as info:
        _grid(tmp_path, **sections)
    assert "grid.yaml" in str(info.value)


# ---- named variants and the reference ------------------------------------------------------------

PLACEHOLDER_DOMAIN = {"loader": "msrvtt", "annotations": "a", "videos": "v"}


def _variants(tmp_path, text: str | None = None, **sections):
    """A variants grid from sections (or the file's text verbatim), read as `calm experiment`
    reads it."""
    from calm.experiments.grid import load_grid

    data = {"base": {"scale": "tiny"}, "seeds": [0, 1], "set": {"model.alignment.name": "vae"},
            "variants": {"paper": {}, "live": {"model.alignment.detach_target": False}},
            **sections}
    path = tmp_path / "grid.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return load_grid(path)


def test_variants_are_named_cells_set_on_top_of_set(tmp_path):
    from calm.experiments.grid import parse_grid, run_config

    grid = _variants(tmp_path, set={"model.alignment.name": "vae", "model.alignment.weight": 0.5},
                     variants={"paper": None,
                               "heavy": {"model.alignment.weight": 2.0},
                               "kl": {"model.alignment.name": "kl"}})
    assert [(c.name, c.alignment) for c in grid.cells()] == [
        ("paper", "vae"), ("heavy", "vae"), ("kl", "kl")]
    assert len(grid.runs()) == 6
    paper, heavy, kl = grid.cells()
    configs = [run_config(grid, c, 1, Path("d"), PLACEHOLDER_DOMAIN, Path("c"), 3)
               for c in (paper, heavy, kl)]
    assert [c.model.alignment.weight for c in configs] == [0.5, 2.0, 0.5]  # the variant wins
    assert [c.model.alignment.name for c in configs] == ["vae", "vae", "kl"]
    assert all(c.train.seed == 1 for c in configs)
    # the default reference is the first variant; the reference itself is compared with nothing
    assert [grid.reference(c) for c in grid.cells()] == [None, paper, paper]
    assert grid.recipe(heavy, 0)["cell"] == {"model.alignment.weight": 2.0}
    # the grid as written to OUT/grid.yaml reads back as the same grid
    again = parse_grid(yaml.safe_load(yaml.safe_dump(grid.to_dict(), sort_keys=False)), "g.yaml")
    assert again.cells() == grid.cells() and again.reference_name is None
    named = _variants(tmp_path, reference="live")
    assert [r.name if r else None for r in map(named.reference, named.cells())] == ["live", None]
    assert parse_grid(named.to_dict()).reference_name == "live"


def test_a_tuning_block_says_where_the_recipe_was_chosen(tmp_path):
    from calm.experiments.results import markdown, summarize

    dev = _variants(tmp_path, seeds=[0], base={"scale": "tiny", "data_seed": 1},
                    tuning={"split": "dev", "benchmark_seed": 1}, variants={"a": {}, "b": {}})
    test = _variants(tmp_path, seeds=[0], base={"scale": "tiny", "data_seed": 0},
                     tuning={"split": "dev", "benchmark_seed": 1,
                             "results": "docs/experiments/tuning.json"},
                     variants={"a": {}, "b": {}})
    results = {(c, 0): _fake_run(c, 0, [1, 0]) for c in ("a", "b")}
    for grid, split, phrase in ((dev, "dev", "**A tuning grid:**"),
                                (test, "test", "this grid reads its test split once")):
        summary = summarize(grid, results)
        assert summary["split"] == split and summary["tuning"]["benchmark_seed"] == 1
        assert phrase in markdown(summary)
    with pytest.raises(ConfigError, match="tuning.split: 'test'"):
        _variants(tmp_path, seeds=[0], tuning={"split": "test"}, variants={"a": {}})


def test_a_reference_in_a_grid_file_replaces_the_none_of_the_same_row(tmp_path):
    grid = _grid(tmp_path, grid={"model.alignment.name": ["none", "kl", "vae"],
                                 "model.anchors.refresh": ["epoch", "step"]},
                 reference="kl+refresh=epoch")
    refs = {c.name: grid.reference(c) for c in grid.cells()}
    assert refs["kl+refresh=epoch"] is None
    assert {name: ref.name for name, ref in refs.items() if ref} == {
        name: "kl+refresh=epoch" for name in refs if name != "kl+refresh=epoch"}


def test_shipped_variant_grids_parse_to_the_configs_they_describe():
    from calm.experiments.grid import load_grid, run_config

    def configs(name):
        grid = load_grid(EXPERIMENTS / f"{name}.yaml")
        assert grid.seeds == [0, 1, 2] and grid.base.scale == "default"
        cells = grid.cells()
        first = grid.reference_name
        assert first == cells[0].name and all(grid.reference(c).name == first for c in cells[1:])
        return {c.name: run_config(grid, c, 0, Path("d"), PLACEHOLDER_DOMAIN, Path("c"), 3)
                for c in cells}

    paths = configs("mechanism")
    assert list(paths) == ["paper", "vae_rate", "step_anchors", "live_text", "fused_video"]
    assert {c.model.alignment.name for c in paths.values()} == {"vae"}
    assert (paths["paper"].model.anchors.refresh, paths["paper"].model.alignment.detach_target,
            paths["paper"].model.anchors.video_source) == ("epoch", True, "frame_mean")
    # the paper's VAE trains at the new modules' rate and decay; the demo's default does not
    assert (paths["paper"].train.vae_lr, paths["paper"].train.vae_weight_decay) == (None, None)
    assert (paths["vae_rate"].train.vae_lr, paths["vae_rate"].train.vae_weight_decay) == (0.01, 0.0)
    assert (paths["step_anchors"].model.anchors.refresh,
            paths["step_anchors"].model.anchors.step_subset) == ("step", 16)
    assert paths["live_text"].model.alignment.detach_target is False
    assert paths["fused_video"].model.anchors.video_source == "fused"

    learning = configs("vae_learning")
    assert all(c.train.vae_lr is None for c in learning.values())
    assert list(learning) == ["paper", "text_scale_10", "scale_learned", "kl_warmup", "free_bits"]
    assert learning["text_scale_10"].model.anchors.text_scale == 10.0
    assert learning["scale_learned"].model.anchors.learn_scale is True
    assert learning["kl_warmup"].model.alignment.kl_warmup_steps == 150
    assert learning["free_bits"].model.alignment.free_bits == 0.05

    same = configs("same_video")
    assert {n: c.train.same_video for n, c in same.items()} == {
        "negative": "negative", "positive": "positive", "masked": "masked"}
    assert {(c.model.alignment.name, c.data.train_pairs) for c in same.values()} == {
        ("none", "all")}


@pytest.mark.parametrize("sections, message", [
    ({"grid": {"model.alignment.name": ["none"]}}, "not both"),
    ({"variants": []}, "variants: expected a non-empty mapping"),
    ({"variants": {}}, "variants: expected a non-empty mapping"),
    ({"variants": {"a/b": {}}}, "'a/b' cannot name a cell"),
    ({"variants": {".hidden": {}}}, "'.hidden' cannot name a cell"),
    ({"variants": {"-x": {}}}, "'-x' cannot name a cell"),
    ({"variants": {"two words": {}}}, "'two words' cannot name a cell"),
    ({"variants": {7: {}}}, "7 cannot name a cell"),
    ({"variants": {"Paper": {}, "paper": {}}}, "case-insensitive"),
    ({"variants": {"paper": ["model.anchors.refresh", "step"]}}, r"variants\.paper: expected a"),
    ({"variants": {"paper": {"model.anchors.refrsh": "step"}}}, r"variants\.paper: .*refrsh"),
    ({"variants": {"paper": {"model.anchors.refresh": "sometimes"}}},
     r"variants\.paper: .*sometimes"),
    ({"variants": {"paper": {"model.alignment.name": "vea"}}},
     r"variants\.paper: model\.alignment\.name: 'vea'"),
    ({"variants": {"paper": {"train.seed": 3}}}, r"variants\.paper\.train\.seed"),
    ({"set": {}}, r"variants\.paper: model\.alignment\.name is required"),
    ({"reference": "papr"}, r"reference: 'papr' is not one of the cells \['paper', 'live'\]"),
])
def test_variant_mistakes_are_errors_that_name_the_file_and_key(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message) as info:
        _variants(tmp_path, **sections)
    assert "grid.yaml" in str(info.value)


def test_grid_file_errors_for_cells_given_twice_or_not_at_all(tmp_path):
    with pytest.raises(ConfigError, match="grid.yaml: .*found neither"):
        _variants(tmp_path, text="base: {scale: tiny}\nseeds: [0]\n")
    with pytest.raises(ConfigError, match=r"grid.yaml: reference: 'vae' is not one of"):
        _grid(tmp_path, grid={"model.alignment.name": ["none", "kl"]}, reference="vae")
    # YAML would keep the second `paper` silently; a grid file refuses it
    twice = ("base: {scale: tiny}\nset: {model.alignment.name: vae}\nvariants:\n  paper: {}\n"
             "  paper: {model.anchors.refresh: step}\n")
    with pytest.raises(ConfigError, match=r"grid.yaml .*'paper' appears twice .*line 4"):
        _variants(tmp_path, text=twice)


# ---- results tables from hand-made runs -----------------------------------------------------------


def _fake_run(cell: str, seed: int, hits: list[int], anchors: dict | None = None,
              uncertainty: dict | None = None) -> dict:
    domain = {"in_domain": True, "n_texts": len(hits), "n_videos": len(hits),
              "t2v": {"R@1": 100.0 * statistics.mean(hits), "R@5": 100.0, "MnR": 1.0},
              "v2t": {"R@1": 0.0}, "tie_rule": "strictly-better",
              "text_ids": [f"t{i}" for i in range(len(hits))],
              "t2v_ranks": [1 if h else 2 for h in hits], "t2v_hits_at_1": hits}
    return {"cell": cell, "seed": seed, "trained_on": "msrvtt", "domains": {"msrvtt": domain},
            "seconds": {"train": 1.0, "eval": 1.0, "total": 2.0},
            "machine": {"cpu": "cpu", "cpus": 1, "threads": 1, "platform": "p", "torch": "t",
                        "device": "cpu"},
            "anchors": anchors, "uncertainty": uncertainty}


def _fake_uncertainty(sigma: float, vp_entropy: float, margin: float, random: float,
                      spread: float, auroc: float = 0.5) -> dict:
    """AUSE per score; sigma's AUROC `auroc` against the margin's 0.6."""
    def side(scores):
        return {"n_queries": 4, "r1": 50.0, "ece": 12.0, "oracle_aurc": 20.0,
                **{k: {"ause": a, "spearman": 0.5, "auroc": auroc if k == "sigma" else 0.6,
                       "aurc": 30.0} for k, a in scores.items()},
                "random": {"ause": random, "spearman": 0.0, "ause_std": spread, "auroc": 0.5,
                           "aurc": 50.0}}

    return {"video_query": side({"sigma": sigma, "vp_entropy": vp_entropy, "margin": margin}),
            "text_query": side({"sigma": sigma, "sp_entropy": 1.0, "vp_entropy": vp_entropy,
                                "margin": margin}),
            "tie_rule": "strictly-better",
            "synthetic": {"n_clips": 4, "mean": {"captions_fitting": 1.0},
                          "spearman": {"sigma": {"captions_fitting": 0.25},
                                       "vp_entropy": {"captions_fitting": None}}}}


def test_every_cell_is_compared_with_the_named_reference_query_by_query(tmp_path):
    from calm.experiments.results import markdown, summarize

    # reference `b` (not the first variant): a = b + 3 hits of 4 queries, c = b exactly
    grid = _variants(tmp_path, seeds=[0], reference="b", bootstrap={"resamples": 10_000},
                     variants={"a": {}, "b": {}, "c": {}})
    results = {("a", 0): _fake_run("a", 0, [1, 1, 1, 0]),
               ("b", 0): _fake_run("b", 0, [0, 0, 0, 0]),
               ("c", 0): _fake_run("c", 0, [0, 0, 0, 0])}
    summary = summarize(grid, results)
    assert list(summary["comparisons"]) == ["a", "c"]
    a, c = summary["comparisons"]["a"], summary["comparisons"]["c"]
    assert a["reference"] == c["reference"] == "b"
    # as worked out in test_bootstrap_interval_of_a_clear_gain_worked_out_by_hand
    assert (a["domains"]["msrvtt"]["diff"], a["domains"]["msrvtt"]["low"],
            a["domains"]["msrvtt"]["high"]) == (75.0, 25.0, 100.0)
    assert (c["domains"]["msrvtt"]["diff"], c["domains"]["msrvtt"]["low"],
            c["domains"]["msrvtt"]["high"]) == (0.0, 0.0, 0.0)
    # one seed, one query per video: the hierarchical interval resamples the same units
    hier = a["domains"]["msrvtt"]["hierarchical"]
    assert hier["unit"] == "seeds x videos" and hier["n_clusters"] == 4
    assert (hier["diff"], hier["low"], hier["high"]) == (75.0, 25.0, 100.0)
    md = markdown(summary)
    assert "## t2v R@1 against `b`" in md
    assert "| a | b | 1 | **+75.0** [+25.0, +100.0] | [+25.0, +100.0] |" in md
    assert "| c | b | 1 | 0.0 [0.0, 0.0] | [0.0, 0.0] |" in md
    # two captions per video: the verdict's interval draws them together and is wider
    for run in results.values():
        run["domains"]["msrvtt"]["t2v_videos"] = [0, 0, 0, 1]
    pairs = summarize(grid, results)["comparisons"]["a"]["domains"]["msrvtt"]
    assert pairs["hierarchical"]["n_clusters"] == 2
    assert pairs["hierarchical"]["high"] - pairs["hierarchical"]["low"] > pairs["high"] - pairs["low"]
    # a query seen by one run and not the other cannot be paired
    results[("c", 0)]["domains"]["msrvtt"]["text_ids"][0] = "elsewhere"
    with pytest.raises(ValueError, match="same test queries"):
        summarize(grid, results)


def test_compare_pairs_are_compared_beside_the_references(tmp_path):
    from calm.experiments.grid import parse_grid
    from calm.experiments.results import markdown, summarize

    grid = _variants(tmp_path, seeds=[0], variants={"a": {}, "b": {}, "c": {}},
                     compare=[["c", "b"], ["b", "a"]], bootstrap={"resamples": 1000})
    assert grid.pairs == [("c", "b"), ("b", "a")]
    assert parse_grid(grid.to_dict()).pairs == grid.pairs  # written to OUT/grid.yaml, read back
    results = {("a", 0): _fake_run("a", 0, [0, 0, 0, 0]),
               ("b", 0): _fake_run("b", 0, [1, 1, 0, 0]),
               ("c", 0): _fake_run("c", 0, [1, 1, 1, 1])}
    summary = summarize(grid, results)
    # b against a is b's reference comparison already; c against b is added
    assert list(summary["comparisons"]) == ["b", "c", "c vs b"]
    extra = summary["comparisons"]["c vs b"]
    assert extra["cell"] == "c" and extra["reference"] == "b"
    assert extra["domains"]["msrvtt"]["diff"] == 50.0
    assert "| c | b | 1 | +50.0 [0.0, +100.0] |" in markdown(summary)


@pytest.mark.parametrize("pairs, message", [
    ([["a", "zz"]], "'zz' is not one of the cells"),
    ([["a", "a"]], "against itself"),
    ([["a", "b"], ["a", "b"]], "twice"),
    ([["a"]], r"expected \[cell, against\]"),
    ({"a": "b"}, "expected a list"),
])
def test_compare_mistakes_are_errors(tmp_path, pairs, message):
    with pytest.raises(ConfigError, match=message):
        _variants(tmp_path, seeds=[0], variants={"a": {}, "b": {}}, compare=pairs)


def test_a_comparison_across_machines_is_marked(tmp_path):
    """Runs of one cell on one CPU model and its reference's on another: the comparison says so
    (floats, and so every run, differ between CPU models), and the machine lines name the cells."""
    from calm.experiments.results import markdown, summarize

    grid = _variants(tmp_path, seeds=[0], variants={"a": {}, "b": {}, "c": {}},
                     bootstrap={"resamples": 100})
    results = {(n, 0): _fake_run(n, 0, [1, 0, 1, 0]) for n in "abc"}
    results[("c", 0)]["machine"] = {**results[("c", 0)]["machine"], "cpu": "Other CPU"}
    summary = summarize(grid, results)
    assert len(summary["comparisons"]["b"]["machines"]) == 1
    assert summary["comparisons"]["c"]["machines"] == sorted(
        {"Other CPU", results[("a", 0)]["machine"]["cpu"]})
    assert summary["cells_by_machine"] == [["a", "b"], ["c"]]
    md = markdown(summary)
    assert "| c † | a |" in md and "| b | a |" in md and "† Across machines" in md
    assert "Cells: a, b." in md and "Cells: c." in md
    single = markdown(summarize(grid, {k: v for k, v in results.items() if k[0] != "c"}))
    assert "†" not in single and "Cells:" not in single


def test_mechanism_and_uncertainty_tables_by_hand(tmp_path):
    from calm.experiments.results import markdown, summarize

    grid = _variants(tmp_path, set={}, variants={"none": {"model.alignment.name": "none"},
                                                 "vae": {"model.alignment.name": "vae"}})
    zero_shot = {"source": "zero-shot", "rec_ce": None, "rec_ce_marginal": None,
                 "rec_ce_uniform": 3.0, "kl": None, "active_dims": None, "entropy_vp": 2.0,
                 "entropy_sp": 2.5, "top1_agreement": 10.0,
                 "anchor_map_video": {"mAP": 30.0, "n": 6, "chance": 20.0},
                 "anchor_map_text": {"mAP": 40.0, "n": 6, "chance": 10.0}}
    trained = [{**zero_shot, "source": "trained anchors and VAE", "rec_ce": rec, "kl": 0.5,
                "active_dims": dims, "rec_ce_marginal": 2.9,
                "anchor_map_generated": {"mAP": gen, "n": 6, "chance": 10.0}}
               for rec, dims, gen in ((2.0, 3, 50.0), (2.2, 5, 60.0))]
    results = {
        ("none", 0): _fake_run("none", 0, [1, 0], zero_shot),
        ("none", 1): _fake_run("none", 1, [0, 1], zero_shot),
        # seed 0: sigma below every baseline, and beyond 2 spreads of random (3 < 10 - 2 * 3);
        # seed 1: above the margin's, within 2 spreads of random (6 > 10 - 2 * 3)
        ("vae", 0): _fake_run("vae", 0, [1, 1], trained[0],
                              _fake_uncertainty(3, 5, 4, 10, 3, auroc=0.7)),
        ("vae", 1): _fake_run("vae", 1, [1, 0], trained[1],
                              _fake_uncertainty(6, 7, 5, 10, 3, auroc=0.55)),
    }
    summary = summarize(grid, results)
    none, vae = summary["cells"]["none"], summary["cells"]["vae"]
    assert none["uncertainty"] is None
    assert none["anchors"]["numbers"]["rec_ce"] is None and none["anchors"]["maps"][
        "anchor_map_generated"] is None
    assert none["anchors"]["numbers"]["entropy_vp"]["values"] == [2.0, 2.0]
    assert vae["anchors"]["numbers"]["rec_ce"]["mean"] == pytest.approx(2.1)
    assert vae["anchors"]["numbers"]["active_dims"]["values"] == [3, 5]
    assert vae["anchors"]["maps"]["anchor_map_generated"]["mAP"]["mean"] == 55.0
    assert vae["anchors"]["maps"]["anchor_map_generated"]["chance"] == 10.0
    video = vae["uncertainty"]["video_query"]
    assert video["numbers"]["sigma"]["ause"]["values"] == [3, 6]
    assert video["numbers"]["random"]["ause_std"]["mean"] == 3
    assert video["numbers"]["sigma"]["auroc"]["values"] == [0.7, 0.55]
    assert video["ece"]["mean"] == 12.0 and video["oracle_aurc"]["mean"] == 20.0
    # seed 0: AUROC above the margin's 0.6 and AUSE beyond 2 spreads of random (3 < 10 - 2 * 3);
    # seed 1: neither (0.55 < 0.6; 6 > 10 - 2 * 3)
    assert video["beats"]["sigma"] == {"seeds": 2, "auroc_above_margin": 1,
                                       "ause_below_random_beyond_spread": 1}
    assert "margin" not in video["beats"] and "random" not in video["beats"]
    assert vae["uncertainty"]["synthetic"]["sigma"]["captions_fitting"]["mean"] == 0.25
    assert vae["uncertainty"]["synthetic"]["vp_entropy"]["captions_fitting"] is None

    md = markdown(summary)
    assert "## Mechanism on `msrvtt` test (in-domain)" in md
    assert "| number | none | vae |" in md
    assert "| rec_ce | – | 2.100 ± 0.141 |" in md
    assert "| active_dims | – | 4.0 ± 1.4 |" in md
    assert "| anchor_map_video (chance 20.0) | 30.0 ± 0.0 | 30.0 ± 0.0 |" in md
    assert "| anchor_map_generated (chance 10.0) | – | 55.0 ± 7.1 |" in md
    assert "## Uncertainty of `vae`" in md and "## Uncertainty of `none`" not in md
    assert "| score | vae |" in md and "| sigma | 0.625 ± 0.106 |" in md  # the cells' AUROCs
    assert ("| video | sigma | 0.625 ± 0.106 | 4.50 ± 2.12 | 30.00 ± 0.00 | 0.500 ± 0.000 |"
            in md)
    assert "| video | random (baseline) | 0.500 ± 0.000 | 10.00 ± 0.00 (spread 3.00 ± 0.00) |" in md
    assert ("- Video queries: R@1 50.0 ± 0.0, oracle AURC 20.00 ± 0.00, ECE of the top-1 softmax "
            "probability 12.00 ± 0.00 %.") in md
    assert ("Seeds (of 2) where the AUROC beats the margin's: sigma 1, vp_entropy 0; where the "
            "AUSE is below random's by more than 2 spreads: sigma 1, vp_entropy 0.") in md
    assert "| sigma | 0.250 ± 0.000 |" in md and "| vp_entropy | – |" in md


# ---- the runner on the tiny grid ------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny grid run once through the command line: (experiment folder, benchmark folder)."""
    from calm.cli.main import main

    root = tmp_path_factory.mktemp("experiment")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CALM_CACHE", str(root / "cache"))
        rc = main(["experiment", "--config", str(TINY), "--out", str(root / "exp"),
                   "--data", str(root / "data"), "--no-progress"])
        assert rc == 0
        yield root / "exp", root / "data"


def _result(out: Path, cell: str, seed: int) -> dict:
    return json.loads((out / "cells" / cell / f"seed{seed}" / "result.json").read_text())


@pytest.mark.slow
def test_results_files_hold_every_cell_domain_and_comparison(finished):
    out, _ = finished
    summary = json.loads((out / "results.json").read_text())
    assert summary["complete"] and summary["finished_runs"] == summary["planned_runs"] == 4
    assert summary["domains"] == DOMAINS and summary["trained_on"] == "msrvtt"
    assert list(summary["cells"]) == ["none", "vae"]
    for name, row in summary["cells"].items():
        assert row["seeds"] == [0, 1]
        for domain in DOMAINS:
            stats = row["domains"][domain]
            assert stats["in_domain"] == (domain == "msrvtt")
            for metric in ("t2v R@1", "t2v R@5", "t2v MnR", "v2t R@1"):
                direction, key = metric.split()
                values = [_result(out, name, s)["domains"][domain][direction][key] for s in (0, 1)]
                assert stats[metric]["values"] == values
                assert stats[metric]["mean"] == pytest.approx(statistics.mean(values))
                assert stats[metric]["std"] == pytest.approx(statistics.stdev(values))

    for cell in ("none", "vae"):
        for seed in (0, 1):
            result = _result(out, cell, seed)
            for domain in DOMAINS:
                d = result["domains"][domain]
                ranks, hits = np.asarray(d["t2v_ranks"]), np.asarray(d["t2v_hits_at_1"])
                assert len(ranks) == len(hits) == len(d["text_ids"]) == d["n_texts"]
                assert ranks.min() >= 1 and ((hits >= 0) & (hits <= 1)).all()
                assert np.all(hits[ranks <= 1] > 0) and np.all(hits[ranks >= 2] < 1)
                assert d["t2v"]["R@1"] == pytest.approx(100 * hits.mean())
                assert d["t2v"]["MnR"] == pytest.approx(ranks.mean())
            ckpts = out / "cells" / cell / f"seed{seed}" / "train" / "checkpoints"
            assert [p.name for p in ckpts.iterdir()] == ["best.safetensors"]

    comparison = summary["comparisons"]["vae"]
    assert list(summary["comparisons"]) == ["vae"]
    assert comparison["reference"] == "none" and comparison["seeds"] == [0, 1]
    for domain in DOMAINS:
        c = comparison["domains"][domain]
        per_seed = [_result(out, "vae", s)["domains"][domain]["t2v"]["R@1"]
                    - _result(out, "none", s)["domains"][domain]["t2v"]["R@1"] for s in (0, 1)]
        assert c["diff"] == pytest.approx(statistics.mean(per_seed))
        assert c["low"] <= c["diff"] <= c["high"]
        assert c["excludes_zero"] == (c["low"] > 0 or c["high"] < 0)
        assert c["n_seeds"] == 2 and c["n_resamples"] == 1000
        h = c["hierarchical"]
        assert h["diff"] == pytest.approx(c["diff"]) and h["n_seeds"] == 2
        assert h["n_clusters"] == len(set(_result(out, "vae", 0)["domains"][domain]["t2v_videos"]))

    md = (out / "results.md").read_text()
    assert f"calm experiment --config {TINY}" in md
    for heading in ("## msrvtt* (6 test queries)", "## didemo (6 test queries)", "## lsmdc"):
        assert heading in md
    assert "| none | 2 |" in md and "| vae | none | 2 |" in md
    assert "Machine:" in md


@pytest.mark.slow
def test_each_run_carries_its_in_domain_mechanism_numbers(finished):
    out, _ = finished
    summary = json.loads((out / "results.json").read_text())
    for seed in (0, 1):
        none, vae = _result(out, "none", seed), _result(out, "vae", seed)
        # the baseline: zero-shot anchors, no VAE numbers, no uncertainty
        assert none["anchors"]["source"].startswith("zero-shot")
        assert none["anchors"]["rec_ce"] is None and none["anchors"]["kl"] is None
        assert none["uncertainty"] is None
        assert not (out / "cells" / "none" / f"seed{seed}" / "uncertainty.json").exists()
        # CALM: its own anchors and VAE, and sigma against its baselines on both query sides
        block = vae["anchors"]
        assert block["source"] == "trained anchors and VAE"
        assert block["rec_ce"] > 0 and block["kl"] >= 0 and block["active_dims"] >= 0
        for key in ("anchor_map_video", "anchor_map_text", "anchor_map_generated"):
            assert 0 <= block[key]["mAP"] <= 100 and block[key]["n"] > 0
        u = vae["uncertainty"]
        assert set(u["video_query"]) == {"n_queries", "r1", "ece", "oracle_aurc", "sigma",
                                         "sigma_active", "log_sigma_sum", "s_hat_entropy",
                                         "mutual_info", "vp_entropy", "margin", "top1_prob",
                                         "random"}
        assert {"mutual_info", "sp_entropy", "random"} <= set(u["text_query"])
        assert 0 <= u["video_query"]["mutual_info"]["auroc"] <= 1
        assert u["video_query"]["random"]["ause_std"] >= 0
        assert u["text_query"]["n_queries"] == vae["domains"]["msrvtt"]["n_texts"]
        assert set(u["synthetic"]["spearman"]["sigma"]) == {
            "captions_fitting", "nameable_facts", "own_caption_matches"}
        full = json.loads((out / "cells" / "vae" / f"seed{seed}" / "uncertainty.json")
                          .read_text())
        assert u["video_query"]["sigma"]["ause"] == full["sigma"]["ause"]
        assert u["text_query"]["sp_entropy"]["ause"] == full["text_query"]["sp_entropy"]["ause"]
        # the same pass as the metrics: the uncertainty block's R@1 is the run's t2v R@1
        assert u["text_query"]["r1"] == pytest.approx(vae["domains"]["msrvtt"]["t2v"]["R@1"])

    cells = summary["cells"]
    assert cells["none"]["uncertainty"] is None
    assert cells["vae"]["anchors"]["numbers"]["rec_ce"]["values"] == [
        _result(out, "vae", s)["anchors"]["rec_ce"] for s in (0, 1)]
    assert cells["vae"]["uncertainty"]["video_query"]["numbers"]["sigma"]["ause"]["values"] == [
        _result(out, "vae", s)["uncertainty"]["video_query"]["sigma"]["ause"] for s in (0, 1)]
    md = (out / "results.md").read_text()
    assert "## Mechanism on `msrvtt` test (in-domain)" in md and "| rec_ce | – |" in md
    assert "## Uncertainty of `vae` on `msrvtt` test (2 seeds)" in md
    assert "Seeds (of 2) where the AUROC beats the margin's: sigma" in md


@pytest.mark.slow
def test_runs_finished_before_the_mechanism_blocks_are_completed_without_training(
        finished, tmp_path, monkeypatch):
    import calm.experiments.runs as experiment
    from calm.experiments.grid import load_grid

    src, data = finished
    out = tmp_path / "exp"
    shutil.copytree(src, out)
    monkeypatch.setenv("CALM_CACHE", str(src.parent / "cache"))
    runs = [(c, s) for c in ("none", "vae") for s in (0, 1)]
    originals = {key: _result(out, *key) for key in runs}
    for cell, seed in runs:  # as the runner wrote them before the blocks existed
        folder = out / "cells" / cell / f"seed{seed}"
        old = {k: v for k, v in originals[(cell, seed)].items()
               if k not in ("anchors", "uncertainty")}
        (folder / "result.json").write_text(json.dumps(old))
        (folder / "uncertainty.json").unlink(missing_ok=True)
    trained, evaluated = [], []
    real_train = experiment.train
    real_eval = experiment.evaluate_checkpoint

    def train_spy(cfg, run_dir, *args, **kwargs):  # counts calls; a call would really train
        trained.append(run_dir)
        return real_train(cfg, run_dir, *args, **kwargs)

    monkeypatch.setattr(experiment, "train", train_spy)

    def eval_spy(checkpoint, dataset, annotations, *args, **kwargs):
        evaluated.append((Path(checkpoint).parents[2].relative_to(out / "cells").as_posix(),
                          Path(annotations).parent.name, kwargs.get("uncertainty")))
        return real_eval(checkpoint, dataset, annotations, *args, **kwargs)

    monkeypatch.setattr(experiment, "evaluate_checkpoint", eval_spy)
    before = _mtimes(out / "cells")
    experiment.run_experiment(load_grid(TINY), out, data, progress=False)

    # no training; each run evaluated once, in-domain: the VAE runs with uncertainty, the
    # baseline for its zero-shot anchor block; the stored metrics and ranks untouched
    assert trained == []
    assert evaluated == [("none/seed0", "msrvtt", False), ("none/seed1", "msrvtt", False),
                         ("vae/seed0", "msrvtt", True), ("vae/seed1", "msrvtt", True)]
    after = _mtimes(out / "cells")
    assert all(after[k] == before[k] for k in before if "/train/" in k or "/sim/" in k)
    for key in runs:
        completed = _result(out, *key)
        assert completed["domains"] == originals[key]["domains"]
        # same machine, same checkpoint: the same numbers as a run that measured them at once
        assert completed["anchors"] == originals[key]["anchors"]
        assert completed["uncertainty"] == originals[key]["uncertainty"]
        assert completed["seconds"]["mechanism_added"] > 0
    assert (out / "cells" / "vae" / "seed1" / "uncertainty.json").is_file()
    summary = json.loads((out / "results.json").read_text())
    assert summary["cells"]["vae"]["uncertainty"]["seeds"] == [0, 1]

    # a run whose checkpoint is gone cannot be completed: an error naming it
    folder = out / "cells" / "vae" / "seed0"
    (folder / "result.json").write_text(json.dumps(
        {k: v for k, v in originals[("vae", 0)].items() if k != "uncertainty"}))
    (folder / "train" / "checkpoints" / "best.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"vae/seed0/result\.json: lacks the \['uncertainty'\]"):
        experiment.run_experiment(load_grid(TINY), out, data, progress=False)


@pytest.mark.slow
def test_a_variants_file_of_the_same_cells_reuses_the_grid_files_runs(finished, tmp_path):
    from calm.experiments.grid import parse_grid
    from calm.experiments.runs import run_experiment

    src, data = finished
    out = tmp_path / "exp"
    shutil.copytree(src, out)
    tiny = yaml.safe_load(TINY.read_text())
    as_variants = {k: v for k, v in tiny.items() if k != "grid"}
    as_variants["variants"] = {name: {"model.alignment.name": name} for name in ("none", "vae")}
    grid = parse_grid(as_variants, "variants.yaml")
    before = _mtimes(out / "cells")
    summary = run_experiment(grid, out, data, progress=False)  # same recipes: nothing runs
    assert _mtimes(out / "cells") == before
    original = json.loads((src / "results.json").read_text())
    assert summary["comparisons"] == original["comparisons"]  # first variant: `none`
    assert summary["cells"] == original["cells"]


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_finished_runs_are_never_rerun_and_stopped_ones_resume(finished, tmp_path, monkeypatch):
    import calm.experiments.runs as experiment
    from calm.engine.runlog import RunLog
    from calm.experiments.grid import load_grid

    src, data = finished
    out = tmp_path / "exp"
    shutil.copytree(src, out)
    monkeypatch.setenv("CALM_CACHE", str(src.parent / "cache"))
    originals = {(c, s): _result(out, c, s) for c in ("none", "vae") for s in (0, 1)}
    trained, evaluated = [], []
    real_train, real_eval = experiment.train, experiment.evaluate_checkpoint

    def train_spy(cfg, run_dir, resume=False, progress=True):
        trained.append((Path(run_dir).parent.relative_to(out / "cells").as_posix(), resume))
        return real_train(cfg, run_dir, resume=resume, progress=progress)

    def eval_spy(checkpoint, *args, **kwargs):
        evaluated.append(Path(checkpoint).parents[2].relative_to(out / "cells").as_posix())
        return real_eval(checkpoint, *args, **kwargs)

    monkeypatch.setattr(experiment, "train", train_spy)
    monkeypatch.setattr(experiment, "evaluate_checkpoint", eval_spy)
    grid = load_grid(TINY)

    # 1. everything finished: nothing is trained, evaluated or rewritten
    before = _mtimes(out / "cells")
    experiment.run_experiment(grid, out, data, progress=False)
    assert trained == [] and evaluated == []
    assert _mtimes(out / "cells") == before

    # 2. vae/seed0 starts afresh and is stopped (Ctrl-C) as it logs its first validation
    shutil.rmtree(out / "cells" / "vae" / "seed0")
    real_log = RunLog.log

    def stop_at_validation(self, kind, *args, **kwargs):
        if kind == "val":
            raise KeyboardInterrupt
        return real_log(self, kind, *args, **kwargs)

    monkeypatch.setattr(RunLog, "log", stop_at_validation)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment(grid, out, data, progress=False)
    monkeypatch.setattr(RunLog, "log", real_log)
    assert trained == [("vae/seed0", False)]
    assert (out / "cells" / "vae" / "seed0" / "train" / "checkpoints" / "last.json").is_file()
    assert not (out / "cells" / "vae" / "seed0" / "result.json").exists()

    # 3. a deleted result is only re-evaluated, a deleted run is run again, the stopped one
    #    resumes; the untouched run is left alone
    (out / "cells" / "vae" / "seed1" / "result.json").unlink()
    shutil.rmtree(out / "cells" / "none" / "seed1")
    trained.clear()
    before = _mtimes(out / "cells")
    experiment.run_experiment(grid, out, data, progress=False)
    assert trained == [("none/seed1", False), ("vae/seed0", True)]
    assert sorted(set(evaluated)) == ["none/seed1", "vae/seed0", "vae/seed1"]
    assert len(evaluated) == 3 * len(DOMAINS)
    after = _mtimes(out / "cells")
    untouched = [k for k in before if k.startswith("none/seed0/")
                 or k.startswith("vae/seed1/train/")]
    assert untouched and all(after[k] == before[k] for k in untouched)
    assert after["vae/seed1/result.json"] > before.get("vae/seed1/result.json", 0)

    # same machine, same seed: the rerun, the re-evaluated and the resumed runs reproduce the
    # original ranks of every test query
    for key in (("none", 1), ("vae", 1), ("vae", 0)):
        rerun = _result(out, *key)
        for domain in DOMAINS:
            for field in ("t2v_ranks", "t2v_hits_at_1"):
                assert rerun["domains"][domain][field] == \
                    originals[key]["domains"][domain][field], (key, domain, field)
        assert rerun["anchors"] == originals[key]["anchors"], key
        assert rerun["uncertainty"] == originals[key]["uncertainty"], key
    assert json.loads((out / "results.json").read_text())["finished_runs"] == 4


@pytest.mark.slow
def test_a_changed_recipe_is_an_error_naming_the_run(finished, tmp_path):
    from calm.experiments.grid import parse_grid
    from calm.experiments.runs import run_experiment

    out, data = finished
    changed = yaml.safe_load(TINY.read_text())
    changed["base"]["steps"] = 5
    grid = parse_grid(changed, "changed.yaml")
    before = _mtimes(out)
    with pytest.raises(ConfigError, match=r"none/seed0/recipe\.json.*different recipe.*base"):
        run_experiment(grid, out, data, progress=False)
    assert _mtimes(out) == before


@pytest.mark.slow
def test_report_only_rewrites_the_same_results(finished, capsys):
    from calm.cli.main import main

    out, _ = finished
    before = json.loads((out / "results.json").read_text())
    assert main(["experiment", "--config", str(TINY), "--out", str(out), "--report-only"]) == 0
    after = json.loads((out / "results.json").read_text())
    assert after["cells"] == before["cells"] and after["comparisons"] == before["comparisons"]
    assert "## msrvtt*" in capsys.readouterr().out


@pytest.mark.slow
def test_runs_read_a_complete_frame_cache_and_train_exactly_as_from_the_videos(finished,
                                                                              tmp_path):
    """The grid's runs load the training domain from its complete raw frame cache; the same run
    decoding the mp4s instead gives the same weights, bit for bit."""
    from safetensors.torch import load_file

    from calm.engine.train import train

    out, _ = finished
    run = out / "cells" / "vae" / "seed1" / "train"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cache = Path(cfg["data"]["frame_cache"])
    assert (cache / "cache.json").is_file()
    settings = json.loads((cache / "cache.json").read_text())
    assert settings["per_segment"] == 0 and settings["codec"] == "raw"
    from calm.config import ExperimentConfig, from_dict

    cfg["data"]["frame_cache"] = None
    train(from_dict(ExperimentConfig, cfg), tmp_path / "decoded", progress=False)
    cached = load_file(run / "checkpoints" / "best.safetensors")
    decoded = load_file(tmp_path / "decoded" / "checkpoints" / "best.safetensors")
    assert cached.keys() == decoded.keys()
    for key in cached:
        assert torch.equal(cached[key], decoded[key]), key
