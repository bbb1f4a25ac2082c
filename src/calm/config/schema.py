"""The typed configuration of a calm experiment.

Defaults follow ../docs/method.md: ViT-B/32, xpool fusion, Charades anchors with the prompt
"The content of {}", a VAE with d = 256 and alpha = 0.1. Each open question of the paper is a
field here, so CALM, its ablations and its baselines run from the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from calm.config.errors import ConfigError

MAX_ANCHOR_SCALE = 100.0  # CLIP's logit-scale ceiling; a learned anchor scale is clamped to it


def _choice(key: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}: must be {bound}, got {value!r}")


@dataclass
class BackboneConfig:
    """The CLIP model: an open_clip name, optionally with local weights (never downloaded)."""

    name: str = "ViT-B-32"
    checkpoint: str | None = None  # a local weights file or folder
    # auto | openai | open_clip | hf (auto: TorchScript archive = openai, a folder with a
    # transformers config.json = hf, anything else = open_clip)
    checkpoint_format: str = "auto"
    quick_gelu: bool | None = None  # None: True for OpenAI weights, else the named config's choice
    freeze: str = "none"  # none | all | vision | text
    grad_checkpointing: bool = False
    # An explicit open_clip config ({"model_cfg": ..., "preprocess_cfg": ...}) that replaces
    # `name`; calm fills it in checkpoints of a backbone read from a Hugging Face folder.
    architecture: dict | None = None

    def __post_init__(self):
        _choice("checkpoint_format", self.checkpoint_format, ("auto", "openai", "open_clip", "hf"))
        if self.architecture is not None and "model_cfg" not in self.architecture:
            raise ConfigError("architecture: expected a mapping with a 'model_cfg' entry")
        _choice("freeze", self.freeze, ("none", "all", "vision", "text"))


@dataclass
class FusionConfig:
    """Temporal fusion of frame features into the retrieval embedding."""

    name: str = "xpool"  # meanP | seqTransf | xpool
    layers: int = 4  # seqTransf depth (CLIP4Clip uses 4)
    heads: int = 1  # attention heads (xpool: 1 as in X-Pool; seqTransf: width // 64)
    dropout: float = 0.1
    max_frames: int = 64  # seqTransf frame position embeddings

    def __post_init__(self):
        _positive("layers", self.layers)
        _positive("heads", self.heads)
        _positive("max_frames", self.max_frames)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout!r}")


@dataclass
class AnchorConfig:
    """Class anchors: label set, prompt, learnable offsets, refresh policy and softmax scale."""

    # a registered set name, a path to a text file (one label a line), or the list of labels
    # itself (calm checkpoints store the list, so they never depend on a label file)
    labels: str | list[str] = "charades"
    template: str = "The content of {}"
    learnable: bool = True  # the per-anchor embedding e_k added to the encoder output
    # when the anchors are re-encoded by the text encoder: every step with gradient (the text
    # tower then learns from the alignment), once per epoch or once per run without gradient
    refresh: str = "epoch"  # step | epoch
    # refresh=step: re-encode this many anchors per step (a rotating window, the rest from the
    # cache the window keeps fresh); 0 = all K every step
    step_subset: int = 0
    scale: float = 100.0  # s in softmax(s * cos(., P)) for V_p (and S_p unless text_scale is set)
    text_scale: float | None = None  # a separate s for S_p (None: the same as `scale`)
    # learn the scales (clamped to [1, 100] after each optimizer step, as CLIP's logit scale)
    learn_scale: bool = False
    # what V_p is computed from: the frame mean (the paper), the fusion head's text-free video
    # embedding (then the alignment also trains the fusion head), or each sampled frame (V_p per
    # frame, T x K; the video's V_p is their mixture, pooled by `frame_pooling`)
    video_source: str = "frame_mean"  # frame_mean | fused | frames
    # video_source: frames: the mixture's weights: equal over the clip's frames (mean), or a
    # learned attention over the frame features (starts equal)
    frame_pooling: str = "mean"  # mean | attention

    def __post_init__(self):
        _choice("refresh", self.refresh, ("step", "epoch"))
        _choice("video_source", self.video_source, ("frame_mean", "fused", "frames"))
        _choice("frame_pooling", self.frame_pooling, ("mean", "attention"))
        _positive("step_subset", self.step_subset, allow_zero=True)
        _positive("scale", self.scale)
        if self.text_scale is not None:
            _positive("text_scale", self.text_scale)
        for key in ("scale", "text_scale"):
            value = getattr(self, key)
            if value is None:
                continue
            if value > MAX_ANCHOR_SCALE:  # CLIP's ceiling; the forward pass no longer clamps
                raise ConfigError(f"{key}: at most {MAX_ANCHOR_SCALE:g} (CLIP's logit-scale "
                                  f"ceiling), got {value!r}")
            if self.learn_scale and value < 1.0:
                raise ConfigError(f"{key}: a learned scale starts within [1, "
                                  f"{MAX_ANCHOR_SCALE:g}] (its clamp), got {value!r}")
        if "{}" not in self.template:
            raise ConfigError(f"template: {self.template!r} must contain '{{}}' for the label")


@dataclass
class VAEConfig:
    """The cross-modal probabilistic VAE V_p -> z -> S_p-hat."""

    latent_dim: int = 256
    # 384 keeps CALM's extras (VAE + anchor offsets) at ~0.50M for K = 157, D = 512: the paper's +0.5M.
    encoder_hidden: list[int] = field(default_factory=lambda: [384])
    decoder_hidden: list[int] = field(default_factory=lambda: [384])
    # video: the paper's q(z | V_p), pulled to N(0, I); conditional: a posterior q(z | V_p, S_p)
    # in training, matched by KL(q || p) to a learned prior p(z | V_p) that generates at test time
    posterior: str = "video"  # video | conditional
    # the VAE's input is softmax(logits of V_p / input_temperature): 1 = V_p itself, > 1 softer
    input_temperature: float = 1.0

    def __post_init__(self):
        _choice("posterior", self.posterior, ("video", "conditional"))
        _positive("input_temperature", self.input_temperature)
        _positive("latent_dim", self.latent_dim)
        for name in ("encoder_hidden", "decoder_hidden"):
            for width in getattr(self, name):
                _positive(name, width)


@dataclass
class AlignmentConfig:
    """The alignment objective between video and text anchor distributions."""

    name: str = "vae"  # none | kl | ce | mse | vae
    alpha: float = 0.1  # weight of the KL-to-prior term of the VAE
    weight: float = 1.0  # weight of the whole alignment term against the task loss
    detach_target: bool = True  # stop gradient through the text distribution S_p
    # `kl` objective: KL(S_p || V_p) (text_to_video: S_p is the target, as for `ce`) or
    # KL(V_p || S_p) (video_to_text: mode-seeking)
    kl_direction: str = "text_to_video"  # text_to_video | video_to_text
    kl_warmup_steps: int = 0  # `vae`: alpha ramps linearly from 0 over this many training steps
    free_bits: float = 0.0  # `vae`: KL below this many nats per latent dimension is not penalised

    def __post_init__(self):
        _positive("alpha", self.alpha, allow_zero=True)
        _positive("weight", self.weight, allow_zero=True)
        _choice("kl_direction", self.kl_direction, ("text_to_video", "video_to_text"))
        _positive("kl_warmup_steps", self.kl_warmup_steps, allow_zero=True)
        _positive("free_bits", self.free_bits, allow_zero=True)


@dataclass
class ScoreConfig:
    """How text-video ranking scores are formed at evaluation, and chunk sizes for memory."""

    mode: str = "base"  # base | anchor_agreement
    anchor_weight: float = 0.1
    text_chunk: int = 512
    video_chunk: int = 128

    def __post_init__(self):
        _choice("mode", self.mode, ("base", "anchor_agreement"))
        _positive("text_chunk", self.text_chunk)
        _positive("video_chunk", self.video_chunk)


@dataclass
class CaptionConfig:
    """The caption decoder (task: captioning): a transformer over CLIP BPE tokens that
    cross-attends to the per-frame features."""

    layers: int = 3
    width: int = 512
    heads: int = 8
    dropout: float = 0.1
    max_length: int = 32  # tokens generated at most, start and end tokens included
    beam_size: int = 3
    length_penalty: float = 0.0  # beam score = log p / length ** length_penalty

    def __post_init__(self):
        _positive("layers", self.layers)
        _positive("width", self.width)
        _positive("heads", self.heads)
        _positive("max_length", self.max_length)
        _positive("beam_size", self.beam_size)
        _positive("length_penalty", self.length_penalty, allow_zero=True)
        if self.width % self.heads:
            raise ConfigError(f"width: {self.width} is not divisible by heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout!r}")


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    # whether `score.mode: anchor_agreement` fits the alignment is the alignment objective's
    # capability (`uses_vae`), checked where the model is built (`calm.model.core`)


@dataclass
class DataConfig:
    """Where a benchmark lives and how its clips and captions are turned into tensors."""

    dataset: str = "msrvtt"
    annotations: str | None = None  # the benchmark's annotation folder
    videos: str | None = None  # the benchmark's video folder
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    num_frames: int = 12
    text_length: int = 32
    missing_video: str = "error"  # error | skip
    train_pairs: str = (
        "all"  # all (every caption-video pair) | one_per_video (a random caption each epoch)
    )
    augment: bool = False
    num_workers: int = 2
    options: dict = field(default_factory=dict)  # dataset-specific settings (see each loader)
    # a folder written by `calm prepare-frames --src <videos>`: clips are read from it, not decoded
    frame_cache: str | None = None

    def __post_init__(self):
        _choice("missing_video", self.missing_video, ("error", "skip"))
        _choice("train_pairs", self.train_pairs, ("all", "one_per_video"))
        _positive("num_frames", self.num_frames)
        _positive("text_length", self.text_length)
        _positive("num_workers", self.num_workers, allow_zero=True)


@dataclass
class TrainConfig:
    epochs: int = 5
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 1e-5  # new modules: fusion head, anchors, VAE
    backbone_lr: float = 1e-6  # CLIP itself
    weight_decay: float = 0.2
    # the VAE's own rate and decay (None: `lr` and `weight_decay`). A freshly initialised MLP
    # must move its logits by several units to generate a peaked S_p-hat; at the backbone-scale
    # rates it stays near uniform for thousands of steps (see docs/method.md)
    vae_lr: float | None = None
    vae_weight_decay: float | None = None
    warmup: float = 0.1  # fraction of steps
    grad_clip: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 | fp16
    seed: int = 42
    eval_every: int = 1  # epochs
    log_every: int = 10  # steps
    save_every: int = 0  # steps between resumable `last` checkpoints (0: end of epoch only)
    device: str = "auto"
    nonfinite_loss: str = "error"  # error | skip
    # two captions of one video in a batch (MSVD has ~40 per video): `negative` treats the other
    # caption's pair as a negative (plain InfoNCE), `positive` counts it as a positive
    # (multi-positive InfoNCE), `masked` leaves it out of the denominator
    same_video: str = "negative"  # negative | positive | masked

    def __post_init__(self):
        _positive("epochs", self.epochs)
        if self.max_steps is not None:
            _positive("max_steps", self.max_steps)
        _positive("batch_size", self.batch_size)
        _positive("eval_batch_size", self.eval_batch_size)
        _positive("lr", self.lr, allow_zero=True)
        _positive("backbone_lr", self.backbone_lr, allow_zero=True)
        _positive("weight_decay", self.weight_decay, allow_zero=True)
        if self.vae_lr is not None:
            _positive("vae_lr", self.vae_lr, allow_zero=True)
        if self.vae_weight_decay is not None:
            _positive("vae_weight_decay", self.vae_weight_decay, allow_zero=True)
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"warmup: must be in [0, 1), got {self.warmup!r}")
        _positive("grad_clip", self.grad_clip, allow_zero=True)
        _choice("precision", self.precision, ("fp32", "bf16", "fp16"))
        _positive("eval_every", self.eval_every)
        _positive("log_every", self.log_every)
        _choice("nonfinite_loss", self.nonfinite_loss, ("error", "skip"))
        _choice("same_video", self.same_video, ("negative", "positive", "masked"))


@dataclass
class ExperimentConfig:
    """One experiment: `calm train --config FILE` reads exactly this."""

    task: str = "retrieval"  # a registered task (calm.model.factory.MODELS): retrieval | captioning
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
