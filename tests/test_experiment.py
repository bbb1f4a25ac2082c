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
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.config import ConfigError
from calm.metrics.bootstrap import mean_std, paired_bootstrap

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "experiments" / "tiny.yaml"
ALIGNMENT = REPO / "configs" / "experiments" / "alignment.yaml"
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
    from calm.demo.grid import load_grid

    data = {"base": {"scale": "tiny"}, "seeds": [0, 1],
            "grid": {"model.alignment.name": ["none", "kl"]}, **sections}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_grid(path)


def test_shipped_grids_parse():
    from calm.demo.grid import load_grid

    full = load_grid(ALIGNMENT)
    assert [c.name for c in full.cells()] == ["none", "kl", "ce", "mse", "vae"]
    assert len(full.runs()) == 15 and full.base.scale == "default"
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
    from calm.demo.grid import run_config

    cfg = run_config(grid, kl_step, 1, Path("d"), {"loader": "msrvtt", "annotations": "a",
                                                   "videos": "v"}, Path("clip"), 3)
    assert cfg.model.alignment.name == "kl" and cfg.model.anchors.refresh == "step"
    assert cfg.model.alignment.weight == 0.5 and cfg.train.seed == 1


def test_a_run_is_configured_exactly_as_the_demo_configures_it(tmp_path):
    from calm.demo.grid import run_config
    from calm.demo.run import DemoConfig, experiment_config

    grid = _grid(tmp_path)
    domain = {"loader": "msrvtt", "annotations": "a", "videos": "v"}
    demo = experiment_config(DemoConfig(scale="tiny", seed=1), Path("d"), domain, Path("c"), "kl",
                             7)
    assert run_config(grid, grid.cells()[1], 1, Path("d"), domain, Path("c"), 7) == demo


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

    md = (out / "results.md").read_text()
    assert f"calm experiment --config {TINY}" in md
    for heading in ("## msrvtt* (6 test queries)", "## didemo (6 test queries)", "## lsmdc"):
        assert heading in md
    assert "| none | 2 |" in md and "| vae | none | 2 |" in md
    assert "Machine:" in md


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_finished_runs_are_never_rerun_and_stopped_ones_resume(finished, tmp_path, monkeypatch):
    import calm.demo.experiment as experiment
    from calm.demo.grid import load_grid
    from calm.engine.runlog import RunLog

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
    assert json.loads((out / "results.json").read_text())["finished_runs"] == 4


@pytest.mark.slow
def test_a_changed_recipe_is_an_error_naming_the_run(finished, tmp_path):
    from calm.demo.experiment import run_experiment
    from calm.demo.grid import parse_grid

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
