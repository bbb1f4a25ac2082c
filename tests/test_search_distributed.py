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
from tests.search_fixtures import tiny_checkpoint, write_library, write_scenes

pytestmark = pytest.mark.slow
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "calm", "index", *args, "--workers", "0", "--batch-size", "2", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300)


def test_two_processes_update_an_index_exactly_as_one_process_does(tmp_path):
    library = tmp_path / "videos"
    write_scenes(library, 5)
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    model = load(ckpt)
    for name in ("one", "two"):
        build_index(model, library, tmp_path / name, batch_size=2)
    # then 6 new files and a broken one: batches of 2 dealt to both ranks, one idle in round 2
    write_library(library / "new", clips=6)
    build_index(model, library, tmp_path / "one", batch_size=2)
    run = _torchrun("--checkpoint", str(ckpt), "--videos", str(library), "--out",
                    str(tmp_path / "two"))
    # exit status 1: a file failed (calm index says so with its status; the others are indexed)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "11 videos indexed (6 new, 5 unchanged, 0 removed), 1 failed" in run.stdout
    assert "by 2 processes" in run.stdout and run.stdout.count("videos indexed") == 1
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
    a, b = Searcher(one, model.model.fusion), Searcher(two, model.model.fusion)
    text = model.encode_texts(["a red block moves"])[0]
    ra, rb = a.search_encoded("q", text, 10), b.search_encoded("q", text, 10)
    assert [h.path for h in ra.results] == [h.path for h in rb.results]
    np.testing.assert_allclose([h.score for h in ra.results], [h.score for h in rb.results],
                               atol=1e-6)
