"""Captioning evaluation: generate one caption per decodable video (sharded), then COCO metrics
against all of each video's reference captions."""

from __future__ import annotations

import torch

from calm.data.annotations import SplitAnnotations
from calm.data.errors import DataError
from calm.data.samples import SkipLog
from calm.data.video import normalize_frames
from calm.engine.evaluation.gallery import gallery_report, require_videos
from calm.engine.evaluation.sharded import map_shards
from calm.engine.inputs import DataSetup
from calm.engine.runtime import autocast
from calm.metrics.captioning import caption_metrics


@torch.no_grad()
def generate_captions(model, ann: SplitAnnotations, data: DataSetup, batch_size: int,
                      device: torch.device, precision: str = "fp32",
                      progress: bool = False) -> tuple[dict[int, str], SkipLog]:
    """{video index: caption} for every decodable video, and the skipped ones."""
    model.eval()

    def caption(batch) -> dict:
        with autocast(device, precision):
            mask = batch["frame_mask"].to(device)
            frames = normalize_frames(batch["frames"].to(device), data.spec.mean, data.spec.std, mask)
            texts = model.caption(frames, mask)
        return dict(zip(batch["video_index"].tolist(), texts))

    return map_shards(lambda shard: data.video_loader(ann, batch_size, shard), caption,
                      "captioning", progress)


def evaluate_captioning(model, ann: SplitAnnotations, data: DataSetup, batch_size: int,
                        device: torch.device, precision: str = "fp32", progress: bool = False,
                        examples: int = 5) -> dict:
    """COCO caption metrics of generated captions against all of each video's captions."""
    predictions, skips = generate_captions(model, ann, data, batch_size, device, precision,
                                           progress)
    require_videos(ann, len(predictions), skips)
    groups = ann.captions_per_video()
    ids = [v for v in sorted(predictions) if groups[v]]
    if not ids:
        raise DataError(f"{ann.dataset}/{ann.split}: no video with captions could be decoded "
                           f"({len(ann.videos)} videos, {len(ann.texts)} captions in the split)")
    preds = {ann.videos[v].video_id: predictions[v] for v in ids}
    refs = {ann.videos[v].video_id: [ann.texts[t].text for t in groups[v]] for v in ids}
    result = caption_metrics(preds, refs)
    result["n_videos"] = len(ids)
    result["n_references"] = sum(len(r) for r in refs.values())
    result["examples"] = [{"video_id": k, "caption": preds[k], "references": refs[k][:3]}
                          for k in list(preds)[:examples]]
    return {**result, **gallery_report(ann, skips)}
