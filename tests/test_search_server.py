"""`calm serve`: the JSON API, range requests, and that only indexed files can be fetched."""

from __future__ import annotations

import http.client
import os
from urllib.parse import urlsplit

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from calm.cli.main import build_parser  # noqa: E402
from calm.search.build import build_index  # noqa: E402
from calm.search.searcher import Searcher  # noqa: E402
from calm.search.server import MAX_QUERY_CHARS, create_app  # noqa: E402
from tests.search_fixtures import (  # noqa: E402
    running_server,
    tiny_checkpoint,
    write_library,
)
from tests.videos import write_clip  # noqa: E402

RESULT_KEYS = {"path", "score", "start", "end", "resolution", "anchors", "duplicates"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from calm.api import load

    root = tmp_path_factory.mktemp("serve")
    library = write_library(root / "videos", clips=6)
    (root / "secret.txt").write_text("outside the folder")
    build_index(load(tiny_checkpoint(root / "m.safetensors")), library, root / "idx")
    write_clip(library / "after.mp4", num_frames=10, width=48, height=32)  # not indexed
    searcher = Searcher.open(root / "idx")
    return root, library, searcher, TestClient(create_app(searcher))


def test_the_page_has_a_search_box(setup):
    r = setup[3].get("/")
    assert r.status_code == 200 and 'id="q"' in r.text and "/api/search" in r.text


def test_api_search_returns_the_documented_shape(setup):
    r = setup[3].get("/api/search", params={"q": "a red block", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == "a red block" and len(body["results"]) == 3
    for result in body["results"]:
        assert set(result) == RESULT_KEYS
        assert all(len(a) == 2 and isinstance(a[0], str) for a in result["anchors"])
        assert result["start"] <= result["end"]
    assert body["confident"] is None and body["confidence"]["calibrated"] is False
    scores = [x["score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("params", [
    {"q": "x", "k": 0}, {"q": "x", "k": 101}, {"q": "x", "k": "ten"}, {"q": ""}, {"q": "   "},
    {"q": "y" * (MAX_QUERY_CHARS + 1)}, {},
])
def test_k_and_the_query_are_bounded(setup, params):
    r = setup[3].get("/api/search", params=params)
    assert r.status_code == 400 and r.json()["error"]


def test_api_similar_and_image_queries(setup):
    from PIL import Image

    from calm.data.synthetic.moments import decode_frames

    root, library, searcher, client = setup
    rel = searcher.index.paths[2]
    r = client.get("/api/similar", params={"path": rel, "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert len(body["results"]) == 3 and rel not in [x["path"] for x in body["results"]]
    assert set(body["results"][0]) == RESULT_KEYS and body["confidence"]["calibrated"] is False
    assert client.get("/api/similar", params={"path": "after.mp4"}).status_code == 400
    Image.fromarray(decode_frames(library / rel)[5]).save(root / "frame.png")
    r = client.post("/api/image", params={"k": 2}, content=(root / "frame.png").read_bytes())
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    assert r.json()["query"].startswith("image:")
    bad = client.post("/api/image", content=b"not an image")
    assert bad.status_code == 400 and "not a readable image" in bad.json()["error"]
    assert client.post("/api/image", content=b"").status_code == 400


def test_media_supports_range_requests(setup):
    root, library, searcher, client = setup
    rel = searcher.index.paths[0]
    data = (library / rel).read_bytes()
    full = client.get(f"/media/{rel}")
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "video/mp4"
    part = client.get(f"/media/{rel}", headers={"Range": "bytes=10-109"})
    assert part.status_code == 206 and part.content == data[10:110]
    assert part.headers["content-range"] == f"bytes 10-109/{len(data)}"
    thumb = client.get(f"/thumb/{rel}")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"


def _raw_get(base: str, path: str) -> int:
    """Sends `path` exactly as written (no client-side normalisation of ../ or %2e)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_only_indexed_files_can_be_fetched(setup):
    root, library, searcher, _ = setup
    rel = searcher.index.paths[0]
    secret = root / "secret.txt"
    attempts = [
        "/media/../secret.txt", "/media/../../secret.txt", "/media/part0/../../secret.txt",
        "/media/%2e%2e/secret.txt", "/media/%2E%2E%2Fsecret.txt", "/media/..%2fsecret.txt",
        "/media/%252e%252e%252fsecret.txt", "/media/..%5csecret.txt", "/media/....//secret.txt",
        f"/media/{secret}", f"/media/{secret.as_posix().lstrip('/')}", f"/media//{secret}",
        f"/media/%2F{secret.as_posix().lstrip('/').replace('/', '%2F')}",
        "/media/after.mp4", "/media/broken.mp4", "/media/", "/media/part0",
        f"/media/./{rel}", f"/media/{rel}/", f"/media/{rel}%00", "/thumb/../idx/index.json",
        "/thumb/%2e%2e/idx/index.json", "/media/..%2f..%2f..%2f..%2fetc%2fpasswd",
    ]
    with running_server(create_app(searcher)) as base:
        assert _raw_get(base, f"/media/{rel}") == 200
        for path in attempts:
            assert _raw_get(base, path) == 404, path


def test_a_symlink_leading_out_of_the_folder_is_not_served(setup, tmp_path):
    root, library, searcher, client = setup
    rel = searcher.index.paths[-1]
    target = library / rel
    kept = tmp_path / "kept.mp4"
    os.replace(target, kept)
    os.symlink(root / "secret.txt", target)
    try:
        assert client.get(f"/media/{rel}").status_code == 404
    finally:
        target.unlink()
        os.replace(kept, target)
    assert client.get(f"/media/{rel}").status_code == 200


def test_serve_binds_to_localhost_by_default():
    args = build_parser().parse_args(["serve", "--index", "idx"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
