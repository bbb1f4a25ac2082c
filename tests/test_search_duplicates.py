"""Near-duplicates: copies fold into the result they copy, with a threshold measured on copies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calm.search.duplicates import collapse, fit_threshold


def test_copies_fold_into_the_earlier_result_and_the_order_is_kept():
    means = np.array([[1, 0, 0], [0, 1, 0], [1, 0.01, 0], [0, 0, 1], [0.01, 1, 0]], np.float32)
    rows = np.array([10, 11, 12, 13, 14])
    assert collapse(rows, means, k=3, threshold=0.99) == [(10, [12]), (11, [14]), (13, [])]
    assert collapse(rows, means, k=2, threshold=0.99) == [(10, [12]), (11, [14])]
    assert collapse(rows, means, k=5, threshold=1.01) == [(r, []) for r in rows.tolist()]


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 30), st.integers(1, 10), st.floats(0.5, 0.999), st.integers(0, 10_000))
def test_every_candidate_lands_in_at_most_one_result_and_heads_are_not_copies(n, k, t, seed):
    means = np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)
    groups = collapse(np.arange(n), means, k, t)
    seen = [r for head, copies in groups for r in (head, *copies)]
    assert len(seen) == len(set(seen)) and len(groups) <= k
    heads = np.array([h for h, _ in groups])
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    sims = unit[heads] @ unit[heads].T
    assert np.all(sims[np.triu_indices(len(heads), 1)] < t)
    assert heads.tolist() == sorted(heads.tolist())  # ranked order kept


def test_the_threshold_joins_copies_and_rises_above_distinct_videos_when_they_come_close():
    copies = {"reencode": np.full(50, 0.999), "cut": np.linspace(0.95, 0.99, 100)}
    far = fit_threshold(copies, np.linspace(0.2, 0.8, 1000))
    assert far["limited_by"] == "copies" and far["threshold"] == pytest.approx(0.9504, abs=1e-3)
    assert far["joined"]["cut"] >= 0.99 and far["merged_distinct"] == 0.0
    close = fit_threshold(copies, np.linspace(0.2, 0.98, 1000))
    assert close["limited_by"] == "distinct videos" and close["merged_distinct"] <= 0.001
    assert close["threshold"] > 0.979


def test_a_reencoded_a_cut_and_a_resized_copy_come_back_inside_their_original(tmp_path, capsys):
    from calm.cli.main import main as calm_main
    from calm.data.synthetic.copies import write_copy
    from calm.search.searcher import Searcher
    from tests.search_fixtures import tiny_checkpoint, write_scenes

    library = tmp_path / "videos"
    originals = write_scenes(library, 8)
    copy_of = {"copies/v0_reencoded.mp4": "v0.mp4", "copies/v1_cut.mp4": "v1.mp4",
               "copies/v2_all.mp4": "v2.mp4"}
    for (name, source), kind in zip(copy_of.items(), ("reencode", "cut", "all")):
        write_copy(library / source, library / name, kind)
    split = tmp_path / "cal.jsonl"
    split.write_text("".join(json.dumps({"video": p.name, "split": "val", "captions": [
        f"scene {i} pans {w}" for w in ("left", "slowly", "across", "again")]}) + "\n"
        for i, p in enumerate(originals)))
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    assert calm_main(["index", "--checkpoint", str(ckpt), "--videos", str(library), "--out",
                      str(tmp_path / "idx"), "--workers", "0", "--no-progress",
                      "--calibration-dataset", "jsonl", "--calibration-annotations", str(split),
                      "--calibration-videos", str(library)]) == 0
    assert "near-duplicates: frame-mean cosine >=" in capsys.readouterr().out
    searcher = Searcher.open(tmp_path / "idx")
    measured = searcher.index.manifest.duplicates
    assert measured["threshold"] == searcher.duplicate_threshold and measured["copies"] == 8
    result = searcher.search("scene 3 pans left", k=11)
    listed = {h.path: h.duplicates for h in result.results}
    assert len(listed) == 8  # 11 videos, 3 of them copies
    for copy, source in copy_of.items():
        assert listed[source] == [copy]
    assert all(not listed[f"v{i}.mp4"] for i in range(3, 8))
    body = searcher.search("scene 0", k=3).to_json()
    assert all("duplicates" in r for r in body["results"])
    # without folding, every copy is a result of its own
    plain = Searcher(searcher.index, searcher.scorer, duplicate_threshold=None)
    assert len(plain.search_encoded("q", searcher.encode_text(["scene 3"])[0], 11).results) == 11
