"""Procedural frames: signed-distance shapes over a textured background, in a domain's style.

Everything is numpy on small frames. Objects are drawn from signed distance functions with
anti-aliased edges inside a window around each object, so a 64 px clip of 16 frames costs a few
milliseconds. A moving object leaves faint echoes of where it just was (motion blur), so a single
frame shows which way it moves, as a photograph of a moving thing does.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from calm.data.synthetic.config import Difficulty, DomainStyle
from calm.data.synthetic.world import BACKGROUND_RGB, COLOUR_RGB, ClipSpec, ObjectSpec


def _star(points: int = 5, outer: float = 1.15, inner: float = 0.5) -> np.ndarray:
    angles = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


# Polygons in unit-radius coordinates, y pointing down (image convention).
POLYGONS = {
    "triangle": np.array([[0.0, -1.1], [0.95, 0.55], [-0.95, 0.55]]),
    "diamond": np.array([[0.0, -1.15], [0.72, 0.0], [0.0, 1.15], [-0.72, 0.0]]),
    "star": _star(),
}


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices (float32, size x size, read-only) of a frame's pixels.

    Why: building them (np.mgrid) for every frame, object and motion echo cost about a tenth of
    a pretraining pair's rendering; a window of an object is a slice of these, with equal values.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _window(img: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
    """np.mgrid[y0:y1, x0:x1] as float32 for a window of `img`, sliced from the cached grid."""
    h, w = img.shape[:2]
    if h != w:
        return np.mgrid[y0:y1, x0:x1].astype(np.float32)
    yy, xx = _grid(h)
    return yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]


def _clip01(x):
    """np.clip(x, 0, 1) without its dispatch overhead (equal values, NaN included)."""
    return np.minimum(np.maximum(x, 0), 1)


def _sd_box(px, py, bx, by):
    qx, qy = np.abs(px) - bx, np.abs(py) - by
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _sd_polygon(px, py, verts: np.ndarray):
    """Signed distance to a closed polygon (negative inside), vectorised over pixels and edges
    (edge i runs from vertex i to vertex i - 1; the sign flips at each edge crossing)."""
    vi, vj = verts[:, :, None, None], np.roll(verts, 1, axis=0)[:, :, None, None]
    ex, ey = vj[:, 0] - vi[:, 0], vj[:, 1] - vi[:, 1]
    wx, wy = px - vi[:, 0], py - vi[:, 1]
    h = _clip01((wx * ex + wy * ey) / (ex * ex + ey * ey))
    bx, by = wx - ex * h, wy - ey * h
    d = np.minimum((px - verts[0, 0]) ** 2 + (py - verts[0, 1]) ** 2, (bx * bx + by * by).min(0))
    c1, c2, c3 = py >= vi[:, 1], py < vj[:, 1], ex * wy > ey * wx
    inside = np.logical_xor.reduce((c1 & c2 & c3) | (~c1 & ~c2 & ~c3), axis=0)
    return np.where(inside, np.float32(-1), np.float32(1)) * np.sqrt(d)


def shape_sdf(shape: str, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Signed distance (in object radii) of points (px, py), given in the object's own frame."""
    if shape == "circle":
        return np.hypot(px, py) - 1.0
    if shape == "ring":
        return np.abs(np.hypot(px, py) - 0.78) - 0.26
    if shape == "square":
        return _sd_box(px, py, 0.85, 0.85)
    if shape == "bar":
        return _sd_box(px, py, 1.25, 0.38)
    if shape == "cross":
        return np.minimum(_sd_box(px, py, 1.05, 0.33), _sd_box(px, py, 0.33, 1.05))
    return _sd_polygon(px, py, POLYGONS[shape])


def _palette(rgb, style: DomainStyle) -> np.ndarray:
    """A domain's camera: saturation, brightness and colour cast applied to an RGB array."""
    rgb = np.asarray(rgb, dtype=np.float32)
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    rgb = lum[..., None] + style.saturation * (rgb - lum[..., None])
    return rgb * style.brightness * np.asarray(style.cast, dtype=np.float32)


def _low_freq(rng, h: int, w: int, waves: int = 4, cycles: float = 2.5) -> np.ndarray:
    """Smooth random field in about [-1, 1]: a sum of a few random plane waves."""
    yy, xx = _grid(h) if h == w else np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w), np.float32)
    for _ in range(waves):
        theta = rng.uniform(0, 2 * math.pi)
        f = rng.uniform(0.5, cycles) * 2 * math.pi
        out += np.sin(f * (xx * math.cos(theta) / w + yy * math.sin(theta) / h) + rng.uniform(0, 7))
    return out / math.sqrt(waves)


def background(
    clip: ClipSpec, style: DomainStyle, size: int, rng: np.random.Generator
) -> np.ndarray:
    """The static background (H x W x 3 float, before the palette) in the domain's texture."""
    h = w = size
    base = np.asarray(BACKGROUND_RGB[clip.background], np.float32)
    yy, xx = _grid(size)
    v, u = (yy + 0.5) / h, (xx + 0.5) / w
    if style.texture == "gradient":
        img = base * (1.12 - 0.24 * v)[..., None]
    elif style.texture == "pattern":
        img = base * (1.0 + 0.08 * _low_freq(rng, h, w))[..., None]
        if clip.background == "sky":  # soft clouds
            cloud = _clip01(_low_freq(rng, h, w, cycles=3.0) - 0.5)[..., None]
            img = img * (1 - 0.6 * cloud) + 0.6 * cloud
        elif clip.background == "grass":  # blades
            img = (
                img
                * (1.0 + 0.12 * np.sin(2 * math.pi * 9 * u + 2 * _low_freq(rng, h, w)))[..., None]
            )
        elif clip.background == "sand":  # ripples
            img = (
                img
                * (1.0 + 0.08 * np.sin(2 * math.pi * 6 * (u + 0.6 * v) + rng.uniform(0, 7)))[
                    ..., None
                ]
            )
        else:  # stars
            stars = rng.random((h, w)) < 0.015
            img = np.where(stars[..., None], 0.8, img)
    else:  # grain: a dim set with uneven lighting
        img = base * (0.85 + 0.15 * _low_freq(rng, h, w, waves=3, cycles=1.5))[..., None]
    img = img.astype(np.float32)
    for cx, cy, r, shade in clip.clutter:
        _blend_disc(
            img,
            cx * w,
            cy * h,
            r * w,
            np.clip(base * (1 + shade) + shade / 3, 0, 1),
            style.edge_softness,
        )
    return img


def _blend_disc(img, cx, cy, r, colour, softness):
    h, w = img.shape[:2]
    x0, x1 = max(0, int(cx - r - 2)), min(w, int(cx + r + 3))
    y0, y1 = max(0, int(cy - r - 2)), min(h, int(cy + r + 3))
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = _window(img, y0, y1, x0, x1)
    a = _clip01(0.5 - (np.hypot(xx + 0.5 - cx, yy + 0.5 - cy) - r) / softness)[..., None]
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + np.asarray(colour, np.float32) * a


def draw_object(img: np.ndarray, obj: ObjectSpec, t: float, opacity: float, style: DomainStyle):
    """Draws `obj` as it is at clip time t, with extra `opacity` (trails), into img in place."""
    h, w = img.shape[:2]
    x, y, r, angle, alpha = obj.state(t)
    alpha *= opacity
    if alpha <= 0.01:
        return
    cx, cy, rp = x * w, y * h, r * w
    reach = rp * 1.3 + style.edge_softness + 1
    x0, x1 = max(0, int(cx - reach)), min(w, int(math.ceil(cx + reach)) + 1)
    y0, y1 = max(0, int(cy - reach)), min(h, int(math.ceil(cy + reach)) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = _window(img, y0, y1, x0, x1)
    dx, dy = (xx + 0.5 - cx) / rp, (yy + 0.5 - cy) / rp
    c, s = math.cos(angle), math.sin(angle)
    px, py = c * dx + s * dy, -s * dx + c * dy
    sd = shape_sdf(obj.shape, px, py) * rp
    a = _clip01(0.5 - sd / style.edge_softness) * alpha
    colour = np.asarray(COLOUR_RGB[obj.colour], np.float32)
    if style.shading == "shaded":  # a lit, rounded look: highlight at the top left
        light = (1.12 - 0.22 * (dx + dy))[..., None]
        fill = _clip01(colour * light)
    elif style.shading == "soft":
        fill = colour * (0.9 + 0.1 * _clip01(1 - np.hypot(dx, dy)))[..., None]
    else:
        fill = colour
    a = a[..., None]
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + fill * a


def render_frames(
    clip: ClipSpec,
    style: DomainStyle,
    difficulty: Difficulty,
    size: int,
    times: list[float],
    rng: np.random.Generator,
    trail_dt: float | None = None,
) -> np.ndarray:
    """uint8 frames (len(times) x size x size x 3) of `clip` at clip times `times` (0..1).

    `rng` supplies the background texture, camera shake, flicker and noise, so two calls with
    equal seeds give equal pixels. Echoes trail the object by `trail_dt` clip time each (by
    default `difficulty.trail_spacing`, else 0.6 of the frame spacing, like a shutter open 60% of
    the time).
    """
    bg = background(clip, style, size, rng)
    n_echo, echo_alpha = difficulty.trail
    if trail_dt is not None:
        dt = trail_dt
    elif difficulty.trail_spacing is not None:
        dt = difficulty.trail_spacing
    else:
        dt = 0.6 / max(len(times) - 1, 1)
    vig = _vignette(size, style.vignette) if style.vignette else None
    shake = max(1, round(style.camera_jitter * size / 64)) if style.camera_jitter else 0
    noise_std = style.noise_std * difficulty.noise_scale
    frames = np.empty((len(times), size, size, 3), np.uint8)
    for k, t in enumerate(times):
        img = bg.copy()
        for obj in reversed(clip.objects):  # the main object is drawn last, on top
            if obj.motion != "stay":
                for j in range(int(n_echo), 0, -1):
                    draw_object(img, obj, t - j * dt, echo_alpha * 0.55 ** (j - 1), style)
            draw_object(img, obj, t, 1.0, style)
        img = _palette(img, style)
        if vig is not None:
            img = img * vig
        if style.flicker:
            img = img * (1 + rng.uniform(-style.flicker, style.flicker))
        if shake:
            img = np.roll(
                img,
                (int(rng.integers(-shake, shake + 1)), int(rng.integers(-shake, shake + 1))),
                axis=(0, 1),
            )
        if noise_std:
            img = img + rng.normal(0, noise_std, img.shape).astype(np.float32)
        if style.letterbox:
            bar = round(style.letterbox * size)
            img[:bar] = 0
            img[size - bar :] = 0
        frames[k] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return frames


@functools.lru_cache(maxsize=16)
def _vignette(size: int, strength: float) -> np.ndarray:
    """The darkening towards the corners (size x size x 1, read-only), the same for every frame."""
    yy, xx = _grid(size)
    rr = np.hypot((xx + 0.5) / size - 0.5, (yy + 0.5) / size - 0.5) / math.sqrt(0.5)
    vig = (1 - strength * rr**2)[..., None]
    vig.flags.writeable = False
    return vig


def clip_times(n_frames: int) -> list[float]:
    """Frame k of n sits at clip time k / (n - 1): the motion spans the whole clip."""
    return [k / max(n_frames - 1, 1) for k in range(n_frames)]
