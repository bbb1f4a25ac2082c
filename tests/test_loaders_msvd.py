"""MSVD loader: pickle and JSON caption files, split lists, every caption kept, errors."""

from __future__ import annotations

import json
import pickle

import pytest

from calm.data.benchmarks.common import load_split
from calm.data.errors import DataError
from tests.fixtures_benchmarks import MSVD_SPLITS, write_msvd


@pytest.mark.parametrize("fmt", ["pkl", "json"])
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_splits_keep_every_caption(tmp_path, fmt, split):
    captions = write_msvd(tmp_path / "ann", fmt)
    s = load_split("msvd", tmp_path / "ann", tmp_path / "videos", split)
    assert [v.video_id for v in s.videos] == MSVD_SPLITS[split]
    assert len(s.texts) == sum(len(captions[v]) for v in MSVD_SPLITS[split])
    for v, group in enumerate(s.captions_per_video()):
        assert [s.texts[i].text for i in group] == captions[s.videos[v].video_id]
    assert s.info["captions"] == ("raw-captions.pkl" if fmt == "pkl" else "captions_msvd.json")


def test_videos_are_avi_or_mp4(tmp_path):
    write_msvd(tmp_path / "ann")
    vids = tmp_path / "videos"
    vids.mkdir()
    a, b, c = MSVD_SPLITS["val"] + ["unused"]
    (vids / f"{a}.avi").write_bytes(b"x")
    (vids / f"{b}.mp4").write_bytes(b"x")
    s = load_split("msvd", tmp_path / "ann", vids, "val")
    assert s.videos[0].path == vids / f"{a}.avi"
    assert s.videos[1].path == vids / f"{b}.mp4"
    (vids / f"{b}.mp4").unlink()
    s = load_split("msvd", tmp_path / "ann", vids, "val")
    assert s.videos[1].path == vids / f"{b}.avi" and not s.videos[1].path.exists()


def test_neither_caption_file_names_both(tmp_path):
    write_msvd(tmp_path / "ann")
    (tmp_path / "ann" / "raw-captions.pkl").unlink()
    with pytest.raises(DataError, match="raw-captions.pkl or captions_msvd.json"):
        load_split("msvd", tmp_path / "ann", tmp_path, "test")


def test_missing_list_file_is_named(tmp_path):
    write_msvd(tmp_path / "ann")
    (tmp_path / "ann" / "val_list.txt").unlink()
    with pytest.raises(DataError, match="val_list.txt does not exist"):
        load_split("msvd", tmp_path / "ann", tmp_path, "val")


def test_listed_video_without_captions_names_line(tmp_path):
    write_msvd(tmp_path / "ann", "json")
    with open(tmp_path / "ann" / "test_list.txt", "a") as f:
        f.write("\nnot_a_video_1_2\n")
    with pytest.raises(DataError, match=r"test_list.txt: line 6: video 'not_a_video_1_2'"):
        load_split("msvd", tmp_path / "ann", tmp_path, "test")


@pytest.mark.parametrize("fmt", ["pkl", "json"])
def test_empty_caption_names_file_video_and_index(tmp_path, fmt):
    captions = write_msvd(tmp_path / "ann", fmt)
    vid = MSVD_SPLITS["train"][1]
    captions[vid][1] = "  "
    if fmt == "pkl":
        with open(tmp_path / "ann" / "raw-captions.pkl", "wb") as f:
            pickle.dump({v: [c.split() for c in cs] for v, cs in captions.items()}, f)
    else:
        (tmp_path / "ann" / "captions_msvd.json").write_text(json.dumps(captions))
    with pytest.raises(DataError, match=rf"video '{vid}' caption 1: empty caption"):
        load_split("msvd", tmp_path / "ann", tmp_path, "train")


def test_pickle_that_would_run_code_is_refused(tmp_path):
    write_msvd(tmp_path / "ann")
    with open(tmp_path / "ann" / "raw-captions.pkl", "wb") as f:
        pickle.dump({"v": [print]}, f)  # a reference to a callable: needs find_class
    with pytest.raises(DataError, match="raw-captions.pkl: cannot read captions: refusing"):
        load_split("msvd", tmp_path / "ann", tmp_path, "train")
