"""Any loaded benchmark written out as own data (`data.jsonl` or `data.csv`).

Useful to start an own dataset from a benchmark's layout, and the check that the own-data
loaders read what the benchmark loaders read: a converted split has the same videos, texts and
order, so it evaluates to the same metrics. Consecutive texts of one video become one JSONL line
(a video whose texts are interleaved with others' gets several lines, which the loader merges
back), so text order is kept exactly. Video paths under `videos` are written relative to it,
others absolute.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from calm.data.annotations import SplitAnnotations
from calm.data.benchmarks.common import get_loader
from calm.data.errors import DataError

FORMATS = ("jsonl", "csv")
DEFAULT_SPLITS = ("train", "val", "test")


def _relative(path: Path, videos: Path) -> str:
    """`path` relative to `videos` when inside it (portable files), else absolute."""
    path, videos = path.absolute(), videos.absolute()
    if path.is_relative_to(videos):
        return path.relative_to(videos).as_posix()
    return str(path)


def _runs(ann: SplitAnnotations) -> list[tuple[int, list[str]]]:
    """(video index, texts) for each run of consecutive texts of the same video."""
    runs: list[tuple[int, list[str]]] = []
    for t in ann.texts:
        if runs and runs[-1][0] == t.video_index:
            runs[-1][1].append(t.text)
        else:
            runs.append((t.video_index, [t.text]))
    return runs


def split_lines(ann: SplitAnnotations, videos: Path, fmt: str) -> list[str]:
    """One split as JSONL lines or CSV rows (without header), in text order."""
    out = []
    for video_index, texts in _runs(ann):
        video = _relative(ann.videos[video_index].path, videos)
        if fmt == "jsonl":
            out.append(json.dumps({"video": video, "captions": texts, "split": ann.split},
                                  ensure_ascii=False))
        else:
            for text in texts:
                buf = io.StringIO()
                csv.writer(buf, lineterminator="").writerow([video, text, ann.split])
                out.append(buf.getvalue())
    return out


def convert_annotations(
    dataset: str,
    annotations: str | Path,
    videos: str | Path,
    out: str | Path,
    splits: list[str] | tuple[str, ...] | None = None,
    options: dict | None = None,
    fmt: str | None = None,
) -> dict:
    """Writes `splits` of a benchmark to `out` (.jsonl or .csv, or `fmt`); returns counts.

    Default splits: train, val and test, those the loader knows. A carved split (MSR-VTT's val)
    is written as it was carved with `options`, so the own-data loader will not carve again.
    """
    out = Path(out)
    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise DataError(f"{out}: format {fmt!r} is not one of {list(FORMATS)}; name the file "
                        ".jsonl or .csv")
    loader = get_loader(dataset, annotations, videos, options)
    splits = list(splits or [s for s in DEFAULT_SPLITS if s in loader.splits()])
    lines = ["video,caption,split"] if fmt == "csv" else []
    counts = {}
    for split in splits:
        ann = loader.load_split(split)
        lines += split_lines(ann, Path(videos), fmt)
        counts[split] = {"videos": len(ann.videos), "texts": len(ann.texts)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"out": str(out), "format": fmt, "splits": counts}
