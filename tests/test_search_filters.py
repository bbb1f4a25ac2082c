"""Filters: folder, glob, duration range and modification time, in the API, the CLI and JSON."""

from __future__ import annotations

import json
import os
from datetime import datetime

import numpy as np
import pytest

from calm.api import load
from calm.cli.main import main as calm_main
from calm.search.build import build_index
from calm.search.filters import FilterError, Filters
from calm.search.searcher import Searcher
from calm.search.shortlist import Shortlist
from tests.search_fixtures import tiny_checkpoint, write_scenes
from tests.videos import write_clip

JAN, JUN = datetime(2024, 1, 15).timestamp(), datetime(2024, 6, 15).timestamp()


def test_masks_follow_each_filter():
    paths = np.array(["a/x.mp4", "a/b/y.mov", "ab/z.mp4", "w.mov"])
    durations = np.array([1.0, 5.0, 10.0, 3.0])
    mtimes = (np.array([JAN, JUN, JUN, JAN]) * 1e9).astype(np.int64)

    def keep(**kw):
        return Filters.parse(**kw).mask(paths, durations, mtimes).tolist()

    assert keep(under="a") == [True, True, False, False]  # a folder, not a name prefix
    assert keep(under="/a/b/") == [False, True, False, False]
    assert keep(glob="*.mov") == [False, True, False, True]  # * crosses folders
    assert keep(min_duration="3", max_duration=5) == [False, True, False, True]
    assert keep(modified_after="2024-03-01") == [False, True, True, False]
    assert keep(modified_before="2024-03-01T00:00") == [True, False, False, True]
    assert keep(under="a", glob="*.mp4", modified_before=str(JUN)) == [True, False, False, False]
    assert Filters.parse().empty and Filters.parse(under=" ", glob="").empty
    for bad in ({"modified_after": "last week"}, {"min_duration": "-1"}, {"max_duration": "x"}):
        with pytest.raises(FilterError):
            Filters.parse(**bad)


@pytest.mark.parametrize("backend", ["torch", "numpy", "faiss", "faiss-ivf"])
def test_the_shortlist_keeps_to_the_allowed_rows(backend):
    if backend.startswith("faiss"):
        pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((400, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    allowed = rng.random(400) < 0.3
    shortlist = Shortlist(vectors, backend, nlist=8, nprobe=8)
    q = rng.standard_normal(16).astype(np.float32)
    got = shortlist.top(q, 10, allowed)
    assert allowed[got].all() and len(got) == 10
    exact = np.flatnonzero(allowed)[np.argsort(-(vectors[allowed] @ q))[:10]]
    assert len(set(got.tolist()) & set(exact.tolist())) >= 9
    assert sorted(shortlist.top(q, 1000, allowed).tolist()) == np.flatnonzero(allowed).tolist()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("filters")
    library = root / "videos"
    clips = write_scenes(library / "trips", 4) + write_scenes(library / "home", 3)
    long_clip = write_clip(library / "home" / "long.mov", num_frames=80, width=48, height=32)
    for i, path in enumerate([*clips, long_clip]):
        stamp = JAN if i % 2 else JUN
        os.utime(path, (stamp, stamp))
    build_index(load(tiny_checkpoint(root / "m.safetensors")), library, root / "idx")
    return root, Searcher.open(root / "idx")


def test_a_filtered_search_is_the_unfiltered_ranking_of_what_the_filter_keeps(setup):
    _, searcher = setup
    everything = searcher.search("a scene", k=8)
    for filters, expected in [
        (Filters.parse(under="trips"), lambda p: p.startswith("trips/")),
        (Filters.parse(glob="*.mov"), lambda p: p.endswith(".mov")),
        (Filters.parse(min_duration=5), lambda p: p == "home/long.mov"),
        (Filters.parse(modified_after="2024-03-01"),
         lambda p: p in {"trips/v0.mp4", "trips/v2.mp4", "home/v0.mp4", "home/v2.mp4"}),
    ]:
        result = searcher.search("a scene", k=8, filters=filters)
        kept = [h for h in everything.results if expected(h.path)]
        assert [h.path for h in result.results] == [h.path for h in kept]
        # the same scores, up to float rounding of a differently sized batch
        np.testing.assert_allclose([h.score for h in result.results], [h.score for h in kept],
                                   atol=1e-6)
        assert result.filters["matching"] == len(kept) and result.filters["of"] == 8
    none = searcher.search("a scene", filters=Filters.parse(under="nowhere"))
    assert none.results == [] and "no indexed video matches" in none.note
    like = searcher.search_like("trips/v0.mp4", k=8, filters=Filters.parse(under="home"))
    assert {h.path for h in like.results} == {"home/v0.mp4", "home/v1.mp4", "home/v2.mp4",
                                              "home/long.mov"}


def test_cli_filters(setup, capsys):
    root, _ = setup
    idx = str(root / "idx")
    assert calm_main(["search", "--index", idx, "a scene", "--under", "home", "--max-duration",
                      "4", "--modified-before", "2024-03-01", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in body["results"]] == ["home/v1.mp4"]
    assert body["filters"]["under"] == "home" and body["filters"]["matching"] == 1
    assert calm_main(["search", "--index", idx, "x", "--modified-after", "yesterday"]) == 2
    assert "not a date" in capsys.readouterr().err


def test_api_filters(setup):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from calm.search.server import create_app

    _, searcher = setup
    client = TestClient(create_app(searcher))
    r = client.get("/api/search", params={"q": "a scene", "glob": "trips/*", "min_duration": 1})
    assert r.status_code == 200
    assert {x["path"] for x in r.json()["results"]} == {f"trips/v{i}.mp4" for i in range(4)}
    r = client.get("/api/similar", params={"path": "trips/v1.mp4", "under": "trips"})
    assert {x["path"] for x in r.json()["results"]} == {"trips/v0.mp4", "trips/v2.mp4",
                                                        "trips/v3.mp4"}
    bad = client.get("/api/search", params={"q": "x", "modified_after": "soon"})
    assert bad.status_code == 400 and "not a date" in bad.json()["error"]
