"""The miniature world's ImageNet: a single-label synthetic classification set for `stage=pretrain`.

ImageNet is to VOC what this set is to the synthetic segmentation set (`recam/data/synthetic.py`):
larger, single-label, many more classes, drawn from the same visual vocabulary (shapes, textures,
colours, parts, context backgrounds, clutter, lighting and JPEG) but defined independently of the
8 segmentation classes, and with no masks. A class is a random but fixed *signature*:

* a body shape (ellipse, rectangle, triangle, polygon, star, ring, cross, crescent, diamond, capsule)
  with an aspect range,
* a texture (solid, stripes, checker, speckle, rings, bricks, dots, gradient) with its period,
* a primary and a secondary colour from a 12-hue palette (plus per-instance jitter),
* a part: none, a cap (one end of the body in a third colour), a spot (a small disc at a fixed place)
  or a tail (a stick out of the body ending in a knob),
* a preferred context (any, sky, water, grass) drawn with probability 0.7 when not "any".

Signatures are unique on (shape, texture, primary colour, part). Many classes share three of the
four, so telling them apart needs the part or the texture, as telling dog breeds apart does: the
features a classifier learns here are part- and texture-selective, which is what makes ImageNet
CAMs peak on discriminative parts (the under-activation that ReCAM repairs).

Everything is deterministic: class c's signature comes from `default_rng([seed, 7, c])` and image i
of a split from `default_rng([seed, split, i])` alone (see `render_image`). No file is written here;
`stage=pretrain` renders the set into memory (one process per core) and caches only the trained
backbone.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from recam.data.synthetic import (
    Frame,
    _finish,
    _jitter,
    _noise,
    _rotate,
    _shade,
    capsule_mask,
    draw_background,
    draw_distractor,
    ellipse_mask,
    make_frame,
    polygon_mask,
)

VERSION = "recam-pretrain-world-1"  # bump when the drawing changes: it is part of the cache key
SHAPES = ("ellipse", "rect", "triangle", "polygon", "star", "ring", "cross", "crescent", "diamond", "capsule")
TEXTURES = ("solid", "stripes", "checker", "speckle", "rings", "bricks", "dots", "gradient")
PARTS = ("none", "cap", "spot", "tail")
CONTEXTS = ("any", "any", "sky", "water", "grass")  # "any" twice: half of the classes have no context
P_CONTEXT = 0.7  # a class with a context is drawn in it this often (else a random scene)
# 12 hues, saturated enough to be told apart after jitter, JPEG and lighting.
PALETTE = np.array(
    [
        (220, 40, 40), (240, 130, 30), (235, 215, 50), (140, 200, 40), (40, 160, 70), (40, 190, 180),
        (50, 120, 220), (70, 60, 190), (150, 60, 200), (220, 70, 170), (130, 85, 50), (235, 235, 230),
    ],
    dtype=np.float32,
)
SPLITS = {"train": 11, "val": 12}  # the rng stream of each split
SIZE_RANGE = (0.35, 0.8)  # object extent / image side, log-uniform


@dataclass(frozen=True)
class ClassSignature:
    shape: str
    aspect: tuple[float, float]  # minor / major axis range
    texture: str
    period: float  # texture period as a fraction of the object size
    primary: int  # palette index
    secondary: int
    part: str
    part_colour: int
    part_angle: float  # where the cap / spot / tail sits, radians in the object's frame
    context: str


def class_signatures(num_classes: int, seed: int) -> list[ClassSignature]:
    """The `num_classes` class signatures of world `seed`, unique on (shape, texture, primary, part).

    Class c is drawn from `default_rng([seed, 7, c])` (redrawn from the same stream while it repeats
    an earlier class), so the first classes do not change when `num_classes` grows.
    """
    signatures: list[ClassSignature] = []
    seen: set[tuple] = set()
    for c in range(num_classes):
        rng = np.random.default_rng([seed, 7, c])
        while True:
            low = float(rng.uniform(0.35, 0.9))
            primary, secondary, part_colour = (int(v) for v in rng.choice(len(PALETTE), 3, replace=False))
            signature = ClassSignature(
                shape=str(rng.choice(SHAPES)),
                aspect=(low, min(1.0, low + 0.25)),
                texture=str(rng.choice(TEXTURES)),
                period=float(rng.uniform(0.12, 0.3)),
                primary=primary,
                secondary=secondary,
                part=str(rng.choice(PARTS)),
                part_colour=part_colour,
                part_angle=float(rng.uniform(0, 2 * np.pi)),
                context=str(rng.choice(CONTEXTS)),
            )
            key = (signature.shape, signature.texture, signature.primary, signature.part)
            if key not in seen:
                seen.add(key)
                signatures.append(signature)
                break
    return signatures


def _body_mask(kind: str, frame: Frame, u: np.ndarray, v: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """The body of shape `kind` in the object's frame (u, v): semi-axes rx (major), ry (minor)."""
    eu, ev = u / rx, v / ry
    if kind == "ellipse":
        return eu**2 + ev**2 <= 1.0
    if kind == "rect":
        return (np.abs(eu) <= 1.0) & (np.abs(ev) <= 1.0)
    if kind == "diamond":
        return np.abs(eu) + np.abs(ev) <= 1.0
    if kind == "ring":
        radius = eu**2 + ev**2
        return (radius <= 1.0) & (radius >= 0.3)
    if kind == "cross":
        return ((np.abs(eu) <= 1.0) & (np.abs(v) <= 0.3 * rx)) | ((np.abs(u) <= 0.3 * rx) & (np.abs(ev) <= 1.0 / 0.8))
    if kind == "crescent":
        return (eu**2 + ev**2 <= 1.0) & ((eu - 0.55) ** 2 + (ev * 0.9) ** 2 > 0.75)
    if kind == "capsule":
        return (np.maximum(np.abs(eu) - (1 - ry / rx), 0) * rx / ry) ** 2 + ev**2 <= 1.0
    # polygons in the object's frame, points (x=u, y=v): triangle, pentagon..octagon, star
    if kind == "triangle":
        angles, radii = np.arange(3) * 2 * np.pi / 3 - np.pi / 2, np.ones(3)
    elif kind == "polygon":
        angles, radii = np.arange(6) * np.pi / 3, np.ones(6)
    else:  # star
        angles = np.arange(10) * np.pi / 5 - np.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    points = np.stack([radii * np.cos(angles) * rx, radii * np.sin(angles) * max(ry, 0.6 * rx)], axis=1)
    local = Frame(v, u, frame.grain)  # polygon_mask reads (yy, xx): the object's frame as a grid
    return polygon_mask(local, points)


def _texture(sig: ClassSignature, rng: np.random.Generator, frame: Frame, u, v, size: float) -> np.ndarray:
    """The class's texture over the whole frame, (H, W, 3) float32."""
    first = _jitter(rng, tuple(PALETTE[sig.primary]), 14)
    second = _jitter(rng, tuple(PALETTE[sig.secondary]), 14)
    period = max(2.5, sig.period * size)
    ones = np.ones_like(u)
    if sig.texture == "solid":
        pick = np.zeros_like(u, dtype=bool)
    elif sig.texture == "stripes":
        pick = (v % period) < period / 2
    elif sig.texture == "checker":
        pick = ((np.floor(u / period) + np.floor(v / period)) % 2) == 0
    elif sig.texture == "speckle":
        pick = frame.grain > 0.9
    elif sig.texture == "rings":
        pick = (np.sqrt(u**2 + v**2) % period) < period / 2
    elif sig.texture == "bricks":
        row = np.floor(v / period)
        pick = ((v % period) < 1.0) | (((u + (row % 2) * period) % (2 * period)) < 1.0)
    elif sig.texture == "dots":
        pick = ((u % period - period / 2) ** 2 + (v % period - period / 2) ** 2) < (period / 4) ** 2
    else:  # gradient: primary to secondary along the major axis
        t = np.clip(u / max(size, 1.0) + 0.5, 0, 1)[..., None]
        return (first * (1 - t) + second * t + _noise(frame, 5.0)[..., None]).astype(np.float32)
    base = _shade(first, ones, _noise(frame, 5.0))
    return np.where(pick[..., None], second[None, None], base).astype(np.float32)


def draw_object(sig: ClassSignature, rng: np.random.Generator, frame: Frame, cx: float, cy: float, size: float):
    """(mask (H, W) bool, colour (H, W, 3)) of one instance of class `sig`."""
    angle = float(rng.uniform(0, 2 * np.pi))
    u, v = _rotate(frame, cx, cy, angle)
    rx = size / 2
    ry = rx * float(rng.uniform(*sig.aspect))
    body = _body_mask(sig.shape, frame, u, v, rx, ry)
    colour = _texture(sig, rng, frame, u, v, size)
    part_colour = _jitter(rng, tuple(PALETTE[sig.part_colour]), 12)
    pu, pv = float(np.cos(sig.part_angle)), float(np.sin(sig.part_angle))
    if sig.part == "cap":  # the end of the body beyond 55 % of the way along the part's direction
        cap = body & ((u * pu / rx + v * pv / max(ry, 1.0)) > 0.55)
        colour = np.where(cap[..., None], part_colour[None, None] + _noise(frame, 4.0)[..., None], colour)
    elif sig.part == "spot":
        spot = ((u - 0.4 * rx * pu) ** 2 + (v - 0.4 * ry * pv) ** 2) <= (0.28 * ry + 1.0) ** 2
        colour = np.where(spot[..., None], part_colour[None, None] + _noise(frame, 4.0)[..., None], colour)
        body = body | spot
    elif sig.part == "tail":
        c, s = float(np.cos(angle)), float(np.sin(angle))
        # the frame turned by +angle (see _rotate): object-frame (pu, pv) -> image (dx, dy)
        ex, ey = pu * c - pv * s, pu * s + pv * c
        p0 = (cx + ex * rx * 0.8, cy + ey * rx * 0.8)
        p1 = (cx + ex * rx * 1.6, cy + ey * rx * 1.6)
        tail = capsule_mask(frame, p0, p1, max(1.5, 0.12 * size))
        knob = ellipse_mask(frame, p1[0], p1[1], max(1.5, 0.14 * size), max(1.5, 0.14 * size))
        colour = np.where((tail | knob)[..., None], part_colour[None, None] + _noise(frame, 4.0)[..., None], colour)
        body = body | tail | knob
    return body, colour


def render_image(seed: int, split: str, index: int, num_classes: int, size: int) -> tuple[np.ndarray, int]:
    """Image `index` of `split` (uint8 (size, size, 3)) and its class: class index % num_classes,
    drawn from `default_rng([seed, SPLITS[split], index])` alone."""
    signatures = _signatures_cached(num_classes, seed)
    label = index % num_classes
    sig = signatures[label]
    rng = np.random.default_rng([seed, SPLITS[split], index])
    frame = make_frame(rng, size, size)
    context = sig.context if sig.context != "any" and rng.random() < P_CONTEXT else str(rng.choice(CONTEXTS))
    sky = context == "sky" or (context == "any" and rng.random() < 0.15)
    ground = context if context in ("water", "grass") else "none"
    canvas, horizon = draw_background(rng, frame, sky, ground)
    for _ in range(int(rng.choice(4, p=[0.2, 0.35, 0.3, 0.15]))):
        mask, colour = _distractor(rng, frame, size)
        canvas = np.where(mask[..., None], colour, canvas)
    for _ in range(2 if rng.random() < 0.2 else 1):
        extent = size * float(np.exp(rng.uniform(np.log(SIZE_RANGE[0]), np.log(SIZE_RANGE[1]))))
        cx, cy = rng.uniform(0.25, 0.75) * size, rng.uniform(0.25, 0.75) * size
        if ground != "none" and context != "sky":  # objects of a ground context stand in it
            cy = rng.uniform(max(horizon, 0.4 * size), 0.85 * size)
        elif context == "sky" and horizon:
            cy = rng.uniform(0.15 * size, max(horizon, 0.3 * size))
        mask, colour = draw_object(sig, rng, frame, cx, cy, extent)
        canvas = np.where(mask[..., None], colour, canvas)
    return _finish(rng, frame, canvas), label


def _distractor(rng: np.random.Generator, frame: Frame, size: int) -> tuple[np.ndarray, np.ndarray]:
    shape = draw_distractor(rng, frame, size, size)
    mask, colour = shape.pieces[0]
    return mask, np.broadcast_to(colour, (*mask.shape, 3)) if colour.ndim == 1 else colour


_CACHE: dict[tuple[int, int], list[ClassSignature]] = {}


def _signatures_cached(num_classes: int, seed: int) -> list[ClassSignature]:
    key = (num_classes, seed)
    if key not in _CACHE:
        _CACHE[key] = class_signatures(num_classes, seed)
    return _CACHE[key]


def _render_chunk(task: tuple[int, str, int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, split, start, stop, num_classes, size = task
    images = np.empty((stop - start, size, size, 3), dtype=np.uint8)
    labels = np.empty(stop - start, dtype=np.int64)
    for k, index in enumerate(range(start, stop)):
        images[k], labels[k] = render_image(seed, split, index, num_classes, size)
    return images, labels


def render_split(
    seed: int, split: str, count: int, num_classes: int, size: int, workers: int = 0, progress=None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (count, size, size, 3) uint8 and labels (count,) of `split`; the bytes do not depend on
    `workers` (0 = in this process). `progress(n)` is called with the images done per chunk."""
    chunk = 256
    tasks = [(seed, split, start, min(start + chunk, count), num_classes, size) for start in range(0, count, chunk)]
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    if workers <= 1 or count < 2 * chunk:
        for task in tasks:
            parts.append(_render_chunk(task))
            if progress:
                progress(task[3] - task[2])
    else:
        from multiprocessing import get_context

        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for task, part in zip(tasks, pool.map(_render_chunk, tasks)):
                parts.append(part)
                if progress:
                    progress(task[3] - task[2])
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 (16 hex) of a rendered split's bytes and labels: two machines that print the same value
    rendered the same world, so a difference in the trained backbone comes from the training."""
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def describe(num_classes: int, seed: int) -> list[dict]:
    """The class signatures as JSON-able dicts (written next to the cached backbone)."""
    return [asdict(sig) for sig in class_signatures(num_classes, seed)]
