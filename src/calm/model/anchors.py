"""Class anchors: label prompts encoded by the CLIP text encoder plus a learnable offset e_k.

P = TextEncoder(template.format(label_k)) + e_k, K x D. The refresh policy decides when the text
encoder runs on the prompts: every step (gradient reaches the text encoder) or once per epoch
(no gradient, tracks a fine-tuned encoder). What the model does with P is
`calm.model.anchor_branch`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from calm.config.schema import MAX_ANCHOR_SCALE, AnchorConfig
from calm.registry import Registry

LABEL_SETS: Registry[list[str]] = Registry("anchor label set")
_CHARADES_LINE = re.compile(r"^c(\d{3})\s+(.+)$")


def _package_labels(name: str) -> str:
    return resources.files("calm.model").joinpath("labels").joinpath(name).read_text(encoding="utf-8")


def parse_charades(text: str) -> list[tuple[str, str]]:
    """`cNNN label` lines -> [(id, label)], checking ids are unique."""
    out, seen = [], set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _CHARADES_LINE.match(line.strip())
        if not match:
            raise ValueError(f"charades labels line {n}: expected 'cNNN label', got {line!r}")
        cid = f"c{match.group(1)}"
        if cid in seen:
            raise ValueError(f"charades labels line {n}: duplicate id {cid}")
        seen.add(cid)
        out.append((cid, match.group(2).strip()))
    return out


@LABEL_SETS.register("charades")
def charades_labels() -> list[str]:
    """The 157 Charades action classes, the paper's anchor set."""
    return [label for _, label in parse_charades(_package_labels("charades.txt"))]


@LABEL_SETS.register("coco")
def coco_labels() -> list[str]:
    """The 91 COCO object categories of the COCO paper (the paper's anchor ablation)."""
    return read_label_file_text(_package_labels("coco.txt"), "coco.txt")


# the 11 of the 91 categories that COCO 2017's detection annotations never use
COCO_UNANNOTATED = ("street sign", "hat", "shoe", "eye glasses", "plate", "mirror", "window",
                    "desk", "door", "blender", "hair brush")


@LABEL_SETS.register("coco80")
def coco80_labels() -> list[str]:
    """The 80 categories COCO 2017 detection annotates: `coco` less `COCO_UNANNOTATED`."""
    return [label for label in coco_labels() if label not in COCO_UNANNOTATED]


@LABEL_SETS.register("imagenet1k")
def imagenet_labels() -> list[str]:
    """ImageNet-1k's 1,000 class names, as open_clip's zero-shot classifier words them (the
    larger vocabulary the paper names as an open question); read from the installed open_clip,
    so calm carries no second copy. Two names occur twice there (two WordNet senses each); the
    second occurrence carries its class index, so every anchor is its own label."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    seen: set[str] = set()
    labels = []
    for index, name in enumerate(IMAGENET_CLASSNAMES):
        labels.append(f"{name} (class {index})" if name in seen else name)
        seen.add(name)
    return check_label_list(labels)


def read_label_file_text(text: str, source: str) -> list[str]:
    labels = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not labels:
        raise ValueError(f"anchor label file {source} holds no labels")
    if any(_CHARADES_LINE.match(label) for label in labels):
        labels = [label for _, label in parse_charades(text)]
    duplicates = {label for label in labels if labels.count(label) > 1}
    if duplicates:
        raise ValueError(f"anchor label file {source}: duplicate labels {sorted(duplicates)[:5]}")
    return labels


def load_labels(spec: str | list[str]) -> list[str]:
    """A registered label-set name, a path to a text file with one label per line, or the list
    of labels itself (what calm checkpoints store, so they need no label file)."""
    if isinstance(spec, list | tuple):
        return check_label_list(spec)
    if spec in LABEL_SETS:
        return LABEL_SETS.build(spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(
            f"anchor labels {spec!r} is neither a known set {LABEL_SETS.names()} nor an existing file"
        )
    return read_label_file_text(path.read_text(encoding="utf-8"), str(path))


def check_label_list(labels: list[str] | tuple[str, ...]) -> list[str]:
    """A label list given inline: non-empty, text only, no blank or repeated labels."""
    if not labels:
        raise ValueError("anchor labels: the list is empty")
    bad = [label for label in labels if not isinstance(label, str) or not label.strip()]
    if bad:
        raise ValueError(f"anchor labels: every label must be non-empty text, got {bad[:5]}")
    labels = [label.strip() for label in labels]
    duplicates = {label for label in labels if labels.count(label) > 1}
    if duplicates:
        raise ValueError(f"anchor labels: duplicate labels {sorted(duplicates)[:5]}")
    return labels


class AnchorBank(nn.Module):
    """The anchor matrix P, its softmax scales, and the running mean of S_p over training pairs.

    Refresh policies: `step` re-encodes the prompts with gradient at every training step (all K,
    or a rotating window of `step_subset` of them, the rest from a cache the window keeps
    fresh); `epoch` encodes without gradient at each epoch start and caches. Evaluation always
    scores with anchors from the current text encoder (`fresh_encodings`). (A third policy,
    `once`, encoded the prompts once for the whole run; no measurement used it and it evaluated
    with other anchors than it trained with, so it was removed.)
    """

    def __init__(self, labels: list[str], tokens: torch.Tensor, dim: int, cfg: AnchorConfig):
        super().__init__()
        self.labels = list(labels)
        self.refresh = cfg.refresh
        self.video_source = cfg.video_source
        self.step_subset = cfg.step_subset if 0 < cfg.step_subset < len(labels) else 0
        self.register_buffer("tokens", tokens, persistent=False)
        self.offset = nn.Parameter(torch.zeros(len(labels), dim), requires_grad=cfg.learnable)
        self.log_scale = nn.Parameter(
            torch.tensor(float(cfg.scale)).log(), requires_grad=cfg.learn_scale
        )
        self.log_text_scale = None
        if cfg.text_scale is not None:
            self.log_text_scale = nn.Parameter(
                torch.tensor(float(cfg.text_scale)).log(), requires_grad=cfg.learn_scale
            )
        # video_source: frames, frame_pooling: attention: the query that weighs each frame's V_p
        # in the video's mixture (zero: equal weights, the mean, at the start)
        self.frame_query = None
        if cfg.video_source == "frames" and cfg.frame_pooling == "attention":
            self.frame_query = nn.Parameter(torch.zeros(dim))
        # where the rotating `step_subset` window starts next; saved, so a resumed run continues it
        self.register_buffer("cursor", torch.zeros((), dtype=torch.long))
        # sum and count of S_p over the training pairs of the current epoch and of the last
        # complete one: the marginal that a decoder ignoring its input would predict (the
        # `rec_ce_marginal` diagnostic), over at least one whole epoch wherever training stops
        self.register_buffer("text_marginal_sum", torch.zeros(len(labels), dtype=torch.float64))
        self.register_buffer("text_marginal_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("text_marginal_last_sum",
                             torch.zeros(len(labels), dtype=torch.float64))
        self.register_buffer("text_marginal_last_count", torch.zeros((), dtype=torch.float64))
        self._cache: torch.Tensor | None = None

    @property
    def num_anchors(self) -> int:
        return len(self.labels)

    def no_weight_decay(self) -> tuple[str, ...]:
        """e_k is an additive offset on the prompt encodings, not a weight matrix; the scales
        are scalars."""
        return ("offset", "frame_query")

    @property
    def scale(self) -> torch.Tensor:
        """Softmax scale s of V_p. Not clamped here: a clamp in the forward pass has zero
        gradient at its bound, and the paper's s = 100 sits exactly there, so a learned scale
        could never move (issue 19). `clamp_scales_` keeps a learned one within [1, 100] after
        each optimizer step instead, as CLIP does with its logit scale."""
        return self.log_scale.exp()

    @property
    def text_scale(self) -> torch.Tensor:
        """Softmax scale of S_p: its own when configured, else the same s as V_p."""
        if self.log_text_scale is None:
            return self.scale
        return self.log_text_scale.exp()

    @torch.no_grad()
    def clamp_scales_(self) -> None:
        """After an optimizer step: a learned scale back within [1, MAX_ANCHOR_SCALE] (a fixed
        one is left as configured)."""
        for log_scale in (self.log_scale, self.log_text_scale):
            if log_scale is not None and log_scale.requires_grad:
                log_scale.clamp_(0.0, math.log(MAX_ANCHOR_SCALE))

    # ---- the cache -------------------------------------------------------------------------------
    def invalidate(self) -> None:
        """Drops the cached encodings; the `epoch` policy calls this at each epoch start."""
        self._cache = None

    def start_epoch(self) -> None:
        """Epoch start: the `epoch` policy re-encodes; the S_p marginal of the epoch that ended
        becomes the last complete one and the current one restarts."""
        if self.refresh == "epoch":
            self.invalidate()
        if float(self.text_marginal_count) > 0:
            self.text_marginal_last_sum.copy_(self.text_marginal_sum)
            self.text_marginal_last_count.copy_(self.text_marginal_count)
        self.text_marginal_sum.zero_()
        self.text_marginal_count.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the last-epoch marginal existed load with it empty
        for name in ("text_marginal_last_sum", "text_marginal_last_count"):
            state_dict.setdefault(prefix + name, torch.zeros_like(getattr(self, name)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @contextmanager
    def fresh_encodings(self):
        """Anchors from the current text encoder inside the block (evaluation); the training
        cache is put back afterwards, so evaluating never changes what training sees."""
        saved = self._cache
        self._cache = None
        try:
            yield
        finally:
            self._cache = saved

    def cached_encodings(self) -> torch.Tensor | None:
        """The cached anchor encodings (without e_k), saved with a resume point so a resumed
        run scores with exactly the anchors the interrupted one had."""
        return None if self._cache is None else self._cache.detach().cpu()

    def restore_encodings(self, cache: torch.Tensor | None) -> None:
        self._cache = None if cache is None else cache.to(self.offset.device)

    # ---- the S_p marginal ------------------------------------------------------------------------
    @torch.no_grad()
    def observe_text(self, text_probs: torch.Tensor) -> None:
        """Adds a training batch's S_p rows to the running marginal."""
        self.text_marginal_sum += text_probs.detach().double().sum(dim=0)
        self.text_marginal_count += text_probs.shape[0]

    def text_marginal(self) -> torch.Tensor | None:
        """Mean S_p over the training pairs of the last complete epoch and of the current one,
        or None before any. Restarting at every epoch alone left a mid-epoch evaluation (the
        last step of a run) with a few batches: a noisy marginal that looked worse than ln K."""
        count = float(self.text_marginal_count + self.text_marginal_last_count)
        if count == 0:
            return None
        return ((self.text_marginal_sum + self.text_marginal_last_sum) / count).float()

    # ---- P ---------------------------------------------------------------------------------------
    def _encode_all(self, encode_text) -> torch.Tensor:
        with torch.no_grad():
            return encode_text(self.tokens).detach().float()

    def encodes_with_grad(self) -> bool:
        """True when this call re-encodes prompts with gradient: `refresh: step` in training."""
        return self.refresh == "step" and self.training and torch.is_grad_enabled()

    def _window(self) -> torch.Tensor:
        """The rotating `step_subset` window of anchor indices this step re-encodes."""
        k = self.num_anchors
        window = (self.cursor + torch.arange(self.step_subset, device=self.cursor.device)) % k
        return window.to(self.tokens.device)

    def step_prompt_tokens(self) -> torch.Tensor:
        """The prompt tokens a `refresh: step` training step encodes with gradient: all K, or
        the current window of `step_subset`."""
        return self.tokens[self._window()] if self.step_subset else self.tokens

    def with_step_encodings(self, fresh: torch.Tensor, encode_text=None) -> torch.Tensor:
        """P [K, D] from `fresh`, the encodings (with gradient) of `step_prompt_tokens()`. With a
        window, the other anchors come from the cache, which the window keeps current; the
        window then moves on. `encode_text` fills an empty cache (the first step)."""
        if not self.step_subset:
            return fresh.to(self.offset.dtype) + self.offset
        if self._cache is None or self._cache.device != self.offset.device:
            if encode_text is None:
                raise ValueError("a windowed anchor refresh needs encode_text to fill its cache")
            self._cache = self._encode_all(encode_text)
        window = self._window()
        self._cache = self._cache.index_copy(0, window, fresh.detach().float())
        self.cursor.copy_((self.cursor + self.step_subset) % self.num_anchors)
        base = self._cache.to(fresh.dtype).index_put((window,), fresh)
        return base.to(self.offset.dtype) + self.offset

    def forward(self, encode_text: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Anchor matrix P [K, D]."""
        if self.encodes_with_grad():
            return self.with_step_encodings(encode_text(self.step_prompt_tokens()), encode_text)
        if self.refresh == "step" and self._cache is None:
            base = encode_text(self.tokens)  # evaluation of a per-step model: always current
        else:
            if self._cache is None or self._cache.device != self.offset.device:
                self._cache = self._encode_all(encode_text)
            base = self._cache
        return base.to(self.offset.dtype) + self.offset


def build_anchors(cfg: AnchorConfig, tokenize: Callable[[list[str]], torch.Tensor], dim: int):
    labels = load_labels(cfg.labels)
    prompts = [cfg.template.format(label) for label in labels]
    return AnchorBank(labels, tokenize(prompts), dim, cfg)
