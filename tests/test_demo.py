"""`calm demo` end to end at the tiny scale: the report carries the table, the mechanism
diagnostics of both runs (zero-shot anchors for the baseline) and CALM's uncertainty."""

from __future__ import annotations

import json

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
    summary = run_demo(tmp_path / "demo", demo, progress=False)
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "## CALM's mechanism" in report and "## Uncertainty (CALM" in report
    diagnostics = summary["diagnostics"]
    assert set(diagnostics) == {"baseline", "calm"}
    assert diagnostics["baseline"]["rec_ce"] is None  # no VAE: zero-shot anchors only
    assert diagnostics["calm"]["rec_ce"] is not None and diagnostics["calm"]["active_dims"] >= 0
    for block in diagnostics.values():
        assert block["anchor_map_video"]["n"] > 0 and block["anchor_map_text"]["n"] > 0
    assert (tmp_path / "demo" / "uncertainty.png").stat().st_size > 1000
    manifest = json.loads((tmp_path / "demo" / "data" / "manifest.json").read_text())
    oracle = manifest["domains"][0]["test_oracle"]["oracle_t2v_r1"]
    assert f"{manifest['domains'][0]['name']} {oracle:.1f}" in report  # the ceiling beside the table
    timings = summary["timings"]
    for phase in ("synth", "pretrain", "train_baseline", "train_calm", "ood_eval", "diagnostics"):
        assert timings[f"{phase}_s"] >= 0 and timings[f"{phase}_cpu_s"] >= 0
    assert timings["total_s"] >= timings["train_calm_s"]
    json.dumps(summary, default=str)
