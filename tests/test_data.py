"""Tests of dan/data/: file formats, loaders, determinism, splits, augmentation (CPU, seconds)."""

import dataclasses
import gzip
import os
import warnings
import pickle
import signal
import struct
import time

import numpy as np
import pytest
import torch

from dan.config import DataConfig
from dan.data import (FASHION_MNIST_DIR, FASHION_MNIST_FILES, AugmentRecipe, augment_batch, build_data,
                      dataset_info, read_idx)
from dan.errors import UserError

HAVE_FMNIST = all(os.path.isfile(os.path.join(FASHION_MNIST_DIR, f)) for f in FASHION_MNIST_FILES)


def write_idx(path, array, magic_dtype=0x08, raw=None):
    array = np.asarray(array, np.uint8)
    head = struct.pack(">BBBB", 0, 0, magic_dtype, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + (array.tobytes() if raw is None else raw))


def write_fake_fashion(folder, n_train=40, n_test=12):
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), rng.integers(0, 256, (n, 28, 28)))
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), np.arange(n) % 10)
    return str(folder)


def batches(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def rows(t):
    return {bytes(r.numpy().tobytes()) for r in t.reshape(len(t), -1)}


# --------------------------------------------------------------------------- IDX files

def test_read_idx_roundtrip(tmp_path):
    a = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    write_idx(tmp_path / "a.gz", a)
    b = read_idx(str(tmp_path / "a.gz"))
    assert b.shape == (3, 4, 5) and b.dtype == np.uint8 and np.array_equal(a, b)
    write_idx(tmp_path / "l.gz", [3, 1, 4])
    assert read_idx(str(tmp_path / "l.gz")).tolist() == [3, 1, 4]


@pytest.mark.parametrize("kind", ["truncated", "too_long", "bad_magic", "not_gzip", "cut_gzip"])
def test_read_idx_corrupt(tmp_path, kind):
    p = tmp_path / "bad-images-idx3-ubyte.gz"
    a = np.zeros((3, 4, 5), np.uint8)
    if kind == "truncated":
        write_idx(p, a, raw=a.tobytes()[:-7])
    elif kind == "too_long":
        write_idx(p, a, raw=a.tobytes() + b"x")
    elif kind == "bad_magic":
        write_idx(p, a, magic_dtype=0x0D)
    elif kind == "not_gzip":
        p.write_bytes(b"this is not gzip at all")
    else:
        write_idx(p, a)
        p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(UserError, match="bad-images-idx3-ubyte.gz"):
        read_idx(str(p))


def test_fake_fashion_folder(tmp_path):
    folder = write_fake_fashion(tmp_path / "fm")
    d = build_data(DataConfig(data=folder, batch_size=16, augment=False), seed=0)
    assert (d.train.num_samples, d.test.num_samples, len(d.train), len(d.test)) == (40, 12, 2, 1)
    x, y = next(iter(d.test))
    raw = read_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"))
    expect = (torch.from_numpy(raw[:, None].astype(np.float32)) / 255 - 0.2860) / 0.3530
    assert torch.allclose(x, expect, atol=1e-5) and y.tolist() == [i % 10 for i in range(12)]
    # a labels file that does not match its images is refused
    write_idx(tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz", np.arange(11) % 10)
    with pytest.raises(UserError, match="t10k-images"):
        build_data(DataConfig(data=folder), seed=0)


@pytest.mark.skipif(not HAVE_FMNIST, reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    d = build_data(DataConfig(batch_size=1000, augment=False), seed=0)
    assert (d.train.num_samples, d.test.num_samples) == (60000, 10000)
    assert d.info == dataset_info(DataConfig())
    total, sq, n, labels = 0.0, 0.0, 0, torch.zeros(10, dtype=torch.long)
    for x, y in d.train:
        assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        total, sq, n = total + x.sum().item(), sq + (x ** 2).sum().item(), n + x.numel()
        labels += torch.bincount(y, minlength=10)
    mean = total / n
    assert abs(mean) < 0.01 and abs((sq / n - mean ** 2) ** 0.5 - 1) < 0.02
    assert labels.tolist() == [6000] * 10  # each image seen exactly once
    xt, yt = next(iter(d.test))
    assert xt.shape == (2000, 1, 28, 28) and 0 <= yt.min() and yt.max() <= 9


@pytest.mark.skipif(not HAVE_FMNIST, reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_augmentation_is_cheap_next_to_a_training_step():
    # A ratio measured in one run (the machine is shared: no absolute rate is asserted). Loading
    # and augmenting a batch must cost well under one training step of the suite's smallest
    # network (ResNet-18 width 8) on it: otherwise augmentation, not the model, sets the pace.
    from dan.config import ModelConfig
    from dan.models import build_model

    d = build_data(DataConfig(batch_size=128), seed=0)
    it = iter(d.train)
    next(it)
    t = time.perf_counter()
    batches = [next(it) for _ in range(10)]
    load = time.perf_counter() - t
    model = build_model(ModelConfig(space="resnet18_small", args={"width": 8}), d.info)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    step = lambda x, y: (opt.zero_grad(), torch.nn.functional.cross_entropy(model(x), y).backward(), opt.step())
    step(*batches[0])
    t = time.perf_counter()
    for x, y in batches:
        step(x, y)
    train = time.perf_counter() - t
    assert load < 0.5 * train, f"10 augmented batches {load:.3f}s vs 10 training steps {train:.3f}s"


# --------------------------------------------------------------------------- loaders

def test_determinism_per_seed_and_epoch():
    cfg = DataConfig(dataset="synthetic", synthetic_size=96, batch_size=32)
    a, b = build_data(cfg, seed=1), build_data(cfg, seed=1)
    e3 = batches(a.train, 3)
    assert same(e3, batches(b.train, 3))
    # whatever happened before: a partial epoch, other epochs
    b.train.set_epoch(0)
    next(iter(b.train))
    batches(b.train, 5)
    assert same(e3, batches(b.train, 3))
    e4 = batches(a.train, 4)
    assert not torch.equal(e3[0][0], e4[0][0]) and not torch.equal(e3[0][1], e4[0][1])
    assert not same(e3, batches(build_data(cfg, seed=2).train, 3))
    # test split: not shuffled, not augmented, independent of the epoch
    assert same(batches(a.test, 0), batches(a.test, 7))
    # the global RNG is neither used nor disturbed
    torch.manual_seed(0)
    state = torch.get_rng_state()
    batches(a.train, 3)
    assert torch.equal(state, torch.get_rng_state())


def test_augmentation_changes_train_only():
    on = build_data(DataConfig(dataset="synthetic", synthetic_size=64, batch_size=64), seed=0)
    off = build_data(DataConfig(dataset="synthetic", synthetic_size=64, batch_size=64, augment=False), seed=0)
    (xa, ya), = batches(on.train, 0)
    (xb, yb), = batches(off.train, 0)
    assert torch.equal(ya, yb)  # same order, different pixels
    changed = (xa - xb).flatten(1).abs().amax(1) > 1e-3
    assert 0.8 < changed.float().mean() <= 1.0  # P(no transform at all) = 0.5 * 0.25^3
    assert same(batches(on.test, 0), batches(off.test, 0))


def test_augment_batch_geometry():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 9, 7), dtype=torch.uint8, generator=g)
    none = AugmentRecipe(p_flip=0, p_rotate=0, p_lighting=0, p_warp=0)
    assert torch.allclose(augment_batch(x, none, g), x.float(), atol=1e-3)
    flip = AugmentRecipe(p_flip=1, p_rotate=0, p_lighting=0, p_warp=0)
    assert torch.allclose(augment_batch(x, flip, g), x.flip(-1).float(), atol=1e-3)
    light = AugmentRecipe(p_flip=0, p_rotate=0, p_lighting=1, p_warp=0)
    y = augment_batch(x, light, g)
    assert y.min() >= 0 and y.max() <= 255 and not torch.allclose(y, x.float(), atol=1)
    full = AugmentRecipe(p_flip=1, p_rotate=1, p_lighting=1, p_warp=1)
    y = augment_batch(x.float(), full, g)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_batch_counts_and_drop_last():
    d = build_data(DataConfig(dataset="synthetic", synthetic_size=100, batch_size=32), seed=0)
    got = batches(d.train, 0)
    assert len(d.train) == len(got) == 3 and all(len(x) == 32 for x, _ in got)  # 4 left over, dropped
    assert d.test.batch_size == 64 and [len(x) for x, _ in batches(d.test, 0)] == [25]
    small = build_data(DataConfig(dataset="synthetic", synthetic_size=100, batch_size=128), seed=0)
    assert len(small.train) == 1 and [len(x) for x, _ in small.train] == [100]  # the only batch is kept
    e = build_data(DataConfig(dataset="synthetic", synthetic_size=100, batch_size=32, eval_batch_size=10), seed=0)
    assert len(e.test) == 3 and [len(x) for x, _ in e.test] == [10, 10, 5]


def test_holdout_and_subset():
    d = build_data(DataConfig(dataset="synthetic", synthetic_size=400, holdout=0.25, batch_size=32), seed=3)
    assert (d.train.num_samples, d.holdout.num_samples, d.holdout_eval.num_samples) == (300, 100, 100)
    full = build_data(DataConfig(dataset="synthetic", synthetic_size=400), seed=3).train.images
    tr, ho = rows(d.train.images), rows(d.holdout.images)
    assert len(tr) == 300 and len(ho) == 100 and not tr & ho and tr | ho == rows(full)
    assert d.holdout.shuffle and d.holdout.recipe is not None and len(d.holdout) == 3
    assert not d.holdout_eval.shuffle and d.holdout_eval.recipe is None and len(d.holdout_eval) == 2
    assert rows(torch.cat([x for x, _ in d.holdout_eval])) != rows(torch.cat([x for x, _ in d.holdout]))
    other = build_data(DataConfig(dataset="synthetic", synthetic_size=400, holdout=0.25), seed=4)
    assert rows(other.holdout.images) != ho  # the split follows the seed
    assert build_data(DataConfig(dataset="synthetic"), seed=0).holdout is None

    s = build_data(DataConfig(dataset="synthetic", synthetic_size=400, train_subset=50), seed=0)
    assert s.train.num_samples == 50 and rows(s.train.images) <= rows(full)
    sh = build_data(DataConfig(dataset="synthetic", synthetic_size=400, train_subset=50, holdout=0.2), seed=0)
    assert (sh.train.num_samples, sh.holdout.num_samples) == (40, 10)
    assert rows(sh.train.images) | rows(sh.holdout.images) == rows(s.train.images)


@pytest.mark.parametrize("kw", [dict(holdout=1.0), dict(holdout=-0.1), dict(train_subset=0),
                                dict(train_subset=10 ** 6), dict(batch_size=0), dict(synthetic_size=4, holdout=0.1)])
def test_bad_split_settings(kw):
    with pytest.raises(UserError):
        build_data(DataConfig(dataset="synthetic", **kw), seed=0)


def test_synthetic_is_learnable():
    cfg = DataConfig(dataset="synthetic", synthetic_size=200, num_classes=10, image_size=16, augment=False)
    info = dataset_info(cfg)
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 3, 16)
    d = build_data(cfg, seed=0)
    xtr, ytr = d.train.images.float().flatten(1), d.train.labels
    assert torch.bincount(ytr).tolist() == [20] * 10
    means = torch.stack([xtr[ytr == k].mean(0) for k in range(10)])
    xte, yte = d.test.images.float().flatten(1), d.test.labels
    acc = (torch.cdist(xte, means).argmin(1) == yte).float().mean().item()
    assert acc > 0.6  # chance is 0.1
    # the data is fixed by the dataset definition, not the run seed
    assert torch.equal(build_data(cfg, seed=9).test.images, d.test.images)
    assert dataset_info(DataConfig(dataset="synthetic")).image_size == 32


# --------------------------------------------------------------------------- CIFAR (fake folder)

def write_fake_cifar(root, name, n_per_batch=4, n_test=6):
    rng = np.random.default_rng(0)
    key = "labels" if name == "cifar10" else "fine_labels"
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    train = [f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"]
    written = {}
    for fname, n in [(f, n_per_batch) for f in train] + [("test_batch" if name == "cifar10" else "test", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        written[fname] = (data, list(range(n)))
        with open(folder / fname, "wb") as f:
            pickle.dump({"data": data, key: list(range(n))}, f)
    meta, mkey = ("batches.meta", "label_names") if name == "cifar10" else ("meta", "fine_label_names")
    with open(folder / meta, "wb") as f:
        pickle.dump({mkey: [f"c{i}" for i in range(10 if name == "cifar10" else 100)]}, f)
    return written


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_fake_folder(tmp_path, monkeypatch, name):
    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    written = write_fake_cifar(tmp_path, name)
    d = build_data(DataConfig(dataset=name, data=str(tmp_path), batch_size=4), seed=0)
    assert d.info.num_classes == (10 if name == "cifar10" else 100) and d.info.image_size == 32
    assert d.train.num_samples == (20 if name == "cifar10" else 4) and d.test.num_samples == 6
    x, y = next(iter(d.test))
    data, labels = written["test_batch" if name == "cifar10" else "test"]
    raw = torch.from_numpy(data).float().view(6, 3, 32, 32) / 255  # pickle layout is channel-major
    mean, std = torch.tensor(d.info.mean).view(1, 3, 1, 1), torch.tensor(d.info.std).view(1, 3, 1, 1)
    assert torch.allclose(x, (raw - mean) / std, atol=1e-5) and y.tolist() == labels
    xb, yb = next(iter(d.train))
    assert xb.shape == (4, 3, 32, 32) and torch.isfinite(xb).all()


# --------------------------------------------------------------------------- image folders

def write_image_folder(root, val_classes=("cat", "dog")):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, classes, n in (("train", ("cat", "dog"), 3), ("val", val_classes, 2)):
        for c in classes:
            os.makedirs(root / split / c)
            for i in range(n):
                arr = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")
    return str(root)


def test_imagefolder(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    cfg = DataConfig(dataset="imagefolder", data=root, image_size=16, batch_size=4)
    info = dataset_info(cfg)
    assert (info.num_classes, info.in_channels, info.image_size) == (2, 3, 16)
    d = build_data(cfg, seed=0)
    got = batches(d.train, 0)
    assert len(d.train) == len(got) == 1 and got[0][0].shape == (4, 3, 16, 16)  # 6 images: 2 dropped
    assert same(got, batches(build_data(cfg, seed=0).train, 0))
    assert not same(got, batches(d.train, 1))
    (xv, yv), = batches(d.test, 0)
    assert xv.shape == (4, 3, 16, 16) and yv.tolist() == [0, 0, 1, 1] and d.test.batch_size == 8
    big = build_data(DataConfig(dataset="imagefolder", data=root, image_size=16, batch_size=8), seed=0)
    assert [len(x) for x, _ in big.train] == [6]
    ho = build_data(DataConfig(dataset="imagefolder", data=root, image_size=16, batch_size=2, holdout=0.34), seed=0)
    assert (ho.train.num_samples, ho.holdout.num_samples, ho.holdout_eval.num_samples) == (4, 2, 2)
    assert set(ho.train.ds.indices).isdisjoint(ho.holdout.ds.indices)


def test_an_unreadable_evaluation_image_is_refused_before_training(tmp_path):
    # found at the first evaluation, it lost the training epoch before it (the evaluation comes
    # before the checkpoint)
    root = write_image_folder(tmp_path / "imgs")
    bad = os.path.join(root, "val", sorted(os.listdir(os.path.join(root, "val")))[1], "1.png")
    open(bad, "wb").write(b"garbage")
    with pytest.raises(UserError, match=f"cannot read image {bad} .*delete or replace it"):
        build_data(DataConfig(dataset="imagefolder", data=root, image_size=16, batch_size=4), seed=0)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\nshowpage\n%%EOF\n"


def test_an_eps_file_named_jpg_is_refused_without_running_ghostscript(tmp_path, monkeypatch):
    """Audit: ``load_image`` let Pillow open any format it knows: an EPS file named .jpg was opened
    as EPS, and decoding it runs Ghostscript on the file. Only the formats of the image extensions
    are opened; anything else is one line naming the file, before any decoding."""
    from PIL import EpsImagePlugin

    from dan.data.datasets import check_headers, load_image

    ran = []

    def ghostscript(*args, **kwargs):  # Pillow's call of the gs program (EpsImagePlugin.Ghostscript)
        ran.append(args)
        raise OSError("Ghostscript ran")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    eps = tmp_path / "photo.jpg"
    eps.write_bytes(EPS)
    with pytest.raises(UserError, match=f"cannot read image {eps} \\(not JPEG, PNG.* or WEBP: another format, "
                                        f"or no image\\): delete or replace it$"):
        load_image(str(eps))
    root = write_image_folder(tmp_path / "imgs")
    bad = os.path.join(root, "val", sorted(os.listdir(os.path.join(root, "val")))[0], "0.png")
    open(bad, "wb").write(EPS)
    with pytest.raises(UserError, match=f"cannot read image {bad} .*delete or replace it"):
        build_data(DataConfig(dataset="imagefolder", data=root, image_size=16, batch_size=4), seed=0)
    assert not ran
    # every format of the extensions still opens, whatever the file's name
    from PIL import Image

    for fmt in ("JPEG", "PNG", "PPM", "BMP", "GIF", "TIFF", "WEBP"):
        path = tmp_path / f"x-{fmt}.jpg"
        Image.new("RGB", (4, 4), (10, 200, 30)).save(path, format=fmt)
        assert load_image(str(path)).size == (4, 4)
        check_headers(type("Files", (), {"samples": [(str(path), 0)]})(), 1 << 20)


def test_imagefolder_reads_16_bit_and_float_images_at_their_precision(tmp_path):
    """torchvision's loader clips a 16-bit PNG to 8 bits (99.6 % white) and a float TIFF to black;
    here 12-bit content in 16-bit PNGs arrives as values/65535 with its levels, on 3 channels."""
    import warnings

    from PIL import Image

    root = tmp_path / "deep"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            os.makedirs(root / split / c)
            for i in range(2):
                Image.fromarray(rng.integers(0, 4096, (24, 24), dtype=np.uint16)).save(root / split / c / f"{i}.png")
    assert Image.open(root / "val" / "a" / "0.png").mode == "I;16"
    cfg = DataConfig(dataset="imagefolder", data=str(root), image_size=24, batch_size=2, augment=False)
    d = build_data(cfg, seed=0)
    x = torch.cat([xb for xb, _ in d.test])
    mean, std = torch.tensor(d.info.mean).view(1, 3, 1, 1), torch.tensor(d.info.std).view(1, 3, 1, 1)
    raw = x * std + mean
    assert raw.max() <= 4095 / 65535 + 1e-4 and raw.min() >= -1e-4  # not clipped to white
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5) and torch.allclose(raw[:, 0], raw[:, 2], atol=1e-5)
    assert len(torch.unique((raw[:, 0] * 65535).round())) > 256  # more levels than 8 bits hold
    assert [tuple(xb.shape) for xb, _ in d.train] == [(2, 3, 24, 24)] * 2
    # a float image outside [0, 1] has no one right scaling: refused, naming the file
    bad = root / "train" / "b" / "1.tif"
    Image.fromarray(np.full((24, 24), 300.0, np.float32)).save(bad)
    with pytest.raises(UserError, match=r"image .*1\.tif holds floats in \[300, 300\], not \[0, 1\]"):
        for _ in build_data(cfg, seed=0).train:
            pass
    # a palette image with transparency: read through RGBA, without Pillow's warning per image
    from dan.data import load_image
    pal = Image.fromarray(rng.integers(0, 4, (8, 8), dtype=np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    pal.info["transparency"] = b"\x00\xff\xff\xff"
    pal.save(tmp_path / "p.png", transparency=b"\x00\xff\xff\xff")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(str(tmp_path / "p.png")).mode == "RGB"


def test_imagefolder_skips_hidden_files_and_folders_and_names_what_is_wrong(tmp_path, monkeypatch):
    """A Jupyter ``.ipynb_checkpoints`` folder is not a class (torchvision's ImageFolder counts it:
    pytorch/vision#2831) and macOS's ``._name.jpg`` metadata files are not images; a leading ``~`` in
    a config's path is the home folder (the README's API example); an empty class and a class in one
    split only are refused by name."""
    import shutil

    root = tmp_path / "imgs"
    write_image_folder(root)
    for split in ("train", "val"):
        (root / split / ".ipynb_checkpoints").mkdir()
        (root / split / "cat" / ".ipynb_checkpoints").mkdir()
        shutil.copy(root / "train" / "cat" / "0.png", root / split / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png")
        (root / split / "dog" / "._0.png").write_bytes(b"\x00\x05\x16\x07 Mac OS X metadata")
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = DataConfig(dataset="imagefolder", data="~/imgs", image_size=16, batch_size=2, augment=False)
    assert dataset_info(cfg).num_classes == 2
    d = build_data(cfg, seed=0)
    assert (d.train.num_samples, d.test.num_samples) == (6, 4)
    assert sum(len(y) for _, y in d.test) == 4  # every image read, none of the hidden ones
    # what DataLoader workers started by spawn (macOS, Windows) receive: a module-level class
    assert pickle.loads(pickle.dumps(d.train.ds)).folder.samples == d.train.ds.folder.samples
    for f in (root / "val" / "dog").glob("*.png"):
        f.unlink()
    with pytest.raises(UserError, match="class folder .*val/dog holds no image .*add images, or remove the class"):
        build_data(cfg, seed=0)
    shutil.rmtree(root / "val" / "dog")
    with pytest.raises(UserError, match="different class folders .*train/dog has no counterpart"):
        build_data(cfg, seed=0)


def test_imagefolder_workers_do_not_change_batches(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    a, b = (build_data(DataConfig(dataset="imagefolder", data=root, image_size=16, batch_size=2, workers=w),
                       seed=0) for w in (0, 1))
    assert same(batches(a.train, 2), batches(b.train, 2))


def test_imagefolder_class_mismatch(tmp_path):
    root = write_image_folder(tmp_path / "imgs", val_classes=("cat",))
    with pytest.raises(UserError, match="different class folders"):
        build_data(DataConfig(dataset="imagefolder", data=root, image_size=16), seed=0)


def test_imagefolder_reads_gif_and_a_run_says_on_stdout_what_it_found(tmp_path, capsys):
    # an audit's .gif files were left out without a word, and no count of images was ever shown
    from PIL import Image

    from dan.config import Config
    from dan.data import load_image
    from dan.engine import Trainer
    from dan.monitor import Monitor

    root = write_image_folder(tmp_path / "imgs")
    gif = os.path.join(root, "train", "cat", "anim.gif")
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(load_image(gif))[5, 5]) == (255, 0, 0)  # the first frame
    (tmp_path / "imgs" / "train" / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / "val" / "dog" / "scan.heic").write_bytes(b"HEIC")
    cfg = Config.from_dict({"out": str(tmp_path / "run"), "model": {"space": "resnet18_small", "args": {"width": 8}},
                            "data": {"dataset": "imagefolder", "data": root, "image_size": 16, "batch_size": 2}})
    line = (f"imagefolder {root}: 7 training images in 2 classes, 4 validation images (2 other files skipped: "
            f".heic, .txt)")
    said = []
    build_data(cfg.data, seed=0, log=said.append)
    assert said == [line]
    Trainer(cfg, Monitor(None, console=True))
    out, err = capsys.readouterr()
    assert out == line + "\n" and line not in err
    Trainer(cfg, Monitor(None, console=False))  # --quiet
    assert capsys.readouterr().out == ""


def test_the_image_size_limit_is_a_setting_named_when_met_and_pillow_warns_nothing(tmp_path, monkeypatch):
    # an audit: over Pillow's limit (179 Mpx) the error said "delete or replace it", wrong for
    # satellite and pathology images, and no setting raised it; from 89 Mpx Pillow's two-line
    # DecompressionBombWarning came on stderr. Pillow's limit is lowered here to stand for them.
    import warnings

    from PIL import Image

    from dan.config import Config
    from dan.data import load_image

    path = str(tmp_path / "a.png")
    Image.new("RGB", (30, 20)).save(path)  # 600 pixels
    for pillow_limit in (400, 250):  # Pillow would warn, then refuse
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert load_image(path).size == (30, 20)
        assert Image.MAX_IMAGE_PIXELS == pillow_limit  # put back
    with pytest.raises(UserError, match=r"a.png is 30x20, 600 pixels, above data.max_image_pixels \(599, .*"
                                        r"\(data.max_image_pixels=600\), or downscale"):  # (from Python)
        load_image(path, max_pixels=599)
    root = write_image_folder(tmp_path / "imgs")  # 480 to 528 pixels
    cfg = DataConfig(dataset="imagefolder", data=root, image_size=16, batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(batches(build_data(cfg, seed=0).train, 0)) == 3  # RandomResizedCrop's crops: Pillow checks them
    cfg.max_image_pixels = 500
    with pytest.raises(UserError, match="above data.max_image_pixels"):
        batches(build_data(cfg, seed=0).test, 0)
    with pytest.raises(UserError, match="data.max_image_pixels"):
        Config.from_dict({"data": {"max_image_pixels": 0}}).validate()


def test_an_image_folder_without_val_class_folders_is_told_the_fix_for_its_layout(tmp_path):
    # an audit's train/ + test/ folder was told only that val/ did not exist, and ImageNet's flat
    # val/ that train/ and val/ "hold different class folders (2 vs 0 ...)"
    import shutil

    root = write_image_folder(tmp_path / "imgs")
    cfg = DataConfig(dataset="imagefolder", data=root, image_size=16)
    os.rename(os.path.join(root, "val"), os.path.join(root, "test"))
    with pytest.raises(UserError, match=rf"{root} has test/ but no val/, .*rename test/ to val/, or link it "
                                        rf"\(ln -s test {root}/val\)"):
        build_data(cfg, seed=0)
    shutil.rmtree(os.path.join(root, "test"))
    with pytest.raises(UserError, match="val does not exist: the test split is read from val/<class>/.*make it"):
        build_data(cfg, seed=0)
    shutil.copytree(os.path.join(root, "train", "cat"), os.path.join(root, "val"))  # images, no class folders
    with pytest.raises(UserError, match=r"val holds 3 images directly, not in class folders: sort them into class "
                                        r"folders named as train/'s \(val/<class>/\*.jpg\)$"):
        build_data(cfg, seed=0)
    open(os.path.join(root, "LOC_val_solution.csv"), "w").close()  # ImageNet's
    with pytest.raises(UserError, match="LOC_val_solution.csv beside it gives each image's class"):
        build_data(cfg, seed=0)


def test_imagefolder_refuses_a_link_loop_and_follows_a_link_elsewhere(tmp_path):
    # an audit's `ln -s .. train/cat/loop` added every image of train/ 81 times, all as cat
    root = write_image_folder(tmp_path / "imgs")
    cfg = DataConfig(dataset="imagefolder", data=root, image_size=16, batch_size=2)
    extra = write_image_folder(tmp_path / "more")
    os.symlink(os.path.join(extra, "train", "cat"), os.path.join(root, "train", "cat", "more"))  # not a loop
    assert build_data(cfg, seed=0).train.num_samples == 9
    os.symlink("..", os.path.join(root, "train", "cat", "loop"))
    with pytest.raises(UserError, match=r"train/cat/loop is a link to .*imgs/train, a folder that holds it: .*"
                                        r"class cat; remove the link"):
        build_data(cfg, seed=0)
    os.remove(os.path.join(root, "train", "cat", "loop"))
    a, b = os.path.join(extra, "train", "cat"), os.path.join(extra, "val", "cat")
    os.symlink(b, os.path.join(a, "b"))
    assert build_data(cfg, seed=0).train.num_samples == 11  # more/b: two images more
    os.symlink(a, os.path.join(b, "a"))  # a loop of two links, neither to a folder holding it
    with pytest.raises(UserError, match=r"train/cat/more/b/a is a link to .*more/train/cat, a folder that holds"):
        build_data(cfg, seed=0)


# --------------------------------------------------------------------------- user errors

@pytest.mark.parametrize("cfg, match", [
    (dict(dataset="fashion_mnist"), "apt-get install dataset-fashion-mnist"),
    (dict(dataset="cifar10"), "data.download=True"),
    (dict(dataset="cifar100"), "data.download=True"),
    (dict(dataset="imagefolder"), "data.data=DIR"),
])
def test_missing_data(tmp_path, cfg, match):
    from dan.errors import command_line

    with pytest.raises(UserError, match=match) as e:  # from Python: the data dict's keys
        build_data(DataConfig(data=str(tmp_path / "nothing"), **cfg), seed=0)
    assert "\n" not in str(e.value)
    with command_line(), pytest.raises(UserError, match="--download|--data DIR"):  # in a tool: its flags
        build_data(DataConfig(data=str(tmp_path / "nothing"), **cfg), seed=0)


@pytest.mark.parametrize("fields, message", [
    (dict(dataset="synthetic", data="/nope"), "--data (data.data) does nothing for dataset synthetic (only "
                                              "fashion_mnist, cifar10, cifar100, imagefolder read it): drop it"),
    (dict(dataset="imagefolder", data="/nope", download=True), "--download (data.download) does nothing for dataset "
                                                               "imagefolder (only cifar10, cifar100 read it): drop it"),
    (dict(dataset="fashion_mnist", download=True), "--download (data.download) does nothing for dataset fashion_mnist"),
    (dict(dataset="synthetic", download=True), "--download (data.download) does nothing for dataset synthetic"),
])
def test_a_data_flag_the_dataset_does_not_read_is_refused(fields, message):
    # an audit's `--dataset synthetic --data /nope` and `--dataset imagefolder --download` ran as if not given
    with pytest.raises(UserError) as e:
        build_data(DataConfig(**fields), seed=0)
    assert str(e.value).startswith(message), str(e.value)


def test_bad_names_and_shapes():
    with pytest.raises(UserError, match="synthetic"):
        dataset_info(DataConfig(dataset="mnist"))
    with pytest.raises(UserError, match="needs data.data=DIR holding"):
        dataset_info(DataConfig(dataset="imagefolder"))
    assert dataset_info(DataConfig(dataset="cifar10", image_size=64)).image_size == 64  # resized batches
    from dan.data.info import IMAGENET_MEAN

    grey = dataset_info(DataConfig(dataset="cifar10", channels=1))  # colour made grey: luma statistics
    mean = 0.299 * IMAGENET_MEAN[0] + 0.587 * IMAGENET_MEAN[1] + 0.114 * IMAGENET_MEAN[2]
    assert grey.in_channels == 1 and grey.mean == pytest.approx((mean,)) and len(grey.std) == 1
    with pytest.raises(UserError, match="num_classes"):
        dataset_info(DataConfig(dataset="fashion_mnist", num_classes=5))
    assert dataset_info(DataConfig(dataset="cifar100")).num_classes == 100


def test_grey_images_repeated_to_three_channels_and_resized():
    d = build_data(DataConfig(channels=3, image_size=32, train_subset=64, batch_size=16, augment=False), seed=0)
    assert (d.info.in_channels, d.info.image_size) == (3, 32)
    x, _ = next(iter(d.test))
    assert x.shape[1:] == (3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    plain = next(iter(build_data(DataConfig(train_subset=64, batch_size=16, augment=False), seed=0).test))[0]
    resized = torch.nn.functional.interpolate(plain, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(x[:, :1], resized, atol=1e-5)


def test_colour_images_made_grey_for_a_one_channel_model(tmp_path):
    """data.channels: 1 on colour data (a 1-channel model on an image folder was refused with no way
    round): every route gives one channel, the luma of Pillow's convert("L") and torchvision."""
    from PIL import Image

    from dan.data.datasets import ArraySplits
    from dan.data.info import DatasetInfo, apply_overrides
    from dan.data.loaders import _tensor_data

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 120, 40)]
    luma = [round(0.299 * r + 0.587 * g + 0.114 * b) for r, g, b in colours]
    # in memory (CIFAR's route): uint8 colour arrays made grey once, as 8 bits
    x = np.stack([np.broadcast_to(np.array(c, np.uint8)[:, None, None], (3, 8, 8)) for c in colours])
    info = apply_overrides(DatasetInfo("cifar10", 4, 3, 8, (0.0,) * 3, (1 / 255,) * 3), DataConfig(channels=1))
    y = np.arange(4)
    d = _tensor_data(ArraySplits(x, y, x, y, None), DataConfig(batch_size=4, augment=False), info, 0,
                     torch.device("cpu"))
    xb, yb = next(iter(d.test))
    assert xb.shape == (4, 1, 8, 8)
    assert [round(float(v)) for v in xb[:, 0, 0, 0]] == luma  # mean 0, std 1/255 sum back to 0..255
    # an image folder: the transform's last channel step makes them grey before normalizing
    root = tmp_path / "imgs"
    for split in ("train", "val"):
        for k, c in enumerate(colours[:2]):
            os.makedirs(root / split / f"c{k}")
            for i in range(2):
                Image.fromarray(np.full((12, 12, 3), c, np.uint8)).save(root / split / f"c{k}" / f"{i}.png")
    cfg = DataConfig(dataset="imagefolder", data=str(root), image_size=8, batch_size=4, augment=False, channels=1)
    d = build_data(cfg, seed=0)
    assert d.info.in_channels == 1 and len(d.info.mean) == 1
    xb, yb = next(iter(d.test))
    raw = xb * d.info.std[0] + d.info.mean[0]  # back to [0, 1]
    assert xb.shape == (4, 1, 8, 8)
    for img, label in zip(raw, yb):
        assert torch.allclose(img, torch.full_like(img, sum(w * v for w, v in zip((0.299, 0.587, 0.114),
                                                                                      colours[label])) / 255), atol=1e-5)


def test_rotation_keeps_a_dot_at_its_distance_from_the_centre_and_within_the_angle():
    """p_rotate 1 only: a bright dot 6 px right of the centre of a 41x41 image lands 6 px from
    the centre, turned by at most max_rotate degrees (read from its centre of mass)."""
    import math

    x = torch.zeros(64, 1, 41, 41)
    x[:, :, 19:22, 25:28] = 255.0  # a 3x3 dot centred at (row 20, col 26): 6 px right of (20, 20)
    rot = AugmentRecipe(p_flip=0, p_rotate=1, max_rotate=25.0, p_lighting=0, p_warp=0, padding="zeros")
    y = augment_batch(x, rot, torch.Generator().manual_seed(1))
    rows, cols = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    mass = y[:, 0].sum((1, 2))
    dr = (y[:, 0] * rows).sum((1, 2)) / mass - 20
    dc = (y[:, 0] * cols).sum((1, 2)) / mass - 20
    assert torch.allclose(torch.hypot(dr, dc), torch.full((64,), 6.0), atol=0.15)
    angles = torch.rad2deg(torch.atan2(dr, dc))
    assert angles.abs().max() <= 25.0 + 1.0 and angles.abs().max() > 15.0  # spread over the range
    assert torch.allclose(mass, torch.full((64,), 9 * 255.0), rtol=0.02)  # nothing lost at the borders


def test_lighting_is_a_contrast_around_the_mean_then_a_brightness_shift():
    """Lighting only: each image is (x - mean) * contrast + mean + brightness * 255, with the draws
    augment_batch makes after the geometry's (replayed here from the same seed)."""
    from dan.data.augment import random_homographies, random_lighting

    x = torch.linspace(50, 150, 100).view(1, 1, 10, 10).expand(8, 1, 10, 10).contiguous()
    light = AugmentRecipe(p_flip=0, p_rotate=0, p_lighting=1, p_warp=0, max_contrast=0.2, max_brightness=0.1)
    y = augment_batch(x, light, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    random_homographies(8, light, g)  # the geometry's draws come first
    contrast, bright = random_lighting(8, light, g)
    expect = (x - 100.0) * contrast.view(8, 1, 1, 1) + 100.0 + bright.view(8, 1, 1, 1) * 255.0
    assert torch.allclose(y, expect, atol=1e-3)
    assert ((contrast - 1).abs() <= 0.2).all() and (bright.abs() <= 0.1).all()
    assert (contrast != 1).all() and (bright != 0).all()  # p_lighting 1: every image changed


def test_the_deployed_networks_preprocess_as_recorded_gives_the_evaluation_inputs(tmp_path):
    # small.json's "preprocess" is what a user applies to an image before small.onnx: applied by
    # hand as written, it must give the inputs the run evaluated on (an audit fed x / 255 and got 11 %)
    from PIL import Image

    from dan.data import deploy_preprocess

    root = write_image_folder(tmp_path / "imgs")
    cfg = DataConfig(dataset="imagefolder", data=root, image_size=16, batch_size=4)
    pre = deploy_preprocess(dataset_info(cfg), cfg)
    assert pre["class_names"] == ["cat", "dog"] and pre["image_size"] == 16 and "resized to 18" in pre["steps"]
    (x, _), = batches(build_data(cfg, seed=0).test, 0)
    for i, path in enumerate(sorted((tmp_path / "imgs" / "val").glob("*/*.png"))):
        img = Image.open(path).convert("RGB")
        w, h = img.size
        size = (18, int(18 * h / w)) if w <= h else (int(18 * w / h), 18)  # the longer side truncated
        img = img.resize(size, Image.BILINEAR)
        left, top = round((img.size[0] - 16) / 2), round((img.size[1] - 16) / 2)
        arr = np.asarray(img.crop((left, top, left + 16, top + 16)), np.float32) / 255
        mine = (torch.from_numpy(arr).permute(2, 0, 1) - torch.tensor(pre["mean"])[:, None, None]) \
            / torch.tensor(pre["std"])[:, None, None]
        assert torch.allclose(mine, x[i], atol=1e-5), i
    # built-in arrays: x / 255, normalized; grey statistics for a grey dataset
    cfg = DataConfig(dataset="synthetic", image_size=8, num_classes=3, synthetic_size=64, batch_size=16)
    pre = deploy_preprocess(dataset_info(cfg), cfg)
    d = build_data(cfg, seed=0)
    (x, _), = batches(d.test, 0)[:1]
    raw = d.test.images[:len(x)].float() / 255
    mine = (raw - torch.tensor(pre["mean"])[:, None, None]) / torch.tensor(pre["std"])[:, None, None]
    assert torch.allclose(mine, x, atol=1e-5) and pre["class_names"] is None and pre["channels"] == 3


def test_the_recorded_steps_are_those_of_each_route(tmp_path):
    # an audit: a 16-bit image folder, divided by 65535 in training, was said to be "RGB image
    # (Pillow) ... values / 255" (Pillow's convert('RGB') clips it white); Fashion-MNIST with
    # data.channels 3 an "8-bit RGB image"; an image folder with data.channels 1 "and a grey one
    # repeated to 3 channels"
    from PIL import Image

    from dan.data import deploy_preprocess

    rng = np.random.default_rng(0)
    root = tmp_path / "deep"
    for split in ("train", "val"):
        for c in ("a", "b"):
            os.makedirs(root / split / c)
            Image.fromarray(rng.integers(0, 65536, (20, 24), dtype=np.uint16)).save(root / split / c / "0.png")
    cfg = DataConfig(dataset="imagefolder", data=str(root), image_size=16, batch_size=4)
    pre = deploy_preprocess(dataset_info(cfg), cfg)
    assert "a 16-bit one (mode I;16) as one float channel divided by 65535" in pre["steps"]
    (x, _), = batches(build_data(cfg, seed=0).test, 0)
    for i, path in enumerate(sorted((root / "val").glob("*/*.png"))):  # the steps applied by hand
        img = Image.fromarray((np.asarray(Image.open(path), np.float64) / 65535).astype(np.float32), "F")
        img = img.resize((21, 18), Image.BILINEAR).crop((2, 1, 18, 17))  # shorter side 18, center crop 16
        mine = torch.from_numpy(np.array(img)).expand(3, 16, 16)  # "repeated to 3 channels"
        mine = (mine - torch.tensor(pre["mean"])[:, None, None]) / torch.tensor(pre["std"])[:, None, None]
        assert torch.allclose(mine, x[i], atol=1e-5), i
    cfg.channels = 1
    steps = deploy_preprocess(dataset_info(cfg), cfg)["steps"]
    assert steps.endswith("made one channel: the luma 0.299 R + 0.587 G + 0.114 B of an RGB image, a one-channel "
                          "image kept") and "repeated" not in steps
    grey3 = DataConfig(dataset="fashion_mnist", channels=3)
    assert deploy_preprocess(dataset_info(grey3), grey3)["steps"].startswith(
        "8-bit grey image, values / 255, repeated to 3 channels, resized to 28x28")
    colour1 = DataConfig(dataset="cifar10", channels=1)
    assert deploy_preprocess(dataset_info(colour1), colour1)["steps"].startswith(
        "8-bit RGB image made grey as Pillow's convert('L') does (the luma 0.299 R + 0.587 G + 0.114 B, rounded")
    same = DataConfig(dataset="cifar10", channels=3)  # nothing to convert: nothing said
    assert deploy_preprocess(dataset_info(same), same)["steps"].startswith("8-bit RGB image, values / 255, resized")


def tiled_tiff(pixels) -> bytes:
    """A 32x32 grey TIFF in four 16x16 tiles, uncompressed, its directory first (Pillow writes strips
    only)."""
    import struct

    tags = [(256, 32), (257, 32), (258, 8), (259, 1), (262, 1), (277, 1), (322, 16), (323, 16)]
    arrays = 8 + 2 + 12 * (len(tags) + 2) + 4  # after the header and the directory: the tiles' offsets, counts
    out = b"II*\0" + struct.pack("<IH", 8, len(tags) + 2)
    out += b"".join(struct.pack("<HHIHH", tag, 3, 1, value, 0) for tag, value in tags)
    out += struct.pack("<HHII", 324, 4, 4, arrays) + struct.pack("<HHII", 325, 4, 4, arrays + 16) + b"\0" * 4
    out += struct.pack("<4I", *(arrays + 32 + 256 * i for i in range(4))) + struct.pack("<4I", *[256] * 4)
    return out + b"".join(pixels[r:r + 16, c:c + 16].tobytes() for r in (0, 16) for c in (0, 16))


# (Pillow refuses a cut WebP when opening it; a cut TIFF opens when its directory comes first, as uncompressed)
@pytest.mark.parametrize("fmt", ["JPEG", "MPO", "PNG", "GIF", "BMP", "PPM", "TIFF", "TIFF-deflate", "TIFF-tiled"])
def test_a_cut_short_evaluation_image_is_refused_before_training_and_a_whole_one_with_a_tail_is_not(tmp_path, fmt):
    # the header check let a truncated image through: it was found when decoded, at the end of
    # epoch 1's training (the evaluation comes before the checkpoint), and lost the epoch
    import io

    from PIL import Image

    root = write_image_folder(tmp_path / "imgs")
    bad = os.path.join(root, "val", sorted(os.listdir(os.path.join(root, "val")))[1], "1.png")
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    img = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    options = {"MPO": {"save_all": True, "append_images": [img]},  # (a phone's 2 pictures)
               "TIFF-deflate": {"compression": "tiff_deflate"}}.get(fmt, {})
    img.save(buf, fmt.split("-")[0], **options)
    whole = buf.getvalue() if fmt != "TIFF-tiled" else tiled_tiff(rng.integers(0, 256, (32, 32), dtype=np.uint8))
    assert Image.open(io.BytesIO(whole)).format == fmt.split("-")[0]
    cfg = DataConfig(dataset="imagefolder", data=root, image_size=16, batch_size=4)
    open(bad, "wb").write(whole + b"\0" * 100)  # a whole image with bytes after it (some cameras add them)
    build_data(cfg, seed=0)
    open(bad, "wb").write(whole[:len(whole) // 3])  # (within the first picture of two, for MPO)
    with pytest.raises(UserError, match=f"cannot read image {bad} .*delete or replace it"), \
            warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        build_data(cfg, seed=0)
    assert not said  # the refusal is the one line (a cut TIFF had Pillow's "Corrupt EXIF data" before it)


def test_more_loader_workers_than_cpus_are_cut_to_the_cpus_with_a_note(tmp_path):
    # the ImageNet config's 8 workers on a 2-core machine: PyTorch's three-line warning twice an epoch
    import warnings

    root = write_image_folder(tmp_path / "imgs")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    said = []
    cfg = DataConfig(dataset="imagefolder", data=root, image_size=16, batch_size=2, workers=cpus + 6)
    data = build_data(cfg, seed=0, log=said.append)
    assert data.train.workers == data.test.workers == cpus and cfg.workers == cpus + 6  # (the caller's kept)
    assert f"note: data.workers {cpus + 6} is more than the {cpus} CPUs this process may use: {cpus} used" in said
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch's "This DataLoader will create ... worker processes"
        next(iter(data.train))
    same = DataConfig(dataset="imagefolder", data=root, image_size=16, batch_size=2, workers=cpus)
    said.clear()
    assert build_data(same, seed=0, log=said.append).train.workers == cpus
    assert not [s for s in said if "data.workers" in s]


@pytest.mark.parametrize("dataset", ["synthetic", "imagefolder"])
def test_a_batch_larger_than_the_training_split_is_said(tmp_path, dataset):
    # an audit's ResNet-50 on a small folder with the ImageNet config's batch: one step an epoch, unsaid
    root = write_image_folder(tmp_path / "imgs") if dataset == "imagefolder" else None
    small = DataConfig(dataset=dataset, data=root, image_size=16, synthetic_size=40, holdout=0.0, batch_size=2)
    said = []
    n = build_data(small, seed=0, log=said.append).train.total
    assert not [s for s in said if "batch_size" in s]
    large = dataclasses.replace(small, batch_size=n + 1)
    said.clear()
    data = build_data(large, seed=0, log=said.append)
    assert len(data.train) == 1
    assert [s for s in said if "batch_size" in s] == [
        f"note: data.batch_size {n + 1} is more than the training split's {n} images: every epoch is one step "
        f"(lower data.batch_size for more)"]


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
def test_an_interrupt_while_waiting_for_a_batch_leaves_no_worker_behind():
    # a notebook's Ctrl-C: the exception it keeps held the DataLoader's iterator, and its workers lived on
    import multiprocessing as mp

    from dan.data.loaders import FolderLoader
    from dan.data.splits import IndexedSplit

    class Slow(IndexedSplit):
        def __getitem__(self, i):
            time.sleep(1.5)
            return torch.zeros(3, 4, 4), 0

    loader = FolderLoader(Slow(None, 8), 2, seed=0, split="train", shuffle=False, drop_last=False, workers=2,
                          device=torch.device("cpu"))
    before = set(mp.active_children())

    def interrupt(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)  # while the first batch is read
    try:
        with pytest.raises(KeyboardInterrupt) as held:
            for _ in loader:
                pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert held.value.__traceback__ is not None  # kept, as a notebook keeps it
    assert not set(mp.active_children()) - before
