"""DiDeMo loader: paragraphs in file order, optional split lists, mixed video extensions, errors."""

from __future__ import annotations

import json

import pytest

from calm.data.benchmarks.common import get_loader, load_split
from calm.data.errors import DataError
from tests.fixtures_benchmarks import DIDEMO_VIDEOS, write_didemo


@pytest.mark.parametrize("with_lists", [True, False])
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_one_paragraph_per_video_in_annotation_order(tmp_path, split, with_lists):
    expected = write_didemo(tmp_path / "ann", with_lists)[split]
    s = load_split("didemo", tmp_path / "ann", tmp_path / "videos", split)
    assert [v.video_id for v in s.videos] == DIDEMO_VIDEOS[split]
    assert len(s.texts) == len(s.videos) and s.text_to_video() == list(range(len(s.videos)))
    for text, video in zip(s.texts, s.videos):
        assert text.text == " ".join(expected[video.video_id])
        assert text.text_id == video.video_id


def test_default_text_length_is_64(tmp_path):
    write_didemo(tmp_path)
    assert get_loader("didemo", tmp_path, tmp_path).default_text_length == 64


def test_list_defines_membership_and_order(tmp_path):
    write_didemo(tmp_path / "ann")
    names = DIDEMO_VIDEOS["train"]
    (tmp_path / "ann" / "train_list.txt").write_text(
        f"{names[3]}\nnot_annotated.mp4\n{names[0]}\n\n{names[3]}\n"
    )
    s = load_split("didemo", tmp_path / "ann", tmp_path / "videos", "train")
    assert [v.video_id for v in s.videos] == [names[3], names[0]]
    assert s.info == {"list": "train_list.txt", "listed_without_annotations": 1,
                      "annotated_not_listed": len(names) - 2}


def test_video_files_found_under_mixed_names(tmp_path):
    write_didemo(tmp_path / "ann")
    vids = tmp_path / "videos"
    vids.mkdir()
    mov, mp4, avi, m4v, gp3 = DIDEMO_VIDEOS["train"]
    (vids / mov).write_bytes(b"x")  # as given
    (vids / mp4).write_bytes(b"x")
    (vids / f"{avi}.mp4").write_bytes(b"x")  # re-encoded, name kept: <name>.mp4
    (vids / m4v.replace(".m4v", ".mp4")).write_bytes(b"x")  # re-encoded, extension replaced
    s = load_split("didemo", tmp_path / "ann", vids, "train")
    paths = {v.video_id: v.path for v in s.videos}
    assert paths[mov] == vids / mov
    assert paths[mp4] == vids / mp4
    assert paths[avi] == vids / f"{avi}.mp4"
    assert paths[m4v] == vids / m4v.replace(".m4v", ".mp4")
    assert paths[gp3] == vids / gp3 and not paths[gp3].exists()  # missing: expected path


def test_name_without_extension(tmp_path):
    write_didemo(tmp_path / "ann")
    vids = tmp_path / "videos"
    vids.mkdir()
    bare = DIDEMO_VIDEOS["test"][0]
    assert "." not in bare
    s = load_split("didemo", tmp_path / "ann", vids, "test")
    assert s.videos[0].path == vids / bare and not s.videos[0].path.exists()
    (vids / f"{bare}.mp4").write_bytes(b"x")
    assert load_split("didemo", tmp_path / "ann", vids, "test").videos[0].path == vids / f"{bare}.mp4"
    (vids / bare).write_bytes(b"x")  # the file exactly as named wins
    assert load_split("didemo", tmp_path / "ann", vids, "test").videos[0].path == vids / bare


def test_missing_key_names_file_and_entry(tmp_path):
    write_didemo(tmp_path)
    path = tmp_path / "val_data.json"
    data = json.loads(path.read_text())
    del data[2]["description"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"val_data.json: entry 2: missing key 'description'"):
        load_split("didemo", tmp_path, tmp_path, "val")


def test_empty_description_names_file_and_entry(tmp_path):
    write_didemo(tmp_path)
    path = tmp_path / "test_data.json"
    data = json.loads(path.read_text())
    data[1]["description"] = " \n"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"test_data.json: entry 1: empty caption"):
        load_split("didemo", tmp_path, tmp_path, "test")


def test_missing_data_file_is_named(tmp_path):
    write_didemo(tmp_path)
    (tmp_path / "train_data.json").unlink()
    with pytest.raises(DataError, match="train_data.json does not exist"):
        load_split("didemo", tmp_path, tmp_path, "train")
