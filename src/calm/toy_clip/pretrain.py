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

How it uses the machine (`machine_plan`): training runs on CUDA when there is one; DataLoader
worker processes render the pairs, tokenize the captions and resize the frames, so the training
process only runs the model; torch's threads take the cores the workers leave. Pair i of the
stream depends only on (seed, i), so step n's batch, and with it the trained weights, is the same
for any number of workers (tested with 0 and 2).
"""

from __future__ import annotations

import contextlib
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
from calm.engine.inputs import Tokenize
from calm.engine.optim import cosine_with_warmup, decayed_names
from calm.engine.runtime import pick_device, seed_everything, torch_threads
from calm.io import atomic_write, write_json_atomic
from calm.machine import available_cores
from calm.metrics.ranking import mean_average_precision
from calm.metrics.retrieval import ranks_t2v, ranks_v2t, summarize_ranks
from calm.model.clip_weights import load_clip
from calm.model.losses import clamp_logit_scale_, symmetric_info_nce
from calm.toy_clip.token_rows import used_token_rows

SOURCES = ("stream", "split")
# Bump when the training stream's pairs or the training's arithmetic change, so cached toy CLIPs
# are not reused wrongly. 2: fused AdamW, channels-last images, preprocessing in the workers,
# the used token rows trained as a compact table (`token_rows`).
STREAM_VERSION = 2
# Settings that say how the machine is used, not what is trained: left out of the cache key.
MACHINE_FIELDS = ("workers", "device")


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
    # processes rendering stream pairs while the model trains; auto: from the cores and the
    # device (`machine_plan`); 0: render in the training process. The result does not depend on it.
    workers: int | str = "auto"
    device: str = "auto"  # auto: CUDA when there is one
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
        if self.workers != "auto" and not (isinstance(self.workers, int) and self.workers >= 0):
            raise ValueError(f"workers: {self.workers!r} is neither auto nor an integer >= 0")


def machine_plan(cfg: PretrainConfig, device: torch.device,
                 cores: int | None = None) -> tuple[int, int]:
    """(render workers, torch threads) for pretraining on `device` with `cores` CPU cores.

    Why: rendering a batch costs the CPU more than a training step of the toy CLIP does, and
    more busy threads than cores only spin. On CUDA one core feeds the GPU and every other core
    renders. On the CPU torch takes half the cores and the renderers the rest plus one: a
    renderer whose batches are queued waits without spinning, so the spare one uses a core
    whenever the model leaves it (2 cores: 1 thread, 2 workers). The thread count depends on
    the cores alone unless a chosen worker count leaves too few (float reductions depend on the
    thread count): up to the automatic count, the number of workers changes nothing.
    """
    cores = cores or available_cores()
    if cfg.source != "stream":
        return 0, cores if device.type == "cpu" else 1
    threads = 1 if device.type == "cuda" else max(1, cores // 2)
    auto = max(1, cores - 1) if device.type == "cuda" else cores - threads + 1
    workers = auto if cfg.workers == "auto" else cfg.workers
    return workers, max(1, min(threads, auto + threads - workers))


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
    Split: the split's files and the settings. Both: the training's version and the device type,
    not the worker count (it does not change the weights)."""
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
    digest.update(f"training:{STREAM_VERSION}".encode())  # the split trains the same way
    settings = {k: v for k, v in asdict(cfg).items() if k not in MACHINE_FIELDS}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(pick_device(cfg.device).type.encode())  # CUDA's floats are not the CPU's
    return digest.hexdigest()[:16]


def to_model_input(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> normalised float [N, 3, size, size] (antialiased resize if needed)."""
    x = images.float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    return (x - mean) / std


class PairBatch:
    """Collates pairs into what a training step consumes: normalised images [B, 3, s, s] (s: the
    model's input size), caption tokens [B, L] and attribute labels [B, heads].

    Why here: it runs in the worker that rendered the pairs, so the training process spends
    its core on the model alone (picklable, for workers started by spawn too). One thread, as
    in a DataLoader worker, so the images are the same bits when the training process collates.
    """

    def __init__(self, tokenize: Tokenize, size: int, mean, std):
        self.tokenize, self.size, self.mean, self.std = tokenize, size, mean, std

    def __call__(self, items) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.batch(torch.stack([image for image, _, _ in items]),
                          [text for _, text, _ in items],
                          torch.stack([labels for _, _, labels in items]))

    def batch(self, images: torch.Tensor, captions: list[str], labels: torch.Tensor):
        with torch_threads(1):
            x = to_model_input(images, self.size, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last), self.tokenize(captions), labels


def _batches(cfg: PretrainConfig, root: Path, g: torch.Generator, collate: PairBatch,
             workers: int, pin: bool = False):
    """(images, tokens, labels) per step (`PairBatch`), from the stream or the fixed split."""
    if cfg.source == "stream":
        stream = PretrainStream(cfg.steps * cfg.batch_size, seed=cfg.seed, scale=cfg.scale,
                                group=cfg.group)
        loader = DataLoader(stream, batch_size=cfg.batch_size, num_workers=workers,
                            collate_fn=collate, prefetch_factor=4 if workers else None,
                            pin_memory=pin)
        yield from loader
        return
    images, captions = load_image_captions(root)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
    labels = torch.tensor([attribute_labels(m["attributes"]) for m in load_pair_metadata(root)])
    batch = min(cfg.batch_size, len(captions))
    for _ in range(cfg.steps):
        idx = torch.randperm(len(captions), generator=g)[:batch]
        yield collate.batch(pixels[idx], [captions[i] for i in idx.tolist()], labels[idx])


@contextlib.contextmanager
def _machine(threads: int, device: torch.device):
    """torch's thread count (and cuDNN's deterministic kernels) for the length of a training."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if device.type == "cuda":  # same machine and seed, same weights: no autotuned kernels
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        with torch_threads(threads):
            yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


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
    beside them, a JSON report (losses, held-out zero-shot metrics, wall and CPU seconds, and how
    the machine was used)."""
    seed_everything(cfg.seed)
    root = Path(root)
    device = pick_device(cfg.device)
    workers, threads = machine_plan(cfg, device)
    backbone = build_backbone(cfg.model)
    clip = backbone.clip
    pre = backbone.preprocess
    heads = AttributeHeads(backbone.embed_dim) if cfg.aux_weight > 0 else None
    trained = torch.nn.ModuleDict({"clip": clip, **({"heads": heads} if heads else {})})
    trained.to(device)
    # channels-last convolutions are the fast ones on the CPU (oneDNN) and on CUDA
    clip.visual.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(cfg.seed)
    collate = PairBatch(Tokenize(backbone.tokenizer, backbone.context_length), pre.image_size,
                        pre.mean, pre.std)
    losses, aux_losses = [], []  # on the device: reading a value every step would stall CUDA
    trained.train()
    bar = tqdm(total=cfg.steps, desc=f"pretrain toy CLIP ({cfg.source}, {device.type})",
               disable=not progress, dynamic_ncols=True)
    rows_used = (used_token_rows(clip) if isinstance(getattr(clip, "token_embedding", None),
                                                     torch.nn.Embedding)
                 else contextlib.nullcontext())
    with _machine(threads, device), rows_used as token_rows, Phase() as train_phase:
        params = [(n, p) for n, p in trained.named_parameters() if p.requires_grad]
        decayed = decayed_names(trained)  # the fine-tuning optimizer's rule
        # fused: one pass over each tensor instead of a dozen per step
        optimizer = torch.optim.AdamW(
            [{"params": [p for n, p in params if n in decayed], "weight_decay": cfg.weight_decay},
             {"params": [p for n, p in params if n not in decayed], "weight_decay": 0.0}],
            lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, fused=True,
        )
        scheduler = cosine_with_warmup(optimizer, cfg.steps, cfg.warmup)
        train_threads = torch.get_num_threads()  # what the steps ran with, for the report
        for step, (images, tokens, labels) in enumerate(
                _batches(cfg, root, g, collate, workers, pin=device.type == "cuda")):
            if token_rows is not None:
                token_rows.admit(tokens)
            images = images.to(device, non_blocking=True)
            tokens, labels = tokens.to(device), labels.to(device)
            img = clip.encode_image(images)
            txt = backbone.encode_text(tokens)
            sims = F.normalize(txt, dim=-1) @ F.normalize(img, dim=-1).t()
            nce = symmetric_info_nce(sims, clip.logit_scale)
            loss = nce
            if heads is not None:
                aux = heads(img, labels)
                aux_losses.append(aux.detach())
                loss = loss + cfg.aux_weight * aux
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0, foreach=True)
            optimizer.step()
            scheduler.step()
            clamp_logit_scale_(clip.logit_scale)
            losses.append(nce.detach())
            if step % 50 == 0 or step + 1 == cfg.steps:
                bar.set_postfix(loss=f"{losses[-1].item():.3f}")
            bar.update(1)
    bar.close()
    losses = torch.stack(losses).cpu().tolist()
    aux_losses = torch.stack(aux_losses).cpu().tolist() if aux_losses else []
    with Phase() as eval_phase:
        heldout = evaluate_toy_clip(backbone, root, cfg.eval_pairs) if cfg.eval_pairs else {}
    state = {k: v.detach().cpu().contiguous() for k, v in clip.state_dict().items()}
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
            "machine": {"device": device.type, "workers": workers, "threads": train_threads,
                        "cores": available_cores()},
            "train_wall_s": train_phase.wall_s, "train_cpu_s": train_phase.cpu_s,
            "steps_per_s": round(cfg.steps / max(train_phase.wall_s, 1e-9), 2),
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
    device = next(backbone.parameters()).device
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
    img = torch.cat([backbone.clip.encode_image(to_model_input(pixels[i:i + batch], pre.image_size,
                                                                pre.mean, pre.std).to(device))
                     for i in range(0, n, batch)])
    txt = torch.cat([backbone.encode_text(backbone.tokenize(captions[i:i + batch]).to(device))
                     for i in range(0, n, batch)])
    prompts = [AnchorConfig().template.format(label) for label in ANCHOR_LABELS]
    anchors = F.normalize(backbone.encode_text(backbone.tokenize(prompts).to(device)), dim=-1)
    img, txt = F.normalize(img, dim=-1).cpu(), F.normalize(txt, dim=-1).cpu()
    anchors = anchors.cpu()
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
