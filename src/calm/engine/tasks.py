"""What differs between retrieval and captioning, so the training loop stays one function.

A task builds its model and loss, evaluates a split, and names the number that selects the best
checkpoint on the validation split (retrieval: t2v R@1 + v2t R@1; captioning: CIDEr).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from tqdm import tqdm

from calm.config import ExperimentConfig
from calm.data.annotations import SplitAnnotations
from calm.data.samples import SkipLog
from calm.engine.distributed import gather_objects
from calm.engine.evaluation.retrieval import evaluate
from calm.engine.inputs import DataSetup
from calm.engine.runtime import autocast


def build_model(cfg: ExperimentConfig):
    if cfg.task == "captioning":
        from calm.model.captioner import CALMCaptioner

        return CALMCaptioner.from_config(cfg.model)
    from calm.model.calm import CALM

    return CALM.from_config(cfg.model)


def build_loss(cfg: ExperimentConfig):
    if cfg.task == "captioning":
        from calm.model.captioner import CaptionLoss

        return CaptionLoss()
    from calm.model.calm import CALMLoss

    return CALMLoss()


def text_length(cfg: ExperimentConfig) -> int:
    """Caption tokens must fit the decoder's positions; retrieval uses data.text_length."""
    if cfg.task == "captioning":
        return min(cfg.data.text_length, cfg.model.caption.max_length)
    return cfg.data.text_length


def selection_score(cfg: ExperimentConfig, metrics: dict) -> float:
    if cfg.task == "captioning":
        return float(metrics["CIDEr"])
    return float(metrics["t2v"]["R@1"] + metrics["v2t"]["R@1"])


def selection_name(cfg: ExperimentConfig) -> str:
    return "CIDEr" if cfg.task == "captioning" else "t2v R@1 + v2t R@1"


def evaluate_split(model, ann: SplitAnnotations, data: DataSetup, cfg: ExperimentConfig,
                   device: torch.device, progress: bool = False) -> dict:
    tc = cfg.train
    if cfg.task == "captioning":
        return evaluate_captioning(model, ann, data, tc.eval_batch_size, device, tc.precision,
                                   progress)
    metrics, _, _ = evaluate(model, ann, data, cfg.model.score, tc.eval_batch_size, device,
                             tc.precision, progress)
    return metrics


@torch.no_grad()
def generate_captions(model, ann: SplitAnnotations, data: DataSetup, batch_size: int,
                      device: torch.device, precision: str = "fp32", progress: bool = False):
    """{video id: caption} for every decodable video (sharded across processes), and skips."""
    model.eval()
    shard = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    skips, predictions = SkipLog(), {}
    for batch in tqdm(data.video_loader(ann, batch_size, shard), desc="captioning",
                      disable=not progress, leave=False):
        skips.update(batch["skipped"])
        if batch["size"] == 0:
            continue
        with autocast(device, precision):
            texts = model.caption(batch["frames"].to(device), batch["frame_mask"].to(device))
        for v, text in zip(batch["video_index"].tolist(), texts):
            predictions[v] = text
    if shard[1] > 1:
        for part, part_skips in gather_objects((predictions, skips)):
            predictions.update(part)
            if part_skips is not skips:
                skips.update(list(part_skips.records.values()))
    return predictions, skips


def evaluate_captioning(model, ann: SplitAnnotations, data: DataSetup, batch_size: int,
                        device: torch.device, precision: str = "fp32", progress: bool = False,
                        examples: int = 5) -> dict:
    """COCO caption metrics of generated captions against all of each video's captions."""
    from calm.metrics.captioning import caption_metrics

    predictions, skips = generate_captions(model, ann, data, batch_size, device, precision,
                                           progress)
    groups = ann.captions_per_video()
    ids = [v for v in sorted(predictions) if groups[v]]
    if not ids:
        raise RuntimeError(f"{ann.dataset}/{ann.split}: no video with captions could be decoded "
                           f"({len(ann.videos)} videos, {len(ann.texts)} captions in the split)")
    preds = {ann.videos[v].video_id: predictions[v] for v in ids}
    refs = {ann.videos[v].video_id: [ann.texts[t].text for t in groups[v]] for v in ids}
    result = caption_metrics(preds, refs)
    result["n_videos"] = len(ids)
    result["n_references"] = sum(len(r) for r in refs.values())
    result["examples"] = [{"video_id": k, "caption": preds[k], "references": refs[k][:3]}
                          for k in list(preds)[:examples]]
    if len(skips):
        result["skipped_videos"] = len(skips)
    return result
