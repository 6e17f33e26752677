import os
import pickle
from collections import Counter

import numpy as np
import pytest
import torch

from search_core.data import (DATASETS, Dataset, DatasetError, Split, augment_batch, iterate_batches,
                              load_dataset)

pytestmark = pytest.mark.unit

N_DIGITS = 1797


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", resolution=16, seed=0)


def _samples(split):
    """Multiset of (image bytes, label), to compare splits independently of order."""
    return Counter((img.numpy().tobytes(), int(lab)) for img, lab in zip(split.images, split.labels))


def _splits(ds):
    return (ds.train, ds.val, ds.test)


# ------------------------------------------------------------------------------------------ digits

def test_digits_shapes_and_types(digits):
    assert isinstance(digits, Dataset)
    assert digits.name == "digits"
    assert (digits.num_classes, digits.channels, digits.resolution) == (10, 1, 16)
    assert digits.class_names == [str(i) for i in range(10)]
    for split in _splits(digits):
        assert isinstance(split, Split)
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.images.shape[1:] == (1, 16, 16)
        assert len(split) == split.images.shape[0] == split.labels.shape[0]
    assert digits.train.images.max() > 200  # scaled from 0..16 to 0..255
    assert len(digits.mean) == len(digits.std) == 1


def test_digits_are_read_as_scikit_learn_reads_them():
    """The bundled digits come from scikit-learn's own file, read without importing it."""
    from sklearn.datasets import load_digits
    from search_core.data import digits_arrays
    images, labels = digits_arrays()
    expected = load_digits()
    assert np.array_equal(images, expected.images) and np.array_equal(labels, expected.target)


def test_digits_splits_partition_the_dataset(digits):
    from sklearn.datasets import load_digits

    assert sum(len(s) for s in _splits(digits)) == N_DIGITS
    assert len(digits.val) == len(digits.test) == pytest.approx(0.2 * N_DIGITS, abs=10)
    # At resolution 8 no interpolation happens, so every split image maps back to an original one.
    ds = load_dataset("digits", resolution=8, seed=3)
    raw = load_digits()
    expected = Counter(
        ((np.round(img * 255 / 16)).astype(np.uint8).tobytes(), int(lab))
        for img, lab in zip(raw.images, raw.target))
    combined = _samples(ds.train) + _samples(ds.val) + _samples(ds.test)
    assert combined == expected  # each sample is used exactly once


def test_digits_split_is_stratified(digits):
    totals = torch.bincount(torch.cat([s.labels for s in _splits(digits)]), minlength=10)
    for split, fraction in ((digits.val, 0.2), (digits.test, 0.2), (digits.train, 0.6)):
        counts = torch.bincount(split.labels, minlength=10)
        assert (counts > 0).all()
        assert torch.all((counts.double() - totals.double() * fraction).abs() <= 1.0), counts


def test_same_seed_same_split_and_different_seed_differs(digits):
    again = load_dataset("digits", resolution=16, seed=0)
    for a, b in zip(_splits(digits), _splits(again)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert again.mean == digits.mean and again.std == digits.std
    other = load_dataset("digits", resolution=16, seed=1)
    assert _samples(other.test) != _samples(digits.test)


def test_limit_keeps_splits_small_and_stratified():
    ds = load_dataset("digits", resolution=8, seed=0, limit=20)
    assert [len(s) for s in _splits(ds)] == [20, 20, 20]
    for split in _splits(ds):
        assert sorted(torch.bincount(split.labels, minlength=10).tolist()) == [2] * 10
    full = load_dataset("digits", resolution=8, seed=0)
    assert torch.equal(ds.train.images, full.train.images[:20])  # a deterministic prefix


def test_fractions_change_split_sizes():
    ds = load_dataset("digits", resolution=8, val_fraction=0.1, test_fraction=0.3)
    assert len(ds.val) == pytest.approx(0.1 * N_DIGITS, abs=10)
    assert len(ds.test) == pytest.approx(0.3 * N_DIGITS, abs=10)


# ----------------------------------------------------------------------------------------- batches

def test_iterate_batches_covers_every_sample_once_per_epoch(digits):
    n = len(digits.train)
    tagged = Split(digits.train.images, torch.arange(n))  # labels double as sample ids
    gen = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(2):
        batches = list(iterate_batches(tagged, digits, 100, shuffle=True, generator=gen))
        assert [len(y) for _, y in batches] == [100] * (n // 100) + [n % 100]
        ids = torch.cat([y for _, y in batches])
        assert sorted(ids.tolist()) == list(range(n))
        epochs.append(ids)
    assert not torch.equal(epochs[0], torch.arange(n))  # shuffled
    assert not torch.equal(epochs[0], epochs[1])  # a new order each epoch

    ids = torch.cat([y for _, y in iterate_batches(tagged, digits, 100)])
    assert torch.equal(ids, torch.arange(n))  # no shuffle: original order


def test_iterate_batches_drop_last(digits):
    n = len(digits.train)
    assert n % 64 != 0
    batches = list(iterate_batches(digits.train, digits, 64, shuffle=True, drop_last=True,
                                   generator=torch.Generator().manual_seed(0)))
    assert len(batches) == n // 64
    assert all(x.shape == (64, 1, 16, 16) and y.shape == (64,) for x, y in batches)


def test_iterate_batches_normalises(digits):
    batches = list(iterate_batches(digits.train, digits, 256))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, digits.train.labels)
    assert abs(x.mean().item()) < 1e-4
    assert x.std().item() == pytest.approx(1.0, abs=1e-3)
    expected = (digits.train.images[:1].float() / 255 - digits.mean[0]) / digits.std[0]
    assert torch.allclose(x[:1], expected, atol=1e-5)


def test_iterate_batches_rejects_bad_batch_size(digits):
    with pytest.raises(DatasetError, match="batch_size"):
        next(iterate_batches(digits.train, digits, 0))


def test_augment_batch_changes_images_reproducibly(digits):
    x = digits.train.images[:32].float() / 255
    out1 = augment_batch(x, torch.Generator().manual_seed(7))
    out2 = augment_batch(x, torch.Generator().manual_seed(7))
    out3 = augment_batch(x, torch.Generator().manual_seed(8))
    assert out1.shape == x.shape and out1.dtype == x.dtype
    assert torch.equal(out1, out2)
    assert not torch.allclose(out1, out3)
    changed = (out1 - x).abs().flatten(1).amax(1) > 0.05
    assert changed.all()  # every sample gets its own transform
    assert out1.min() >= 0 and out1.max() <= 1 + 1e-6  # bilinear + zero padding stays in range
    # a mild transform: the overall brightness barely moves
    assert out1.mean().item() == pytest.approx(x.mean().item(), rel=0.15)


def test_iterate_batches_augment_is_seeded(digits):
    def first(seed):
        gen = torch.Generator().manual_seed(seed)
        return next(iterate_batches(digits.train, digits, 16, shuffle=True, generator=gen, augment=True))[0]

    plain = next(iterate_batches(digits.train, digits, 16, shuffle=True,
                                 generator=torch.Generator().manual_seed(0)))[0]
    assert torch.equal(first(0), first(0))
    assert not torch.allclose(first(0), plain)


# ----------------------------------------------------------------------------------------- cifar10

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_batch(rng, per_class):
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    return {b"batch_label": b"fake", b"labels": labels.tolist(), b"data": data}


def _write(path, obj, protocol=2):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


@pytest.fixture
def cifar_dir(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _write(tmp_path / "data_batch_{}".format(i), _cifar_batch(rng, 2), protocol=2 if i % 2 else 5)
    _write(tmp_path / "test_batch", _cifar_batch(rng, 1))
    _write(tmp_path / "batches.meta", {b"label_names": [n.encode() for n in CIFAR_NAMES],
                                       b"num_vis": 3072})
    return tmp_path


def _cifar_samples(path):
    with open(str(path), "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    return Counter((row.tobytes(), lab) for row, lab in zip(batch[b"data"], batch[b"labels"]))


def test_cifar_loads_from_batches(cifar_dir):
    ds = load_dataset("cifar10", data_dir=str(cifar_dir), seed=0)
    assert (ds.num_classes, ds.channels, ds.resolution) == (10, 3, 32)
    assert ds.class_names == CIFAR_NAMES
    assert (len(ds.train), len(ds.val), len(ds.test)) == (80, 20, 10)
    assert (torch.bincount(ds.val.labels, minlength=10) == 2).all()  # stratified
    assert (torch.bincount(ds.test.labels, minlength=10) == 1).all()

    train_pool = sum((_cifar_samples(cifar_dir / "data_batch_{}".format(i)) for i in range(1, 6)), Counter())
    flat = lambda split: Counter((img.numpy().reshape(-1).tobytes(), int(lab))  # noqa: E731
                                 for img, lab in zip(split.images, split.labels))
    assert flat(ds.train) + flat(ds.val) == train_pool
    assert flat(ds.test) == _cifar_samples(cifar_dir / "test_batch")
    assert len(ds.mean) == 3 and all(0.4 < m < 0.6 for m in ds.mean)  # uniform random pixels


def test_cifar_resizes_and_defaults_class_names(cifar_dir):
    (cifar_dir / "batches.meta").unlink()
    ds = load_dataset("cifar10", data_dir=cifar_dir, resolution=16, test_fraction=0.9)
    assert ds.train.images.shape[1:] == (3, 16, 16)
    assert ds.class_names == [str(i) for i in range(10)]
    assert len(ds.test) == 10  # test_fraction is ignored: the test split is test_batch


def test_cifar_accepts_numpy1_module_names(cifar_dir):
    # Files written by numpy 1.x (the official archive) reference numpy.core instead of numpy._core.
    path = cifar_dir / "data_batch_1"
    raw = pickle.dumps(_cifar_batch(np.random.default_rng(1), 2), protocol=2)
    assert b"numpy._core.multiarray\n" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    ds = load_dataset("cifar10", data_dir=cifar_dir)
    assert len(ds.train) + len(ds.val) == 100


def test_cifar_refuses_forbidden_global(cifar_dir):
    _write(cifar_dir / "data_batch_3", {b"data": os.system, b"labels": []})
    with pytest.raises(DatasetError, match="refusing to load .*data_batch_3.*system"):
        load_dataset("cifar10", data_dir=cifar_dir)


def test_cifar_refuses_reduce_payload(cifar_dir):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > {}".format(cifar_dir / "pwned"),))

    _write(cifar_dir / "test_batch", Payload())
    with pytest.raises(DatasetError, match="refusing to load"):
        load_dataset("cifar10", data_dir=cifar_dir)
    assert not (cifar_dir / "pwned").exists()


def test_cifar_missing_file(cifar_dir):
    (cifar_dir / "test_batch").unlink()
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset("cifar10", data_dir=cifar_dir)


def test_cifar_bad_contents(cifar_dir):
    _write(cifar_dir / "data_batch_2", {b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4})
    with pytest.raises(DatasetError, match="data_batch_2.*3072"):
        load_dataset("cifar10", data_dir=cifar_dir)
    (cifar_dir / "data_batch_2").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="data_batch_2"):
        load_dataset("cifar10", data_dir=cifar_dir)


# ------------------------------------------------------------------------------------- imagefolder

COLOURS = {"cat": (255, 0, 0), "ant": (0, 255, 0), "bee": (0, 0, 255)}


def _make_folder(root, per_class=5, colours=COLOURS):
    from PIL import Image

    exts = [".png", ".PNG", ".bmp", ".gif", ".png"]
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (6, 5), colour).save(str(root / name / "img{}{}".format(i, exts[i % len(exts)])))
        (root / name / "notes.txt").write_text("not an image, ignored")
    return root


def test_imagefolder_loads_with_labels_and_class_names(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    ds = load_dataset("imagefolder", data_dir=root, resolution=8, seed=0)
    assert ds.class_names == ["ant", "bee", "cat"]
    assert (ds.num_classes, ds.channels, ds.resolution) == (3, 3, 8)
    assert [len(s) for s in _splits(ds)] == [9, 3, 3]
    for split in _splits(ds):
        assert split.images.shape[1:] == (3, 8, 8) and split.images.dtype == torch.uint8
        assert torch.bincount(split.labels, minlength=3).tolist() == [len(split) // 3] * 3
        for img, label in zip(split.images, split.labels):
            colour = COLOURS[ds.class_names[label]]
            assert img[:, 4, 4].tolist() == list(colour)  # the label matches the folder's colour


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("imagefolder", data_dir=tmp_path / "nope")

    one = _make_folder(tmp_path / "one", colours={"only": (1, 2, 3)})
    with pytest.raises(DatasetError, match="at least 2 class"):
        load_dataset("imagefolder", data_dir=one)

    few = _make_folder(tmp_path / "few", per_class=2)
    with pytest.raises(DatasetError, match="has 2 image"):
        load_dataset("imagefolder", data_dir=few)

    bad = _make_folder(tmp_path / "bad")
    (bad / "bee" / "broken.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg"):
        load_dataset("imagefolder", data_dir=bad)


# ------------------------------------------------------------------------------------------ inputs

def test_unknown_name_lists_valid_names():
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist")
    assert all(name in str(info.value) for name in DATASETS)


@pytest.mark.parametrize("name", ["cifar10", "imagefolder"])
def test_data_dir_required(name):
    with pytest.raises(DatasetError, match="data_dir"):
        load_dataset(name)


@pytest.mark.parametrize("kwargs, match", [
    ({"resolution": 4}, "resolution"),
    ({"resolution": 1024}, "resolution"),
    ({"resolution": 32.0}, "resolution"),
    ({"limit": 0}, "limit"),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction \\+ test_fraction"),
    ({"test_fraction": -0.1}, "test_fraction"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(DatasetError, match=match):
        load_dataset("digits", **kwargs)


@pytest.mark.process
def test_shapes_are_generated_alike_every_time_and_cached(tmp_path, monkeypatch):
    from search_core import shapes
    first, labels = shapes.generate(per_class=2)
    again, _ = shapes.generate(per_class=2)
    assert first.shape == (20, 1, shapes.SIDE, shapes.SIDE) and first.dtype == np.uint8
    assert np.array_equal(first, again) and sorted(set(labels.tolist())) == list(range(10))
    assert len({image.tobytes() for image in first}) == 20  # every image its own

    monkeypatch.setenv("EDGE_NAS_CACHE", str(tmp_path))
    ds = load_dataset("shapes", resolution=32, seed=0)
    assert (ds.num_classes, ds.channels, ds.resolution) == (10, 1, 32)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 10 * shapes.PER_CLASS
    assert os.path.exists(shapes.cache_path())
    assert torch.equal(load_dataset("shapes", resolution=32, seed=0).test.images, ds.test.images)
    with open(shapes.cache_path(), "wb") as f:  # cut short by an interrupted first use
        f.write(b"PK")
    assert torch.equal(load_dataset("shapes", resolution=32, seed=0).test.images, ds.test.images)


def test_shapes_has_a_held_out_test_set_apart_from_every_split(tmp_path, monkeypatch):
    """For benchmarks: more test images than the dataset's split, none of them in the dataset."""
    from search_core import shapes
    from search_core.data import held_out_test
    ds = load_dataset("shapes", resolution=32, seed=0)
    dataset_images, _, _ = shapes.load()
    monkeypatch.setenv("EDGE_NAS_CACHE", str(tmp_path))  # the held-out file's cache
    test = held_out_test(ds, per_class=20)
    assert len(test) == 200 and sorted(set(test.labels.tolist())) == list(range(10))
    assert test.images.shape[1:] == ds.train.images.shape[1:]  # at the dataset's resolution
    assert os.path.exists(shapes.cache_path("shapes-held-out-20"))
    assert torch.equal(held_out_test(ds, per_class=20).images, test.images)  # made alike, cached
    images, _ = shapes.held_out(per_class=20)
    assert not {image.tobytes() for image in images} & {image.tobytes() for image in dataset_images}
    with pytest.raises(DatasetError, match="only shapes"):
        held_out_test(load_dataset("digits"), per_class=20)
