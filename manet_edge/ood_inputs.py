"""Generated inputs that are not frontal chest X-rays, to fit and measure the input-domain gate.

Non-radiographs made from nothing (``noise``, ``gradient``, ``photo``: a synthetic photograph of
smooth coloured shapes and texture, ``document``: a page of text lines) and transformed films
(``inverted``, ``rot90``, ``rot180``, ``lateral``: a film cropped to one side and stretched, or
squeezed horizontally, as a side view or a badly framed film looks to the models). numpy and
Pillow only; every generator takes a seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

SIZE = 512
MADE = ("noise", "gradient", "photo", "document")
TRANSFORMED = ("inverted", "rot90", "rot180", "lateral")
KINDS = MADE + TRANSFORMED


def noise(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    if rng.random() < 0.5:
        img = rng.uniform(0, 255, (size, size))
    else:
        img = rng.normal(rng.uniform(60, 190), rng.uniform(20, 70), (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def gradient(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * np.pi)
        g = np.cos(a) * xx + np.sin(a) * yy
    else:
        cx, cy = rng.uniform(0.2, 0.8, 2)
        g = np.hypot(xx - cx, yy - cy)
    g = (g - g.min()) / (np.ptp(g) or 1)
    return (g * 255).astype(np.uint8)


def _smooth(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    from PIL import Image

    small = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.Resampling.BICUBIC))


def photo(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """RGB uint8: a smooth background, a few filled shapes and fine texture."""
    from PIL import Image, ImageDraw

    rgb = np.stack([_smooth(rng, size, int(rng.integers(2, 6))) for _ in range(3)], axis=-1)
    im = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.integers(0, size - 40, 2)
        x1, y1 = x0 + rng.integers(30, size // 2), y0 + rng.integers(30, size // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((int(x0), int(y0), int(x1), int(y1)), fill=colour)
    arr = np.asarray(im).astype(np.float32) + rng.normal(0, 8, (size, size, 1))
    return np.clip(arr, 0, 255).astype(np.uint8)


def document(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A light page with dark lines of text (a scanned document)."""
    from PIL import Image, ImageDraw, ImageFont

    page = int(rng.integers(215, 250))
    im = Image.new("L", (size, size), page)
    draw = ImageDraw.Draw(im)
    try:
        font = ImageFont.load_default(size=int(rng.integers(12, 22)))
    except (TypeError, OSError):
        font = ImageFont.load_default()
    y = int(rng.integers(10, 40))
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz     ABCDEFGHIJ0123456789.,"))
    while y < size - 20:
        line = "".join(rng.choice(letters, int(rng.integers(20, 60))))
        draw.text((int(rng.integers(10, 40)), y), line, fill=int(rng.integers(0, 60)), font=font)
        y += int(rng.integers(18, 30))
    arr = np.asarray(im).astype(np.float32) + rng.normal(0, 4, (size, size))
    return np.clip(arr, 0, 255).astype(np.uint8)


def inverted(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (film.max() - film).astype(film.dtype) + film.min()


def rot90(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(film, 1 if rng.random() < 0.5 else 3))


def rot180(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(film, 2))


def lateral(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One side of the film stretched to the full width, or the whole film squeezed to about half
    its width and centred on its own edge colour: one lung, or a narrow chest."""
    from PIL import Image

    h, w = film.shape
    im = Image.fromarray(film)
    if rng.random() < 0.5:
        left = rng.random() < 0.5
        cut = int(w * rng.uniform(0.45, 0.6))
        box = (0, 0, cut, h) if left else (w - cut, 0, w, h)
        return np.asarray(im.crop(box).resize((w, h), Image.Resampling.BILINEAR))
    nw = int(w * rng.uniform(0.4, 0.55))
    narrow = np.asarray(im.resize((nw, h), Image.Resampling.BILINEAR))
    out = np.full_like(film, int(np.median(np.concatenate([film[:, :8].ravel(), film[:, -8:].ravel()]))))
    x0 = (w - nw) // 2
    out[:, x0:x0 + nw] = narrow
    return out


MAKERS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "noise": noise, "gradient": gradient, "photo": photo, "document": document}
TRANSFORMS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "inverted": inverted, "rot90": rot90, "rot180": rot180, "lateral": lateral}


def write_set(folder, films: list[np.ndarray], *, per_kind: int, seed: int, kinds=KINDS) -> dict[str, str]:
    """Write ``per_kind`` PNGs of every kind under ``folder/<kind>/``; transformed kinds use the
    ``films`` in turn. Returns relative path -> kind."""
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for kind in kinds:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_kind):
            if kind in MAKERS:
                arr = MAKERS[kind](rng)
            else:
                arr = TRANSFORMS[kind](films[i % len(films)], rng)
            rel = f"{kind}/{kind}_{i:04d}.png"
            Image.fromarray(arr).save(folder / rel)
            out[rel] = kind
    return out
