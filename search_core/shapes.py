"""`shapes`: a procedurally generated image dataset that is not saturated, bundled as code.

Each grey 64x64 image shows one large figure of its class (circle, triangle, square, pentagon,
hexagon, star, cross, ring, crescent or arrow; filled or outlined, at a random size, angle, place
and contrast), sometimes beside a smaller figure of another class, among stray strokes, on a
shaded, noisy background. Telling the figures apart takes their whole outline (a pentagon and a
hexagon differ by one corner), and telling the large one from the distractors takes the whole
image, so that a network's depth and kernel sizes matter: MobileNetV2 retrained on it stays well
below what it reaches on digits, and the shallowest member of the space below MobileNetV2.

Generation is deterministic (numpy's PCG64 and Pillow's drawing), takes a few seconds, and is
cached on first use as one compressed file (EDGE_NAS_CACHE, default ~/.cache/edge-nas); nothing is
downloaded. VERSION names the generator: a change to it makes a new file, never a silent change of
the data.
"""
import math
import os

import numpy as np

VERSION = 1
SIDE = 64  # the stored resolution; the loader resizes to the run's
PER_CLASS = 600
CLASSES = ("circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "ring",
           "crescent", "arrow")
_SUPERSAMPLE = 4  # drawn at 4x and reduced: smooth edges at every size
_SEED = 20261129


HELD_OUT_SEED = _SEED + 1  # never drawn into the dataset: a test set apart from every split


def cache_path(name="shapes"):
    root = os.environ.get("EDGE_NAS_CACHE") or os.path.join("~", ".cache", "edge-nas")
    return os.path.join(os.path.expanduser(root), "{}-v{}.npz".format(name, VERSION))


def load():
    """(images uint8 (N, 1, SIDE, SIDE), labels int64 (N,), class names), from the cache or made."""
    return _cached(cache_path(), generate) + (CLASSES,)


def held_out(per_class=1000):
    """A test set apart from the dataset, from the same generator with another seed: 10,000 images
    by default, whose sampling error at 90% accuracy is 0.3 points (the dataset's 1,200-image test
    split: 0.9). (images, labels), cached like the dataset."""
    return _cached(cache_path("shapes-held-out-{}".format(per_class)),
                   lambda: generate(per_class, HELD_OUT_SEED))


def _cached(path, make):
    if os.path.exists(path):
        try:
            with np.load(path) as data:
                return data["images"], data["labels"]
        except (OSError, ValueError, KeyError):
            pass  # a file cut short by an interrupted first use: make it again
    images, labels = make()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "{}.{}.tmp.npz".format(path[:-len(".npz")], os.getpid())
    np.savez_compressed(tmp, images=images, labels=labels)
    os.replace(tmp, path)
    return images, labels


def generate(per_class=PER_CLASS, seed=_SEED):
    """The whole dataset, class by class interleaved: image i has label i % len(CLASSES)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    n = per_class * len(CLASSES)
    images = np.empty((n, 1, SIDE, SIDE), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % len(CLASSES)
    for i, label in enumerate(labels):
        images[i, 0] = _image(int(label), rng)
    return images, labels


def _image(label, rng):
    from PIL import Image, ImageDraw  # lazy: only the first use draws

    big = SIDE * _SUPERSAMPLE
    background = _background(rng, big)
    canvas = Image.fromarray(background)
    draw = ImageDraw.Draw(canvas)
    base = float(background.mean())
    for _ in range(rng.integers(1, 4)):  # stray strokes
        points = [tuple(rng.uniform(0, big, 2)) for _ in range(2)]
        draw.line(points, fill=_ink(rng, base), width=int(rng.uniform(1, 3) * _SUPERSAMPLE))
    others = [c for c in range(len(CLASSES)) if c != label]
    for _ in range(rng.integers(0, 2)):  # a smaller figure of another class
        _figure(draw, int(rng.choice(others)), rng, big, rng.uniform(0.08, 0.14), base)
    _figure(draw, label, rng, big, rng.uniform(0.32, 0.45), base)
    small = canvas.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    noisy = np.asarray(small, dtype=np.float32) + rng.normal(0, rng.uniform(4, 12), (SIDE, SIDE))
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def _background(rng, big):
    """A linear shade in a random direction."""
    low, high = sorted(rng.uniform(30, 200, 2))
    angle = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:big, 0:big] / float(big)
    ramp = (x * math.cos(angle) + y * math.sin(angle)) / math.sqrt(2) + 0.5
    return (low + (high - low) * ramp).astype(np.uint8)


def _ink(rng, base):
    """A grey that stands out from the background by at least 60 levels."""
    darker = base > 128 if rng.random() < 0.8 else base <= 128
    return int(rng.uniform(0, max(base - 60, 1))) if darker else int(rng.uniform(min(base + 60, 254), 255))


def _figure(draw, label, rng, big, radius_fraction, base):
    radius = radius_fraction * big
    cx, cy = rng.uniform(radius, big - radius, 2)
    angle = rng.uniform(0, 2 * math.pi)
    ink = _ink(rng, base)
    width = max(1, int(rng.uniform(0.08, 0.16) * radius))
    filled = rng.random() < 0.5
    name = CLASSES[label]
    if name == "circle":
        box = [cx - radius, cy - radius, cx + radius, cy + radius]
        draw.ellipse(box, fill=ink if filled else None, outline=ink, width=width)
    elif name == "ring":
        box = [cx - radius, cy - radius, cx + radius, cy + radius]
        draw.ellipse(box, outline=ink, width=max(width, int(0.35 * radius)))
    elif name == "crescent":
        box = [cx - radius, cy - radius, cx + radius, cy + radius]
        draw.ellipse(box, fill=ink)
        dx, dy = 0.45 * radius * math.cos(angle), 0.45 * radius * math.sin(angle)
        inner = [cx - 0.85 * radius + dx, cy - 0.85 * radius + dy,
                 cx + 0.85 * radius + dx, cy + 0.85 * radius + dy]
        draw.ellipse(inner, fill=int(base))
    else:
        points = _outline(name, cx, cy, radius, angle)
        if filled:
            draw.polygon(points, fill=ink)
        else:
            draw.line(points + points[:1], fill=ink, width=width, joint="curve")


def _outline(name, cx, cy, radius, angle):
    """The corners of a polygonal figure, around (cx, cy), turned by `angle`."""
    if name in ("triangle", "square", "pentagon", "hexagon"):
        corners = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[name]
        polar = [(radius, 2 * math.pi * k / corners) for k in range(corners)]
    elif name == "star":
        polar = [(radius if k % 2 == 0 else 0.42 * radius, math.pi * k / 5) for k in range(10)]
    elif name == "cross":
        a, b = 0.3 * radius, radius
        xy = [(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b), (-a, -b), (-a, -a), (-b, -a),
              (-b, a), (-a, a), (-a, b)]
        polar = [(math.hypot(x, y), math.atan2(y, x)) for x, y in xy]
    else:  # arrow
        xy = [(radius, 0), (0.1 * radius, 0.6 * radius), (0.1 * radius, 0.22 * radius),
              (-radius, 0.22 * radius), (-radius, -0.22 * radius), (0.1 * radius, -0.22 * radius),
              (0.1 * radius, -0.6 * radius)]
        polar = [(math.hypot(x, y), math.atan2(y, x)) for x, y in xy]
    return [(cx + r * math.cos(t + angle), cy + r * math.sin(t + angle)) for r, t in polar]
