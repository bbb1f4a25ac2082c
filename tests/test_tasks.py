"""Task objects: selection that cannot reward a collapsed model, and what each task builds."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from calm.config import ExperimentConfig, from_dict
from calm.engine.tasks import TASKS, CaptioningTask, RetrievalTask, task_for
from calm.metrics import retrieval_metrics


def test_selection_prefers_a_real_model_over_a_collapsed_one():
    rng = np.random.default_rng(0)
    n = 180
    real = rng.normal(size=(n, n)) + 2.5 * np.eye(n)  # a mediocre model, far from perfect
    collapsed = np.zeros((n, n))  # every pair scores the same
    task = RetrievalTask()
    real_metrics = retrieval_metrics(real, np.arange(n))
    collapsed_metrics = retrieval_metrics(collapsed, np.arange(n))
    assert 10 < real_metrics["t2v"]["R@1"] < 90
    assert collapsed_metrics["t2v"]["R@1"] == pytest.approx(100 / n)
    assert task.selection_score(real_metrics) > task.selection_score(collapsed_metrics)


def test_task_for_names_every_task_and_rejects_others():
    assert TASKS.names() == ["captioning", "retrieval"]
    assert isinstance(task_for(ExperimentConfig()), RetrievalTask)
    cap = from_dict(ExperimentConfig, {"task": "captioning"})
    assert isinstance(task_for(cap), CaptioningTask)
    assert task_for(cap).find_unused_parameters and task_for(cap).generates_captions


def test_model_info_counts_what_a_captioning_config_builds(tmp_path):
    cfg = tmp_path / "cap.yaml"
    cfg.write_text("task: captioning\nmodel:\n  backbone:\n    name: calm-micro\n"
                   "  alignment:\n    name: none\n")
    out = subprocess.run([sys.executable, "-m", "calm", "model-info", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=120, check=True)
    counts = json.loads(out.stdout)
    assert counts["decoder"] > 0 and counts["fusion"] == 0
    assert counts["total"] == counts["backbone"] + counts["decoder"]
    assert counts["config"]["task"] == "captioning"
