"""`calm demo` end to end at the tiny scale: the report carries the table, the mechanism
diagnostics of both runs (zero-shot anchors for the baseline) and CALM's uncertainty."""

from __future__ import annotations

import json
import time

import pytest

from calm.demo.run import run_demo
from calm.experiments.recipe import Recipe
from calm.toy_clip.pretrain import PretrainConfig

pytestmark = pytest.mark.slow


def test_tiny_demo_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    demo = Recipe(scale="tiny", steps=4, batch_size=4, num_frames=4, evaluations=2,
                      num_workers=0,
                      pretrain=PretrainConfig(model="calm-micro", steps=2, batch_size=16,
                                              scale="tiny", eval_pairs=32))
    wall = time.perf_counter()
    summary = run_demo(tmp_path / "demo", demo, progress=False)
    wall = time.perf_counter() - wall
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "## CALM's mechanism" in report and "## Uncertainty (CALM" in report
    diagnostics = summary["diagnostics"]
    assert set(diagnostics) == {"baseline", "calm"}
    assert diagnostics["baseline"]["rec_ce"] is None  # no VAE: zero-shot anchors only
    # CALM's block is its own best checkpoint on its test split: the numbers that run's test
    # evaluation reported (the formulas themselves: test_mechanism.py)
    calm_block, own = diagnostics["calm"], summary["runs"]["calm"]["test"]["anchors"]
    assert calm_block["source"] == "trained anchors and VAE"
    for key in ("rec_ce", "rec_ce_marginal", "kl", "active_dims", "latent_dim", "entropy_vp",
                "entropy_sp", "top1_agreement"):
        assert calm_block[key] == pytest.approx(own[key], rel=1e-5), key
    for block in diagnostics.values():
        assert block["anchor_map_video"]["n"] > 0 and block["anchor_map_text"]["n"] > 0
    assert (tmp_path / "demo" / "uncertainty.png").stat().st_size > 1000
    manifest = json.loads((tmp_path / "demo" / "data" / "manifest.json").read_text())
    oracle = manifest["domains"][0]["test_oracle"]["oracle_t2v_r1"]
    assert f"{manifest['domains'][0]['name']} {oracle:.1f}" in report  # the ceiling beside the table
    # every phase did work and was timed inside the whole, which was timed inside this call
    # (values are rounded to 0.1 s: hence the slack of 0.05 s per phase)
    timings = summary["timings"]
    phases = ("synth", "pretrain", "train_baseline", "train_calm", "ood_eval", "diagnostics")
    for phase in phases:
        assert timings[f"{phase}_s"] > 0 and timings[f"{phase}_cpu_s"] > 0, phase
    slack = 0.05 * (len(phases) + 1)
    assert sum(timings[f"{p}_s"] for p in phases) <= timings["total_s"] + slack
    assert sum(timings[f"{p}_cpu_s"] for p in phases) <= timings["total_cpu_s"] + slack
    assert timings["total_s"] <= wall + 0.05
    assert f'"total_s": {timings["total_s"]}' in report
    json.dumps(summary, default=str)
