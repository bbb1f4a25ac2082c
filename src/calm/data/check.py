"""`calm data-check`: does a benchmark's split parse, and are its videos there and readable?

Run before a long training job so a missing file or a half-downloaded video is found in minutes,
not hours in. By default every present video is sampled the way evaluation samples it: its packet
table is read and its test-mode frames are decoded with the same `FrameSampler`, so a file that
passes here is one `calm eval` and `calm train` can read (training draws other positions from the
same timeline; only damage between those positions can still surprise it). `quick=True` decodes
only the first frame (faster; catches cut downloads and non-video files); `decode=False` only
checks presence.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
from pathlib import Path

import av

from calm.data.benchmarks.common import get_loader
from calm.data.errors import VideoDecodeError
from calm.data.video import FrameSampler, FrameSpec, open_video, read_frame_table

MAX_LISTED = 10  # ids shown per problem; the counts are always complete
PROBE_SIZE = 32  # pixels: the decoding work is the same at any output size, the scaling is not
DEFAULT_FRAMES = 12  # data.num_frames' default


def probe_video(
    path: str | Path, num_frames: int = DEFAULT_FRAMES, quick: bool = False
) -> str | None:
    """None when the file reads the way evaluation reads it; else the reason.

    Default: the evaluation sampler's own steps (open, packet table and timeline, the test-mode
    frames of `num_frames` segments). `quick`: open, packet table and the first frame only.
    """
    try:
        if not quick:
            FrameSampler(FrameSpec(num_frames, PROBE_SIZE), "test").decode_uint8(path)
            return None
        container, stream = open_video(path)
        with container:
            read_frame_table(container, stream, path)
        container, stream = open_video(path)
        with container:
            for _ in container.decode(stream):
                return None
        return "no decodable video frame"
    except VideoDecodeError as exc:
        return exc.reason
    except av.FFmpegError as exc:
        return f"decoding failed: {exc}"


def _probe(task: tuple) -> str | None:
    return probe_video(*task)


def _stats(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "mean": 0.0, "median": 0.0, "max": 0}
    return {
        "min": min(values),
        "mean": round(statistics.fmean(values), 2),
        "median": statistics.median(values),
        "max": max(values),
    }


def _summarise_info(info: dict) -> dict:
    """Split info without long id lists (their length is kept)."""
    out = {}
    for key, value in info.items():
        if isinstance(value, dict):
            out[key] = _summarise_info(value)
        elif isinstance(value, list) and len(value) > MAX_LISTED:
            out[key] = {"count": len(value), "first": value[:MAX_LISTED]}
        else:
            out[key] = value
    return out


def check_split(
    dataset: str,
    annotations: str | Path,
    videos: str | Path,
    split: str,
    options: dict | None = None,
    decode: bool = True,
    quick: bool = False,
    num_frames: int = DEFAULT_FRAMES,
    workers: int = 1,
) -> dict:
    """A JSON-ready report of one split: sizes, missing and undecodable videos, text lengths.

    `workers` > 1 probes videos in that many processes (the report is the same).
    """
    loader = get_loader(dataset, annotations, videos, options)
    ann = loader.load_split(split)
    missing = [r.video_id for r in ann.videos if not r.path.is_file()]
    present = [r for r in ann.videos if r.path.is_file()] if decode else []
    tasks = [(r.path, num_frames, quick) for r in present]
    if workers > 1 and len(tasks) > 1:
        ctx = multiprocessing.get_context("spawn" if sys.platform != "linux" else "fork")
        with ctx.Pool(min(workers, len(tasks))) as pool:
            reasons = pool.map(_probe, tasks, chunksize=4)
    else:
        reasons = [_probe(task) for task in tasks]
    broken = [
        {"video_id": r.video_id, "path": str(r.path), "reason": reason}
        for r, reason in zip(present, reasons)
        if reason is not None
    ]
    words = [len(t.text.split()) for t in ann.texts]
    report = {
        "dataset": dataset,
        "split": split,
        "annotations": str(loader.annotations),
        "videos": str(loader.videos),
        "n_texts": len(ann.texts),
        "n_videos": len(ann.videos),
        "captions_per_video": _stats([len(g) for g in ann.captions_per_video()]),
        "text_words": _stats(words),
        "default_text_length": loader.default_text_length,
        "missing_videos": {"count": len(missing), "first": missing[:MAX_LISTED]},
        "decode_checked": decode,
        "decode_check": ("first frame" if quick else f"test-mode frames, T={num_frames}")
        if decode
        else None,
        "info": _summarise_info(ann.info),
    }
    if decode:
        report["undecodable_videos"] = {"count": len(broken), "first": broken[:MAX_LISTED]}
    report["ok"] = not missing and not broken
    return report
