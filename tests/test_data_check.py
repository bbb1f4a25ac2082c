"""`calm data-check` and its pure function on tiny published-format files and real clips."""

from __future__ import annotations

import json

import pytest

from calm.cli.main import main
from calm.data.check import check_split, probe_video
from calm.data.errors import VideoDecodeError
from calm.data.video import FrameSampler, FrameSpec
from tests.fixtures_benchmarks import write_lsmdc, write_msrvtt
from tests.videos import (
    corrupt_packet,
    truncate_file,
    write_clip,
    write_garbage,
    write_packed_divx,
    write_timed_clip,
)


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory):
    """1k-A test fixture: video30-35 fine, video36 truncated, video37 garbage, video38-39 missing."""
    root = tmp_path_factory.mktemp("msrvtt")
    write_msrvtt(root / "ann")
    for i in range(30, 37):
        write_clip(root / "videos" / f"video{i}.mp4", num_frames=6, width=32, height=32)
    truncate_file(root / "videos" / "video36.mp4", 0.4)
    write_garbage(root / "videos" / "video37.mp4")
    return root


def test_report_counts_missing_and_undecodable(msrvtt):
    r = check_split("msrvtt", msrvtt / "ann", msrvtt / "videos", "test")
    assert (r["dataset"], r["split"], r["n_texts"], r["n_videos"]) == ("msrvtt", "test", 10, 10)
    assert r["missing_videos"] == {"count": 2, "first": ["video38", "video39"]}
    bad = r["undecodable_videos"]
    assert bad["count"] == 2 and [b["video_id"] for b in bad["first"]] == ["video36", "video37"]
    assert all(b["reason"] and b["path"].endswith(".mp4") for b in bad["first"])
    assert r["ok"] is False and r["decode_checked"] is True
    assert r["captions_per_video"] == {"min": 1, "mean": 1.0, "median": 1, "max": 1}
    assert r["text_words"]["min"] >= 1 and r["text_words"]["max"] >= r["text_words"]["mean"]
    json.dumps(r)  # JSON-ready


def test_no_decode_only_checks_presence(msrvtt):
    r = check_split("msrvtt", msrvtt / "ann", msrvtt / "videos", "test", decode=False)
    assert r["missing_videos"]["count"] == 2 and "undecodable_videos" not in r


def test_probe_accepts_a_good_clip_and_explains_a_bad_one(msrvtt):
    assert probe_video(msrvtt / "videos" / "video30.mp4") is None
    assert "does not exist" in probe_video(msrvtt / "videos" / "video99.mp4")
    assert probe_video(msrvtt / "videos" / "video37.mp4")


def test_all_present_and_decodable_is_ok(tmp_path):
    write_lsmdc(tmp_path / "ann")
    r = check_split("lsmdc", tmp_path / "ann", tmp_path / "videos", "val", decode=False)
    assert r["n_texts"] == 2 and r["missing_videos"]["count"] == 2 and not r["ok"]
    for clip in r["missing_videos"]["first"]:
        write_clip(tmp_path / "videos" / clip.rsplit("_", 1)[0] / f"{clip}.avi", num_frames=3,
                   width=32, height=32)
    r = check_split("lsmdc", tmp_path / "ann", tmp_path / "videos", "val")
    assert r["ok"] and r["undecodable_videos"]["count"] == 0


def test_cli_prints_json_and_exit_status(msrvtt, capsys):
    args = ["data-check", "--dataset", "msrvtt", "--annotations", str(msrvtt / "ann"),
            "--videos", str(msrvtt / "videos")]
    assert main([*args, "--split", "test", "--no-decode"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["missing_videos"]["count"] == 2 and "undecodable_videos" not in out
    assert main([*args, "--split", "val", "--option", "val_size=3", "--option", "val_seed=1"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["n_videos"] == 3 and out["info"]["val_carve"]["seed"] == 1
    assert main([*args, "--split", "val", "--option", "val_size=12", "--no-decode"]) == 1
    carve = json.loads(capsys.readouterr().out)["info"]["val_carve"]
    assert carve["video_ids"]["count"] == 12 and len(carve["video_ids"]["first"]) == 10


def test_cli_bad_annotations_exit_2_naming_the_file(tmp_path, capsys):
    write_msrvtt(tmp_path)
    (tmp_path / "MSRVTT_train.7k.csv").write_text("id\nvideo1\n")
    code = main(["data-check", "--dataset", "msrvtt", "--annotations", str(tmp_path),
                 "--videos", str(tmp_path), "--split", "train7k"])
    assert code == 2
    assert "MSRVTT_train.7k.csv: line 1: missing column" in capsys.readouterr().err


def test_default_check_decodes_what_evaluation_decodes(tmp_path, msrvtt, capsys):
    """Damage past the first frame: --quick passes the file, the default check (like eval) not."""
    path = corrupt_packet(write_clip(tmp_path / "hurt.mp4", 40, gop=40, faststart=True), 20)
    assert probe_video(path, quick=True) is None
    reason = probe_video(path)
    assert reason and "decoding failed" in reason
    with pytest.raises(VideoDecodeError):
        FrameSampler(FrameSpec(12, 224), "test")(path)
    # the split report says which check ran
    videos = msrvtt / "videos"
    r = check_split("msrvtt", msrvtt / "ann", videos, "test", quick=True)
    assert r["decode_check"] == "first frame"
    assert check_split("msrvtt", msrvtt / "ann", videos, "test", workers=2) == check_split(
        "msrvtt", msrvtt / "ann", videos, "test"
    )
    assert check_split("msrvtt", msrvtt / "ann", videos, "test")["decode_check"].startswith(
        "test-mode frames"
    )
    args = ["data-check", "--dataset", "msrvtt", "--annotations", str(msrvtt / "ann"),
            "--videos", str(videos), "--split", "test", "--quick", "--frames", "4"]
    assert main(args) == 1
    assert json.loads(capsys.readouterr().out)["decode_check"] == "first frame"


def test_files_with_dropped_frames_or_packed_bframes_pass_and_decode(tmp_path):
    """What the old first-frame check and sampler disagreed on now reads the same everywhere."""
    for path in (write_timed_clip(tmp_path / "drops.avi", [0, 1, 4, 9, 10, 19]),
                 write_packed_divx(tmp_path / "divx.avi", 30)):
        assert probe_video(path) is None and probe_video(path, quick=True) is None
        frames, mask = FrameSampler(FrameSpec(12, 32), "test")(path)
        assert mask.all()
