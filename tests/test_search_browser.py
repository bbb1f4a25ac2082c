"""The search page in a real browser: type a query, see results, play the matching moment.

Playwright's Python API drives Debian's Chromium (`apt-get install chromium`; CI's .ci/run
installs it). The test skips only when no Chromium is installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from calm.api import load  # noqa: E402
from calm.search.build import build_index  # noqa: E402
from calm.search.searcher import Searcher  # noqa: E402
from calm.search.server import create_app  # noqa: E402
from tests.search_fixtures import running_server, tiny_checkpoint, write_library  # noqa: E402
from tests.videos import moving_image, write_clip  # noqa: E402

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and
                 Path(p).is_file()), None)
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium at /usr/bin/chromium "
                       "(apt-get install chromium; .ci/run installs it)"),
]


@pytest.fixture(scope="module")
def searcher(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    library = write_library(root / "videos", clips=7, frames=60)  # 6 s clips: time to play
    write_clip(library / "with space é.mp4", num_frames=60, width=48, height=32,
               frame_fn=lambda k, w, h: moving_image(k + 99, w, h))
    build_index(load(tiny_checkpoint(root / "m.safetensors")), library, root / "idx")
    return Searcher.open(root / "idx")


def test_type_a_query_see_results_and_play_the_moment(searcher, tmp_path):
    from PIL import Image

    from calm.data.synthetic.moments import decode_frames

    still = tmp_path / "still.png"
    Image.fromarray(decode_frames(searcher.index.root / searcher.index.paths[0])[3]).save(still)
    with running_server(create_app(searcher)) as base, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            query = "a red block moving across a textured wall"
            expected = searcher.search(query, 12)  # what the page asks the server for
            page.goto(base + "/")
            page.fill("#q", query)
            page.press("#q", "Enter")
            page.wait_for_selector(".result", timeout=20_000)
            cards = page.locator(".result")
            assert cards.count() == 8
            # the page shows the server's answer, in its order
            assert page.eval_on_selector_all(".result", "els => els.map(e => e.dataset.path)") == [
                h.path for h in expected.results]
            # thumbnails arrive after the result cards: wait until the first one has decoded
            page.wait_for_function(
                """() => { const img = document.querySelector('.result img');
                           return img && img.complete && img.naturalWidth > 0; }""",
                timeout=20_000,
            )
            assert page.locator(".result .tag").count() > 0
            status = page.text_content("#status")
            assert "a red block" in status and "uncalibrated" in status
            assert page.locator(".result .bar").count() == 0  # no probability to show
            spaced = page.locator(".result", has_text="with space é.mp4")
            assert spaced.count() == 1
            spaced.click()
            page.wait_for_selector(".result video", timeout=10_000)
            page.wait_for_function(
                """() => { const v = document.querySelector('.result video');
                           return v && v.readyState >= 2 && v.currentTime > 0.3 && !v.paused; }""",
                timeout=20_000,
            )
            first = page.evaluate("document.querySelector('.result video').currentTime")
            page.wait_for_timeout(700)
            later = page.evaluate("document.querySelector('.result video').currentTime")
            assert later > first, "the clip does not play"
            # find similar: the clicked clip's neighbours replace the results, itself left out
            target = page.locator(".result").nth(1)
            path = target.get_attribute("data-path")
            target.locator("button.like").click()
            page.wait_for_function("(p) => document.querySelector('#status').textContent"
                                   ".includes('like: ' + p)", arg=path, timeout=20_000)
            paths = page.eval_on_selector_all(".result", "els => els.map(e => e.dataset.path)")
            assert path not in paths and len(paths) == 7
            assert "like=" in page.url
            # an image upload queries by the picture
            page.set_input_files("#image", str(still))
            page.wait_for_function("() => document.querySelector('#status').textContent"
                                   ".includes('image: ')", timeout=20_000)
            assert page.locator(".result").count() == 8
            # filters: a folder and a duration range narrow what comes back
            page.fill("#under", "part1")
            page.fill("#min_duration", "1")
            page.fill("#q", "a red block")
            page.press("#q", "Enter")
            page.wait_for_function("() => document.querySelector('#status').textContent"
                                   ".includes('filtered')", timeout=20_000)
            paths = page.eval_on_selector_all(".result", "els => els.map(e => e.dataset.path)")
            assert paths and all(p.startswith("part1/") for p in paths)
            assert "among 3 of 8 videos" in page.text_content("#status")
            page.fill("#max_duration", "0.5")
            page.press("#q", "Enter")
            page.wait_for_function("() => document.querySelector('#status').textContent"
                                   ".includes('no indexed video matches')", timeout=20_000)
            assert page.locator(".result").count() == 0
            assert not errors
        finally:
            browser.close()
