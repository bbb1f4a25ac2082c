"""Writers of tiny annotation folders in the exact published formats of the four benchmarks.

Each writer puts the files under the names the community distributes them with, in their
formats (headers, tab separation, pickle or JSON, mixed DiDeMo extensions, repeated LSMDC ids,
the misspelled LSMDC test file), and returns what a correct loader should read back.
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

# ---- MSR-VTT --------------------------------------------------------------------------------

MSRVTT_CAPTIONS_PER_VIDEO = 3


def msrvtt_caption(video: int, k: int) -> str:
    return f"clip {video} shows thing {k}"


def write_msrvtt(root: str | Path) -> dict:
    """40 videos: 9k list video0-23, 7k list video0-15, 1k-A test video30-39, full 20/5/15.

    Sentences are interleaved across videos, as in the official file, so grouping is exercised.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = 40
    videos = [
        {"category": i % 20, "url": f"https://www.youtube.com/watch?v=x{i}", "video_id": f"video{i}",
         "start time": 1.5, "end time": 11.5, "split": "train" if i < 20 else "test", "id": i}
        for i in range(n)
    ]
    sentences = []
    for k in range(MSRVTT_CAPTIONS_PER_VIDEO):
        for i in range(n):
            sentences.append(
                {"caption": msrvtt_caption(i, k), "video_id": f"video{i}", "sen_id": len(sentences)}
            )
    data = {"info": {"contributor": "Microsoft MSM group", "year": "2016"}, "videos": videos,
            "sentences": sentences}
    (root / "MSRVTT_data.json").write_text(json.dumps(data), encoding="utf-8")

    def id_list(name: str, ids: range) -> None:
        with open(root / name, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["video_id"])
            w.writerows([f"video{i}"] for i in ids)

    id_list("MSRVTT_train.9k.csv", range(0, 24))
    id_list("MSRVTT_train.7k.csv", range(0, 16))
    id_list("MSRVTT_train.full.csv", range(0, 20))
    id_list("MSRVTT_val.full.csv", range(20, 25))
    id_list("MSRVTT_test.full.csv", range(25, 40))
    test_rows = []
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for j, i in enumerate(range(30, 40)):
            sentence = msrvtt_caption(i, 1)
            if j == 0:  # commas and quotes exercise the CSV quoting
                sentence = 'a man says "hello, there", then leaves'
            w.writerow([f"ret{j}", f"msr{i}", f"video{i}", sentence])
            test_rows.append((f"video{i}", sentence))
    return {"train9k": [f"video{i}" for i in range(24)], "test": test_rows}


# ---- MSVD -----------------------------------------------------------------------------------

MSVD_SPLITS = {
    "train": ["-4wsuPCjDBc_5_15", "-7KMZQEsJW4_205_208", "0lh_UWF9ZP4_62_69", "1dfR0A_BXjw_590_600",
              "3chMcMQnNWw_35_42", "4PcL6-mjRNk_11_18"],
    "val": ["5HAf_INrFy0_3_25", "8MVo7fje_oE_139_144"],
    "test": ["9Q0JfdP36kI_23_28", "A5rZp0_9Ek8_6_13", "BnJUWwSx1kE_11_22", "CNHBsxOZd80_24_44"],
}


def msvd_captions() -> dict[str, list[str]]:
    """Id -> captions, 2 to 5 per video (uneven, like the real ~41 average)."""
    out = {}
    for j, vid in enumerate(v for ids in MSVD_SPLITS.values() for v in ids):
        out[vid] = [f"a person does action {j} version {k}" for k in range(2 + j % 4)]
    return out


def write_msvd(root: str | Path, fmt: str = "pkl") -> dict[str, list[str]]:
    """`raw-captions.pkl` (token lists) when fmt="pkl", `captions_msvd.json` when fmt="json"."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    captions = msvd_captions()
    if fmt == "pkl":
        with open(root / "raw-captions.pkl", "wb") as f:
            pickle.dump({v: [c.split() for c in cs] for v, cs in captions.items()}, f)
    else:
        (root / "captions_msvd.json").write_text(json.dumps(captions), encoding="utf-8")
    for split, ids in MSVD_SPLITS.items():
        (root / f"{split}_list.txt").write_text("".join(f"{v}\n" for v in ids), encoding="utf-8")
    return captions


# ---- DiDeMo ---------------------------------------------------------------------------------

DIDEMO_VIDEOS = {
    "train": ["10015567@N08_3655084291_d8b58466fa.mov", "10038296@N00_8445458403_0a2c6c6f40.mp4",
              "10049363@N00_5276633813_6e1fdd2df6.avi", "10052078@N05_6134596375_a0e8f8b7c1.m4v",
              "10082830@N07_8602316926_1cb4b1b81c.3gp"],
    "val": ["10109006@N02_3359489939_10e8cde8e5.wmv", "10133276@N04_2617565556_d0a2b8d0b1.mpg"],
    "test": ["10140813@N03_5013433215_2a6b2efd3c", "10168931@N00_4186431357_be3f42ee11.mp4"],
}


def didemo_sentences(split: str) -> dict[str, list[str]]:
    return {v: [f"{split} video {j} moment {k}." for k in range(2 + j % 3)]
            for j, v in enumerate(DIDEMO_VIDEOS[split])}


def write_didemo(root: str | Path, with_lists: bool = True) -> dict[str, dict[str, list[str]]]:
    """`{split}_data.json` in LocalizingMoments form, moments interleaved across videos."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    expected = {}
    aid = 0
    for split in DIDEMO_VIDEOS:
        sentences = didemo_sentences(split)
        expected[split] = sentences
        entries = []
        for k in range(max(len(s) for s in sentences.values())):
            for video, sents in sentences.items():
                if k < len(sents):
                    entries.append({
                        "num_segments": 6, "annotation_id": aid, "description": sents[k],
                        "reference_description": None, "times": [[k, k], [k, k + 1], [k, k]],
                        "dl_link": f"https://www.flickr.com/video_download.gne?id={aid}",
                        "video": video,
                    })
                    aid += 1
        (root / f"{split}_data.json").write_text(json.dumps(entries), encoding="utf-8")
        if with_lists:
            names = DIDEMO_VIDEOS[split]
            (root / f"{split}_list.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return expected


# ---- LSMDC ----------------------------------------------------------------------------------

LSMDC_FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}


def lsmdc_clip(movie: str, start_s: int) -> str:
    return f"{movie}_00.{start_s // 60:02d}.{start_s % 60:02d}.125-00.{start_s // 60:02d}.{start_s % 60 + 3:02d}.900"


def lsmdc_rows() -> dict[str, list[tuple[str, str]]]:
    """(clip id, sentence) per line. Training repeats clips; sentences carry stray quotes."""
    juno, beauty, bond = "1004_Juno", "0001_American_Beauty", "3001_21_JUMP_STREET"
    train = [
        (lsmdc_clip(juno, 10), 'SOMEONE says "hi" to SOMEONE.'),
        (lsmdc_clip(juno, 10), "SOMEONE waves."),
        (lsmdc_clip(juno, 20), 'SOMEONE\'s "friend walks in.'),
        (lsmdc_clip(beauty, 30), "SOMEONE looks out of the window, smiling."),
        (lsmdc_clip(juno, 10), "Later, SOMEONE sits down."),
        (lsmdc_clip(beauty, 40), '"Quiet," SOMEONE whispers.'),
    ]
    val = [(lsmdc_clip(beauty, 50), "SOMEONE drives away."),
           (lsmdc_clip(beauty, 56), "The car stops.")]
    test = [(lsmdc_clip(bond, 5 + 6 * i), f"SOMEONE runs past building {i}.") for i in range(4)]
    return {"train": train, "val": val, "test": test}


def write_lsmdc(root: str | Path) -> dict[str, list[tuple[str, str]]]:
    """Tab-separated, no header, six fields, written as raw lines (never CSV-quoted)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = lsmdc_rows()
    for split, items in rows.items():
        lines = [f"{clip}\t00.00.01.000\t00.00.03.000\t00.00.01.100\t00.00.02.900\t{text}\n"
                 for clip, text in items]
        (root / LSMDC_FILES[split]).write_text("".join(lines), encoding="utf-8")
    return rows
