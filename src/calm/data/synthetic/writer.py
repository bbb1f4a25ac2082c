"""Writing the synthetic domains in the real benchmarks' published formats.

Each domain is written exactly as datasets.md describes its benchmark (MSR-VTT's JSON and CSVs,
DiDeMo's moment lists, LSMDC's tab-separated files), so the ordinary loaders read it and the
synthetic data exercises the same code paths as the real data. Files are written in a fixed order
with fixed formatting, so equal seeds give byte-identical annotation files.
"""

from __future__ import annotations

import csv
import io
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Container format per extension (FFmpeg cannot guess .m4v for writing).
CONTAINER_FORMAT = {"mp4": "mp4", "m4v": "mp4", "mov": "mov", "avi": "avi"}
# No B-frames (AVI cannot time them). No macroblock tree: with it, repeated runs on this
# (virtualised) machine wrote different bytes for the same frames now and then (a third of the
# clips in some runs); mbtree's float assembly is the likely cause (approximate reciprocals can
# differ between hosts). Without it, 25 repeated runs gave identical files.
X264_OPTIONS = {"crf": "18", "preset": "fast", "bf": "0", "x264-params": "mbtree=0"}
MPEG4_BIT_RATE = 800_000


def encode_video(path: Path, frames: np.ndarray, fps: int, codec: str) -> None:
    """Writes uint8 RGB frames (T x H x W x 3) as a real video file with PyAV.

    One encoder thread and no B-frames: the bytes are reproducible and AVI (which has no B-frame
    timestamps) decodes to exactly T frames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lstrip(".").lower()
    with av.open(str(path), "w", format=CONTAINER_FORMAT[ext]) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = dict(X264_OPTIONS, g=str(len(frames)))
        else:
            stream.bit_rate = MPEG4_BIT_RATE
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def write_json(path: Path, data, indent: int | None = None) -> None:
    _write_text(Path(path), json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def _csv(rows: list[list], delimiter: str = ",") -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue()


# ---- MSR-VTT ---------------------------------------------------------------------------------


def write_msrvtt(
    annotations: Path, train: list[dict], test: list[dict], fps: int, n_frames: int
) -> dict:
    """MSRVTT_data.json, the 9k / 7k / full split lists and the JSFUSION (1k-A style) test file.

    Items carry `video_id`, `texts` [(caption, mention)] and, for test items, `jsfusion` (the index
    of the caption used in the one-caption-per-video test file). The 9k list holds every training
    video; the 7k list and the full train/val/test lists follow the real files' relations
    (7k = full train + full val; full test holds the rest, including every 1k-A video).
    """
    ids_9k = [it["video_id"] for it in train]
    n7k = max(1, round(len(ids_9k) * 0.78))
    n_full_train = max(1, round(len(ids_9k) * 0.72))
    full = {
        "train": ids_9k[:n_full_train],
        "val": ids_9k[n_full_train:n7k],
        "test": ids_9k[n7k:] + [it["video_id"] for it in test],
    }
    full_split = {v: s for s, ids in full.items() for v in ids}
    official = {"train": "train", "val": "validate", "test": "test"}
    videos, sentences = [], []
    duration = round(n_frames / fps, 3)
    for it in train + test:
        num = int(it["video_id"][len("video") :])
        videos.append(
            {
                "category": it["category"],
                "url": f"synthetic://{it['video_id']}",
                "video_id": it["video_id"],
                "start time": 0.0,
                "end time": duration,
                "split": official[full_split[it["video_id"]]],
                "id": num,
            }
        )
        for text, _ in it["texts"]:
            sentences.append(
                {"caption": text, "video_id": it["video_id"], "sen_id": len(sentences)}
            )
    data = {
        "info": {
            "contributor": "calm synthetic benchmark",
            "data_created": "synthetic",
            "version": "1.0",
            "description": "MSR-VTT-format synthetic domain",
        },
        "videos": videos,
        "sentences": sentences,
    }
    write_json(annotations / "MSRVTT_data.json", data)
    _write_text(annotations / "MSRVTT_train.9k.csv", _csv([["video_id"]] + [[v] for v in ids_9k]))
    _write_text(
        annotations / "MSRVTT_train.7k.csv", _csv([["video_id"]] + [[v] for v in ids_9k[:n7k]])
    )
    for split, ids in full.items():
        _write_text(
            annotations / f"MSRVTT_{split}.full.csv", _csv([["video_id"]] + [[v] for v in ids])
        )
    rows = [["key", "vid_key", "video_id", "sentence"]]
    for i, it in enumerate(test):
        num = it["video_id"][len("video") :]
        rows.append([f"ret{i}", f"msr{num}", it["video_id"], it["texts"][it["jsfusion"]][0]])
    _write_text(annotations / "MSRVTT_JSFUSION_test.csv", _csv(rows))
    return {
        "train": {
            "videos": len(train),
            "texts": sum(len(it["texts"]) for it in train),
            "files": ["MSRVTT_train.9k.csv", "MSRVTT_data.json"],
        },
        "test": {"videos": len(test), "texts": len(test), "files": ["MSRVTT_JSFUSION_test.csv"]},
        "also": [
            "MSRVTT_train.7k.csv",
            "MSRVTT_train.full.csv",
            "MSRVTT_val.full.csv",
            "MSRVTT_test.full.csv",
        ],
    }


# ---- DiDeMo ----------------------------------------------------------------------------------


def write_didemo(annotations: Path, splits: dict[str, list[dict]]) -> dict:
    """`{split}_data.json` (one entry per sentence) and `{split}_list.txt` (video file names)."""
    annotation_id = 0
    summary = {}
    for split, items in splits.items():
        entries = []
        for it in items:
            for text, _ in it["texts"]:
                entries.append(
                    {
                        "annotation_id": annotation_id,
                        "description": text,
                        "times": [[0, 0]],
                        "video": it["video_id"],
                    }
                )
                annotation_id += 1
        write_json(annotations / f"{split}_data.json", entries)
        _write_text(
            annotations / f"{split}_list.txt", "".join(f"{it['video_id']}\n" for it in items)
        )
        summary[split] = {
            "videos": len(items),
            "texts": len(items),
            "sentences": len(entries),
            "files": [f"{split}_data.json", f"{split}_list.txt"],
        }
    return summary


# ---- LSMDC -----------------------------------------------------------------------------------

LSMDC_FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}


def lsmdc_time(ms: int) -> str:
    """Milliseconds as LSMDC's hh.mm.ss.mmm."""
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    return f"{h:02d}.{m:02d}.{s:02d}.{milli:03d}"


def write_lsmdc(annotations: Path, splits: dict[str, list[dict]]) -> dict:
    """Tab-separated, headerless: clip id, aligned start/end, extracted start/end, sentence.

    A training clip with two texts gets two consecutive lines (clip ids repeat in LSMDC).
    """
    summary = {}
    for split, items in splits.items():
        lines = []
        for it in items:
            start, end = it["times"]
            for text, _ in it["texts"]:
                lines.append("\t".join([it["video_id"], start, end, start, end, text]) + "\n")
        _write_text(annotations / LSMDC_FILES[split], "".join(lines))
        summary[split] = {"videos": len(items), "texts": len(lines), "files": [LSMDC_FILES[split]]}
    return summary
