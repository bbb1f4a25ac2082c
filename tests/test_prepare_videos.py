"""`calm prepare-videos` on a tiny folder of real clips, one of them corrupt."""

from __future__ import annotations

from fractions import Fraction

import av
import pytest

from calm.cli.main import main
from calm.data.errors import DataError
from calm.data.prepare import (
    EncodeSettings,
    find_videos,
    output_size,
    prepare_videos,
    read_manifest,
    transcode,
)
from calm.data.video import FrameSampler, FrameSpec, sample_indices
from tests.videos import (
    read_index,
    write_clip,
    write_garbage,
    write_packed_divx,
    write_timed_clip,
)


def decoded_indices(path) -> list[int]:
    with av.open(str(path)) as c:
        return [read_index(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


@pytest.fixture()
def source(tmp_path):
    src = tmp_path / "src"
    write_clip(src / "a.mp4", 30, width=64, height=48, fps=10)  # 3 s
    write_clip(src / "sub" / "b.avi", 25, width=48, height=64, fps=25)  # 1 s, portrait
    write_clip(src / "sub" / "noext", 20, width=64, height=48, fps=10)  # DiDeMo has these
    write_garbage(src / "broken.mkv")
    (src / "notes.txt").write_text("not a video")
    return src


def test_prepare_videos_end_to_end(source, tmp_path, capsys):
    dst = tmp_path / "dst"
    argv = ["prepare-videos", "--src", str(source), "--dst", str(dst), "--fps", "5"]
    argv += ["--short-side", "32", "--workers", "2", "--no-progress"]
    assert main(argv) == 1  # one video failed
    out = capsys.readouterr().out
    assert "3 ok, 0 skipped, 1 failed" in out and "broken.mkv" in out

    expected = {"a.mp4": (42, 32, 15), "sub/b.mp4": (32, 42, 5), "sub/noext.mp4": (42, 32, 10)}
    for rel, (w, h, frames) in expected.items():
        with av.open(str(dst / rel)) as c:
            s = c.streams.video[0]
            assert (s.width, s.height) == (w, h)
            assert s.codec_context.name == "h264"
            assert s.average_rate == Fraction(5)
            assert s.frames == frames
    # output frame k is the source frame shown at time k / fps
    assert decoded_indices(dst / "a.mp4") == list(range(0, 30, 2))
    assert decoded_indices(dst / "sub" / "b.mp4") == [0, 5, 10, 15, 20]
    images = FrameSampler(FrameSpec(num_frames=4, image_size=32)).decode_uint8(dst / "a.mp4")
    assert [read_index(x) for x in images] == [2 * i for i in sample_indices(15, 4, "test")]

    records = {r["src"].removeprefix(str(source) + "/"): r for r in read_manifest(dst)}
    assert set(records) == {"a.mp4", "sub/b.avi", "sub/noext", "broken.mkv"}
    assert records["broken.mkv"]["status"] == "failed"
    assert "cannot open" in records["broken.mkv"]["reason"]
    assert records["a.mp4"]["status"] == "ok"
    assert records["a.mp4"]["frames"] == 15 and records["a.mp4"]["seconds"] == 3.0
    assert records["a.mp4"]["dst"] == str(dst / "a.mp4")
    assert not list(dst.rglob("*.part"))

    # a rerun skips finished outputs and retries the failure
    assert main(argv) == 1
    statuses = {r["src"].rsplit("/", 1)[-1]: r["status"] for r in read_manifest(dst)}
    assert statuses == {
        "a.mp4": "skipped",
        "b.avi": "skipped",
        "noext": "skipped",
        "broken.mkv": "failed",
    }
    assert "0 ok, 3 skipped, 1 failed" in capsys.readouterr().out


def test_display_rotation_survives(tmp_path):
    write_clip(tmp_path / "src" / "phone.mp4", 10, width=48, height=64, fps=10, rotation=-90)
    dst = tmp_path / "dst"
    prepare_videos(tmp_path / "src", dst, EncodeSettings(fps=10, short_side=32), 1, False)
    images = FrameSampler(FrameSpec(num_frames=3, image_size=32)).decode_uint8(dst / "phone.mp4")
    assert [read_index(x) for x in images] == sample_indices(10, 3, "test")


def test_all_good_returns_zero(tmp_path):
    write_clip(tmp_path / "src" / "a.mov", 10, fps=10)
    dst = tmp_path / "dst"
    argv = ["prepare-videos", "--src", str(tmp_path / "src"), "--dst", str(dst)]
    assert (
        main(argv + ["--fps", "10", "--short-side", "24", "--workers", "1", "--no-progress"]) == 0
    )
    assert (dst / "a.mp4").is_file()


def test_find_videos_skips_non_videos_and_the_output_folder(source):
    write_clip(source / "out" / "done.mp4", 5)
    found = [
        p.relative_to(source).as_posix()
        for p in find_videos(source, skip=(source / "out").resolve())
    ]
    assert found == ["a.mp4", "broken.mkv", "sub/b.avi", "sub/noext"]


def test_settings_are_checked(tmp_path):
    with pytest.raises(DataError, match="even"):
        EncodeSettings(fps=5, short_side=31)
    with pytest.raises(DataError, match="fps"):
        EncodeSettings(fps=0, short_side=32)
    argv = ["prepare-videos", "--src", str(tmp_path / "missing"), "--dst", str(tmp_path / "d")]
    assert main(argv + ["--fps", "5", "--short-side", "32"]) == 2


def test_output_size_keeps_aspect_with_even_sides():
    assert output_size(640, 360, 1.0, 224) == (398, 224)
    assert output_size(360, 640, 1.0, 224) == (224, 398)
    assert output_size(720, 576, 16 / 15, 224) == (298, 224)  # anamorphic PAL 4:3


def test_avi_bframes_and_dropped_frames_keep_their_place(tmp_path):
    """DivX packed B-frames and H.264 in AVI leave the decoder labelled with their neighbours'
    numbers: the output must still hold every frame once, in display order. Dropped frames
    (AVI null chunks) repeat the frame before them, as a player shows them."""
    settings = EncodeSettings(fps=10, short_side=32)
    for src in (write_packed_divx(tmp_path / "divx.avi", 30),
                write_clip(tmp_path / "h264.avi", 30, codec="libx264", bframes=2)):
        dst = tmp_path / f"{src.stem}.mp4"
        assert transcode(src, dst, settings)[0] == 30
        assert decoded_indices(dst) == list(range(30))
    gaps = write_timed_clip(tmp_path / "gaps.avi", [0, 1, 4, 5, 9])
    transcode(gaps, tmp_path / "gaps.mp4", settings)
    assert decoded_indices(tmp_path / "gaps.mp4") == [0, 1, 1, 1, 4, 5, 5, 5, 5, 9]
