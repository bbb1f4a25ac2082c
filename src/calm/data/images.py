"""Still images as model input: an image query is one frame, preprocessed as frames are.

Frames are resized (short side to S, bicubic) and centre-cropped to S x S (`FrameSampler`);
an image goes the same way, so its feature is what the model would compute for a one-frame clip
of it. A file PIL cannot read raises DataError naming it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from calm.data.errors import DataError


def read_image(source: str | Path | bytes, size: int, name: str | None = None) -> np.ndarray:
    """uint8 RGB [size, size, 3] of an image file (a path, or its bytes)."""
    from PIL import Image, UnidentifiedImageError

    label = name or (str(source) if not isinstance(source, bytes) else "the uploaded image")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img = img.convert("RGB")
            scale = size / min(img.size)
            w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
            img = img.resize((w, h), Image.BICUBIC)
            left, top = (w - size) // 2, (h - size) // 2
            return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{label}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{label}: not a readable image ({exc})") from None
