"""`torchrun --nproc-per-node 2 -m calm index`: two gloo processes write the one-process index."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calm.api import load
from calm.search.build import build_index
from calm.search.searcher import Searcher, SearchIndex
from tests.search_fixtures import tiny_checkpoint, write_library
from tests.videos import write_clip

pytestmark = pytest.mark.slow
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "calm", "index", *args, "--workers", "0", "--batch-size", "3", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300)


def test_two_processes_write_the_one_process_index_and_rerun_only_what_changed(tmp_path):
    library = write_library(tmp_path / "videos", clips=11)  # 11 clips + a broken file, batches of 3
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    build_index(load(ckpt), library, tmp_path / "one", batch_size=3)
    run = _torchrun("--checkpoint", str(ckpt), "--videos", str(library), "--out",
                    str(tmp_path / "two"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "11 videos indexed (11 new" in run.stdout and "by 2 processes" in run.stdout
    assert run.stdout.count("videos indexed") == 1  # rank 0 alone reports
    one, two = SearchIndex(tmp_path / "one"), SearchIndex(tmp_path / "two")
    assert two.paths == one.paths  # the same rows in the same order
    assert two.manifest.failures == one.manifest.failures
    assert set(two.arrays) == set(one.arrays)
    for name in one.arrays:
        np.testing.assert_allclose(two.arrays[name], one.arrays[name], rtol=0, atol=1e-6,
                                   err_msg=name)
    for p in one.paths:
        assert two.thumbnail_path(two.row_of[p]).read_bytes() == \
            one.thumbnail_path(one.row_of[p]).read_bytes()
    model = load(ckpt)
    a, b = Searcher(one, model.model.fusion), Searcher(two, model.model.fusion)
    text = model.encode_texts(["a red block moves"])[0]
    ra, rb = a.search_encoded("q", text, 10), b.search_encoded("q", text, 10)
    assert [h.path for h in ra.results] == [h.path for h in rb.results]
    np.testing.assert_allclose([h.score for h in ra.results], [h.score for h in rb.results],
                               atol=1e-6)
    write_clip(library / "late.mp4", num_frames=30, width=48, height=32)
    again = _torchrun("--checkpoint", str(ckpt), "--videos", str(library), "--out",
                      str(tmp_path / "two"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "12 videos indexed (1 new, 11 unchanged, 0 removed), 1 failed" in again.stdout
