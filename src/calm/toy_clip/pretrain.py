"""A pretrained starting point for the synthetic world: a small CLIP trained on image-caption pairs.

Real CALM fine-tunes OpenAI's CLIP, whose text encoder already places "The content of <label>"
prompts meaningfully. The toy world has no such model, so calm trains one and caches it.

By default (`source: stream`) every step draws fresh pairs from the synthetic world's training
stream (`calm.data.synthetic.pretrain_pairs`), rendered by a worker process while the model
trains: no pair is seen twice, so the toy CLIP must learn shapes, colours and words rather than
memorise a few thousand pictures. It is then measured on the held-out pairs `calm synth` writes to
`pretrain/`: zero-shot text->image R@1 (beside that set's oracle) and how well the anchor prompts
rank the anchors true of each image and named by each caption (mAP). `source: split` trains on
that fixed split instead (the earlier recipe; it memorises).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from calm.clock import Phase
from calm.config.schema import AnchorConfig
from calm.data.errors import DataError
from calm.data.synthetic import FORMAT_VERSION
from calm.data.synthetic.anchor_truth import caption_anchors, clip_anchors
from calm.data.synthetic.anchors import ANCHOR_LABELS
from calm.data.synthetic.config import SCALES, Difficulty
from calm.data.synthetic.pretrain_pairs import (
    ATTRIBUTE_CLASSES,
    NO_LABEL,
    PretrainStream,
    attribute_labels,
)
from calm.data.synthetic.world import oracle_recall_at_1
from calm.engine.optim import cosine_with_warmup, decayed_names
from calm.engine.runtime import seed_everything
from calm.io import atomic_write, write_json_atomic
from calm.metrics.ranking import mean_average_precision
from calm.metrics.retrieval import ranks_t2v, ranks_v2t, summarize_ranks
from calm.model.clip_weights import load_clip
from calm.model.losses import clamp_logit_scale_, symmetric_info_nce

SOURCES = ("stream", "split")
# Bump when the training stream's pairs change, so cached toy CLIPs are not reused wrongly.
STREAM_VERSION = 1


@dataclass(frozen=True)
class PretrainConfig:
    # a small ResNet CLIP at 32 pixels: on the fresh-pair stream it generalises better than the
    # ViT toy models and than the same ResNet at 64 pixels, in less CPU time (docs/results.md,
    # "Calibration")
    model: str = "calm-rn16-32"
    steps: int = 3000  # 384,000 fresh pairs: twice the steps lift held-out R@1 11.7 -> 16.4 (docs/results.md)
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: float = 0.1
    seed: int = 0
    source: str = "stream"  # stream: fresh pairs every step | split: the fixed pretrain/ split
    scale: str = "default"  # the stream's frame size and motion trails (match the videos)
    workers: int = 1  # processes rendering stream pairs while the model trains
    group: int = 1  # stream pairs sharing background and colour (hard negatives); 1: none
    # weight of the auxiliary attribute heads on the image tower (0: none); they lift held-out
    # R@1 and anchor mAP at equal steps (docs/results.md, "Calibration")
    aux_weight: float = 4.0
    eval_pairs: int = 1000  # held-out pairs for zero-shot R@1 and anchor mAP (0: skip)

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source: {self.source!r} is not one of {list(SOURCES)}")
        if self.scale not in SCALES:
            raise ValueError(f"scale: {self.scale!r} is not one of {sorted(SCALES)}")


def default_cache_dir() -> Path:
    if os.environ.get("CALM_CACHE"):
        return Path(os.environ["CALM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "calm"


def load_image_captions(root: str | Path) -> tuple[np.ndarray, list[str]]:
    """The `pretrain/` split of a `calm synth` folder: images.npy (uint8 N x H x W x 3) + captions.json."""
    folder = Path(root) / "pretrain"
    images_path, captions_path = folder / "images.npy", folder / "captions.json"
    for path in (images_path, captions_path):
        if not path.is_file():
            raise DataError(f"{path} does not exist; generate the benchmark with `calm synth`")
    images = np.load(images_path)
    captions = json.loads(captions_path.read_text())
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 N x H x W x 3, got {images.dtype} {images.shape}")
    if len(captions) != len(images):
        raise DataError(f"{captions_path}: {len(captions)} captions for {len(images)} images")
    return images, captions


def load_pair_metadata(root: str | Path) -> list[dict]:
    path = Path(root) / "pretrain" / "metadata.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist; generate the benchmark with `calm synth`")
    return json.loads(path.read_text())


def cache_key(root: str | Path, cfg: PretrainConfig) -> str:
    """Stream: the settings and the generator's version (not the folder: the stream is its own).
    Split: the split's files and the settings."""
    digest = hashlib.sha256()
    if cfg.source == "stream":
        digest.update(f"stream:{FORMAT_VERSION}:{STREAM_VERSION}".encode())
        digest.update(json.dumps(Difficulty().to_json(), sort_keys=True).encode())
    else:
        for name in ("images.npy", "captions.json"):
            path = Path(root) / "pretrain" / name
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}".encode())
            with open(path, "rb") as f:
                digest.update(f.read(1 << 20))
    digest.update(json.dumps(asdict(cfg), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def to_model_input(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> normalised float [N, 3, size, size] (antialiased resize if needed)."""
    x = images.float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    return (x - mean) / std


def _collate_pairs(items) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    return (torch.stack([image for image, _, _ in items]), [text for _, text, _ in items],
            torch.stack([labels for _, _, labels in items]))


def _batches(cfg: PretrainConfig, root: Path, g: torch.Generator):
    """(uint8 images [B, 3, S, S], captions) per step, from the stream or the fixed split."""
    if cfg.source == "stream":
        stream = PretrainStream(cfg.steps * cfg.batch_size, seed=cfg.seed, scale=cfg.scale,
                                group=cfg.group)
        loader = DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.workers,
                            collate_fn=_collate_pairs,
                            prefetch_factor=4 if cfg.workers else None)
        yield from loader
        return
    images, captions = load_image_captions(root)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
    labels = torch.tensor([attribute_labels(m["attributes"]) for m in load_pair_metadata(root)])
    batch = min(cfg.batch_size, len(captions))
    for _ in range(cfg.steps):
        idx = torch.randperm(len(captions), generator=g)[:batch]
        yield pixels[idx], [captions[i] for i in idx.tolist()], labels[idx]


def build_backbone(model: str):
    import open_clip

    from calm.model.backbone import CLIPBackbone

    return CLIPBackbone(load_clip(model), open_clip.get_tokenizer("ViT-B-32"))


class AttributeHeads(torch.nn.Module):
    """Linear read-outs of what an image shows (shape, colour, size, motion, background, objects,
    the second object's shape and colour) from the image embedding, trained beside the
    contrastive loss and dropped afterwards.

    Why: the contrastive loss alone teaches colour and background within a few hundred steps but
    not shape (a linear probe of the image embedding stayed near chance after 1,500 steps); a
    direct label per attribute gives the image tower that signal at once. Real CALM starts from a
    CLIP that already knows its world's concepts; these heads are how the toy CLIP gets there on
    2 cores. The labels come from the generator's metadata.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(dim, len(classes))
                                         for classes in ATTRIBUTE_CLASSES.values())

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the heads (absent second objects are ignored)."""
        losses = [F.cross_entropy(head(embedding), labels[:, i], ignore_index=NO_LABEL)
                  for i, head in enumerate(self.heads) if (labels[:, i] != NO_LABEL).any()]
        return torch.stack(losses).mean()


def pretrain_clip(root: str | Path, out: str | Path, cfg: PretrainConfig, progress=True) -> dict:
    """Trains a CLIP of `cfg.model` contrastively on image-caption pairs; writes safetensors and,
    beside them, a JSON report (losses, held-out zero-shot metrics, wall and CPU seconds)."""
    seed_everything(cfg.seed)
    root = Path(root)
    backbone = build_backbone(cfg.model)
    clip = backbone.clip
    pre = backbone.preprocess
    heads = AttributeHeads(backbone.embed_dim) if cfg.aux_weight > 0 else None
    trained = torch.nn.ModuleDict({"clip": clip, **({"heads": heads} if heads else {})})
    decayed = decayed_names(trained)  # the fine-tuning optimizer's rule
    decay = [p for n, p in trained.named_parameters() if n in decayed]
    rest = [p for n, p in trained.named_parameters() if n not in decayed]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6,
    )
    scheduler = cosine_with_warmup(optimizer, cfg.steps, cfg.warmup)
    g = torch.Generator().manual_seed(cfg.seed)
    losses, aux_losses = [], []
    trained.train()
    # the renderer takes a core of its own: more torch threads than free cores only spin
    threads = torch.get_num_threads()
    if cfg.source == "stream" and cfg.workers:
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - cfg.workers)))
    bar = tqdm(total=cfg.steps, desc=f"pretrain toy CLIP ({cfg.source})", disable=not progress,
               dynamic_ncols=True)
    with Phase() as train_phase:
        for images, captions, labels in _batches(cfg, root, g):
            img = clip.encode_image(to_model_input(images, pre.image_size, pre.mean, pre.std))
            txt = backbone.encode_text(backbone.tokenize(captions))
            sims = F.normalize(txt, dim=-1) @ F.normalize(img, dim=-1).t()
            nce = symmetric_info_nce(sims, clip.logit_scale)
            loss = nce
            if heads is not None:
                aux = heads(img, labels)
                aux_losses.append(aux.item())
                loss = loss + cfg.aux_weight * aux
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            clamp_logit_scale_(clip.logit_scale)
            losses.append(nce.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    torch.set_num_threads(threads)
    with Phase() as eval_phase:
        heldout = evaluate_toy_clip(backbone, root, cfg.eval_pairs) if cfg.eval_pairs else {}
    state = {k: v.detach().contiguous() for k, v in clip.state_dict().items()}
    meta = {"model": cfg.model, "steps": str(cfg.steps), "source": cfg.source,
            "final_loss": f"{np.mean(losses[-20:]):.4f}"}
    out = Path(out)
    atomic_write(out, lambda tmp: save_file(state, tmp, metadata=meta))
    info = {"path": str(out), "config": asdict(cfg), "first_loss": losses[0],
            "final_loss": float(np.mean(losses[-20:])),
            "final_aux_loss": float(np.mean(aux_losses[-20:])) if aux_losses else None,
            "loss_curve": [round(float(np.mean(losses[i:i + 50])), 3)
                           for i in range(0, len(losses), 50)],
            "pairs_seen": cfg.steps * cfg.batch_size,
            "distinct_pairs": cfg.steps * cfg.batch_size if cfg.source == "stream"
            else len(load_image_captions(root)[1]),
            "train_wall_s": train_phase.wall_s, "train_cpu_s": train_phase.cpu_s,
            "eval_wall_s": eval_phase.wall_s, "heldout": heldout}
    write_json_atomic(report_path(out), info, indent=2)
    return info


def report_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


@torch.no_grad()
def evaluate_toy_clip(backbone, root: str | Path, n: int = 1000, batch: int = 250) -> dict:
    """Zero-shot metrics on the first `n` held-out pairs of `root/pretrain` (never trained on).

    - `t2i` / `i2t`: R@1, R@5, MdR of caption -> image (image -> caption) among the n pairs;
      `oracle_t2i_R@1`: what a perfect attribute reader scores there (captions fit several images);
    - `anchor_map_image`: how well `"The content of <label>"` prompts rank the anchors true of each
      image (`calm.data.synthetic.anchor_truth`; a motion is only partly visible in one frame);
      `anchor_map_caption`: the same for the anchors each caption names; each with its chance level.
    """
    images, captions = load_image_captions(root)
    meta = load_pair_metadata(root)
    n = min(n, len(captions))
    images, captions, meta = images[:n], captions[:n], meta[:n]
    was_training = backbone.training
    backbone.eval()
    pre = backbone.preprocess
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
    img = torch.cat([backbone.clip.encode_image(to_model_input(pixels[i:i + batch], pre.image_size,
                                                                pre.mean, pre.std))
                     for i in range(0, n, batch)])
    txt = torch.cat([backbone.encode_text(backbone.tokenize(captions[i:i + batch]))
                     for i in range(0, n, batch)])
    prompts = [AnchorConfig().template.format(label) for label in ANCHOR_LABELS]
    anchors = F.normalize(backbone.encode_text(backbone.tokenize(prompts)), dim=-1)
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    sim = (txt @ img.t()).numpy()
    t2v = np.arange(n)
    t2i = summarize_ranks(ranks_t2v(sim, t2v, ties="mean"))
    i2t = summarize_ranks(ranks_v2t(sim, t2v, ties="mean"))
    oracle = oracle_recall_at_1([m["mention"] for m in meta], list(t2v),
                                [m["attributes"] for m in meta])
    image_truth = np.zeros((n, len(ANCHOR_LABELS)), bool)
    caption_truth = np.zeros_like(image_truth)
    for i, m in enumerate(meta):
        image_truth[i, sorted(clip_anchors(m["attributes"]))] = True
        caption_truth[i, sorted(caption_anchors(m["mention"]))] = True
    backbone.train(was_training)
    return {
        "pairs": n,
        "t2i": {k: round(t2i[k], 2) for k in ("R@1", "R@5", "MdR")},
        "i2t": {k: round(i2t[k], 2) for k in ("R@1", "R@5", "MdR")},
        "oracle_t2i_R@1": oracle["oracle_t2v_r1"],
        "chance_R@1": round(100.0 / n, 2),
        "anchor_map_image": mean_average_precision((img @ anchors.t()).numpy(), image_truth),
        "anchor_map_caption": mean_average_precision((txt @ anchors.t()).numpy(), caption_truth),
        "ties": "mean",
    }


def pretrained_clip(root: str | Path, cfg: PretrainConfig, cache_dir: str | Path | None = None,
                    progress=True) -> tuple[Path, dict]:
    """The cached toy CLIP for these settings (and, for `split`, this data), trained first if it
    is not there yet. The info carries the training report, cached or not."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / f"toyclip-{cfg.model}-{cache_key(root, cfg)}.safetensors"
    if path.is_file():
        report = report_path(path)
        info = json.loads(report.read_text()) if report.is_file() else {"path": str(path)}
        return path, {**info, "cached": True}
    info = pretrain_clip(root, path, cfg, progress)
    info["cached"] = False
    return path, info
