"""Retrieval evaluation: encode a split once, cache the embeddings, score and measure with pure
functions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from calm.config.schema import ScoreConfig
from calm.data.annotations import SplitAnnotations
from calm.data.video import normalize_frames
from calm.engine.evaluation.gallery import gallery_report, require_videos
from calm.engine.evaluation.sharded import map_shards
from calm.engine.inputs import DataSetup
from calm.engine.runtime import autocast
from calm.metrics import retrieval_metrics
from calm.model.retrieval import CALM
from calm.model.scoring import similarity_matrix


@dataclass
class SplitEmbeddings:
    """Cached features of one split: every text once, every decodable video once."""

    text: torch.Tensor  # [N_t, D]
    frames: torch.Tensor  # [N_v, T, D]
    mask: torch.Tensor  # [N_v, T]
    text_to_video: np.ndarray  # ground-truth column of each kept text
    text_ids: list[str]
    video_ids: list[str]
    texts: list[str] = field(default_factory=list)  # the kept captions themselves
    gallery: dict = field(default_factory=dict)  # gallery_report: sizes and the dropped videos


@torch.no_grad()
def encode_split(
    model: CALM, ann: SplitAnnotations, data: DataSetup, batch_size: int,
    device: torch.device, precision: str = "fp32", progress: bool = False,
) -> SplitEmbeddings:
    """Encodes every video and text once (sharded across processes, see `map_shards`); every rank
    returns the same result."""
    model.eval()

    def frames_of(batch) -> dict:
        with autocast(device, precision):
            mask = batch["frame_mask"].to(device)
            frames = normalize_frames(batch["frames"].to(device), data.spec.mean, data.spec.std, mask)
            feats = model.encode_frames(frames, mask)
        return {v: (feats[i].float().cpu(), batch["frame_mask"][i])
                for i, v in enumerate(batch["video_index"].tolist())}

    def text_of(batch) -> dict:
        with autocast(device, precision):
            feats = model.encode_text(batch["tokens"].to(device)).float().cpu()
        return dict(zip(batch["text_index"].tolist(), feats))

    video_feats, skips = map_shards(lambda shard: data.video_loader(ann, batch_size, shard),
                                    frames_of, "encode videos", progress)
    text_feats, _ = map_shards(lambda shard: data.text_loader(ann, 4 * batch_size, shard),
                               text_of, "encode texts", progress)
    kept_videos = sorted(video_feats)
    require_videos(ann, len(kept_videos), skips)
    column = {v: i for i, v in enumerate(kept_videos)}
    keep_text = [i for i, t in enumerate(ann.texts) if t.video_index in column]
    return SplitEmbeddings(
        text=torch.stack([text_feats[i] for i in keep_text]),
        frames=torch.stack([video_feats[v][0] for v in kept_videos]),
        mask=torch.stack([video_feats[v][1] for v in kept_videos]),
        text_to_video=np.array([column[ann.texts[i].video_index] for i in keep_text], dtype=np.int64),
        text_ids=[ann.texts[i].text_id or str(i) for i in keep_text],
        video_ids=[ann.videos[v].video_id for v in kept_videos],
        texts=[ann.texts[i].text for i in keep_text],
        gallery=gallery_report(ann, skips),
    )


@torch.no_grad()
def score_embeddings(model: CALM, emb: SplitEmbeddings, cfg: ScoreConfig, device) -> torch.Tensor:
    model.eval()
    return similarity_matrix(
        model, emb.text.to(device), emb.frames.to(device), emb.mask.to(device), cfg
    )


def metrics_from_sim(sim: torch.Tensor, emb: SplitEmbeddings) -> dict:
    return {**retrieval_metrics(sim, emb.text_to_video), **emb.gallery}


def evaluate(
    model: CALM,
    ann: SplitAnnotations,
    data: DataSetup,
    score: ScoreConfig,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    progress: bool = False,
) -> tuple[dict, torch.Tensor, SplitEmbeddings]:
    emb = encode_split(model, ann, data, batch_size, device, precision, progress)
    sim = score_embeddings(model, emb, score, device)
    result = metrics_from_sim(sim, emb)
    result["score_mode"] = score.mode
    return result, sim, emb


def save_similarity(prefix: str | Path, sim: torch.Tensor, emb: SplitEmbeddings) -> None:
    """PREFIX.npy (float32 texts x videos) and PREFIX.json (ids and ground truth), for anyone to
    recompute the metrics independently."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    np.save(prefix.with_suffix(".npy"), sim.numpy().astype(np.float32))
    prefix.with_suffix(".json").write_text(
        json.dumps(
            {
                "text_ids": emb.text_ids,
                "video_ids": emb.video_ids,
                "text_to_video": emb.text_to_video.tolist(),
            }
        )
    )
