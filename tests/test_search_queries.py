"""Image and example-video queries: `calm search --image` / `--like`, the Python API."""

from __future__ import annotations

import json

import pytest

from calm.api import load
from calm.cli.main import main as calm_main
from calm.data.synthetic.copies import write_copy
from calm.data.synthetic.moments import decode_frames
from calm.search.build import build_index
from calm.search.searcher import Searcher
from tests.search_fixtures import tiny_checkpoint, write_scenes


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("queries")
    library = root / "videos"
    write_scenes(library, 6)
    write_copy(library / "v0.mp4", library / "copy_of_v0.mp4", "reencode")
    Image.fromarray(decode_frames(library / "v3.mp4")[10]).save(root / "still.png")
    (root / "notes.png").write_text("not an image")
    ckpt = tiny_checkpoint(root / "m.safetensors")
    build_index(load(ckpt), library, root / "idx")
    return root, Searcher.open(root / "idx")


def test_an_image_feature_is_its_one_frame_clip_feature(setup):
    import torch

    root, searcher = setup
    model = searcher.model
    feature = model.encode_images([root / "still.png", (root / "still.png").read_bytes()])
    assert feature.shape == (2, model.model.backbone.embed_dim)
    torch.testing.assert_close(feature[0], feature[1])  # a path or the file's bytes
    frames = model.encode_videos([root / "videos" / "v3.mp4"]).frames[0]
    cos = torch.nn.functional.cosine_similarity(frames, feature[:1]).max()
    assert cos > 0.99  # one of the clip's own frames: preprocessed alike


def test_an_image_query_finds_its_clip_and_says_it_is_uncalibrated(setup):
    root, searcher = setup
    result = searcher.search_image(root / "still.png", k=3)
    assert result.results[0].path == "v3.mp4"
    assert not result.confidence.calibrated and "image query" in result.note


def test_like_a_video_leaves_it_out_and_ranks_its_copy_first(setup):
    root, searcher = setup
    result = searcher.search_like("v0.mp4", k=10)
    paths = [h.path for h in result.results]
    assert "v0.mp4" not in paths and paths[0] == "copy_of_v0.mp4" and len(paths) == 6
    scores = [h.score for h in result.results]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.99
    assert all(h.start == 0.0 and h.end == pytest.approx(3.0, abs=0.2) for h in result.results)
    # a file outside the index works too (encoded on the fly) and finds the same clips
    outside = searcher.search_like(str(root / "videos" / "v0.mp4"), k=2)
    assert [h.path for h in outside.results] == ["v0.mp4", "copy_of_v0.mp4"]


def test_cli_image_and_like(setup, capsys):
    root, _ = setup
    idx = str(root / "idx")
    assert calm_main(["search", "--index", idx, "--image", str(root / "still.png"), "-k", "2",
                      "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["results"][0]["path"] == "v3.mp4" and body["confidence"]["calibrated"] is False
    assert calm_main(["search", "--index", idx, "--like", "v3.mp4", "-k", "2"]) == 0
    assert "find similar" in capsys.readouterr().out
    assert calm_main(["search", "--index", idx, "--image", str(root / "notes.png")]) == 2
    assert "notes.png: not a readable image" in capsys.readouterr().err
    assert calm_main(["search", "--index", idx, "words", "--like", "v3.mp4"]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert calm_main(["search", "--index", idx, "--like", "nowhere.mp4"]) == 2
    assert "neither an indexed path nor a video file" in capsys.readouterr().err
