"""LSMDC loader: tab-separated headerless files, repeated clips, quotes, recursive video search."""

from __future__ import annotations

import pytest

from calm.data.benchmarks.common import load_split
from calm.data.errors import DataError
from tests.fixtures_benchmarks import LSMDC_FILES, write_lsmdc


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_every_line_is_a_text_and_clips_are_deduplicated(tmp_path, split):
    rows = write_lsmdc(tmp_path / "ann")[split]
    s = load_split("lsmdc", tmp_path / "ann", tmp_path / "videos", split)
    clips = list(dict.fromkeys(c for c, _ in rows))
    assert [v.video_id for v in s.videos] == clips
    assert [t.text for t in s.texts] == [text for _, text in rows]  # quotes kept verbatim
    assert [s.videos[t.video_index].video_id for t in s.texts] == [c for c, _ in rows]
    assert s.info["file"] == LSMDC_FILES[split]


def test_training_repeats_share_one_video(tmp_path):
    write_lsmdc(tmp_path)
    s = load_split("lsmdc", tmp_path, tmp_path / "videos", "train")
    assert len(s.texts) == 6 and len(s.videos) == 4
    assert [len(g) for g in s.captions_per_video()] == [3, 1, 1, 1]
    assert len({t.text_id for t in s.texts}) == 6


def test_test_file_uses_the_official_misspelling(tmp_path):
    write_lsmdc(tmp_path)
    assert (tmp_path / "LSMDC16_challenge_1000_publictect.csv").is_file()
    (tmp_path / "LSMDC16_challenge_1000_publictect.csv").rename(
        tmp_path / "LSMDC16_challenge_1000_publictest.csv")
    with pytest.raises(DataError, match="LSMDC16_challenge_1000_publictect.csv does not exist"):
        load_split("lsmdc", tmp_path, tmp_path, "test")


def test_videos_found_in_any_layout(tmp_path):
    rows = write_lsmdc(tmp_path / "ann")["train"]
    vids = tmp_path / "videos"
    juno10, juno20, beauty30, beauty40 = dict.fromkeys(c for c, _ in rows)
    (vids / "1004_Juno").mkdir(parents=True)
    (vids / "1004_Juno" / f"{juno10}.avi").write_bytes(b"x")  # usual <movie>/<clip>.avi
    (vids / f"{juno20}.mp4").write_bytes(b"x")  # flat, re-encoded
    (vids / "a" / "b").mkdir(parents=True)
    (vids / "a" / "b" / f"{beauty30}.avi").write_bytes(b"x")  # anywhere below
    s = load_split("lsmdc", tmp_path / "ann", vids, "train")
    paths = {v.video_id: v.path for v in s.videos}
    assert paths[juno10] == vids / "1004_Juno" / f"{juno10}.avi"
    assert paths[juno20] == vids / f"{juno20}.mp4"
    assert paths[beauty30] == vids / "a" / "b" / f"{beauty30}.avi"
    assert paths[beauty40] == vids / "0001_American_Beauty" / f"{beauty40}.avi"  # expected, missing
    assert not paths[beauty40].exists()


def test_too_few_fields_names_file_and_line(tmp_path):
    write_lsmdc(tmp_path)
    path = tmp_path / "LSMDC16_annos_val.csv"
    path.write_text(path.read_text() + "clip_1 00.00.01.000 00.00.02.000 a b SOMEONE sits.\n")
    with pytest.raises(DataError, match=r"LSMDC16_annos_val.csv: line 3: expected 6 tab-separated"):
        load_split("lsmdc", tmp_path, tmp_path, "val")


def test_empty_sentence_names_file_and_line(tmp_path):
    write_lsmdc(tmp_path)
    path = tmp_path / "LSMDC16_annos_training.csv"
    lines = path.read_text().splitlines()
    lines[3] = "\t".join(lines[3].split("\t")[:5] + ["  "])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"LSMDC16_annos_training.csv: line 4: empty caption"):
        load_split("lsmdc", tmp_path, tmp_path, "train")


def test_blank_lines_crlf_and_odd_whitespace_inside_the_sentence(tmp_path):
    write_lsmdc(tmp_path)
    path = tmp_path / "LSMDC16_annos_val.csv"
    path.write_text(path.read_text() + "\nclip_9\t1\t2\t3\t4\tSOMEONE\tnods.\n\n"
                    "clip_10\t1\t2\t3\t4\tSOMEONE\u2028sighs.\r\n")
    s = load_split("lsmdc", tmp_path, tmp_path, "val")
    assert [t.text for t in s.texts[-2:]] == ["SOMEONE nods.", "SOMEONE sighs."]
    assert [v.video_id for v in s.videos[-2:]] == ["clip_9", "clip_10"]
