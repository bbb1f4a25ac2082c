"""`calm index` / `calm search`: building, incremental updates, broken files, other checkpoints."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from calm.api import load
from calm.cli.main import main as calm_main
from calm.search import store
from calm.search.build import build_index
from calm.search.searcher import Searcher, SearchIndex
from calm.search.store import SearchIndexError
from tests.search_fixtures import tiny_checkpoint, write_library
from tests.videos import moving_image, truncate_file, write_clip


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "xpool.safetensors")


@pytest.fixture(scope="module")
def model(ckpt):
    return load(ckpt)


@pytest.fixture
def library(tmp_path):
    return write_library(tmp_path / "videos", clips=10)


def _rows_by_path(index_dir):
    index = SearchIndex(index_dir)
    return {p: {k: np.asarray(a[i]) for k, a in index.arrays.items()} for i, p in enumerate(index.paths)}


def test_index_stores_what_search_needs_and_lists_broken_files(model, library, tmp_path):
    (library / "notes.txt").write_text("not a video")
    truncate_file(write_clip(library / "cut.mp4", num_frames=30, width=48, height=32), 0.4)
    (library / "empty.mp4").write_bytes(b"")
    report = build_index(model, library, tmp_path / "idx", workers=2)
    assert (report["indexed"], report["new"], report["failed"]) == (10, 10, 3)
    failed = {f["path"]: f["reason"] for f in report["failures"]}
    assert set(failed) == {"broken.mp4", "cut.mp4", "empty.mp4"}
    assert all(failed.values())
    assert json.loads((tmp_path / "idx" / store.REPORT).read_text())["failures"] == report["failures"]
    index = SearchIndex(tmp_path / "idx")
    assert sorted(index.paths) == sorted(f"part{i % 2}/clip{i}.mp4" for i in range(10))
    n, t = 10, 4
    assert index.arrays["state.keys"].dtype == np.float32
    assert index.arrays["state.values"].shape[:2] == (n, t)
    assert index.arrays["mean"].shape == (n, model.model.backbone.embed_dim)
    assert index.arrays["times"].shape == (n, t) and index.arrays["durations"].shape == (n,)
    assert index.arrays["anchor_ids"].shape == (n, 5) and "sigma" not in index.arrays
    assert isinstance(index.arrays["state.keys"], np.memmap)
    for row in range(n):
        assert index.thumbnail_path(row).read_bytes()[:2] == b"\xff\xd8"  # JPEG
    assert index.manifest.checkpoint["sha256"] == model.fingerprint


def test_search_ranks_like_the_model_and_shortlists_by_the_frame_mean(model, library, tmp_path):
    query = "a red block moves to the right"
    build_index(model, library, tmp_path / "idx")
    full = Searcher.open(tmp_path / "idx")
    query = "a red block moves to the right"
    result = full.search(query, k=10)
    assert len(result.results) == 10
    paths = [str(library / h.path) for h in result.results]
    expected = model.score([query], paths)[0]
    got = torch.tensor([h.score for h in result.results])
    assert torch.allclose(got, expected, atol=1e-5)  # float32 states: evaluation's own scores
    assert got.tolist() == sorted(got.tolist(), reverse=True)
    for h in result.results:
        assert 0.0 <= h.start < h.end <= 3.0 + 1e-6
        assert len(h.anchors) == 5
    assert not result.confidence.calibrated and result.confident is None  # built without --calibrate
    assert "uncalibrated" in result.note

    # a shortlist of 2 with k = 3 scores exactly the 3 clips whose frame-mean embedding is closest
    # to the query (the reference cosine in float64 from the API's own encoding of the files),
    # whatever their exact scores, and reports each with its exact full-search score
    clips = sorted(str(p.relative_to(library)) for p in library.rglob("clip*.mp4"))
    encoded = model.encode_videos([library / c for c in clips], workers=0)
    text = model.encode_texts([query])[0]
    direction = text.double() / text.double().norm()
    cosine = {c: float(m.double() @ direction) for c, m in zip(clips, encoded.mean)}
    by_cosine = sorted(clips, key=lambda c: -cosine[c])
    assert cosine[by_cosine[2]] - cosine[by_cosine[3]] > 1e-3  # no near-tie at the cut
    exact = {h.path: h.score for h in full.search_encoded("q", text, 10).results}
    assert set(by_cosine[:3]) != set(sorted(exact, key=lambda p: -exact[p])[:3])  # visible here
    short = Searcher(full.index, model.model.fusion, shortlist=2).search_encoded("q", text, 3)
    assert {h.path for h in short.results} == set(by_cosine[:3])
    got = [h.score for h in short.results]
    assert got == pytest.approx([exact[h.path] for h in short.results], abs=1e-6)
    assert got == sorted(got, reverse=True)


@pytest.mark.parametrize("score", ["base", "anchor_agreement"])
def test_the_top_10_is_calm_load_score_top_10_in_the_checkpoints_score_mode(score, tmp_path):
    library = write_library(tmp_path / "videos", clips=14)
    ckpt = tiny_checkpoint(tmp_path / f"{score}.safetensors", score=score)
    model = load(ckpt)
    build_index(model, library, tmp_path / "idx")
    searcher = Searcher.open(tmp_path / "idx")
    queries = ["a red block moves to the right", "two shapes", "night sky", "a textured wall"]
    every = [str(library / p) for p in searcher.index.paths]
    expected = model.score(queries, every)
    base = load(tiny_checkpoint(tmp_path / "b.safetensors")).score(queries, every)
    if score == "anchor_agreement":  # the VAE term moves scores: a test that would notice it missing
        assert (expected - base).abs().min() > 1e-3
    for q, row in zip(queries, expected):
        result = searcher.search(q, 10)
        order = row.argsort(descending=True, stable=True)[:10]
        assert [h.path for h in result.results] == [searcher.index.paths[i] for i in order]
        np.testing.assert_allclose([h.score for h in result.results], row[order].numpy(), atol=1e-6)


def test_rerun_encodes_only_new_or_changed_files_and_drops_removed_ones(model, library, tmp_path):
    build_index(model, library, tmp_path / "idx")
    before = _rows_by_path(tmp_path / "idx")
    (library / "part1" / "clip1.mp4").unlink()
    changed = library / "part0" / "clip2.mp4"
    write_clip(changed, num_frames=30, width=48, height=32, frame_fn=lambda k, w, h: moving_image(200 + k, w, h))
    write_clip(library / "new" / "added.mp4", num_frames=30, width=48, height=32)
    report = build_index(model, library, tmp_path / "idx")
    assert (report["new"], report["kept"], report["removed"], report["indexed"]) == (2, 8, 1, 10)
    assert report["failed"] == 1  # broken.mp4, unchanged: listed again, not retried
    after = _rows_by_path(tmp_path / "idx")
    assert "part1/clip1.mp4" not in after and "new/added.mp4" in after
    for path in set(before) - {"part1/clip1.mp4", "part0/clip2.mp4"}:
        for name, value in before[path].items():
            np.testing.assert_array_equal(after[path][name], value)
    assert not np.array_equal(after["part0/clip2.mp4"]["state.keys"], before["part0/clip2.mp4"]["state.keys"])
    thumbs = {p.name for p in (tmp_path / "idx" / store.THUMBS).iterdir()}
    assert thumbs == {store.thumbnail_name(p) for p in after}
    assert sorted(d.name for d in (tmp_path / "idx").glob("data-*")) == ["data-2"]
    assert build_index(model, library, tmp_path / "idx")["new"] == 0


def test_an_index_refuses_another_checkpoint(model, library, tmp_path):
    build_index(model, library, tmp_path / "idx")
    manifest = (tmp_path / "idx" / store.MANIFEST).read_text()
    other = load(tiny_checkpoint(tmp_path / "other.safetensors", seed=1))
    with pytest.raises(SearchIndexError, match="another model"):
        build_index(other, library, tmp_path / "idx")
    assert (tmp_path / "idx" / store.MANIFEST).read_text() == manifest
    with pytest.raises(SearchIndexError, match="another model"):
        Searcher.open(tmp_path / "idx", checkpoint=tmp_path / "other.safetensors")


def test_an_interrupted_update_leaves_the_previous_index(model, library, tmp_path, monkeypatch):
    build_index(model, library, tmp_path / "idx")
    write_clip(library / "late.mp4", num_frames=30, width=48, height=32)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(type(model), "iter_encode_videos", killed)
    with pytest.raises(KeyboardInterrupt):
        build_index(model, library, tmp_path / "idx")
    monkeypatch.undo()
    assert len(Searcher.open(tmp_path / "idx").search("anything").results) == 10
    report = build_index(model, library, tmp_path / "idx")
    assert (report["new"], report["indexed"]) == (1, 11)


def test_a_folder_that_is_not_an_index_is_not_overwritten(model, library, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("keep me")
    with pytest.raises(SearchIndexError, match="not a calm search index"):
        build_index(model, library, tmp_path / "busy")
    with pytest.raises(SearchIndexError, match="no calm search index"):
        SearchIndex(tmp_path / "busy")


def test_a_symlink_out_of_the_folder_is_not_indexed(model, library, tmp_path):
    outside = write_clip(tmp_path / "elsewhere" / "secret.mp4", num_frames=30, width=48, height=32)
    os.symlink(outside, library / "link.mp4")
    os.symlink(library / "part0" / "clip0.mp4", library / "inside.mp4")  # stays: inside
    report = build_index(model, library, tmp_path / "idx")
    paths = SearchIndex(tmp_path / "idx").paths
    assert "link.mp4" not in paths and "inside.mp4" in paths
    assert report["found"] == 12  # 10 clips, broken.mp4, inside.mp4
    (left_out,) = report["left_out"]
    assert left_out["path"] == "link.mp4"
    assert str(outside.resolve()) in left_out["reason"] and "outside" in left_out["reason"]


def test_a_folder_of_links_leading_out_says_what_it_left_out_and_why(ckpt, tmp_path, capsys):
    """Links out of the folder, a dangling link and a link to a folder: none is indexed, each is
    counted and listed with its reason, and the note says why nothing was found."""
    elsewhere = write_library(tmp_path / "elsewhere", clips=2)
    links = tmp_path / "links"
    links.mkdir()
    for clip in sorted(elsewhere.rglob("clip*.mp4")):
        os.symlink(clip, links / clip.name)
    os.symlink(tmp_path / "gone.mp4", links / "dangling.mp4")
    os.symlink(elsewhere / "part0", links / "more")
    assert calm_main(["index", "--checkpoint", str(ckpt), "--videos", str(links), "--out",
                      str(tmp_path / "idx"), "--workers", "0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"{links.resolve()}: 0 video files found, 4 symbolic links left out" in printed
    for name, why in [("clip0.mp4", "outside"), ("clip1.mp4", "outside"),
                      ("dangling.mp4", "does not exist"), ("more", "not followed")]:
        (line,) = [x for x in printed.splitlines() if x.startswith(f"  left out: {name}: ")]
        assert why in line, line
    assert "note: no video files under" in printed and "4 symbolic links were left out" in printed
    assert json.loads(printed.strip().splitlines()[-1])["left_out"] == 4


def test_cli_index_and_search(ckpt, library, tmp_path, capsys):
    out = tmp_path / "idx"
    assert calm_main(["index", "--checkpoint", str(ckpt), "--videos", str(library), "--out",
                      str(out), "--workers", "0", "--no-progress"]) == 1  # broken.mp4 failed
    printed = capsys.readouterr().out
    assert "11 video files found" in printed
    assert "10 videos indexed" in printed and "failed: broken.mp4" in printed
    assert calm_main(["search", "--index", str(out), "a red block", "-k", "3", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["query"] == "a red block" and len(body["results"]) == 3
    assert set(body["results"][0]) >= {"path", "score", "start", "end", "anchors"}
    assert body["confidence"] == {"calibrated": False, "probability": None, "threshold": None,
                                  "method": None}
    assert calm_main(["search", "--index", str(out), "a red block", "-k", "2"]) == 0
    text = capsys.readouterr().out
    assert text.count(".mp4") == 2 and "uncalibrated" in text
    assert calm_main(["search", "--index", str(out), "x", "-k", "0"]) == 2
    assert "-k must be between" in capsys.readouterr().err
    shutil.move(ckpt, tmp_path / "moved.safetensors")
    try:
        assert calm_main(["search", "--index", str(out), "x"]) == 2
        assert "no longer exists" in capsys.readouterr().err
        assert calm_main(["search", "--index", str(out), "x", "--checkpoint",
                          str(tmp_path / "moved.safetensors")]) == 0
    finally:
        shutil.move(tmp_path / "moved.safetensors", ckpt)


def test_heads_without_text_attention_report_the_best_frame(library, tmp_path):
    meanp = load(tiny_checkpoint(tmp_path / "meanp.safetensors", fusion="meanP", alignment="none"))
    report = build_index(meanp, library, tmp_path / "idx")
    assert report["indexed"] == 10
    searcher = Searcher.open(tmp_path / "idx")
    assert "frames" in searcher.index.arrays and "anchor_ids" not in searcher.index.arrays
    result = searcher.search("a red block", k=10)
    for hit in result.results:
        times = searcher.index.arrays["times"][hit.row].astype(float)
        bounds = [0.0, *((times[1:] + times[:-1]) / 2), 3.0]
        assert any(hit.start == pytest.approx(a) and hit.end == pytest.approx(b)
                   for a, b in zip(bounds, bounds[1:]))  # exactly one frame's segment
        assert hit.anchors == []


def test_a_large_index_gets_an_ivf_shortlist_that_search_loads(model, library, tmp_path):
    pytest.importorskip("faiss")
    report = build_index(model, library, tmp_path / "idx", ivf_above=5)
    assert "note" not in report
    index = SearchIndex(tmp_path / "idx")
    assert (store.data_dir(tmp_path / "idx", 1) / store.IVF).is_file()
    ivf = Searcher(index, model.model.fusion)
    flat = Searcher(index, model.model.fusion, backend="torch")
    assert (ivf.shortlist.backend, flat.shortlist.backend) == ("faiss-ivf", "torch")
    assert ivf.shortlist.n == 10
    text = model.encode_texts(["a red block"])[0]
    small = [Searcher(index, model.model.fusion, shortlist=4, backend=b) for b in ("auto", "torch")]
    # 3 clusters, all probed: the IVF shortlist is the flat one
    assert [h.path for h in small[0].search_encoded("q", text, 4).results] == \
        [h.path for h in small[1].search_encoded("q", text, 4).results]
    write_clip(library / "late.mp4", num_frames=30, width=48, height=32)
    build_index(model, library, tmp_path / "idx", ivf_above=5)
    assert (store.data_dir(tmp_path / "idx", 2) / store.IVF).is_file()
    assert Searcher(SearchIndex(tmp_path / "idx"), model.model.fusion).shortlist.n == 11
    plain = build_index(model, library, tmp_path / "flat", ivf_above=1000)
    assert not (store.data_dir(tmp_path / "flat", 1) / store.IVF).exists() and "note" not in plain
