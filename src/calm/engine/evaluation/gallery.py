"""What an evaluation was computed on: the gallery against the split, and every video it dropped.

Under `data.missing_video: skip` an undecodable video leaves the evaluation together with its
texts, so R@1 on 998 of 1,000 MSR-VTT videos is not R@1 on the benchmark. Every metrics dict
therefore carries `gallery` (videos and texts evaluated, and the split's own counts) and
`dropped` (each left-out video with its path, the reason and its texts), also when nothing was
dropped, so a smaller gallery can never pass unnoticed; the command line repeats a non-empty
`dropped` on the console (calm.cli.common.print_dropped).
"""

from __future__ import annotations

from calm.data.annotations import SplitAnnotations
from calm.data.errors import DataError
from calm.data.samples import SkipLog


def gallery_report(ann: SplitAnnotations, skips: SkipLog) -> dict:
    """{"gallery": {...}, "dropped": [...]} for the metrics of `ann` without the `skips`."""
    groups = ann.captions_per_video()
    records = sorted(skips.records.values(), key=lambda r: r.video_index)
    dropped = [
        {"video_id": r.video_id, "path": r.path, "reason": r.reason,
         "texts": [ann.texts[t].text for t in groups[r.video_index]]}
        for r in records
    ]
    dropped_texts = sum(len(d["texts"]) for d in dropped)
    return {
        "gallery": {"videos": len(ann.videos) - len(dropped),
                    "texts": len(ann.texts) - dropped_texts,
                    "split_videos": len(ann.videos), "split_texts": len(ann.texts)},
        "dropped": dropped,
    }


def require_videos(ann: SplitAnnotations, kept: int, skips: SkipLog) -> None:
    """A DataError naming the split and a reason when no video of it could be decoded."""
    if kept:
        return
    first = min(skips.records.values(), key=lambda r: r.video_index, default=None)
    example = f"; the first: {first.path}: {first.reason}" if first else ""
    raise DataError(f"{ann.dataset}/{ann.split}: none of its {len(ann.videos)} videos could be "
                    f"decoded{example}")
