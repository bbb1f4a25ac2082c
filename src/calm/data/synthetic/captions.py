"""Captions: each names only some of what a clip shows, worded in its domain's own style.

A caption is made in two steps. First `sample_mention` decides *what* it says (a random subset of
the main object's attributes, maybe the background, maybe the second object), which is recorded so
the oracle can tell which clips a caption fits. Then a domain's realiser decides *how* it is said:
MSR-VTT-style lowercase one-liners, DiDeMo-style paragraphs of short sentences that refer back
("It bounces."), LSMDC-style movie script lines with "SOMEONE". The domains share the concepts and
part of the words (`Difficulty.vocab_shift` sets how much), so out-of-domain retrieval costs
accuracy without becoming impossible.

`pretrain_caption` describes a single frame for the image-caption pretraining split, mixing the
domains' words with a neutral vocabulary that shares its words with the anchor labels.
"""

from __future__ import annotations

from calm.data.synthetic.config import Difficulty, DomainStyle
from calm.data.synthetic.world import SHAPES, ClipSpec, pick

# The canonical words every domain falls back on (with probability 1 - vocab_shift).
CANONICAL = {
    "shape": {s: s for s in SHAPES},
    "colour": {},  # colours are their own canonical words
    "size": {"small": "small", "large": "large"},
    "motion": {
        "left": "moves to the left",
        "right": "moves to the right",
        "up": "moves up",
        "down": "moves down",
        "rotate": "spins",
        "grow": "grows",
        "shrink": "shrinks",
        "blink": "blinks",
        "bounce": "bounces",
        "stay": "stays still",
    },
    "background": {
        "sky": "in the sky",
        "grass": "on the grass",
        "sand": "on the sand",
        "night": "at night",
    },
}

# Domain vocabularies: concept value -> [(phrase, weight)]. Motion phrases are third-person
# singular verb phrases; background phrases are prepositional phrases.
VOCAB: dict[str, dict[str, dict[str, list]]] = {
    "msrvtt": {
        "shape": {
            "circle": [("circle", 4), ("ball", 1), ("dot", 1)],
            "square": [("square", 4), ("box", 1), ("block", 1)],
            "triangle": [("triangle", 5), ("wedge", 1)],
            "diamond": [("diamond", 5), ("rhombus", 1)],
            "star": [("star", 5)],
            "cross": [("cross", 4), ("plus sign", 2)],
            "ring": [("ring", 4), ("donut", 1), ("hoop", 1)],
            "bar": [("bar", 3), ("rectangle", 2), ("stick", 1)],
        },
        "colour": {
            "red": [("red", 1)],
            "orange": [("orange", 1)],
            "yellow": [("yellow", 1)],
            "green": [("green", 1)],
            "blue": [("blue", 1)],
            "purple": [("purple", 1)],
            "pink": [("pink", 1)],
            "white": [("white", 1)],
        },
        "size": {"small": [("small", 3), ("little", 1)], "large": [("large", 2), ("big", 2)]},
        "motion": {
            "left": [("moves to the left", 3), ("goes left", 2), ("is moving left", 1)],
            "right": [("moves to the right", 3), ("goes right", 2), ("is moving right", 1)],
            "up": [("moves up", 3), ("goes up", 2), ("rises", 1)],
            "down": [("moves down", 3), ("goes down", 2), ("falls", 1)],
            "rotate": [("spins", 2), ("is spinning", 2), ("rotates", 1), ("turns around", 1)],
            "grow": [("grows", 2), ("gets bigger", 2), ("is growing", 1)],
            "shrink": [("shrinks", 2), ("gets smaller", 2), ("is shrinking", 1)],
            "blink": [("blinks", 2), ("is blinking", 1), ("flashes", 1)],
            "bounce": [("bounces", 2), ("is bouncing", 2), ("jumps up and down", 1)],
            "stay": [("stays still", 2), ("does not move", 2), ("is not moving", 1)],
        },
        "background": {
            "sky": [("on a blue background", 2), ("in the sky", 2)],
            "grass": [("on a green background", 2), ("on the grass", 2)],
            "sand": [("on a sandy background", 2), ("on the sand", 2)],
            "night": [("on a dark background", 2), ("at night", 2)],
        },
        "generic": {"": [("object", 2), ("shape", 2), ("thing", 1)]},
        "static": {"": [("is shown", 2), ("appears", 1), ("is on the screen", 1)]},
    },
    "didemo": {
        "shape": {
            "circle": [("ball", 3), ("disc", 2), ("circle", 1)],
            "square": [("block", 3), ("tile", 2), ("square", 1)],
            "triangle": [("pyramid", 2), ("wedge", 2), ("triangle", 1)],
            "diamond": [("gem", 2), ("rhombus", 2), ("diamond", 1)],
            "star": [("star shape", 2), ("starfish", 1), ("star", 1)],
            "cross": [("plus", 2), ("cross shape", 2), ("cross", 1)],
            "ring": [("hoop", 2), ("loop", 2), ("ring", 1)],
            "bar": [("plank", 2), ("strip", 2), ("bar", 1)],
        },
        "colour": {
            "red": [("red", 2), ("crimson", 1)],
            "orange": [("orange", 2), ("amber", 1)],
            "yellow": [("yellow", 2), ("golden", 1)],
            "green": [("green", 2), ("lime", 1)],
            "blue": [("blue", 2), ("azure", 1)],
            "purple": [("purple", 2), ("violet", 1)],
            "pink": [("pink", 2), ("rose", 1)],
            "white": [("white", 2), ("pale", 1)],
        },
        "size": {"small": [("little", 2), ("small", 1)], "large": [("big", 2), ("large", 1)]},
        "motion": {
            "left": [("slides to the left", 2), ("drifts left", 2), ("travels leftward", 1)],
            "right": [("slides to the right", 2), ("drifts right", 2), ("travels rightward", 1)],
            "up": [("floats upward", 2), ("rises up", 2), ("drifts up", 1)],
            "down": [("sinks down", 2), ("drops", 2), ("falls down", 1)],
            "rotate": [("twirls", 2), ("spins around", 2), ("turns in place", 1)],
            "grow": [("expands", 2), ("gets larger", 2), ("swells", 1)],
            "shrink": [("contracts", 2), ("gets tinier", 1), ("dwindles", 1)],
            "blink": [("flickers", 2), ("fades in and out", 2), ("blinks", 1)],
            "bounce": [("hops", 2), ("bounces around", 2), ("keeps bouncing", 1)],
            "stay": [("sits still", 2), ("stays in place", 2), ("remains still", 1)],
        },
        "background": {
            "sky": [("against the sky", 2), ("up in the sky", 1)],
            "grass": [("on the grass", 2), ("in a field", 2)],
            "sand": [("on the beach", 2), ("on the sand", 1)],
            "night": [("at night", 2), ("in the dark", 2)],
        },
        "generic": {"": [("object", 2), ("shape", 1), ("thing", 1)]},
        "static": {"": [("is there", 1)]},
    },
    "lsmdc": {
        "shape": {
            "circle": [("orb", 3), ("ball", 1), ("circle", 1)],
            "square": [("crate", 2), ("cube", 2), ("box", 1), ("square", 1)],
            "triangle": [("arrowhead", 2), ("shard", 1), ("triangle", 2)],
            "diamond": [("jewel", 2), ("gem", 1), ("diamond", 2)],
            "star": [("star", 3), ("starburst", 1)],
            "cross": [("cross", 3), ("plus sign", 1)],
            "ring": [("halo", 2), ("ring", 2), ("hoop", 1)],
            "bar": [("beam", 2), ("rod", 2), ("bar", 1)],
        },
        "colour": {
            "red": [("scarlet", 2), ("red", 1)],
            "orange": [("copper", 2), ("orange", 1)],
            "yellow": [("gold", 2), ("yellow", 1)],
            "green": [("emerald", 2), ("green", 1)],
            "blue": [("cobalt", 2), ("blue", 1)],
            "purple": [("violet", 1), ("plum", 1), ("purple", 1)],
            "pink": [("salmon", 1), ("pink", 1)],
            "white": [("silver", 1), ("ivory", 1), ("white", 1)],
        },
        "size": {
            "small": [("tiny", 2), ("small", 1)],
            "large": [("huge", 2), ("giant", 1), ("large", 1)],
        },
        "motion": {
            "left": [("glides left", 2), ("heads off to the left", 2), ("moves left", 1)],
            "right": [("glides right", 2), ("heads off to the right", 2), ("moves right", 1)],
            "up": [("climbs", 2), ("lifts off", 1), ("soars up", 1)],
            "down": [("plummets", 2), ("drops down", 1), ("descends", 1)],
            "rotate": [("whirls", 2), ("spins slowly", 1), ("turns", 1)],
            "grow": [("looms larger", 2), ("swells", 1), ("grows", 1)],
            "shrink": [("recedes", 2), ("dwindles", 1), ("shrinks", 1)],
            "blink": [("flickers", 2), ("flashes", 1), ("pulses", 1)],
            "bounce": [("bounces", 2), ("leaps", 1), ("jumps", 1)],
            "stay": [("hangs motionless", 2), ("waits", 1), ("stays put", 1)],
        },
        "background": {
            "sky": [("beneath the clouds", 2), ("in the open sky", 1)],
            "grass": [("on the lawn", 2), ("across the meadow", 1)],
            "sand": [("in the desert", 2), ("on the dunes", 1)],
            "night": [("in the darkness", 2), ("at night", 1)],
        },
        "generic": {"": [("thing", 2), ("object", 1), ("shape", 1)]},
        "static": {"": [("is there", 1)]},
    },
}

# Neutral, anchor-like words for the pretraining split: it is what teaches the text encoder the
# anchor labels' vocabulary ("round", "pointy", "getting bigger", "under a blue sky", ...).
NEUTRAL = {
    "shape_adj": {
        "circle": ["round"],
        "square": ["boxy", "square"],
        "triangle": ["triangular", "pointy"],
        "diamond": ["diamond-shaped", "pointy"],
        "star": ["star-shaped", "pointy"],
        "cross": ["cross-shaped"],
        "ring": ["hollow round", "ring-shaped"],
        "bar": ["long thin", "bar-shaped"],
    },
    "noun": ["object", "thing", "shape"],
    "size": {"small": ["tiny", "small", "very small"], "large": ["huge", "large", "very large"]},
    "background": {
        "sky": ["under a blue sky"],
        "grass": ["on green grass"],
        "sand": ["on sandy ground"],
        "night": ["in the dark night"],
    },
    "motion": {
        "left": ["moving to the left", "moving sideways"],
        "right": ["moving to the right", "moving sideways"],
        "up": ["lifting upward", "moving up"],
        "down": ["falling downward", "moving down"],
        "rotate": ["spinning around"],
        "grow": ["getting bigger", "changing size"],
        "shrink": ["getting smaller", "changing size"],
        "blink": ["flashing on and off"],
        "bounce": ["hopping up and down"],
        "stay": ["holding still", "not moving at all"],
    },
}

CAPTION_STYLES = tuple(VOCAB)


def _weighted(rng, options: list):
    return pick(rng, [p for p, _ in options], [w for _, w in options])


def word(rng, domain: str, kind: str, value: str, shift: float) -> str:
    """The phrase `domain` uses for concept `value` of `kind`: its own synonyms with probability
    `shift`, else the canonical word shared by every domain."""
    canonical = CANONICAL.get(kind, {})
    if kind == "colour":
        canonical = {value: value}
    if value in canonical and rng.random() >= shift:
        return canonical[value]
    return _weighted(rng, VOCAB[domain][kind][value])


def article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def sample_mention(
    rng,
    clip: ClipSpec,
    difficulty: Difficulty,
    style: DomainStyle,
    coverage: float = 1.0,
    allowed=("shape", "colour", "size", "motion", "background", "second"),
) -> dict:
    """What one caption names: a random subset of the clip's attributes (never empty).

    Size is named only when it is not medium (people say "a big ball", not "a medium ball").
    """
    main = clip.objects[0]
    cov = style.caption_coverage * coverage
    out: dict = {}
    for key in ("shape", "colour", "size", "motion"):
        value = getattr(main, key)
        if key in allowed and not (key == "size" and value == "medium"):
            if rng.random() < difficulty.mention_prob(key, cov):
                out[key] = value
    if not any(k in out for k in ("shape", "colour", "motion")):
        candidates = [k for k in ("shape", "colour", "motion") if k in allowed]
        key = pick(rng, candidates)
        out[key] = getattr(main, key)
    if "background" in allowed and rng.random() < difficulty.mention_prob("background", cov):
        out["background"] = clip.background
    if (
        len(clip.objects) > 1
        and "second" in allowed
        and rng.random() < difficulty.mention_prob("second", cov)
    ):
        second = clip.objects[1]
        out["second"] = {k: getattr(second, k) for k in ("shape", "colour") if rng.random() < 0.6}
    return out


class _Words:
    """Picks a domain's phrases for one caption's mention."""

    def __init__(self, rng, domain: str, shift: float):
        self.rng, self.domain, self.shift = rng, domain, shift

    def __call__(self, kind: str, value: str) -> str:
        return word(self.rng, self.domain, kind, value, self.shift)

    def generic(self) -> str:
        return _weighted(self.rng, VOCAB[self.domain]["generic"][""])

    def static(self) -> str:
        return _weighted(self.rng, VOCAB[self.domain]["static"][""])

    def noun_phrase(self, said: dict, with_size: bool = True) -> str:
        """'[size] [colour] shape-or-generic' without an article."""
        parts = []
        if with_size and "size" in said:
            parts.append(self("size", said["size"]))
        if "colour" in said:
            parts.append(self("colour", said["colour"]))
        parts.append(self("shape", said["shape"]) if "shape" in said else self.generic())
        return " ".join(parts)


# ---- MSR-VTT: short lowercase one-liners, no punctuation ---------------------------------------


def msrvtt_caption(rng, mention: dict, shift: float) -> str:
    w = _Words(rng, "msrvtt", shift)
    np_ = article(w.noun_phrase(mention))
    vp = w("motion", mention["motion"]) if "motion" in mention else w.static()
    bg = " " + w("background", mention["background"]) if "background" in mention else ""
    if mention.get("second") is not None:
        sec = mention["second"]
        np2 = article(w.noun_phrase(sec)) if sec else "another shape"
        form = pick(rng, ["next", "and"])
        if form == "next" or "motion" in mention:
            return f"{np_} {vp} next to {np2}{bg}"
        return f"{np_} and {np2} are shown{bg}"
    form = pick(rng, ["plain", "there", "video", "plain"])
    if form == "there":
        return f"there is {np_} that {vp}{bg}"
    if form == "video":
        return f"a video of {np_} that {vp}{bg}"
    return f"{np_} {vp}{bg}"


# ---- DiDeMo: short sentences that form a paragraph ---------------------------------------------


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def didemo_sentence(rng, mention: dict, shift: float, first: bool) -> str:
    """One sentence; later sentences of a paragraph may refer back with "it"."""
    w = _Words(rng, "didemo", shift)
    bg = w("background", mention["background"]) if "background" in mention else ""
    said_object = any(k in mention for k in ("shape", "colour", "size"))
    if mention.get("second") is not None and "motion" not in mention and not said_object:
        sec = mention["second"]
        np2 = article(w.noun_phrase(sec)) if sec else "another object"
        return _cap(f"there is also {np2}{' ' + bg if bg else ''}.")
    extra = ""
    if mention.get("second") is not None:
        sec = mention["second"]
        extra = f" There is also {article(w.noun_phrase(sec)) if sec else 'another object'}."
    if "motion" in mention:
        vp = w("motion", mention["motion"])
        if not said_object and not first:
            subject = pick(rng, ["it", "then it", "the object"])
        else:
            subject = "the " + w.noun_phrase(mention)
        if bg and rng.random() < 0.5:
            return f"{_cap(bg)}, {subject.removeprefix('then ')} {vp}.{extra}"
        return _cap(f"{subject} {vp}{' ' + bg if bg else ''}.") + extra
    bg = " " + bg if bg else ""
    if not first:  # a detail about the object already introduced
        adjs = [w(k, mention[k]) for k in ("size", "colour") if k in mention]
        if "shape" in mention:
            shape = w("shape", mention["shape"])
            if adjs:
                return f"The {shape} is {' and '.join(adjs)}{bg}.{extra}"
            return f"It looks like {article(shape)}{bg}.{extra}"
        return f"It is {' and '.join(adjs)}{bg}.{extra}"
    np_ = article(w.noun_phrase(mention))
    form = pick(rng, ["see", "appears", "camera"])
    if form == "see":
        return f"We see {np_}{bg}.{extra}"
    if form == "appears":
        return _cap(f"{np_} appears{bg}.") + extra
    return f"The camera shows {np_}{bg}.{extra}"


def didemo_paragraph(
    rng, clip: ClipSpec, difficulty: Difficulty, style: DomainStyle, n_sentences: int
) -> list[tuple[str, dict]]:
    """Sentences (each with what it names) whose union describes the clip: the first introduces
    the object, the second tends to say what it does, later ones add what is still unsaid (the
    shape, the place, the other object). A paragraph ends early when nothing is left to say."""
    out: list[tuple[str, dict]] = []
    said: set[str] = set()
    for i in range(n_sentences):
        if i == 0:
            allowed = ("shape", "colour", "size", "background")
        else:  # later sentences add what has not been said yet
            allowed = tuple(
                k
                for k in ("shape", "colour", "size", "motion", "background", "second")
                if k not in said
            )
            if not {"shape", "colour", "motion"} & set(allowed):
                break
        for _ in range(4):
            mention = sample_mention(
                rng, clip, difficulty, style, allowed=allowed, coverage=1.0 if i == 0 else 0.8
            )
            if i == 1 and "motion" not in mention and rng.random() < 0.5:
                mention = {
                    "motion": clip.objects[0].motion,
                    **{k: v for k, v in mention.items() if k == "second"},
                }
            text = didemo_sentence(rng, mention, difficulty.vocab_shift, first=i == 0)
            if all(text != t for t, _ in out):
                break
        said.update(mention)
        out.append((text, mention))
    return out


# ---- LSMDC: script lines with SOMEONE ----------------------------------------------------------


def lsmdc_caption(rng, mention: dict, shift: float) -> str:
    w = _Words(rng, "lsmdc", shift)
    bg = w("background", mention["background"]) if "background" in mention else ""
    has_shape = "shape" in mention
    if "motion" in mention:
        vp = w("motion", mention["motion"])
    if not has_shape and "colour" in mention and "motion" in mention and rng.random() < 0.5:
        size = w("size", mention["size"]) + " " if "size" in mention else ""
        subject = f"something {size}{w('colour', mention['colour'])}"  # word order: adjective last
        subject_def = subject
    else:
        subject = article(w.noun_phrase(mention))
        subject_def = "the " + w.noun_phrase(mention)
    if mention.get("second") is not None:
        sec = mention["second"]
        np2 = article(w.noun_phrase(sec)) if sec else "something else"
        if "motion" in mention:
            return _cap(f"SOMEONE holds {np2} while {subject_def} {vp}{' ' + bg if bg else ''}.")
        return f"SOMEONE sets {np2} beside {subject_def}{' ' + bg if bg else ''}."
    if "motion" not in mention:
        form = pick(rng, ["stares", "sees"])
        verb = "stares at" if form == "stares" else "sees"
        return f"SOMEONE {verb} {subject}{' ' + bg if bg else ''}."
    form = pick(rng, ["watches", "bg_first", "possessive", "now"])
    if form == "bg_first" and bg:
        return f"{_cap(bg)}, {subject} {vp}."
    if form == "possessive" and not subject_def.startswith("something"):
        return f"SOMEONE's {subject_def[4:]} {vp}{' ' + bg if bg else ''}."
    if form == "now":
        return f"Now {subject_def} {vp}{' ' + bg if bg else ''}."
    return f"SOMEONE watches as {subject_def} {vp}{' ' + bg if bg else ''}."


def domain_caption(rng, domain: str, mention: dict, shift: float) -> str:
    """One caption for `mention` in `domain`'s single-sentence style."""
    if domain == "msrvtt":
        return msrvtt_caption(rng, mention, shift)
    if domain == "lsmdc":
        return lsmdc_caption(rng, mention, shift)
    return didemo_sentence(rng, mention, shift, first=True)


def clip_captions(
    rng, clip: ClipSpec, difficulty: Difficulty, style: DomainStyle, count: int
) -> list[tuple[str, dict]]:
    """`count` distinct captions (text, mention) of a clip in the domain's one-liner style."""
    out, seen = [], set()
    for _ in range(count * 6):
        mention = sample_mention(rng, clip, difficulty, style)
        text = domain_caption(rng, style.name, mention, difficulty.vocab_shift)
        if text not in seen:
            seen.add(text)
            out.append((text, mention))
        if len(out) == count:
            break
    return out


# ---- pretraining: one frame, static attributes (plus the motion its trail shows) ---------------


def neutral_caption(rng, clip: ClipSpec, mention: dict) -> str:
    """Anchor-like wording: 'a photo of a round red object under a blue sky', 'two things at
    once: ...', 'something green hopping up and down'."""

    def np_(said: dict, art: bool = True) -> str:
        parts = []
        if "size" in said:
            parts.append(pick(rng, NEUTRAL["size"][said["size"]]))
        if "shape" in said:
            parts.append(pick(rng, NEUTRAL["shape_adj"][said["shape"]]))
        if "colour" in said:
            parts.append(said["colour"])
        parts.append(pick(rng, NEUTRAL["noun"]))
        phrase = " ".join(parts)
        return article(phrase) if art else phrase

    bg = (
        " " + pick(rng, NEUTRAL["background"][mention["background"]])
        if "background" in mention
        else ""
    )
    motion = " " + pick(rng, NEUTRAL["motion"][mention["motion"]]) if "motion" in mention else ""
    if mention.get("second") is not None:
        opener = pick(rng, ["two things at once:", "two things together:", "a photo of"])
        return f"{opener} {np_(mention)}{motion} and {np_(mention['second'])}{bg}"
    if len(clip.objects) == 1 and rng.random() < 0.3:
        return f"a single {np_(mention, art=False)} alone{motion}{bg}"
    if "colour" in mention and "shape" not in mention and rng.random() < 0.5:
        colored = pick(rng, ["", "colored "])
        return f"something {colored}{mention['colour']}{motion}{bg}"
    if "motion" in mention and mention["motion"] == "stay" and rng.random() < 0.3:
        return f"a scene{bg or ' ' + pick(rng, ['indoors', 'outdoors'])} with nothing in motion"
    opener = pick(rng, ["a photo of", "a picture of", "a scene with", "an image of"])
    return f"{opener} {np_(mention)}{motion}{bg}"


def pretrain_caption(
    rng,
    clip: ClipSpec,
    difficulty: Difficulty,
    style: DomainStyle,
    motion_prob: float,
    neutral_prob: float,
) -> tuple[str, dict]:
    """A caption of one frame: neutral wording or one random domain's, mostly static attributes."""
    allowed = ["shape", "colour", "size", "background", "second"]
    if rng.random() < motion_prob:
        allowed.append("motion")
    mention = sample_mention(rng, clip, difficulty, style, coverage=1.3, allowed=tuple(allowed))
    if rng.random() < neutral_prob:
        return neutral_caption(rng, clip, mention), mention
    domain = pick(rng, CAPTION_STYLES)
    return domain_caption(rng, domain, mention, difficulty.vocab_shift), mention
