"""The Python API: load a trained checkpoint, encode texts and video files, score, explain.

    import calm
    model = calm.load("runs/msrvtt-calm/checkpoints/best.safetensors")
    videos = model.encode_videos(["a.mp4", "b.mp4"], workers=2, progress=True)
    scores = model.score(["a dog catches a frisbee"], videos)   # [1, 2] cosine similarities
    model.encode_images(["dog.jpg"])  # [1, D]: an image as a one-frame clip, a query like a text
    model.anchors_of(videos, k=3)   # [[("playing with a dog", 0.41), ...], ...]
    model.frame_anchor_probs(videos)  # V_p of every sampled frame: which moment carries which anchor
    model.uncertainty(videos, texts=captions)  # per video, higher = less sure: 1 - top-1 probability

Videos are encoded once into `EncodedVideos`: per-frame features, the fusion head's text-free
video state (what scoring a text needs), the frame mean, and the time of every sampled frame.
Scoring a text then costs no decoding, which is what `calm index` / `calm search` build on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from calm.data.files import VideoFiles, collate_files
from calm.data.video import FrameSpec
from calm.engine.models import open_model
from calm.metrics.uncertainty import RETRIEVAL_SIGNALS, retrieval_uncertainty
from calm.model.anchor_branch import SIGNALS
from calm.model.fusion import masked_mean
from calm.model.losses import logit_scale_value
from calm.model.scoring import similarity_matrix

# What `CalmModel.uncertainty` returns by default: the signal that best told wrong top-1 answers
# from right ones on the dev split (configs/experiments/tuning.yaml, docs/results.md,
# "Uncertainty"); `calm.metrics.uncertainty.RETRIEVAL_SIGNALS` or the VAE's `SIGNALS`
UNCERTAINTY_SIGNAL = "top1_prob"


class CapabilityError(ValueError):
    """The checkpoint lacks the part a call needs (anchors, a VAE, a fusion head)."""


@dataclass
class FrameAnchors:
    """V_p of every sampled frame of each video (`CalmModel.frame_anchor_probs`)."""

    probs: torch.Tensor  # [N, T, K]; rows of padded frames (mask False) are all zero
    mask: torch.Tensor  # [N, T] bool, False marks padding of clips shorter than T frames
    times: torch.Tensor  # [N, T] seconds of each sampled frame (nan for padding)
    labels: list[str]  # the K anchors

    def top(self, video: int, k: int = 3) -> list[tuple[float, list[tuple[str, float]]]]:
        """Per real frame of one video: its time and its k most probable anchors."""
        out = []
        for t in torch.nonzero(self.mask[video]).flatten().tolist():
            top = self.probs[video, t].topk(min(k, self.probs.shape[-1]))
            out.append((float(self.times[video, t]),
                        [(self.labels[j], float(p)) for p, j in zip(top.values.tolist(),
                                                                      top.indices.tolist())]))
        return out


@dataclass
class EncodedVideos:
    """Video files encoded by one model, row i = paths[i]; `failed` lists what could not be read."""

    paths: list[str]
    frames: torch.Tensor  # [N, T, D] per-frame features
    mask: torch.Tensor  # [N, T] bool, False marks padding of clips shorter than T frames
    state: dict[str, torch.Tensor]  # the fusion head's text-free video state, [N, ...] each
    mean: torch.Tensor  # [N, D] L2-normalised frame mean: the anchor branch's input, a shortlist key
    times: torch.Tensor  # [N, T] seconds of each sampled frame (nan for padding)
    durations: torch.Tensor  # [N] seconds
    thumbnails: list[bytes | None] = field(default_factory=list)  # JPEGs when asked for
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return len(self.paths)

    @staticmethod
    def concat(parts: Sequence[EncodedVideos]) -> EncodedVideos:
        failed = [f for p in parts for f in p.failed]
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no video could be decoded: " + "; ".join(f"{p}: {r}" for p, r in failed))
        return EncodedVideos(
            paths=[x for p in parts for x in p.paths],
            frames=torch.cat([p.frames for p in parts]),
            mask=torch.cat([p.mask for p in parts]),
            state={k: torch.cat([p.state[k] for p in parts]) for k in parts[0].state},
            mean=torch.cat([p.mean for p in parts]),
            times=torch.cat([p.times for p in parts]),
            durations=torch.cat([p.durations for p in parts]),
            thumbnails=[x for p in parts for x in p.thumbnails],
            failed=failed,
        )


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class CalmModel:
    """A loaded retrieval checkpoint in evaluation mode, with batch-friendly encode/score calls.

    All calls run under `torch.no_grad()`; outputs are float32 on the CPU.
    """

    def __init__(self, model, cfg, meta: dict, checkpoint: Path, device: torch.device):
        if getattr(model, "fusion", None) is None:
            raise CapabilityError(
                f"{checkpoint}: a {cfg.task} checkpoint has no retrieval fusion head; "
                "encoding and search need a retrieval checkpoint"
            )
        self.model = model.eval()
        self.cfg = cfg
        self.meta = meta
        self.checkpoint = Path(checkpoint)
        self.device = device
        self._fingerprint: str | None = None
        pre = model.backbone.preprocess
        self.frame_spec = FrameSpec(
            num_frames=cfg.data.num_frames, image_size=pre.image_size, mean=pre.mean, std=pre.std
        )
        self.text_length = min(cfg.data.text_length, pre.context_length)

    # ---- identity -------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """sha256 of the checkpoint file: an index records it and refuses any other model."""
        if self._fingerprint is None:
            self._fingerprint = file_sha256(self.checkpoint)
        return self._fingerprint

    @property
    def fusion_name(self) -> str:
        return self.cfg.model.fusion.name

    @property
    def anchor_labels(self) -> list[str] | None:
        return self.model.anchor_labels

    @property
    def has_vae(self) -> bool:
        return self.model.has_vae

    # ---- encoders -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Sentence features [N, D] (not normalised; every score normalises)."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings; wrap a single text in a list")
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.model.backbone.embed_dim)
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.model.backbone.tokenize(texts[i : i + batch_size], self.text_length)
            out.append(self.model.encode_text(tokens.to(self.device)).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def encode_images(self, images: Sequence, batch_size: int = 64) -> torch.Tensor:
        """Image features [N, D] (paths or file bytes): each image encoded as a one-frame clip,
        preprocessed as frames are, so it can query an index as a text does."""
        from calm.data.images import read_image
        from calm.data.video import normalize_frames

        if isinstance(images, str | Path | bytes):
            raise TypeError("encode_images takes a list; wrap a single image in a list")
        images = list(images)
        size = self.frame_spec.image_size
        out = []
        for i in range(0, len(images), batch_size):
            pixels = np.stack([read_image(x, size) for x in images[i : i + batch_size]])
            frames = torch.from_numpy(pixels).permute(0, 3, 1, 2)[:, None].to(self.device)
            frames = normalize_frames(frames, self.frame_spec.mean, self.frame_spec.std)
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=self.device)
            out.append(self.model.encode_frames(frames, mask)[:, 0].float().cpu())
        if not out:
            return torch.empty(0, self.model.backbone.embed_dim)
        return torch.cat(out)

    def iter_encode_videos(
        self, paths: Sequence, workers: int = 0, progress: bool = False, batch_size: int = 8,
        thumbnail_size: int | None = None,
    ) -> Iterator[EncodedVideos]:
        """`encode_videos` batch by batch, so a caller can store a large collection as it goes.

        `workers` processes decode files in parallel (0: decode in this process). A file that
        cannot be decoded is reported in the batch's `failed` list and never stops the run.
        """
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        dataset = VideoFiles(paths, self.frame_spec, thumbnail_size)
        loader = DataLoader(
            dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_files,
            persistent_workers=False,
        )
        bar = tqdm(total=len(dataset), desc="encode videos", unit="video", disable=not progress)
        with bar:
            for batch in loader:
                bar.update(len(batch["paths"]) + len(batch["failed"]))
                yield self._encode_batch(batch)

    @torch.no_grad()
    def _encode_batch(self, batch: dict) -> EncodedVideos:
        if not batch["paths"]:
            dim = self.model.backbone.embed_dim
            t = self.frame_spec.num_frames
            empty = torch.empty(0, t, dim)
            return EncodedVideos(
                [], empty, torch.empty(0, t, dtype=torch.bool), {}, torch.empty(0, dim),
                torch.empty(0, t), torch.empty(0), [], batch["failed"],
            )
        mask = batch["mask"].to(self.device)
        frames = self.model.encode_frames(batch["frames"].to(self.device), mask)
        state = self.model.fusion.video_state(frames, mask)
        mean = F.normalize(masked_mean(frames, mask), dim=-1)
        return EncodedVideos(
            paths=batch["paths"],
            frames=frames.float().cpu(),
            mask=batch["mask"],
            state={k: v.cpu() if v.dtype == torch.bool else v.float().cpu() for k, v in state.items()},
            mean=mean.float().cpu(),
            times=batch["times"],
            durations=batch["durations"],
            thumbnails=batch["thumbnails"],
            failed=batch["failed"],
        )

    def encode_videos(
        self, paths: Sequence, workers: int = 0, progress: bool = False, batch_size: int = 8,
        thumbnail_size: int | None = None,
    ) -> EncodedVideos:
        """Decodes and encodes video files; failed files are listed in the result's `failed`.

        Raises ValueError when not a single file could be decoded (the message lists why).
        """
        if isinstance(paths, str | Path):
            raise TypeError("encode_videos takes a list of paths; wrap a single path in a list")
        parts = list(self.iter_encode_videos(paths, workers, progress, batch_size, thumbnail_size))
        return EncodedVideos.concat(parts)

    # ---- scores and explanations ----------------------------------------------------------------
    def _videos(self, videos) -> EncodedVideos:
        return videos if isinstance(videos, EncodedVideos) else self.encode_videos(list(videos))

    def _texts(self, texts) -> torch.Tensor:
        return texts if isinstance(texts, torch.Tensor) else self.encode_texts(list(texts))

    @torch.no_grad()
    def score(self, texts, videos, chunk: int = 256) -> torch.Tensor:
        """Scores [N_texts, N_videos]: the fusion head's cosine similarity, as `calm eval` ranks.

        `texts`: strings or `encode_texts` output; `videos`: paths or `encode_videos` output.
        With score mode `anchor_agreement` in the checkpoint's config, the VAE term is added as in
        evaluation. Each score depends only on its own text and video.
        """
        text = self._texts(texts).to(self.device)
        enc = self._videos(videos)
        with self.model.evaluation_anchors():
            return similarity_matrix(
                self.model, text, enc.frames.to(self.device), enc.mask.to(self.device),
                self.cfg.model.score,
            )

    def _require_anchors(self) -> None:
        if not self.model.has_anchors:
            raise CapabilityError(
                f"{self.checkpoint}: this model has no class anchors (alignment "
                f"'{self.cfg.model.alignment.name}'); anchors need a CALM checkpoint trained "
                "with an anchor alignment (kl, ce, mse or vae)"
            )

    @torch.no_grad()
    def anchor_probs(self, videos) -> torch.Tensor:
        """V_p [N_videos, K]: how each video spreads over the class anchors (as the checkpoint
        forms it: frame mean, fused video, or the mixture of its frames)."""
        self._require_anchors()
        enc = self._videos(videos)
        with self.model.evaluation_anchors():
            return self.model.video_anchor_probs(enc.frames, enc.mask, self.device)

    @torch.no_grad()
    def frame_anchor_probs(self, videos) -> FrameAnchors:
        """V_p of every sampled frame, [N_videos, T, K], with the frame mask and times: which
        moments of a video carry which anchor (search can explain a hit with it). Any anchor
        checkpoint has it; one trained with `model.anchors.video_source: frames` forms its
        video-level V_p from exactly these."""
        self._require_anchors()
        enc = self._videos(videos)
        with self.model.evaluation_anchors():
            probs = self.model.frame_anchor_probs(enc.frames, enc.mask, self.device)
        return FrameAnchors(probs, enc.mask.bool(), enc.times, self.anchor_labels)

    def anchors_of(self, videos, k: int = 5) -> list[list[tuple[str, float]]]:
        """The k most probable anchors of each video with their probabilities under V_p."""
        probs = self.anchor_probs(videos)
        labels = self.anchor_labels
        top = probs.topk(min(k, probs.shape[1]), dim=1)
        return [
            [(labels[j], float(p)) for p, j in zip(ps.tolist(), js.tolist())]
            for ps, js in zip(top.values, top.indices)
        ]

    @property
    def uncertainty_signal(self) -> str:
        """The name of the signal `uncertainty` returns by default (`UNCERTAINTY_SIGNAL`)."""
        return UNCERTAINTY_SIGNAL

    @torch.no_grad()
    def uncertainty(self, videos, signal: str | None = None, texts=None) -> torch.Tensor:
        """How unsure the model is about each video as a query [N], higher = less sure.

        By default (`uncertainty_signal`, `top1_prob`): 1 minus the softmax probability, at the
        model's own logit scale, of the video's best match among `texts`, the captions it is
        matched against. It is the signal that told wrong top-1 answers from right ones best on
        the synthetic benchmark's dev split, for CALM and the baseline alike, ahead of the score
        margin and of every signal of the VAE, none of which did better than chance there
        (docs/results.md, "Uncertainty"). It needs the candidates, not a VAE: it is a property
        of this retrieval, and a video's value depends on the texts it is compared with.

        `signal` picks another by name: `margin` (minus the margin between the two best texts;
        needs `texts` too), or a VAE signal of the video alone (CALM checkpoints):
        `sigma` (the paper's mean posterior sigma), `sigma_active`, `log_sigma_sum`,
        `s_hat_entropy`, `mutual_info`."""
        name = signal or UNCERTAINTY_SIGNAL
        if name in RETRIEVAL_SIGNALS:
            if texts is None:
                raise ValueError(
                    f"uncertainty signal {name!r} is a property of a retrieval: pass texts=[...] "
                    "(the captions each video is matched against), or signal='mutual_info' etc. "
                    "for a signal of the video alone (CALM checkpoints)")
            scores = self.score(texts, videos).t()  # a row per video, its candidates the texts
            scale = logit_scale_value(self.model.logit_scale)
            return torch.from_numpy(retrieval_uncertainty(scores, name, scale)).float()
        if name not in SIGNALS:
            raise ValueError(f"unknown uncertainty signal {name!r}; one of "
                             f"{[*RETRIEVAL_SIGNALS, *SIGNALS]}")
        if not self.model.has_vae:
            raise CapabilityError(
                f"{self.checkpoint}: this model has no VAE (alignment "
                f"'{self.cfg.model.alignment.name}'); the signal {name!r} needs a CALM "
                "checkpoint trained with the 'vae' alignment (or use signal='top1_prob' with "
                "texts=...)"
            )
        enc = self._videos(videos)
        with self.model.evaluation_anchors():
            return self.model.video_uncertainty(enc.frames, enc.mask, self.device, signal=name)


def load(checkpoint, device: str | torch.device = "cpu", name: str = "ViT-B-32") -> CalmModel:
    """Loads a calm retrieval checkpoint (`.safetensors` written by `calm train`) for inference,
    or plain CLIP weights (OpenAI `.pt`, open_clip file or folder, Hugging Face folder) of the
    open_clip architecture `name` as a zero-shot model: meanP fusion, Charades anchors, no VAE."""
    path = Path(checkpoint)
    device = torch.device(device)
    model, cfg, meta = open_model(path, device, name=name)
    return CalmModel(model, cfg, meta, path, device)
