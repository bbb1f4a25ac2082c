"""MSR-VTT loader on tiny files in the published formats: splits, grouping, val carve-out, errors."""

from __future__ import annotations

import csv
import json

import pytest

from calm.data.annotations import DATASETS
from calm.data.benchmarks.common import get_loader, import_loaders, load_split
from calm.data.errors import DataError
from tests.fixtures_benchmarks import MSRVTT_CAPTIONS_PER_VIDEO, msrvtt_caption, write_msrvtt


@pytest.fixture
def ann(tmp_path):
    expected = write_msrvtt(tmp_path / "ann")
    return tmp_path / "ann", tmp_path / "videos", expected


def _load(ann, split, **options):
    return load_split("msrvtt", ann[0], ann[1], split, options)


def test_all_four_register_by_name():
    import_loaders()
    assert {"msrvtt", "msvd", "didemo", "lsmdc"} <= set(DATASETS.names())


def test_test_split_is_1ka_one_caption_per_video(ann):
    split = _load(ann, "test")
    assert len(split.videos) == len(split.texts) == 10
    assert [v.video_id for v in split.videos] == [f"video{i}" for i in range(30, 40)]
    assert split.text_to_video() == list(range(10))
    assert split.texts[0].text == 'a man says "hello, there", then leaves'
    assert split.texts[0].text_id == "ret0"
    assert split.videos[0].path == ann[1] / "video30.mp4"


def test_train_without_carve_has_all_9k_videos_and_all_captions(ann):
    split = _load(ann, "train", val_size=0)
    assert [v.video_id for v in split.videos] == ann[2]["train9k"]
    assert len(split.texts) == 24 * MSRVTT_CAPTIONS_PER_VIDEO
    groups = split.captions_per_video()
    for v, group in enumerate(groups):
        vid = int(split.videos[v].video_id[5:])
        assert [split.texts[i].text for i in group] == [
            msrvtt_caption(vid, k) for k in range(MSRVTT_CAPTIONS_PER_VIDEO)
        ]


def test_val_carve_is_seeded_disjoint_and_recorded(ann):
    train = _load(ann, "train", val_size=5, val_seed=3)
    val = _load(ann, "val", val_size=5, val_seed=3)
    train_ids = {v.video_id for v in train.videos}
    val_ids = [v.video_id for v in val.videos]
    assert len(val_ids) == 5 and not train_ids & set(val_ids)
    assert train_ids | set(val_ids) == set(ann[2]["train9k"])
    assert len(val.texts) == 5 * MSRVTT_CAPTIONS_PER_VIDEO  # all captions of the carved videos
    for s in (train, val):
        assert s.info["val_carve"] == {"source": "MSRVTT_train.9k.csv", "seed": 3, "size": 5,
                                       "video_ids": val_ids}
    again = _load(ann, "val", val_size=5, val_seed=3)
    assert [v.video_id for v in again.videos] == val_ids
    others = {tuple(v.video_id for v in _load(ann, "val", val_size=5, val_seed=s).videos)
              for s in range(6)}
    assert len(others) > 1  # the seed matters


def test_val_carve_does_not_depend_on_row_order(ann):
    path = ann[0] / "MSRVTT_train.9k.csv"
    before = {v.video_id for v in _load(ann, "val", val_size=4).videos}
    rows = path.read_text().splitlines()
    path.write_text("\n".join([rows[0], *reversed(rows[1:])]) + "\n")
    assert {v.video_id for v in _load(ann, "val", val_size=4).videos} == before


def test_default_val_size_is_500_and_too_large_is_an_error(ann):
    with pytest.raises(DataError, match="val_size 500 leaves no training videos"):
        _load(ann, "train")
    with pytest.raises(DataError, match="val_size > 0"):
        _load(ann, "val", val_size=0)


@pytest.mark.parametrize("split,ids", [("train7k", range(16)), ("train_full", range(20)),
                                        ("val_full", range(20, 25)), ("test_full", range(25, 40))])
def test_id_list_splits_take_all_captions(ann, split, ids):
    s = _load(ann, split)
    assert [v.video_id for v in s.videos] == [f"video{i}" for i in ids]
    assert len(s.texts) == len(ids) * MSRVTT_CAPTIONS_PER_VIDEO
    assert s.texts[0].text_id.isdigit()  # sen_id


def test_missing_video_is_not_an_annotation_error(ann, tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "video31.mp4").write_bytes(b"x")
    split = _load(ann, "test")
    assert split.videos[1].path.is_file() and not split.videos[0].path.exists()


def test_missing_annotation_file_names_it(ann):
    (ann[0] / "MSRVTT_JSFUSION_test.csv").unlink()
    with pytest.raises(DataError, match="MSRVTT_JSFUSION_test.csv does not exist"):
        _load(ann, "test")


def test_missing_column_names_file_and_header(ann):
    path = ann[0] / "MSRVTT_JSFUSION_test.csv"
    path.write_text("key,vid_key,video,sentence\nret0,msr1,video1,a cat\n")
    with pytest.raises(DataError, match=r"MSRVTT_JSFUSION_test.csv: line 1: missing column.*video_id"):
        _load(ann, "test")


def test_empty_caption_names_file_and_line(ann):
    path = ann[0] / "MSRVTT_JSFUSION_test.csv"
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(["ret10", "msr1", "video1", "   "])
    with pytest.raises(DataError, match=r"MSRVTT_JSFUSION_test.csv: line 12: empty caption"):
        _load(ann, "test")


def test_empty_caption_in_data_json_names_the_entry(ann):
    path = ann[0] / "MSRVTT_data.json"
    data = json.loads(path.read_text())
    data["sentences"][7]["caption"] = ""
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"MSRVTT_data.json: sentences\[7\]: empty caption"):
        _load(ann, "train7k")


def test_listed_video_without_captions_names_list_and_line(ann):
    with open(ann[0] / "MSRVTT_train.7k.csv", "a") as f:
        f.write("video999\n")
    with pytest.raises(DataError, match=r"MSRVTT_train.7k.csv: line 18: video 'video999' has no"):
        _load(ann, "train7k")


def test_unknown_split_and_option(ann):
    with pytest.raises(DataError, match="unknown split 'dev'"):
        _load(ann, "dev")
    with pytest.raises(DataError, match="unknown option"):
        _load(ann, "test", val_sise=3)


def test_missing_annotation_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        get_loader("msrvtt", tmp_path / "nope", tmp_path)
    with pytest.raises(DataError, match="unknown dataset 'msr'"):
        get_loader("msr", tmp_path, tmp_path)
