"""benchmarks/gpu_check.py's demo timing, dry-run on the CPU: the script a GPU session runs
(`--only-demo`) must work before a GPU is lent, so its tiny CPU mode runs the real demo here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_the_demo_timing_dry_run_prints_every_phase(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SCRIPT.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--only-demo", "--device", "cpu", "--scale", "tiny",
         "--demo-dir", str(tmp_path), "--out", str(tmp_path / "table.md")],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    for phase in ("synth", "pretrain", "train_baseline", "train_calm", "ood_eval", "diagnostics",
                  "total"):
        assert f"| {phase} |" in table, phase
    assert "toy-CLIP pretraining: 20 steps on cpu" in table  # a fresh cache: it trained
    assert "t2v" in table and "msrvtt" in table  # the demo's own table
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert f"| total | {summary['timings']['total_s']:.1f} |" in table
