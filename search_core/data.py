"""In-memory image classification datasets for training and searching small networks.

Four sources, none of which downloads anything: scikit-learn's bundled 8x8 `digits`, the generated
`shapes` (shapes.py), a local CIFAR-10 directory in the standard python pickle format, and an
`imagefolder` tree (`root/<class>/<image>`). Images are kept as uint8 (N, C, H, W) at the dataset resolution;
`iterate_batches` turns them into normalised float batches.
"""
import importlib
import importlib.util
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nano_agent import limits

from . import shapes
from .settings import BUNDLED_DATASETS, DATASETS

MIN_IMAGES_PER_CLASS = 3  # one each for train, val and test
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
STD_FLOOR = 1e-3

_CHUNK = 2048  # images converted per step, bounding float32 temporaries when resizing / reducing

# Augmentation ranges.
MAX_ROTATION_DEG = 10.0
SCALE_RANGE = (0.9, 1.1)
MAX_TRANSLATE = 0.1  # fraction of the image size


class DatasetError(ValueError):
    """Bad dataset input; the message names the path or argument and what was expected."""


class Split:
    """Images (uint8, N x C x H x W) and their labels (int64, N)."""

    __slots__ = ("images", "labels")

    def __init__(self, images, labels):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DatasetError("split images must be a uint8 (N, C, H, W) tensor, got {} {}".format(
                images.dtype, tuple(images.shape)))
        if labels.shape != (images.shape[0],):
            raise DatasetError("split labels must have shape ({},), got {}".format(
                images.shape[0], tuple(labels.shape)))
        self.images = images
        self.labels = labels.long()

    def __len__(self):
        return self.labels.shape[0]

    def __repr__(self):
        return "Split(n={}, shape={})".format(len(self), tuple(self.images.shape[1:]))


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensor fields with == is ambiguous
class Dataset:
    """A loaded dataset; mean and std are per channel, in [0, 1] units, over the train split."""

    name: str
    num_classes: int
    channels: int
    resolution: int
    class_names: list
    train: Split
    val: Split
    test: Split
    mean: tuple
    std: tuple


# ----------------------------------------------------------------------------------------- loading

def load_dataset(name, resolution=32, seed=0, data_dir=None, val_fraction=0.2, test_fraction=0.2,
                 limit=None):
    """Load dataset `name`, split it stratified by `seed`, keep at most `limit` images per split.

    `data_dir` is required for cifar10 and imagefolder and ignored for the bundled datasets. For
    cifar10 the test split is `test_batch`, so `test_fraction` is ignored there.
    """
    if name not in DATASETS:
        raise DatasetError("unknown dataset {!r}; expected one of {}".format(name, ", ".join(DATASETS)))
    _check_int("resolution", resolution, limits.RESOLUTION.low, limits.RESOLUTION.high)
    _check_int("seed", seed, 0, 2 ** 63 - 1)
    if limit is not None:
        _check_int("limit", limit, 1, None)
    if name == "cifar10":
        test_fraction = 0.0
    _check_fractions(val_fraction, test_fraction)
    if name not in BUNDLED_DATASETS and data_dir is None:
        raise DatasetError("dataset {!r} needs data_dir".format(name))

    generator = torch.Generator().manual_seed(seed)
    if name == "digits":
        images, labels, class_names = _load_digits(resolution)
    elif name == "shapes":
        images, labels, class_names = _load_shapes(resolution)
    elif name == "imagefolder":
        images, labels, class_names = _load_imagefolder(Path(data_dir), resolution)
    else:
        images, labels, test_images, test_labels, class_names = _load_cifar10(Path(data_dir), resolution)

    parts = _stratified_split(labels, val_fraction, test_fraction, generator)
    if name == "cifar10":
        # Reorder test_batch the same interleaved way so that `limit` keeps it stratified too.
        test_order = _stratified_split(test_labels, 0.0, 0.0, generator)[0]
        splits = [Split(images[i], labels[i]) for i in parts[:2]]
        splits.append(Split(test_images[test_order], test_labels[test_order]))
    else:
        splits = [Split(images[i], labels[i]) for i in parts]
    if limit is not None:
        splits = [Split(s.images[:limit], s.labels[:limit]) for s in splits]

    train, val, test = splits
    mean, std = _channel_stats(train.images)
    return Dataset(name=name, num_classes=len(class_names), channels=train.images.shape[1],
                   resolution=resolution, class_names=list(class_names), train=train, val=val,
                   test=test, mean=mean, std=std)


def _check_int(what, value, low, high):
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        bounds = "[{}, {}]".format(low, high) if high is not None else ">= {}".format(low)
        raise DatasetError("{} must be an int in {}, got {!r}".format(what, bounds, value))


def _check_fractions(val_fraction, test_fraction):
    for what, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
            raise DatasetError("{} must be a number in [0, 1), got {!r}".format(what, value))
    if val_fraction + test_fraction >= 1:
        raise DatasetError("val_fraction + test_fraction must be < 1 to leave training data, got {}".format(
            val_fraction + test_fraction))


def _stratified_split(labels, val_fraction, test_fraction, generator):
    """Index tensors (train, val, test), each holding every class in the same proportions.

    Within a split, classes are interleaved (each sample keyed by its relative rank in its class),
    so any prefix of a split is itself roughly stratified; that is what `limit` relies on.
    """
    parts = ([], [], [])
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_val, n_test = _holdout(len(idx), val_fraction), _holdout(len(idx), test_fraction)
        n_train = len(idx) - n_val - n_test
        if n_train < 1:
            raise DatasetError("class {} has only {} samples, too few for val_fraction={} and "
                               "test_fraction={}".format(c, len(idx), val_fraction, test_fraction))
        for part, chunk in zip(parts, idx.split([n_train, n_val, n_test])):
            part.append((chunk, (torch.arange(len(chunk), dtype=torch.float64) + 0.5) / max(len(chunk), 1)))
    return tuple(_interleave(part) for part in parts)


def _holdout(n, fraction):
    # At least one sample whenever the fraction is non-zero, so small classes still reach every split.
    return max(1, int(n * fraction + 0.5)) if fraction > 0 else 0


def _interleave(chunks):
    idx = torch.cat([c for c, _ in chunks])
    keys = torch.cat([k for _, k in chunks])
    return idx[torch.sort(keys, stable=True).indices]


def _channel_stats(images):
    """Per-channel mean and std in [0, 1] units, accumulated in float64 chunk by chunk."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start:start + _CHUNK].double().div_(255.0)
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square_().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = (squares / count - mean.square()).clamp_(min=0.0)
    return tuple(mean.tolist()), tuple(max(math.sqrt(v), STD_FLOOR) for v in var.tolist())


def _resize_to_uint8(images, resolution, max_value=255.0):
    """(N, C, H, W) numeric tensor with values in [0, max_value] -> uint8 (N, C, res, res), bilinear."""
    if images.dtype == torch.uint8 and images.shape[-2:] == (resolution, resolution):
        return images.contiguous()
    n, c = images.shape[:2]
    out = torch.empty((n, c, resolution, resolution), dtype=torch.uint8)
    for start in range(0, n, _CHUNK):
        chunk = images[start:start + _CHUNK].float()
        if chunk.shape[-2:] != (resolution, resolution):
            chunk = F.interpolate(chunk, size=(resolution, resolution), mode="bilinear", align_corners=False)
        out[start:start + _CHUNK] = chunk.mul_(255.0 / max_value).round_().clamp_(0, 255).to(torch.uint8)
    return out


def _require_dir(path):
    if not path.is_dir():
        raise DatasetError("data directory {} does not exist or is not a directory".format(path))
    return path


# ------------------------------------------------------------------------------------------ digits

def _load_digits(resolution):
    images, labels = digits_arrays()
    images = torch.from_numpy(images).unsqueeze(1)  # (1797, 1, 8, 8), values 0..16
    labels = torch.from_numpy(labels).long()
    return _resize_to_uint8(images, resolution, max_value=16.0), labels, [str(i) for i in range(10)]


def digits_arrays():
    """scikit-learn's digits, (images (1797, 8, 8) of 0..16, labels), read as its load_digits
    reads them, from the file it ships, without importing scikit-learn: that import cost every
    worker's start (a tiny search's process on digits, side by side: 7.6 s with it, 6.9 s
    without)."""
    package = importlib.util.find_spec("sklearn")
    path = Path(package.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # a scikit-learn that keeps it elsewhere
        from sklearn.datasets import load_digits
        digits = load_digits()
        return digits.images, digits.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def held_out_test(dataset, per_class=1000):
    """A larger test split kept apart from `dataset`'s images (shapes only: it is generated), at
    the dataset's resolution: benchmarks that compare networks need less sampling error than
    the dataset's own test split has."""
    if dataset.name != "shapes":
        raise DatasetError("only shapes has a held-out test set (it is generated)")
    images, labels = shapes.held_out(per_class)
    return Split(_resize_to_uint8(torch.from_numpy(images), dataset.resolution),
                 torch.from_numpy(labels))


def _load_shapes(resolution):
    images, labels, class_names = shapes.load()
    return (_resize_to_uint8(torch.from_numpy(images), resolution), torch.from_numpy(labels),
            list(class_names))


# ----------------------------------------------------------------------------------------- cifar10

_CIFAR_CLASSES = 10
_CIFAR_SIDE = 32

# Pickle globals needed to rebuild numpy arrays; anything else in a data file is refused.
_PICKLE_ALLOWED = {
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.numeric": {"_frombuffer"},
    "_codecs": {"encode"},  # protocol 2 stores bytes as latin-1 text
}
# numpy 2 renamed numpy.core to numpy._core (the old name only warns); numpy 1 lacks the new one.
_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module, name):
        if name not in _PICKLE_ALLOWED.get(module, ()):
            raise DatasetError("refusing to load {}: it references {}.{}, which is not a numpy "
                               "array global".format(self.path, module, name))
        for prefix in ("numpy.core.", "numpy._core."):
            if module.startswith(prefix):
                module = _NUMPY_CORE + "." + module[len(prefix):]
        return getattr(importlib.import_module(module), name)


def _unpickle(path):
    if not path.is_file():
        raise DatasetError("CIFAR-10 file {} is missing (expected data_batch_1..5 and test_batch in {})".format(
            path, path.parent))
    try:
        with open(str(path), "rb") as f:
            obj = _RestrictedUnpickler(f, path).load()
    except DatasetError:
        raise
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DatasetError("cannot unpickle {}: {}".format(path, exc)) from exc
    if not isinstance(obj, dict):
        raise DatasetError("{} should hold a dict, got {}".format(path, type(obj).__name__))
    return obj


def _field(obj, key, path):
    for k in (key.encode(), key):  # python 2 pickles give bytes keys, python 3 ones may give str
        if k in obj:
            return obj[k]
    raise DatasetError("{} has no {!r} entry".format(path, key))


def _read_cifar_batch(path, resolution):
    obj = _unpickle(path)
    data = np.asarray(_field(obj, "data", path))
    labels = np.asarray(_field(obj, "labels", path))
    side = _CIFAR_SIDE
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * side * side:
        raise DatasetError("{}: 'data' must be a uint8 array of shape (N, 3072), got {} {}".format(
            path, data.dtype, data.shape))
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise DatasetError("{}: 'labels' must be {} integers, got {} {}".format(
            path, data.shape[0], labels.dtype, labels.shape))
    if labels.size and (labels.min() < 0 or labels.max() >= _CIFAR_CLASSES):
        raise DatasetError("{}: labels must be in [0, {})".format(path, _CIFAR_CLASSES))
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, side, side))
    return _resize_to_uint8(images, resolution), torch.from_numpy(labels.astype(np.int64))


def _cifar_class_names(root):
    path = root / "batches.meta"
    if not path.exists():
        return [str(i) for i in range(_CIFAR_CLASSES)]
    names = [n.decode("utf-8") if isinstance(n, bytes) else str(n)
             for n in _field(_unpickle(path), "label_names", path)]
    if len(names) != _CIFAR_CLASSES:
        raise DatasetError("{}: expected {} label_names, got {}".format(path, _CIFAR_CLASSES, len(names)))
    return names


def _load_cifar10(root, resolution):
    _require_dir(root)
    batches = [_read_cifar_batch(root / "data_batch_{}".format(i), resolution) for i in range(1, 6)]
    test_images, test_labels = _read_cifar_batch(root / "test_batch", resolution)
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    return images, labels, test_images, test_labels, _cifar_class_names(root)


# ------------------------------------------------------------------------------------- imagefolder

def _load_imagefolder(root, resolution):
    _require_dir(root)
    class_dirs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                        key=lambda p: p.name)
    if len(class_dirs) < 2:
        raise DatasetError("{} must contain at least 2 class sub-directories, found {}".format(
            root, len(class_dirs)))
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted((p for p in class_dir.iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: p.name)
        if len(files) < MIN_IMAGES_PER_CLASS:
            raise DatasetError("class directory {} has {} image file(s) ({}); at least {} are needed to "
                               "split it into train/val/test".format(class_dir, len(files),
                                                                     ", ".join(IMAGE_EXTENSIONS),
                                                                     MIN_IMAGES_PER_CLASS))
        images.extend(_read_image(f, resolution) for f in files)
        labels.extend([label] * len(files))
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return stacked, torch.tensor(labels, dtype=torch.int64), [p.name for p in class_dirs]


def _read_image(path, resolution):
    from PIL import Image  # lazy: only image folders need Pillow

    try:
        with Image.open(str(path)) as img:
            rgb = img.convert("RGB").resize((resolution, resolution), Image.Resampling.BILINEAR)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError("cannot read image {}: {}".format(path, exc)) from exc
    return np.asarray(rgb, dtype=np.uint8)


# ----------------------------------------------------------------------------------------- batches

def iterate_batches(split, dataset, batch_size, shuffle=False, generator=None, augment=False,
                    drop_last=False, device="cpu"):
    """Yield (x, y): x float32 (B, C, H, W) normalised with the dataset mean/std, y int64, on `device`."""
    _check_int("batch_size", batch_size, 1, None)
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    mean = torch.tensor(dataset.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        x = split.images[idx].to(device).float().div_(255.0)
        if augment:
            x = augment_batch(x, generator)
        yield x.sub_(mean).div_(std), split.labels[idx].to(device)


def augment_batch(x, generator):
    """Random rotation, scale and translation per sample of a float (B, C, H, W) batch in [0, 1].

    Areas moved in from outside the image are zero (black). All randomness comes from `generator`
    (a CPU torch.Generator, or None for the global RNG), so seeded runs repeat exactly.
    """
    r = torch.rand(x.shape[0], 4, generator=generator, dtype=torch.float64)
    angle = (r[:, 0] * 2 - 1) * math.radians(MAX_ROTATION_DEG)
    scale = SCALE_RANGE[0] + r[:, 1] * (SCALE_RANGE[1] - SCALE_RANGE[0])
    shift = (r[:, 2:] * 2 - 1) * (2 * MAX_TRANSLATE)  # affine_grid coordinates span 2 per image side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # theta maps output coordinates to input ones: dividing by `scale` enlarges the content by `scale`.
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
