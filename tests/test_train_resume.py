"""A run killed with SIGKILL and resumed ends bitwise identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.engine_fixtures import tiny_config, write_config, write_tiny_msrvtt

pytestmark = pytest.mark.slow


def _calm(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "calm", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _final_weights(run: Path) -> dict:
    pointer = json.loads((run / "checkpoints" / "last.json").read_text())
    return load_file(str(run / "checkpoints" / pointer["weights"]))


def _log_without_timing(run: Path) -> list[dict]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("time", None)
        r.pop("clips_per_s", None)
    return records


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    ann, vid = write_tiny_msrvtt(tmp_path)
    # 28 training pairs -> 3 batches of 8 per epoch; 8 steps span three epochs with evaluations
    cfg = write_config(tmp_path / "cfg.yaml", tiny_config(ann, vid, max_steps=8, save_every=2,
                                                          epochs=3))
    straight = tmp_path / "straight"
    proc = _calm("train", "--config", str(cfg), "--out", str(straight), "--no-progress")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()[-2000:]

    killed = tmp_path / "killed"
    proc = _calm("train", "--config", str(cfg), "--out", str(killed), "--no-progress")
    pointer = killed / "checkpoints" / "last.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if pointer.is_file() and json.loads(pointer.read_text())["step"] >= 4:
            break
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped_at = json.loads(pointer.read_text())["step"]
    assert 4 <= stopped_at < 8

    proc = _calm("train", "--resume", str(killed), "--no-progress")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()[-2000:]

    a, b = _final_weights(straight), _final_weights(killed)
    assert a.keys() == b.keys()
    bad = [k for k in a if not a[k].equal(b[k])]
    assert not bad, bad
    assert _log_without_timing(straight) == _log_without_timing(killed)
    assert json.loads((straight / "test_metrics.json").read_text()) == json.loads(
        (killed / "test_metrics.json").read_text()
    )
