"""Every knob of the synthetic benchmark in one place: difficulty, domain styles and scales.

Calibration (how hard retrieval is, how much an out-of-domain test costs) is done by editing the
numbers here, or by passing a changed `Difficulty` to `generate`. Nothing else in the package holds
a tuning constant that changes what the benchmark measures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class Difficulty:
    """How ambiguous captions are and how cluttered clips look (shared by all domains).

    mention: the probability that a caption names each attribute of the main object (size is named
        only when it is not medium; `second` is the second object, when there is one). Lower values
        mean vaguer captions: more clips fit each caption, so the best possible R@1 drops.
    coverage: multiplies every mention probability (one dial for caption vagueness).
    second_object_prob: how often a clip holds a second object, a distractor captions often omit.
    clutter: at most this many small unnamed blobs in the background (never in any caption).
    noise_scale: multiplies each domain's pixel noise.
    vocab_shift: 0 = all domains word captions with the shared canonical words; 1 = each domain uses
        only its own synonyms and phrasings. Out-of-domain difficulty grows with it.
    motion_scale: multiplies how far objects travel / turn / resize in a clip.
    trail: motion echoes drawn behind a moving object (count, opacity of the first): the motion blur
        that lets a single frame, and an order-free frame pool, show which way something moves.
    trail_spacing: clip time (0..1) between a moving object's echoes; None: 0.6 of the interval
        between the video's frames (a shutter open 60% of the time), which at 16 frames leaves the
        echoes about a pixel behind the object, too close to show the direction.
    tilt: how far (radians, either way) an object's resting orientation strays from upright; pi =
        any orientation. Shape is the hardest concept to learn from pixels and arbitrary rotation
        makes it far harder: a small CNN told the shape directly reached 67% accuracy in 200 steps
        on upright objects and 20% on freely rotated ones (docs/results.md, Calibration).
    object_radius: a medium object's radius as a fraction of the frame width (before the domain's
        scale). At 0.10 an object covers about 10% of a 64-pixel frame and the toy CLIP learns shape
        slowly; at 0.15 (about 20%) it learns it in the same CPU time (docs/results.md, Calibration).
    """

    mention: dict = field(
        default_factory=lambda: {
            "shape": 0.7,
            "colour": 0.6,
            "size": 0.35,
            "motion": 0.75,
            "background": 0.3,
            "second": 0.35,
        }
    )
    coverage: float = 1.0
    second_object_prob: float = 0.5
    clutter: int = 3
    noise_scale: float = 1.0
    vocab_shift: float = 0.75
    motion_scale: float = 1.0
    trail: tuple = (2, 0.35)
    trail_spacing: float | None = 0.08
    tilt: float = 0.2
    object_radius: float = 0.15

    def mention_prob(self, attribute: str, domain_coverage: float = 1.0) -> float:
        return min(1.0, self.mention[attribute] * self.coverage * domain_coverage)

    def to_json(self) -> dict:
        out = asdict(self)
        out["trail"] = list(self.trail)
        return out


@dataclass(frozen=True)
class DomainStyle:
    """How one domain looks (render) and how its captions are written and stored (writer).

    The three domains share the world's concepts; they differ in appearance, wording and priors,
    which is what makes training on one and testing on another cost accuracy.
    """

    name: str
    loader: str  # the calm.data loader that reads this domain's files
    benchmark: str  # the real benchmark whose format it is written in
    containers: tuple  # (extension, weight): DiDeMo's files mix containers
    codec: str
    # appearance
    texture: str  # gradient | pattern | grain (background texture family)
    saturation: float
    brightness: float
    cast: tuple  # RGB multipliers (colour cast of the camera / film)
    object_scale: float
    shading: str  # flat | shaded | soft
    edge_softness: float  # anti-aliasing width in pixels (larger = blurrier edges)
    speed: float  # multiplies how far things move within a clip
    noise_std: float  # Gaussian pixel noise (0..1 scale), times Difficulty.noise_scale
    camera_jitter: float  # pixels of per-frame camera shake (fraction of 64 px frames)
    letterbox: float  # fraction of the height blacked out at top and at bottom
    vignette: float
    flicker: float  # per-frame brightness wobble
    clutter_factor: float
    # world priors (shared concepts, shifted frequencies)
    background_prior: dict
    second_object_factor: float
    # captions
    caption_coverage: float  # multiplies Difficulty mention probabilities for this domain


DOMAINS: dict[str, DomainStyle] = {
    "msrvtt": DomainStyle(
        name="msrvtt",
        loader="msrvtt",
        benchmark="MSR-VTT",
        containers=(("mp4", 1.0),),
        codec="libx264",
        texture="gradient",
        saturation=1.0,
        brightness=1.0,
        cast=(1.0, 1.0, 1.0),
        object_scale=1.0,
        shading="flat",
        edge_softness=0.7,
        speed=1.0,
        noise_std=0.015,
        camera_jitter=0.0,
        letterbox=0.0,
        vignette=0.0,
        flicker=0.0,
        clutter_factor=1.0,
        background_prior={"sky": 1, "grass": 1, "sand": 1, "night": 1},
        second_object_factor=1.0,
        caption_coverage=1.0,
    ),
    "didemo": DomainStyle(
        name="didemo",
        loader="didemo",
        benchmark="DiDeMo",
        containers=(("mp4", 0.6), ("mov", 0.25), ("m4v", 0.15)),
        codec="libx264",
        texture="pattern",
        saturation=1.15,
        brightness=1.05,
        cast=(1.08, 1.0, 0.86),
        object_scale=1.3,
        shading="shaded",
        edge_softness=0.9,
        speed=0.7,
        noise_std=0.03,
        camera_jitter=1.0,
        letterbox=0.0,
        vignette=0.0,
        flicker=0.0,
        clutter_factor=1.5,
        background_prior={"sky": 2, "grass": 3, "sand": 2, "night": 1},
        second_object_factor=0.8,
        caption_coverage=0.5,
    ),
    "lsmdc": DomainStyle(
        name="lsmdc",
        loader="lsmdc",
        benchmark="LSMDC",
        containers=(("avi", 1.0),),
        codec="mpeg4",
        texture="grain",
        saturation=0.7,
        brightness=0.8,
        cast=(0.92, 0.97, 1.1),
        object_scale=0.85,
        shading="soft",
        edge_softness=1.3,
        speed=1.35,
        noise_std=0.05,
        camera_jitter=0.0,
        letterbox=0.125,
        vignette=0.5,
        flicker=0.04,
        clutter_factor=0.7,
        background_prior={"sky": 1, "grass": 1, "sand": 1, "night": 3},
        second_object_factor=1.2,
        caption_coverage=0.85,
    ),
}


@dataclass(frozen=True)
class Scale:
    """Sizes: clips per split and domain, frame size, frames and frame rate per domain."""

    name: str
    size: int  # frames are size x size pixels (even, for yuv420p)
    train: int
    val: int  # MSR-VTT has no val file: its val videos join the 9k list (carve them out)
    test: int
    frames: dict  # domain -> (number of frames, frames per second)
    msrvtt_captions: int  # captions per MSR-VTT-style video (the real one has 20)
    didemo_sentences: tuple  # (min, max) sentences per DiDeMo paragraph
    lsmdc_repeat_prob: float  # chance a training clip gets a second line (ids repeat in LSMDC)
    pretrain: int  # image-caption pairs in the pretraining split


SCALES: dict[str, Scale] = {
    "tiny": Scale(
        "tiny",
        size=32,
        train=12,
        val=4,
        test=6,
        frames={"msrvtt": (8, 4), "didemo": (10, 5), "lsmdc": (8, 4)},
        msrvtt_captions=5,
        didemo_sentences=(2, 4),
        lsmdc_repeat_prob=0.25,
        pretrain=128,
    ),
    "small": Scale(
        "small",
        size=48,
        train=60,
        val=12,
        test=30,
        frames={"msrvtt": (12, 6), "didemo": (14, 7), "lsmdc": (10, 5)},
        msrvtt_captions=6,
        didemo_sentences=(2, 4),
        lsmdc_repeat_prob=0.2,
        pretrain=1024,
    ),
    "default": Scale(
        "default",
        size=64,
        train=360,
        val=60,
        test=180,
        frames={"msrvtt": (16, 8), "didemo": (20, 10), "lsmdc": (12, 6)},
        msrvtt_captions=8,
        didemo_sentences=(2, 4),
        lsmdc_repeat_prob=0.2,
        pretrain=4096,
    ),
}
# the evidence grids' scale (issue 20): the default's training and validation clips, so a run trains
# exactly as the demo does, and 1,000 test clips per domain, enough queries for a paired difference
# of R@1 to be resolved to about a point
SCALES["large"] = replace(SCALES["default"], name="large", test=1000)

# Pretraining split: how often a caption names the motion (the frame's motion trail shows it),
# and how often it uses the neutral (anchor-like) vocabulary rather than one domain's wording.
PRETRAIN_MOTION_PROB = 0.35
PRETRAIN_NEUTRAL_PROB = 0.5
