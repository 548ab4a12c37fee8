"""A deterministic synthetic dataset in the PASCAL VOC 2012 layout (docs/synthetic.md).

`generate_synthetic(root, params)` writes, under `root` (the role of `VOCdevkit/VOC2012`):

    JPEGImages/<id>.jpg              RGB, quality 95
    Annotations/<id>.xml             VOC XML: one <object> per visible instance, <part>s for some
    SegmentationClass/<id>.png       palette PNG: 0 background, 1..K classes, 255 boundary band
    SegmentationClassAug/<id>.png    train + extra ids only, the same masks without the band (SBD)
    ImageSets/Segmentation/{train,val,trainval}.txt
    class_names.txt                  label k = line k (1-based)
    synthetic.json                   params, class names, counts, statistics, version (written last)

so that the VOC code path derives `train_aug = (ids of SegmentationClassAug ∪ train) − val` and the
image labels from the XML `<name>`s, exactly as on the real data. Ids have VOC's shape
`YYYY_NNNNNN` (`2100_000001`, ...), so the same id handling applies.

The images are built so that weakly-supervised segmentation is neither trivial nor hopeless: each
class has a learnable shape + colour/texture signature, but plain CAMs have known failure modes
built in (a small discriminative part on a body that looks like background clutter, classes that
co-occur, class-correlated background context, distractor shapes, occlusion, lighting and JPEG
noise). docs/synthetic.md tabulates the classes and what each one tests.

Every image `i` is drawn from `np.random.default_rng([seed, i])` alone, so the files are the same
bytes on every run and do not depend on the split sizes of the other images.
"""
from __future__ import annotations

import io
import logging
import multiprocessing
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from recam.engine.progress import progress

from recam.errors import RecamInputError
from recam.io import read_json, save_jpeg, save_label_png, write_json, write_text

log = logging.getLogger(__name__)

VERSION = "recam-synthetic-1"  # bump when the drawing changes, so old folders are regenerated
ID_YEAR = 2100                 # ids are f"{ID_YEAR}_{n:06d}", n = 1, 2, ... (VOC's 2007_000032 shape)
IGNORE = 255
ID_PATTERN = re.compile(rf"^{ID_YEAR}_\d{{6}}$")

CLASS_NAMES: tuple[str, ...] = ("disc", "block", "star", "boat", "kite", "horse", "rider", "bird")
DISC, BLOCK, STAR, BOAT, KITE, HORSE, RIDER, BIRD = range(1, len(CLASS_NAMES) + 1)
PART_NAMES: tuple[str, ...] = ("head", "hand")  # VOC person-layout names; not classes

# Image-level label sampling. P(#classes drawn) before co-occurrence adds a partner: tuned so that
# about half the images are single-label, as in VOC train_aug (59 %), mean ~1.6 labels.
NUM_CLASSES_P = (0.58, 0.30, 0.12)
# Rider and horse come in pairs most of the time (the co-occurrence failure mode of CAMs); their
# first-draw weight is lowered so that per-class image counts stay balanced.
FIRST_CLASS_WEIGHT = {DISC: 1.0, BLOCK: 1.0, STAR: 1.0, BOAT: 1.0, KITE: 1.0, HORSE: 0.6, RIDER: 0.6, BIRD: 1.0}
P_HORSE_GIVEN_RIDER = 0.7
P_RIDER_GIVEN_HORSE = 0.55
P_RIDING = 0.9                 # a rider in an image with a horse sits on it
# Context: P(scene element | class present) vs P(scene element | class absent).
P_WATER = (0.85, 0.08)         # boat
P_SKY = (0.85, 0.15)           # kite
P_GRASS = (0.7, 0.12)          # horse
MIN_VISIBLE_FRACTION = 0.45    # an instance keeps >= 45 % of its pixels after later ones are drawn
MIN_VISIBLE_PIXELS = 30
MIN_PART_PIXELS = 4


class SyntheticParamsLike(Protocol):
    """What `generate_synthetic` reads from its params (`recam.config.SyntheticParams` fits)."""
    seed: int
    n_train: int
    n_val: int
    n_extra: int
    min_size: int
    max_size: int


@dataclass(frozen=True)
class SyntheticObject:
    """One visible instance: class label 1..K, VOC bbox (1-based inclusive xmin, ymin, xmax, ymax)."""
    class_id: int
    bbox: tuple[int, int, int, int]
    truncated: bool
    parts: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()   # (part name, VOC bbox), e.g. two hands


@dataclass(frozen=True)
class SyntheticSample:
    """One generated image: image (H, W, 3) uint8, label (H, W) uint8 in 0..K (no ignore band)."""
    image: np.ndarray
    label: np.ndarray
    objects: list[SyntheticObject]
    scene: dict[str, bool]       # which context backgrounds were drawn: sky, water, grass


# --------------------------------------------------------------------------------------------------
# Masks on a pixel grid. Every mask is a bool (H, W) array computed for the whole image at once
# (images are ~20k pixels, so whole-image numpy beats clipping to windows). All arithmetic stays
# float32: numpy 2 promotes float32 arrays to float64 when mixed with np.float64 scalars, so the
# scalars below go through float().

Colour = np.ndarray              # (3,) or (H, W, 3) float32 in 0..255


@dataclass(frozen=True)
class Frame:
    """Pixel-centre coordinates yy, xx (H, W) float32, and a standard-normal grain field (H, W).

    One grain field per image serves every texture's noise (scaled by its own sigma): drawing a
    fresh 20k-pixel normal field per shape was a quarter of the generation time.
    """
    yy: np.ndarray
    xx: np.ndarray
    grain: np.ndarray


def make_frame(rng: np.random.Generator, height: int, width: int) -> Frame:
    """The coordinate grids and grain field of an H x W image."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return Frame(yy, xx, rng.standard_normal((height, width), dtype=np.float32))


def _rotate(frame: Frame, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v), each (H, W), relative to (cx, cy) on axes turned by `angle` radians."""
    yy, xx = frame.yy, frame.xx
    c, s = float(np.cos(angle)), float(np.sin(angle))
    dx, dy = xx - cx, yy - cy
    return dx * c + dy * s, -dx * s + dy * c


def ellipse_mask(frame: Frame, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    """Filled ellipse with semi-axes rx, ry (pixels, at least 0.5) turned by `angle`: bool (H, W)."""
    u, v = _rotate(frame, cx, cy, angle)
    return (u / max(rx, 0.5)) ** 2 + (v / max(ry, 0.5)) ** 2 <= 1.0


def rect_mask(frame: Frame, cx: float, cy: float, w: float, h: float, angle: float = 0.0) -> np.ndarray:
    """Filled w x h rectangle centred at (cx, cy), turned by `angle`: bool (H, W)."""
    u, v = _rotate(frame, cx, cy, angle)
    return (np.abs(u) <= max(w, 1.0) / 2) & (np.abs(v) <= max(h, 1.0) / 2)


def capsule_mask(frame: Frame, p0: tuple[float, float], p1: tuple[float, float], width: float) -> np.ndarray:
    """Pixels within width/2 of the segment p0-p1 (points are (x, y)): sticks, limbs, tails."""
    yy, xx = frame.yy, frame.xx
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = max(dx * dx + dy * dy, 1e-6)
    t = np.clip(((xx - p0[0]) * dx + (yy - p0[1]) * dy) / length2, 0.0, 1.0)
    return (xx - p0[0] - t * dx) ** 2 + (yy - p0[1] - t * dy) ** 2 <= (max(width, 1.0) / 2) ** 2


def polygon_mask(frame: Frame, points: np.ndarray) -> np.ndarray:
    """Even-odd rule fill of a closed polygon, points (N, 2) as (x, y); non-convex is fine (stars).

    One vectorised crossing test per edge: a pixel is inside when a ray to +x crosses an odd number
    of edges.
    """
    yy, xx = frame.yy, frame.xx
    inside = np.zeros(yy.shape, dtype=bool)
    corners = np.asarray(points, dtype=np.float64).tolist()   # Python floats keep the maths float32
    for i in range(len(corners)):
        x0, y0 = corners[i - 1]
        x1, y1 = corners[i]
        if y0 == y1:             # a horizontal edge is never crossed by a horizontal ray
            continue
        spans = (y0 > yy) != (y1 > yy)
        x_cross = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
        inside ^= spans & (xx < x_cross)
    return inside


def _turn(points: np.ndarray, cx: float, cy: float, angle: float) -> np.ndarray:
    """Rotate (N, 2) points (x, y) about (cx, cy) by `angle` (same sense as `_rotate`'s frame)."""
    c, s = float(np.cos(angle)), float(np.sin(angle))
    d = points - np.array([cx, cy])
    return np.stack([cx + d[:, 0] * c - d[:, 1] * s, cy + d[:, 0] * s + d[:, 1] * c], axis=1)


# --------------------------------------------------------------------------------------------------
# Colours and textures

def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float) -> np.ndarray:
    """rgb plus uniform noise in [-amount, amount] per channel, clipped to 0..255: (3,) float32."""
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


def _random_colour(rng: np.random.Generator, saturation: tuple[float, float] = (0.2, 1.0)) -> np.ndarray:
    """Any hue, a random saturation and brightness: (3,) float32 for clutter and clothes."""
    grey = rng.uniform(50, 210)
    hue = _jitter(rng, (128, 128, 128), 128)
    mix = rng.uniform(*saturation)
    return (grey * (1 - mix) + hue * mix).astype(np.float32)


def _noise(frame: Frame, sigma: float) -> np.ndarray:
    """Zero-mean noise (H, W) with standard deviation sigma, from the image's grain field."""
    return frame.grain * np.float32(sigma)


def _shade(colour: np.ndarray, factor: np.ndarray, noise: np.ndarray | float = 0.0) -> np.ndarray:
    """colour (3,) times a brightness field (H, W), plus noise (H, W): (H, W, 3)."""
    return colour[None, None, :] * factor[..., None] + np.asarray(noise, np.float32)[..., None]


def _pebble_texture(rng: np.random.Generator, frame: Frame, grey: float) -> np.ndarray:
    """Speckled grey stone look, shared by the bird's body and the (background) pebble distractors."""
    yy, xx = frame.yy, frame.xx
    fx, fy, phase = rng.uniform(0.15, 0.45), rng.uniform(0.15, 0.45), rng.uniform(0, 2 * np.pi)
    blotch = 1.0 + 0.12 * np.sin(xx * fx + phase) * np.sin(yy * fy - phase)
    tint = _jitter(rng, (grey, grey, grey * 0.97), 8)
    return _shade(tint, blotch, _noise(frame, 16.0))


# --------------------------------------------------------------------------------------------------
# Shapes. A draw function returns a `Shape`: pieces painted in order and named part masks. Nothing is
# painted until the placement is accepted (see `_compose`), so a rejected placement leaves no trace.

@dataclass
class Shape:
    """class_id 0 = distractor (background in the GT); pieces: (mask (H, W) bool, Colour)."""
    class_id: int
    pieces: list[tuple[np.ndarray, Colour]]
    parts: list[tuple[str, np.ndarray]] = field(default_factory=list)   # (VOC part name, mask)
    anchor: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (x, y, size): where a rider sits on a horse

    @property
    def mask(self) -> np.ndarray:
        union = np.zeros_like(self.pieces[0][0])
        for piece, _ in self.pieces:
            union |= piece
        return union


def draw_disc(rng: np.random.Generator, frame: Frame, cx: float, cy: float, size: float) -> Shape:
    """Orange disc (its red is kept apart from the bird head's crimson), brighter centre, faint rings."""
    rx = size / 2
    ry = rx * rng.uniform(0.8, 1.0)
    angle = rng.uniform(0, np.pi)
    u, v = _rotate(frame, cx, cy, angle)
    radius = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    rings = 1.0 + 0.1 * np.cos(radius * 2 * np.pi * rng.uniform(2.0, 3.5))
    colour = _shade(_jitter(rng, (240, 130, 30), 15), (1.12 - 0.35 * radius) * rings, _noise(frame, 6.0))
    return Shape(DISC, [(radius <= 1.0, colour)])


def draw_block(rng: np.random.Generator, frame: Frame, cx: float, cy: float, size: float) -> Shape:
    """Purple brick-walled rectangle, light mortar lines, any tilt up to ~35 degrees."""
    width, height = size, size * rng.uniform(0.45, 0.9)
    angle = rng.uniform(-0.6, 0.6)
    u, v = _rotate(frame, cx, cy, angle)
    course = max(3.0, height / rng.uniform(3.0, 5.0))           # brick height in pixels
    row = np.floor(v / course)
    brick_u = u + (row % 2) * course                               # stagger every other course
    mortar = ((v % course) < 1.0) | ((brick_u % (2 * course)) < 1.0)
    base = _jitter(rng, (135, 60, 165), 18)
    bricks = _shade(base, 1.0 + 0.06 * np.sin(row * 2.3), _noise(frame, 6.0))
    colour = np.where(mortar[..., None], _jitter(rng, (205, 200, 190), 10)[None, None], bricks)
    return Shape(BLOCK, [(rect_mask(frame, cx, cy, width, height, angle), colour)])


def draw_star(rng: np.random.Generator, frame: Frame, cx: float, cy: float, size: float) -> Shape:
    """Five-pointed gold star, darker towards its tips."""
    outer = size / 2
    inner = outer * rng.uniform(0.38, 0.5)
    angles = rng.uniform(0, 2 * np.pi) + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, outer, inner)
    points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    yy, xx = frame.yy, frame.xx
    radius = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / outer
    colour = _shade(_jitter(rng, (240, 200, 45), 15), 1.05 - 0.3 * radius, _noise(frame, 5.0))
    return Shape(STAR, [(polygon_mask(frame, points), colour)])


def draw_boat(rng: np.random.Generator, frame: Frame, cx: float, cy: float, size: float) -> Shape:
    """Brown planked hull (cy = waterline) under a cream triangular sail on a mast."""
    yy = frame.yy
    length = size
    hull_h = length * rng.uniform(0.18, 0.26)
    top = cy - hull_h * 0.6
    hull = np.array([[cx - length / 2, top], [cx + length / 2, top],
                     [cx + length * 0.33, cy + hull_h * 0.4], [cx - length * 0.33, cy + hull_h * 0.4]])
    planks = 1.0 - 0.18 * ((yy - top) % max(3.0, hull_h / 3) < 1.0).astype(np.float32)
    hull_colour = _shade(_jitter(rng, (105, 62, 35), 12), planks, _noise(frame, 5.0))
    mast_x = cx + length * rng.uniform(-0.12, 0.12)
    mast_top = top - length * rng.uniform(0.55, 0.85)
    side = float(rng.choice([-1.0, 1.0]))
    sail = np.array([[mast_x, mast_top], [mast_x, top - 1.0], [mast_x + side * length * rng.uniform(0.3, 0.45), top - 1.0]])
    sail_colour = _shade(_jitter(rng, (238, 232, 212), 10), 1.0 - 0.12 * (yy - mast_top) / max(top - mast_top, 1.0),
                         _noise(frame, 4.0))
    mast = capsule_mask(frame, (mast_x, mast_top), (mast_x, top), max(1.5, length * 0.035))
    return Shape(BOAT, [(polygon_mask(frame, sail), sail_colour), (mast, _jitter(rng, (60, 40, 25), 10)),
                        (polygon_mask(frame, hull), hull_colour)])


def draw_kite(rng: np.random.Generator, frame: Frame, cx: float, cy: float, size: float) -> Shape:
    """Two-tone quartered diamond on dark spars, with a wavy tail carrying bows (tail is kite too)."""
    height, width = size, size * rng.uniform(0.6, 0.75)
    spar = -height * 0.15                                   # cross spar above the centre
    angle = rng.uniform(-0.45, 0.45)
    outline = _turn(np.array([[cx, cy - height / 2], [cx + width / 2, cy + spar],
                              [cx, cy + height / 2], [cx - width / 2, cy + spar]]), cx, cy, angle)
    u, v = _rotate(frame, cx, cy, angle)   # the kite's own frame (outline was turned by +angle)
    first = np.array([(220, 40, 50), (215, 45, 160), (240, 120, 30)][rng.integers(3)], np.float32)
    second = np.array([(250, 225, 60), (245, 245, 240), (60, 200, 220)][rng.integers(3)], np.float32)
    quarter = (u < 0) ^ (v < spar)
    colour = np.where(quarter[..., None], first, second) + _noise(frame, 5.0)[..., None]
    spars = (np.abs(u) < max(0.6, size * 0.02)) | (np.abs(v - spar) < max(0.6, size * 0.02))
    body = polygon_mask(frame, outline)
    pieces = [(body, colour), (body & spars, _jitter(rng, (50, 40, 35), 10))]
    tail_width = max(2.0, size * 0.05)
    tail_length = size * rng.uniform(0.6, 1.0)
    start = _turn(np.array([[cx, cy + height / 2]]), cx, cy, angle)[0]
    wave = rng.uniform(0.1, 0.2) * size
    points = [start + np.array([wave * np.sin(k * 1.6) + k * size * 0.08 * np.sin(angle), k * tail_length / 4])
              for k in range(5)]
    for p0, p1 in zip(points[:-1], points[1:]):
        pieces.append((capsule_mask(frame, tuple(p0), tuple(p1), tail_width), _jitter(rng, (60, 50, 40), 10)))
    for p in points[2::2]:
        bow = size * 0.08
        pieces.append((polygon_mask(frame, np.array([[p[0] - bow, p[1] - bow / 2], [p[0] + bow, p[1] + bow / 2],
                                                     [p[0] + bow, p[1] - bow / 2], [p[0] - bow, p[1] + bow / 2]])), first))
    return Shape(KITE, pieces)


def draw_horse(rng: np.random.Generator, frame: Frame, cx: float, cy: float, size: float) -> Shape:
    """Side-view horse: coat-coloured body, neck, head and legs, dark mane, tail and hooves.

    (cx, cy) is the body centre, `size` the nose-to-tail length; hooves end at cy + 0.42 size.
    """
    yy = frame.yy
    length, facing = size, float(rng.choice([-1.0, 1.0]))
    coat_rgb = [(150, 85, 45), (110, 65, 40), (175, 120, 70), (90, 70, 60)][rng.integers(4)]
    coat = _shade(_jitter(rng, coat_rgb, 12), 1.08 - 0.25 * np.clip((yy - cy) / length + 0.2, 0, 1),
                  _noise(frame, 6.0))
    dark = _jitter(rng, (45, 30, 25), 10)

    def at(dx: float, dy: float) -> tuple[float, float]:
        return cx + facing * dx * length, cy + dy * length

    head_x, head_y = at(0.47, -0.3)
    head_r = 0.09 * length
    pieces = [(capsule_mask(frame, at(-0.3, -0.05), at(-0.42, 0.2), max(2.0, 0.06 * length)), dark)]
    for leg_x in (-0.24, -0.15, 0.15, 0.24):
        leg_top, leg_end = at(leg_x, 0.05), at(leg_x + rng.uniform(-0.04, 0.04), 0.38)
        pieces.append((capsule_mask(frame, leg_top, leg_end, max(2.0, 0.06 * length)), coat))
        pieces.append((capsule_mask(frame, leg_end, at(leg_x, 0.42), max(2.0, 0.07 * length)), dark))
    pieces += [
        (ellipse_mask(frame, cx, cy, 0.33 * length, 0.15 * length), coat),
        (capsule_mask(frame, at(0.25, -0.06), (head_x, head_y), 0.13 * length), coat),
        (capsule_mask(frame, at(0.22, -0.12), at(0.4, -0.34), max(1.5, 0.04 * length)), dark),
        (ellipse_mask(frame, *at(0.5, -0.27), head_r * 1.3, head_r * 0.75, facing * 0.6), coat),
    ]
    return Shape(HORSE, pieces, anchor=(*at(-0.05, -0.13), size))


def draw_rider(rng: np.random.Generator, frame: Frame, cx: float, cy: float, size: float,
               riding: bool = False) -> Shape:
    """A person: skin-toned head with a dark hair cap (part "head"), arms ending in hands (part
    "hand"), a shirt and trousers in random colours that match the cloth distractors.

    Standing: (cx, cy) is the body centre and `size` the height. Riding: (cx, cy) is the seat on
    the horse's back and one leg hangs down the horse's side.
    """
    yy, xx = frame.yy, frame.xx
    s = size
    top = cy - 0.55 * s if riding else cy - 0.5 * s
    skin = _jitter(rng, [(240, 200, 170), (205, 150, 110), (140, 95, 65)][rng.integers(3)], 10)
    shirt = _random_colour(rng, (0.3, 1.0))
    trousers = _random_colour(rng, (0.1, 0.5)) * 0.6
    head_r = 0.09 * s
    head_x, head_y = cx, top + head_r
    head = ellipse_mask(frame, head_x, head_y, head_r, head_r * 1.1)
    hair = head & (yy < head_y - 0.25 * head_r)
    torso_top, torso_bottom = top + 2.1 * head_r, top + 0.55 * s
    torso = rect_mask(frame, cx, (torso_top + torso_bottom) / 2, 0.25 * s, torso_bottom - torso_top)
    shirt_colour = _shade(shirt, 1.0 + 0.05 * np.sin(xx * 0.9), _noise(frame, 5.0))
    pieces: list[tuple[np.ndarray, Colour]] = []
    if riding:
        facing = float(rng.choice([-1.0, 1.0]))
        pieces.append((capsule_mask(frame, (cx, torso_bottom), (cx + facing * 0.08 * s, torso_bottom + 0.35 * s), 0.11 * s),
                       trousers))
    else:
        for side in (-1, 1):
            pieces.append((capsule_mask(frame, (cx + side * 0.06 * s, torso_bottom), (cx + side * 0.08 * s, top + s - 0.03 * s),
                                        0.09 * s), trousers))
    hands = []
    for side in (-1, 1):
        shoulder = (cx + side * 0.11 * s, torso_top + 0.03 * s)
        hand_at = (cx + side * rng.uniform(0.18, 0.26) * s, torso_top + rng.uniform(0.2, 0.3) * s)
        pieces.append((capsule_mask(frame, shoulder, hand_at, 0.065 * s), shirt_colour))
        hands.append(ellipse_mask(frame, hand_at[0], hand_at[1], 0.045 * s, 0.045 * s))
    pieces += [(torso, shirt_colour)] + [(hand, skin) for hand in hands]
    pieces += [(head, skin), (hair, _jitter(rng, (40, 28, 20), 10))]
    return Shape(RIDER, pieces, parts=[("head", head)] + [("hand", hand) for hand in hands])


def draw_bird(rng: np.random.Generator, frame: Frame, cx: float, cy: float, size: float) -> Shape:
    """Grey pebble-textured body and wing (the look of the pebble distractors) with a small red head,
    black eye and yellow beak: the head (part "head") is the only class-specific region."""
    length, facing = size, float(rng.choice([-1.0, 1.0]))
    tilt = rng.uniform(-0.3, 0.3)
    body = ellipse_mask(frame, cx, cy, 0.36 * length, 0.19 * length, tilt)
    grey = rng.uniform(110, 160)
    stone = _pebble_texture(rng, frame, grey)
    wing = ellipse_mask(frame, cx - facing * 0.05 * length, cy - 0.02 * length, 0.22 * length, 0.09 * length, tilt + facing * 0.25)
    tail = polygon_mask(frame, np.array([[cx - facing * 0.3 * length, cy], [cx - facing * 0.52 * length, cy - 0.12 * length],
                                        [cx - facing * 0.52 * length, cy + 0.08 * length]]))
    head_x, head_y, head_r = cx + facing * 0.38 * length, cy - 0.15 * length, max(3.0, 0.15 * length)
    head = ellipse_mask(frame, head_x, head_y, head_r, head_r)
    beak = polygon_mask(frame, np.array([[head_x + facing * head_r * 0.7, head_y - head_r * 0.45],
                                        [head_x + facing * head_r * 2.0, head_y + head_r * 0.1],
                                        [head_x + facing * head_r * 0.7, head_y + head_r * 0.5]]))
    eye = ellipse_mask(frame, head_x + facing * head_r * 0.35, head_y - head_r * 0.25, max(0.8, head_r * 0.22), max(0.8, head_r * 0.22))
    red = _shade(_jitter(rng, (200, 20, 60), 12), np.ones_like(frame.yy), _noise(frame, 5.0))
    pieces = [(tail, stone), (body, stone), (wing, stone * 0.75), (head, red), (eye & head, np.zeros(3, np.float32)),
              (beak, _jitter(rng, (245, 185, 30), 10))]
    return Shape(BIRD, pieces, parts=[("head", head | beak)])


DRAW: dict[int, Callable[..., Shape]] = {
    DISC: draw_disc, BLOCK: draw_block, STAR: draw_star, BOAT: draw_boat,
    KITE: draw_kite, HORSE: draw_horse, RIDER: draw_rider, BIRD: draw_bird,
}
# Object extent as a fraction of the image's shorter side, drawn log-uniformly: many small objects,
# some that fill most of the image (VOC's spread, squeezed into ~8 %..60 %).
SIZE_RANGE = {DISC: (0.12, 0.6), BLOCK: (0.15, 0.6), STAR: (0.14, 0.55), BOAT: (0.22, 0.6),
              KITE: (0.15, 0.45), HORSE: (0.3, 0.7), RIDER: (0.25, 0.6), BIRD: (0.22, 0.55)}


def draw_distractor(rng: np.random.Generator, frame: Frame, height: int, width: int, small: bool = False) -> Shape:
    """A non-class shape (label 0): a pebble (bird-body look), a cloth patch (rider-shirt look), a
    random flat-coloured blob or polygon, or a stick."""
    short = min(height, width)
    size = short * (rng.uniform(0.06, 0.18) if small else float(np.exp(rng.uniform(np.log(0.08), np.log(0.4)))))
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    kind = rng.choice(["pebble", "cloth", "blob", "polygon", "stick"], p=[0.3, 0.15, 0.2, 0.2, 0.15])
    if kind == "pebble":
        mask = ellipse_mask(frame, cx, cy, size / 2, size / 2 * rng.uniform(0.45, 0.9), rng.uniform(0, np.pi))
        return Shape(0, [(mask, _pebble_texture(rng, frame, rng.uniform(100, 170)))])
    colour = _shade(_random_colour(rng), np.ones_like(frame.yy), _noise(frame, 6.0))
    if kind == "cloth":
        mask = rect_mask(frame, cx, cy, size * 0.5, size, rng.uniform(-0.3, 0.3))
    elif kind == "blob":
        mask = ellipse_mask(frame, cx, cy, size / 2, size / 2 * rng.uniform(0.4, 1.0), rng.uniform(0, np.pi))
    elif kind == "polygon":
        n = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = size / 2 * rng.uniform(0.6, 1.0, n)
        mask = polygon_mask(frame, np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1))
    else:
        angle = rng.uniform(0, np.pi)
        half = np.array([np.cos(angle), np.sin(angle)]) * size
        mask = capsule_mask(frame, (cx - half[0], cy - half[1]), (cx + half[0], cy + half[1]), rng.uniform(2.0, 4.0))
    return Shape(0, [(mask, colour)])


# --------------------------------------------------------------------------------------------------
# Backgrounds: a textured colour field, optionally sky above / water or grass below a horizon. All of
# it is label 0; sky, water and grass are the class-correlated context.

def draw_background(rng: np.random.Generator, frame: Frame, sky: bool, ground: str) -> tuple[np.ndarray, float]:
    """Background image (H, W, 3) float32 and the horizon row (0 when no ground band)."""
    yy, xx = frame.yy, frame.xx
    height, width = yy.shape
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xx - width / 2) * float(np.cos(angle)) + (yy - height / 2) * float(np.sin(angle))) / max(height, width) + 0.5
    low, high = _random_colour(rng, (0.0, 0.6)), _random_colour(rng, (0.0, 0.6))
    wave = 1.0 + 0.08 * np.sin(xx * rng.uniform(0.04, 0.15) + rng.uniform(0, 6)) * np.sin(yy * rng.uniform(0.04, 0.15))
    canvas = (low[None, None] * (1 - ramp[..., None]) + high[None, None] * ramp[..., None]) * wave[..., None]
    texture = rng.choice(["plain", "stripes", "dots"], p=[0.5, 0.25, 0.25])
    if texture == "stripes":
        period, turn = rng.uniform(5, 14), rng.uniform(0, np.pi)
        phase = (xx * float(np.cos(turn)) + yy * float(np.sin(turn))) * (2 * np.pi / period)
        canvas *= (1.0 + 0.08 * np.sign(np.sin(phase)))[..., None]
    elif texture == "dots":
        period = rng.uniform(6, 12)
        dots = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) < (period / 4) ** 2
        canvas *= (1.0 - 0.1 * dots.astype(np.float32))[..., None]
    canvas += _noise(frame, 5.0)[..., None]

    horizon = int(round(height * rng.uniform(0.4, 0.62))) if ground != "none" else 0
    below = yy >= horizon
    if sky:
        top, bottom = _jitter(rng, (85, 140, 225), 15), _jitter(rng, (200, 222, 245), 10)
        depth = np.clip(yy / max(horizon if ground != "none" else height, 1), 0, 1)[..., None]
        sky_rgb = top * (1 - depth) + bottom * depth
        for _ in range(int(rng.integers(0, 4))):      # soft clouds: alpha falls off to the rim
            u, v = _rotate(frame, rng.uniform(0, width), rng.uniform(0, horizon or height), 0.0)
            rx, ry = rng.uniform(0.1, 0.3) * width, rng.uniform(0.04, 0.1) * height
            alpha = np.clip(1 - (u / rx) ** 2 - (v / ry) ** 2, 0, 1)[..., None] * 0.85
            sky_rgb = sky_rgb * (1 - alpha) + 245 * alpha
        sky_rgb = sky_rgb + _noise(frame, 2.5)[..., None]
        canvas = np.where(below[..., None], canvas, sky_rgb) if ground != "none" else sky_rgb
    if ground == "water":
        period_y, period_x = rng.uniform(4, 8), rng.uniform(15, 40)
        waves = np.sin(2 * np.pi * yy / period_y + 1.5 * np.sin(2 * np.pi * xx / period_x))
        water = _shade(_jitter(rng, (35, 85, 150), 12), 1.0 + 0.15 * waves, _noise(frame, 4.0))
        water = np.where((waves > 0.93)[..., None], water + 60, water)   # glints on wave crests
        canvas = np.where(below[..., None], water, canvas)
    elif ground == "grass":
        blades = np.repeat(rng.standard_normal((1, width), dtype=np.float32) * np.float32(0.12), height, axis=0)
        depth = np.clip((yy - horizon) / max(height - horizon, 1), 0, 1)
        grass = _shade(_jitter(rng, (70, 130, 50), 12), 1.05 - 0.2 * depth + blades, _noise(frame, 8.0))
        canvas = np.where(below[..., None], grass, canvas)
    return canvas.astype(np.float32), float(horizon)


# --------------------------------------------------------------------------------------------------
# Sampling one image

def sample_classes(rng: np.random.Generator) -> list[int]:
    """The image-level label set (class ids 1..K), with rider/horse co-occurrence built in."""
    ids = np.array(sorted(FIRST_CLASS_WEIGHT))
    weights = np.array([FIRST_CLASS_WEIGHT[c] for c in ids], dtype=np.float64)
    wanted = int(rng.choice([1, 2, 3], p=NUM_CLASSES_P))
    chosen: list[int] = []
    while len(chosen) < wanted:
        free = np.array([c not in chosen for c in ids])
        first = int(rng.choice(ids[free], p=weights[free] / weights[free].sum()))
        chosen.append(first)
        if first == RIDER and HORSE not in chosen and rng.random() < P_HORSE_GIVEN_RIDER:
            chosen.append(HORSE)
        elif first == HORSE and RIDER not in chosen and rng.random() < P_RIDER_GIVEN_HORSE:
            chosen.append(RIDER)
    return chosen


def sample_size(rng: np.random.Generator, min_size: int, max_size: int) -> tuple[int, int]:
    """(H, W): 70 % one of two fixed sizes (landscape / portrait, so equal-size batches exist),
    30 % any size in [min_size, max_size]."""
    short = int(np.clip(round((min_size + max_size) / 2 / 8) * 8, min_size, max_size))
    pick = rng.random()
    if pick < 0.4:
        return short, max_size
    if pick < 0.7:
        return max_size, short
    return int(rng.integers(min_size, max_size + 1)), int(rng.integers(min_size, max_size + 1))


def _place(rng: np.random.Generator, class_id: int, height: int, width: int, horizon: float,
           scene: dict[str, bool]) -> tuple[float, float, float]:
    """Centre (x, y) and pixel size of a new instance, following the scene (boats on water, kites
    in the sky, horses and standing riders on grass); 20 % may run off the image edge (truncated)."""
    low, high = SIZE_RANGE[class_id]
    size = min(height, width) * float(np.exp(rng.uniform(np.log(low), np.log(high))))
    margin = 0.0 if rng.random() < 0.2 else 0.3
    cx = rng.uniform(width * margin * 0.5, width * (1 - margin * 0.5))
    cy = rng.uniform(height * margin * 0.5, height * (1 - margin * 0.5))
    ground = scene["water"] or scene["grass"]
    if class_id == BOAT and scene["water"]:
        cy = rng.uniform(horizon + 0.15 * size, height - 0.05 * size)
    elif class_id == KITE and scene["sky"]:
        sky_bottom = horizon if ground else height
        cy = rng.uniform(0.1 * height, max(0.1 * height + 1, sky_bottom - 0.6 * size))
    elif class_id == HORSE and scene["grass"]:
        hooves = rng.uniform(horizon + 0.2 * (height - horizon), height + 0.05 * size)
        cy = hooves - 0.42 * size
    elif class_id == RIDER and scene["grass"]:
        cy = rng.uniform(horizon + 0.2 * (height - horizon), height) - 0.5 * size
    elif class_id == BIRD and scene["sky"] and rng.random() < 0.6:
        cy = rng.uniform(0.1 * height, max(0.1 * height + 1, (horizon if ground else height) - 0.2 * size))
    return cx, cy, size


def _compose(canvas: np.ndarray, owner: np.ndarray, areas: list[int], shape: Shape, index: int) -> bool:
    """Paint `shape` as instance `index` (-1 for a distractor) if every earlier instance keeps
    MIN_VISIBLE_FRACTION of its pixels and the new one shows MIN_VISIBLE_PIXELS; else do nothing.

    canvas (H, W, 3) float32 and owner (H, W) int16 (instance index, -1 = background) change in place.
    """
    mask = shape.mask
    if index >= 0 and mask.sum() < MIN_VISIBLE_PIXELS:
        return False
    covered = np.bincount(owner[mask & (owner >= 0)], minlength=len(areas))
    visible = np.bincount(owner[owner >= 0], minlength=len(areas))
    for i, area in enumerate(areas):
        if visible[i] - covered[i] < max(MIN_VISIBLE_FRACTION * area, MIN_VISIBLE_PIXELS):
            return False
    for piece, colour in shape.pieces:
        canvas[piece] = colour[piece] if colour.ndim == 3 else colour
    owner[mask] = index
    return True


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """VOC box of a non-empty mask: 1-based inclusive (xmin, ymin, xmax, ymax)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1


def add_ignore_band(label: np.ndarray, radius: int = 1) -> np.ndarray:
    """VOC-style GT: pixels within `radius` (Chebyshev) of a different label become 255.

    label: (H, W) uint8 without ignore. With radius 1 the band is 2 px wide (one each side of a
    boundary, including boundaries between two objects), i.e. ~1.5 % of a 128 px side, close to
    VOC's 5 px band on ~500 px images. Returns a new (H, W) uint8 array.
    """
    padded = np.pad(label, radius, mode="edge")
    height, width = label.shape
    low, high = label.copy(), label.copy()
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            window = padded[dy:dy + height, dx:dx + width]
            np.minimum(low, window, out=low)
            np.maximum(high, window, out=high)
    return np.where(low != high, np.uint8(IGNORE), label).astype(np.uint8)


def _finish(rng: np.random.Generator, frame: Frame, canvas: np.ndarray) -> np.ndarray:
    """Lighting gradient, slight blur, sensor noise and a JPEG round trip at random quality.

    canvas (H, W, 3) float32 -> (H, W, 3) uint8, i.e. the pixels a camera would have saved.
    """
    height, width = frame.yy.shape
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (frame.xx * float(np.cos(angle)) + frame.yy * float(np.sin(angle))) / max(height, width)
    light = rng.uniform(0.8, 1.0) + rng.uniform(0.0, 0.3) * (ramp - ramp.min())
    image = canvas * light[..., None]
    # Real edges are not one pixel sharp: blend in a 3x3 box blur (30-60 %).
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = padded[:height, :width].copy()
    for dy, dx in [(dy, dx) for dy in range(3) for dx in range(3)][1:]:
        blurred += padded[dy:dy + height, dx:dx + width]
    mix = rng.uniform(0.3, 0.6)
    # Sensor noise is per channel and independent of the texture grain.
    sensor = rng.standard_normal((height, width, 3), dtype=np.float32) * np.float32(rng.uniform(2.0, 6.0))
    image = image * np.float32(1 - mix) + blurred * np.float32(mix / 9.0) + sensor
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(rng.integers(50, 91)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8)


def render_sample(seed: int, index: int, min_size: int = 96, max_size: int = 160) -> SyntheticSample:
    """Draw image `index` of the dataset with `seed`; depends on nothing else (deterministic).

    Steps: label set -> scene (context) -> background -> behind-distractors -> objects (riders on
    their horses) -> maybe a small occluding distractor -> lighting/blur/noise/JPEG. A draw where a
    class would end up with no pixel outside the ignore band is redrawn from the same generator.
    """
    rng = np.random.default_rng([seed, index])
    height, width = sample_size(rng, min_size, max_size)
    frame = make_frame(rng, height, width)
    while True:
        sample = _try_render(rng, frame)
        if sample is not None:
            return sample


def _try_render(rng: np.random.Generator, frame: Frame) -> SyntheticSample | None:
    """One attempt of `render_sample`; None when a listed object would have no pixel outside the band."""
    height, width = frame.yy.shape
    classes = sample_classes(rng)
    water = rng.random() < P_WATER[0 if BOAT in classes else 1]
    grass = not water and rng.random() < P_GRASS[0 if HORSE in classes else 1]
    sky = rng.random() < P_SKY[0 if KITE in classes else 1]
    scene = {"sky": bool(sky), "water": bool(water), "grass": bool(grass)}
    canvas, horizon = draw_background(rng, frame, sky, "water" if water else "grass" if grass else "none")
    owner = np.full((height, width), -1, dtype=np.int16)
    areas: list[int] = []
    shapes: list[Shape] = []

    for _ in range(int(rng.choice(5, p=[0.15, 0.3, 0.3, 0.15, 0.1]))):
        _compose(canvas, owner, areas, draw_distractor(rng, frame, height, width), -1)

    # One instance per class; a second instance of a class (not riders) when there is room, up to 3.
    instances = [c for c in classes if c != RIDER]
    if instances and len(classes) < 3 and rng.random() < 0.3:
        instances.append(int(rng.choice(instances)))
    riders = RIDER in classes
    rng.shuffle(instances)
    for class_id in instances:
        for _ in range(8):                     # a few placements before giving up on this instance
            cx, cy, size = _place(rng, class_id, height, width, horizon, scene)
            shape = DRAW[class_id](rng, frame, cx, cy, size)
            if _compose(canvas, owner, areas, shape, len(areas)):
                areas.append(int(shape.mask.sum()))
                shapes.append(shape)
                break
        if class_id == HORSE and riders and shapes and shapes[-1].class_id == HORSE and rng.random() < P_RIDING:
            seat_x, seat_y, horse_size = shapes[-1].anchor
            rider = draw_rider(rng, frame, seat_x, seat_y, horse_size * rng.uniform(0.55, 0.7), riding=True)
            if _compose(canvas, owner, areas, rider, len(areas)):
                areas.append(int(rider.mask.sum()))
                shapes.append(rider)
                riders = False
    if riders:                                 # a standing rider (no horse, or not riding it)
        for _ in range(8):
            cx, cy, size = _place(rng, RIDER, height, width, horizon, scene)
            rider = draw_rider(rng, frame, cx, cy, size)
            if _compose(canvas, owner, areas, rider, len(areas)):
                areas.append(int(rider.mask.sum()))
                shapes.append(rider)
                break
    if rng.random() < 0.2:                     # an occluder in front: label 0 over an object
        _compose(canvas, owner, areas, draw_distractor(rng, frame, height, width, small=True), -1)
    if not shapes:
        return None

    class_of = np.array([0] + [s.class_id for s in shapes], dtype=np.uint8)
    label = class_of[owner + 1]
    banded = add_ignore_band(label)
    objects = []
    for i, shape in enumerate(shapes):
        visible = owner == i
        if not (visible & (banded == shape.class_id)).any():
            return None                        # would be listed in the XML yet absent from the GT
        parts = tuple((name, _bbox(part & visible)) for name, part in shape.parts
                      if (part & visible).sum() >= MIN_PART_PIXELS)
        truncated = bool(visible[0].any() or visible[-1].any() or visible[:, 0].any() or visible[:, -1].any())
        objects.append(SyntheticObject(shape.class_id, _bbox(visible), truncated, parts))
    return SyntheticSample(_finish(rng, frame, canvas), label, objects, scene)


# --------------------------------------------------------------------------------------------------
# Files

def annotation_xml(image_id: str, height: int, width: int, objects: list[SyntheticObject]) -> str:
    """VOC 2012 annotation XML: filename, size (depth 3), segmented=1, one <object> per instance
    with name, pose, truncated, difficult=0, bndbox (1-based inclusive) and nested <part>s."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "recam synthetic"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "1"

    def box(parent: ET.Element, bbox: tuple[int, int, int, int]) -> None:
        element = ET.SubElement(parent, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), bbox):
            ET.SubElement(element, tag).text = str(value)

    for obj in objects:
        element = ET.SubElement(root, "object")
        ET.SubElement(element, "name").text = CLASS_NAMES[obj.class_id - 1]
        ET.SubElement(element, "pose").text = "Unspecified"
        ET.SubElement(element, "truncated").text = str(int(obj.truncated))
        ET.SubElement(element, "difficult").text = "0"
        box(element, obj.bbox)
        for name, bbox in obj.parts:
            part = ET.SubElement(element, "part")
            ET.SubElement(part, "name").text = name
            box(part, bbox)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def image_ids(params: SyntheticParamsLike) -> dict[str, list[str]]:
    """{"train", "val", "extra"}: consecutive ids 2100_000001, ... in that order."""
    names = [f"{ID_YEAR}_{n:06d}" for n in range(1, params.n_train + params.n_val + params.n_extra + 1)]
    train_end, val_end = params.n_train, params.n_train + params.n_val
    return {"train": names[:train_end], "val": names[train_end:val_end], "extra": names[val_end:]}


def params_dict(params: SyntheticParamsLike) -> dict[str, int]:
    return {key: int(getattr(params, key)) for key in ("seed", "n_train", "n_val", "n_extra", "min_size", "max_size")}


def _check(params: SyntheticParamsLike, root: Path) -> None:
    """One-line RecamInputError for bad params or a root that holds non-synthetic images."""
    values = params_dict(params)
    if values["n_train"] < 1 or values["n_val"] < 1 or values["n_extra"] < 0:
        raise RecamInputError(f"recam: dataset.synthetic needs n_train >= 1, n_val >= 1, n_extra >= 0, got {values}")
    if not 48 <= values["min_size"] <= values["max_size"]:
        raise RecamInputError(f"recam: dataset.synthetic needs 48 <= min_size <= max_size, got {values}")
    images = root / "JPEGImages"
    if images.is_dir():
        foreign = [p.name for p in images.iterdir() if not ID_PATTERN.match(p.name.split(".")[0])]
        if foreign:
            raise RecamInputError(f"recam: {root} already holds images that are not synthetic ({foreign[0]}, ...); "
                                  "point dataset.root at an empty or synthetic folder")


def _remove_stale(root: Path, keep: dict[str, set[str]]) -> int:
    """Delete synthetic files (and .tmp leftovers) of an earlier, larger generation; returns the count."""
    removed = 0
    for folder, ids in keep.items():
        path = root / folder
        if not path.is_dir():
            continue
        for file in path.iterdir():
            stem = file.name.split(".")[0]
            if ID_PATTERN.match(stem) and (stem not in ids or file.name.endswith(".tmp")):
                file.unlink()
                removed += 1
    return removed


def _statistics(records: list[tuple[str, list[int], dict[str, bool]]]) -> dict[str, Any]:
    """Per-class image counts, label-count histogram and context / co-occurrence rates."""
    counts = {name: 0 for name in CLASS_NAMES}
    histogram: dict[str, int] = {}
    for _, classes, _ in records:
        for c in classes:
            counts[CLASS_NAMES[c - 1]] += 1
        histogram[str(len(classes))] = histogram.get(str(len(classes)), 0) + 1

    def rate(element: str, class_id: int, present: bool) -> float:
        hits = [scene[element] for _, classes, scene in records if (class_id in classes) == present]
        return round(float(np.mean(hits)), 3) if hits else 0.0

    def given(a: int, b: int) -> float:
        with_b = [a in classes for _, classes, _ in records if b in classes]
        return round(float(np.mean(with_b)), 3) if with_b else 0.0

    return {
        "images_per_class": counts,
        "labels_per_image": dict(sorted(histogram.items())),
        "single_label_fraction": round(histogram.get("1", 0) / max(len(records), 1), 3),
        "context": {"water|boat": rate("water", BOAT, True), "water|no boat": rate("water", BOAT, False),
                    "sky|kite": rate("sky", KITE, True), "sky|no kite": rate("sky", KITE, False),
                    "grass|horse": rate("grass", HORSE, True), "grass|no horse": rate("grass", HORSE, False)},
        "cooccurrence": {"horse|rider": given(HORSE, RIDER), "rider|horse": given(RIDER, HORSE)},
    }


def _write_sample(root: Path, image_id: str, sample: SyntheticSample, in_aug: bool) -> None:
    """The JPEG, the XML, the banded GT mask, and (train/extra ids) the SBD-style mask of one image."""
    height, width = sample.label.shape
    save_jpeg(root / "JPEGImages" / f"{image_id}.jpg", sample.image, quality=95)
    write_text(root / "Annotations" / f"{image_id}.xml", annotation_xml(image_id, height, width, sample.objects))
    save_label_png(root / "SegmentationClass" / f"{image_id}.png", add_ignore_band(sample.label))
    if in_aug:
        save_label_png(root / "SegmentationClassAug" / f"{image_id}.png", sample.label)


def _make_one(task: tuple[Path, str, int, int, int, int, bool]) -> tuple[str, list[int], dict[str, bool]]:
    """Render and write one image (a process-pool task); returns (id, class ids, scene) for the statistics."""
    root, image_id, seed, index, min_size, max_size, in_aug = task
    sample = render_sample(seed, index, min_size, max_size)
    _write_sample(root, image_id, sample, in_aug=in_aug)
    return image_id, sorted({o.class_id for o in sample.objects}), sample.scene


def _auto_workers(num_images: int) -> int:
    """In-process below ~100 images (starting a process costs ~0.3 s), else one process per core (<= 8)."""
    if num_images < 100:
        return 0
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def generate_synthetic(root: str | Path, params: SyntheticParamsLike, overwrite: bool = False, *,
                       workers: int | None = None) -> dict[str, Any]:
    """Write the synthetic VOC-layout dataset under `root` (the VOC2012 folder); see the module doc.

    params: seed, n_train, n_val, n_extra, min_size, max_size (`recam.config.SyntheticParams`).
    Idempotent: when `root/synthetic.json` records the same params and version and `overwrite` is
    False, nothing is written. `synthetic.json` is written last (and removed first when
    regenerating), so an interrupted generation is redone on the next call.
    workers: processes that render and write (0 or 1 = in this process; None = one per core for
    100+ images). The files are the same bytes for any worker count.
    Returns {"root", "generated", "num_classes", "class_names", "counts": {train, val, extra,
    train_aug}, "lists": {train, val}, "statistics"}.
    """
    root = Path(root)
    _check(params, root)
    summary_path = root / "synthetic.json"
    wanted = params_dict(params)
    if summary_path.is_file() and not overwrite:
        summary = read_json(summary_path)
        if summary.get("version") == VERSION and summary.get("params") == wanted:
            log.info("synthetic dataset at %s is up to date (%s)", root, VERSION)
            return _result(root, summary, generated=False)
    if summary_path.exists():
        summary_path.unlink()

    ids = image_ids(params)
    all_ids = ids["train"] + ids["val"] + ids["extra"]
    val_ids = set(ids["val"])

    tasks = [(root, image_id, wanted["seed"], index, wanted["min_size"], wanted["max_size"], image_id not in val_ids)
             for index, image_id in enumerate(all_ids)]
    workers = _auto_workers(len(tasks)) if workers is None else workers
    bar = dict(total=len(tasks), desc="prepare synthetic", leave=False)
    if workers <= 1:
        records = [_make_one(task) for task in progress(tasks, **bar)]
    else:
        # Spawned processes: drawing is many small numpy ops that hold the GIL, so threads do not
        # scale; spawn (not fork) because the caller may already hold torch's threads. Each image
        # depends only on (seed, index), so the bytes do not depend on the worker count.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            records = list(progress(pool.map(_make_one, tasks, chunksize=8), **bar))

    lists = root / "ImageSets" / "Segmentation"
    write_text(lists / "train.txt", "".join(f"{i}\n" for i in ids["train"]))
    write_text(lists / "val.txt", "".join(f"{i}\n" for i in ids["val"]))
    write_text(lists / "trainval.txt", "".join(f"{i}\n" for i in ids["train"] + ids["val"]))
    write_text(root / "class_names.txt", "".join(f"{name}\n" for name in CLASS_NAMES))
    every = set(all_ids)
    removed = _remove_stale(root, {"JPEGImages": every, "Annotations": every, "SegmentationClass": every,
                                   "SegmentationClassAug": every - val_ids})
    summary = {
        "version": VERSION,
        "params": wanted,
        "class_names": list(CLASS_NAMES),
        "part_names": list(PART_NAMES),
        "counts": {"train": len(ids["train"]), "val": len(ids["val"]), "extra": len(ids["extra"]),
                   "train_aug": len(ids["train"]) + len(ids["extra"])},
        "statistics": _statistics(records),
    }
    write_json(summary_path, summary)
    log.info("wrote %d synthetic images to %s (%d stale files removed)", len(all_ids), root, removed)
    return _result(root, summary, generated=True)


def _result(root: Path, summary: dict[str, Any], generated: bool) -> dict[str, Any]:
    lists = root / "ImageSets" / "Segmentation"
    return {
        "root": root,
        "generated": generated,
        "num_classes": len(summary["class_names"]),
        "class_names": list(summary["class_names"]),
        "counts": dict(summary["counts"]),
        "lists": {"train": lists / "train.txt", "val": lists / "val.txt"},
        "statistics": summary["statistics"],
    }


__all__ = [
    "CLASS_NAMES", "PART_NAMES", "VERSION", "SyntheticObject", "SyntheticSample", "add_ignore_band",
    "annotation_xml", "generate_synthetic", "image_ids", "render_sample", "sample_classes",
]


# --- The same images as a COCO-format set (dataset=coco14 tests and smoke runs) ---------------------

# Synthetic class k (1-based) -> a COCO category id of spec §11.2 (disc->person, ..., boat->boat,
# kite->kite, horse->horse, bird->bird); the names do not matter, the ids exercise the 91->80 map.
SYNTHETIC_COCO_IDS: tuple[int, ...] = (1, 2, 3, 9, 38, 19, 4, 90)


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE of a binary (H, W) mask: run lengths of the column-major pixels,
    starting with a (possibly empty) run of zeros."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1] if flat.size else 0]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def coco_annotations(sample: SyntheticSample, image_id: int, first_ann_id: int, index: int) -> list[dict[str, Any]]:
    """COCO annotations of one synthetic image: one per class present, its pixels as compressed RLE
    (even classes) or uncompressed RLE (odd); every 3rd image adds a polygon (the first object's
    box) and every 5th a crowd RLE over the first object's box. Areas are pixel counts."""
    from pycocotools import mask as mask_utils

    anns = []
    for class_id in sorted(int(c) for c in np.unique(sample.label) if c not in (0, IGNORE)):
        binary = sample.label == class_id
        if class_id % 2 == 0:
            rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
            segmentation: Any = {"size": rle["size"], "counts": rle["counts"].decode()}
        else:
            segmentation = uncompressed_rle(binary)
        anns.append({"category_id": SYNTHETIC_COCO_IDS[class_id - 1], "iscrowd": 0, "segmentation": segmentation,
                     "area": float(binary.sum())})
    if sample.objects and index % 3 == 0:
        first = sample.objects[0]
        x0, y0, x1, y1 = first.bbox[0] - 1, first.bbox[1] - 1, first.bbox[2], first.bbox[3]   # VOC 1-based -> edges
        anns.append({"category_id": SYNTHETIC_COCO_IDS[first.class_id - 1], "iscrowd": 0,
                     "segmentation": [[float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]],
                     "area": float((x1 - x0) * (y1 - y0))})
    if sample.objects and index % 5 == 0:
        first = sample.objects[0]
        box = np.zeros(sample.label.shape, dtype=np.uint8)
        box[first.bbox[1] - 1:first.bbox[3], first.bbox[0] - 1:first.bbox[2]] = 1
        anns.append({"category_id": SYNTHETIC_COCO_IDS[first.class_id - 1], "iscrowd": 1,
                     "segmentation": uncompressed_rle(box), "area": float(box.sum())})
    for k, ann in enumerate(anns):
        ann.update(id=first_ann_id + k, image_id=image_id, bbox=[0.0, 0.0, 0.0, 0.0])
    return anns


def generate_synthetic_coco(root: str | Path, params: SyntheticParamsLike) -> dict[str, Any]:
    """Write the synthetic images in the COCO 2014 layout under `root` (spec §11.1).

    train2014/ holds n_train + n_extra images, val2014/ n_val, named COCO_<split>_%012d.jpg with
    ids 1, 2, ...; annotations/instances_<split>2014.json lists them in descending id order (the
    pipeline must sort) with polygon, compressed and uncompressed RLE and crowd annotations
    (`coco_annotations`). The first train image keeps no annotation (spec §11.5). Returns
    {"root", "images": {split: n}, "annotations": {split: n}}.
    """
    root = Path(root)
    values = params_dict(params)
    _check(params, root)
    counts = {"train2014": values["n_train"] + values["n_extra"], "val2014": values["n_val"]}
    categories = [{"id": c, "name": name} for c, name in zip(SYNTHETIC_COCO_IDS, CLASS_NAMES)]
    result: dict[str, Any] = {"root": root, "images": counts, "annotations": {}}
    index = 0
    for split, count in counts.items():
        images, annotations = [], []
        for image_id in range(1, count + 1):
            sample = render_sample(values["seed"], index, values["min_size"], values["max_size"])
            name = f"COCO_{split}_{image_id:012d}.jpg"
            save_jpeg(root / split / name, sample.image, quality=95)
            height, width = sample.label.shape
            images.append({"id": image_id, "file_name": name, "height": height, "width": width})
            if not (split == "train2014" and image_id == 1):
                annotations += coco_annotations(sample, image_id, len(annotations) + 1, index)
            index += 1
        write_json(root / "annotations" / f"instances_{split}.json",
                   {"images": images[::-1], "annotations": annotations, "categories": categories})
        result["annotations"][split] = len(annotations)
    return result
