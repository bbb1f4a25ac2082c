"""`calm data-check`: does a benchmark's split parse, and are its videos there and readable?

Run before a long training job so a missing file or a half-downloaded video is found in minutes,
not hours in. The check opens every present video with PyAV, reads its packet table and decodes its first
frame (cheap, and it catches truncated downloads and non-video files); `decode=False` only
checks presence.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from calm.data.benchmarks.common import get_loader

MAX_LISTED = 10  # ids shown per problem; the counts are always complete


def probe_video(path: str | Path) -> str | None:
    """None when the file opens, its packet table is whole and its first frame decodes; else why.

    Uses the frame sampler's own open and packet-table steps, so a file that passes here fails
    in training only if a frame past the first is corrupt.
    """
    import av

    from calm.data.errors import VideoDecodeError
    from calm.data.video import open_video, read_frame_table

    try:
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
) -> dict:
    """A JSON-ready report of one split: sizes, missing and undecodable videos, text lengths."""
    loader = get_loader(dataset, annotations, videos, options)
    ann = loader.load_split(split)
    missing, broken = [], []
    for record in ann.videos:
        if not record.path.is_file():
            missing.append(record.video_id)
        elif decode:
            reason = probe_video(record.path)
            if reason is not None:
                broken.append(
                    {"video_id": record.video_id, "path": str(record.path), "reason": reason}
                )
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
        "info": _summarise_info(ann.info),
    }
    if decode:
        report["undecodable_videos"] = {"count": len(broken), "first": broken[:MAX_LISTED]}
    report["ok"] = not missing and not broken
    return report
