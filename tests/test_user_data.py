"""Your own dataset (dan/data/code.py): ``data.dataset: package.module:function`` returning
(train, test) torch Datasets, imported only when the user names it, or the Datasets as objects
from ``dan.search``. Items are converted and checked as they are read."""

import json
import os
import random
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dan
from dan import models
from dan.config import Config, DataConfig
from dan.data import FASHION_MNIST_DIR, FASHION_MNIST_FILES, build_data, build_user_data, dataset_info
from dan.data.code import as_splits
from dan.monitor import Monitor
from dan.search import search
from tests.helpers import assert_user_error, run_tool, tiny_config
from tests.test_engine import KillAt
from tests.zoo_data import Blobs

FN = "tests.zoo_data:blobs"
TINY = ["--epochs", "1", "--limit-batches", "2", "--batch-size", "16", "--quiet", "--no-tensorboard",
        "--set", "train.latency_batches=[1]", "--set", "model.args.width=8",
        "--set", "search.warmup_epochs=0"]  # a 1-epoch search that searches


def _data(fn=FN, **fields) -> DataConfig:
    models.trust(fn)
    return Config.from_dict({"data": {"dataset": fn, "batch_size": 16, **fields}}).data


def _batches(loader, n=3):
    loader.set_epoch(1)
    return [(x.clone(), y.clone()) for (x, y), _ in zip(loader, range(n))]


def test_a_function_dataset_is_described_and_loaded_reproducibly_whatever_the_workers():
    cfg = _data(args={"n": 64}, holdout=0.25)
    info = dataset_info(cfg)
    assert (info.num_classes, info.in_channels, info.image_size) == (4, 3, 16)  # from `classes`, first image
    assert info.mean == (0.0,) * 3 and info.std == (1.0,) * 3  # the user's transform normalizes
    data = build_data(cfg, seed=3)
    assert data.train.num_samples == 48 and data.holdout.num_samples == 16 and data.test.num_samples == 16
    a = _batches(data.train)
    cfg1 = _data(args={"n": 64}, holdout=0.25, workers=1)
    b = _batches(build_data(cfg1, seed=3).train)
    for (xa, ya), (xb, yb) in zip(a, b):  # the random flips and noise, drawn per (seed, epoch, position)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = _batches(build_data(cfg, seed=4).train)
    assert not torch.equal(a[0][0], c[0][0])
    x, y = next(iter(data.test))
    assert x.shape == (16, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    # the held-out part is read from the training Dataset, random transform and all: seeded too
    ev = [x for x, _ in data.holdout_eval], [x for x, _ in build_data(cfg1, seed=3).holdout_eval]
    assert all(torch.equal(a, b) for a, b in zip(*ev))


@pytest.mark.parametrize("draws", ["numpy", "python"])
def test_transforms_drawing_from_numpy_or_python_random_read_alike_whatever_the_workers(draws):
    """An audit: a transform drawing from NumPy's global generator or Python's ``random`` (as
    albumentations does) read other images under --workers 2 than under 0 (each worker process seeds
    them its own way): 102 of 122 weight tensors apart. Both are seeded per item now, as torch's is,
    and the caller's generators are as they were."""
    cfg = _data(args={"n": 64, "draws": draws}, holdout=0.25)
    before = np.random.get_state()[1].copy(), random.getstate()
    a = _batches(build_data(cfg, seed=3).train)
    assert np.array_equal(np.random.get_state()[1], before[0]) and random.getstate() == before[1]
    b = _batches(build_data(_data(args={"n": 64, "draws": draws}, holdout=0.25, workers=2), seed=3).train)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = _batches(build_data(cfg, seed=4).train)
    assert not torch.equal(a[0][0], c[0][0])


class Items(torch.utils.data.Dataset):
    """Items given as a list (one may be wrong); ``classes`` unless ``no_classes``."""

    def __init__(self, items, no_classes=False):
        self.items = items
        if not no_classes:
            self.classes = ["a", "b", "c"]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _with(ds, **attrs):
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


class Sized(Items):
    def __init__(self, n):
        super().__init__([(torch.zeros(3, 6, 6), 0)])
        self.n = n

    def __len__(self):
        return self.n


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield torch.zeros(3, 6, 6), 0

    def __len__(self):
        return 1


def _read_all(train, test=None, **fields):
    splits = as_splits((train, test or Items(train.items[:2])), "<object Items>")
    cfg = DataConfig(dataset=splits.name, batch_size=2, **fields)
    data = build_user_data(splits, cfg, seed=0)
    return [b for loader in (data.train, data.test) for b in loader], data.info


def test_images_are_converted_from_uint8_pil_and_arrays_and_resized_when_asked():
    grey = np.full((6, 6), 255, np.uint8)
    items = [(torch.full((1, 6, 6), 255, dtype=torch.uint8), 0), (Image.fromarray(grey), np.int64(1)),
             (grey[:, :, None], torch.tensor(2)), (torch.ones(6, 6), 1)]
    batches, info = _read_all(Items(items))
    assert info.in_channels == 1 and info.image_size == 6
    assert all(torch.allclose(x, torch.ones_like(x)) for x, _ in batches)  # uint8 scaled to [0, 1]
    batches, info = _read_all(Items(items), image_size=4, channels=3)
    assert info.in_channels == 3 and all(x.shape[1:] == (3, 4, 4) for x, _ in batches)
    red = [(torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 6, 6), i % 3) for i in range(4)]
    batches, info = _read_all(Items(red), channels=1)  # colour made grey: its luma
    assert info.in_channels == 1 and all(torch.allclose(x, torch.full_like(x, 0.299)) for x, _ in batches)


def test_the_input_channels_come_from_items_spread_over_the_split_and_a_colour_one_is_never_made_grey_unasked():
    # an audit's dataset whose item 0 was grey and the rest colour got a 1-channel network, and every
    # colour image was made grey without a word
    grey, colour = (torch.full((1, 6, 6), 0.5), 0), (torch.rand(3, 6, 6), 1)
    batches, info = _read_all(Items([grey] + [colour] * 15))
    assert info.in_channels == 3 and all(x.shape[1] == 3 for x, _ in batches)
    assert torch.equal(batches[-1][0][0], torch.full((3, 6, 6), 0.5))  # test item 0, grey, repeated
    # a colour image the sample missed, under a network sized grey: one line naming data.channels
    rare = Items([grey] * 4 + [colour] + [grey] * 15)  # item 4: not among the 8 read of 20
    with pytest.raises(dan.UserError, match="train item 4: its image is colour, .*data.channels=3"):
        _read_all(rare)
    batches, info = _read_all(rare, channels=1)  # asked for: made grey
    assert info.in_channels == 1 and all(x.shape[1] == 1 for x, _ in batches)
    with pytest.raises(dan.UserError, match=r"different channel counts \(item 0: 3, item 1: 4.*convert\('RGB'\)"):
        _read_all(Items([colour, (torch.rand(4, 6, 6), 0)] * 4))
    with pytest.raises(dan.UserError, match="its image has 4 channels, the network takes 3 .*convert"):
        _read_all(Items([colour] * 4 + [(torch.rand(4, 6, 6), 0)] + [colour] * 15))  # not data.image_size


@pytest.mark.parametrize("bad, fields, fragments", [
    ((torch.zeros(3, 6, 6), 3), {}, ["train item 1", "label 3 is outside 0..2", "data.num_classes"]),
    ((torch.zeros(3, 6, 6), 1.0), {}, ["train item 1", "not an integer class index"]),
    ((torch.zeros(3, 5, 6), 1), {}, ["train item 1", "3x5x6", "3x6x6", "data.image_size"]),
    ((torch.zeros(3, 6, 6, dtype=torch.int32), 1), {}, ["train item 1", "torch.int32", "uint8"]),
    (("not an image", 1), {}, ["train item 1", "str", "ToTensor"]),
    (torch.zeros(3, 6, 6), {}, ["train item 1 is a Tensor", "(image, label)"]),
    ({"img": torch.zeros(3, 6, 6), "fine_label": 1, "coarse_label": 0}, {},
     ["train item 1 is a dict with keys img, fine_label, coarse_label", "data.item_keys=[img,fine_label]"]),
    ({"image": torch.zeros(3, 6, 6), "label": 1}, {"item_keys": ["image", "y"]},
     ["train item 1 is a dict without y", "its keys: image, label"]),
    ((torch.zeros(6, 6, 3, dtype=torch.uint8), 1), {}, ["train item 1", "6x6x3, channels last", "permute(2, 0, 1)"]),
])
def test_a_wrong_item_stops_the_run_naming_split_index_and_fix(bad, fields, fragments):
    items = [(torch.zeros(3, 6, 6), 0), bad] + [(torch.zeros(3, 6, 6), 2)] * 2
    with pytest.raises(dan.UserError) as e:
        _read_all(Items(items), **fields)
    assert all(f in str(e.value) for f in fragments), str(e.value)


class HFLike(torch.utils.data.Dataset):
    """A Hugging Face dataset's shape: dict items and a ``features`` mapping whose label feature
    has ``num_classes`` (a ``ClassLabel``); no ``classes`` or ``targets``."""

    def __init__(self, items, image="image", label="label", k=3):
        self.items = [{image: x, label: y, "id": i} for i, (x, y) in enumerate(items)]
        self.features = {image: object(), label: type("ClassLabel", (), {"num_classes": k})(), "id": object()}

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_dict_items_are_read_by_key_as_the_same_tuples_are():
    items = [(torch.rand(3, 6, 6), i % 3) for i in range(6)]
    want, info = _read_all(Items(items))
    got, hf = _read_all(HFLike(items), HFLike(items[:2]))
    assert hf == info  # the class count from the label feature (num_classes 3), as from `classes`
    assert all(torch.equal(a, b) for pa, pb in zip(want, got) for a, b in zip(pa, pb))
    got, _ = _read_all(HFLike(items, "img", "fine_label"), HFLike(items[:2], "img", "fine_label"),
                       item_keys=["img", "fine_label"])
    assert all(torch.equal(a, b) for pa, pb in zip(want, got) for a, b in zip(pa, pb))
    pil = [({"pixel_values": Image.fromarray(np.full((6, 6), 51 * i, np.uint8)), "labels": i % 3}) for i in range(4)]
    batches, info = _read_all(_with(Items(pil), classes=None, features={"labels": type("C", (), {"num_classes": 5})()}))
    assert info.num_classes == 5 and info.in_channels == 1
    seen = {round(float(x[j].mean()), 4) for x, _ in batches for j in range(len(x))}
    assert seen == {0.0, 0.2, 0.4, 0.6}  # each PIL image as ToTensor reads it (the splits shuffle)
    for bad in (["image"], ["image", "image"], ["image", ""], "image,label"):
        with pytest.raises(dan.UserError, match="data.item_keys.? must be"):
            Config.from_dict({"data": {"dataset": FN, "item_keys": bad}}).validate()
    with pytest.raises(dan.UserError, match="drop data.item_keys"):  # keys a built-in dataset would ignore
        Config.from_dict({"data": {"dataset": "synthetic", "item_keys": ["img", "label"]}}).validate()


@pytest.mark.parametrize("out, fields, fragment", [
    (lambda: Items([(torch.zeros(3, 6, 8), 0)] * 4), {}, "gave a Items: give (train, test)"),
    (lambda: (Items([(torch.zeros(3, 6, 8), 0)] * 4), Items([(torch.zeros(3, 6, 8), 0)])), {}, "6x8"),
    (lambda: (Items([(torch.zeros(3, 6, 6), 0)] * 4, no_classes=True), Items([])), {}, "test split has 0 items"),
    (lambda: (Items([(torch.zeros(3, 6, 6), 0)] * 4, no_classes=True), Items([(torch.zeros(3, 6, 6), 0)])), {},
     "set data.num_classes"),
    (lambda: (Stream(), Items([(torch.zeros(3, 6, 6), 0)])), {}, "not a map-style"),
    (lambda: (Items([(torch.zeros(2, 6, 6), 0)] * 4), Items([(torch.zeros(2, 6, 6), 0)])), {"channels": 1},
     "data.channels 1"),  # two channels are neither grey nor colour (3 made grey is data.channels 1's job)
    (lambda: (_with(Items([(torch.zeros(3, 6, 6), 0)] * 4, no_classes=True), targets="xyz"),
              Items([(torch.zeros(3, 6, 6), 0)])), {}, "`targets` are not a list of class indices"),
    (lambda: (_with(Items([(torch.zeros(3, 6, 6), 0)] * 4, no_classes=True), targets=[0, 10**9]),
              Items([(torch.zeros(3, 6, 6), 0)])), {}, "1000000001 classes"),
    (lambda: (Sized(2.5), Items([(torch.zeros(3, 6, 6), 0)])), {}, "len() of its train split fails"),
    (lambda: (Items([(np.zeros(8), 0)] * 4), Items([(torch.zeros(3, 6, 6), 0)])), {}, "ndarray of shape (8,)"),
])
def test_what_a_dataset_function_returns_is_checked(tmp_path, monkeypatch, out, fields, fragment):
    mod = tmp_path / "my_sets.py"
    mod.write_text("def make():\n    return OUT()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import my_sets

    importlib.reload(my_sets)
    my_sets.OUT = out
    from dan.data import code

    code._LAST.clear()
    with pytest.raises(dan.UserError) as e:
        dataset_info(_data("my_sets:make", **fields))
    assert fragment in str(e.value), str(e.value)


def test_train_and_test_splits_naming_their_classes_differently_are_refused_and_the_names_recorded():
    # an audit's torchvision ImageFolders: val/ spelt a class `Dog`, which sorted first, and the cat
    # and dog test labels were swapped without a word (the built-in imagefolder refuses such a pair)
    from dan.data import deploy_preprocess

    item = (torch.zeros(3, 6, 6), 0)
    _, info = _read_all(Items([item] * 4), Items([item] * 2))
    for test_classes, fragment in ((["a", "c", "b"], "train 'b' vs test 'c'"), (["a", "b"], "3 vs 2 classes")):
        with pytest.raises(dan.UserError, match=f"train and test splits name different classes .*{fragment}.*"
                                                f"give both splits the same classes"):
            _read_all(Items([item] * 4), _with(Items([item] * 2), classes=test_classes))
    # through a Subset, and a Hugging Face label feature's names
    hf = _with(Items([item] * 2, no_classes=True), features={"label": _with(Items([]), names=["a", "b", "d"])})
    with pytest.raises(dan.UserError, match="train 'c' vs test 'd'"):
        _read_all(Items([item] * 4), torch.utils.data.Subset(hf, [0, 1]))
    splits = as_splits((Items([item] * 4), Items([item] * 2)), "<object Items>")
    cfg = DataConfig(dataset=splits.name, batch_size=2)
    data = build_user_data(splits, cfg, seed=0)
    assert data.class_names == ["a", "b", "c"]
    pre = deploy_preprocess(data.info, cfg, data.class_names)
    assert pre["class_names"] == ["a", "b", "c"]
    # numpy names (list(np.unique(labels))) are kept as plain strings: in a checkpoint they made it
    # one weights_only loading refuses
    import numpy as np

    splits = as_splits((_with(Items([item] * 4), classes=list(np.unique(np.array([10, 11, 12])))),
                        _with(Items([item] * 2), classes=list(np.array([10, 11, 12])))), "<object Items>")
    names = build_user_data(splits, cfg, seed=0).class_names
    assert names == ["10", "11", "12"] and all(type(n) is str for n in names)
    # the steps of this route (a dataset given as objects was said to be "8-bit RGB image ...")
    assert pre["steps"] == ("your dataset's items as it gives them (a C x H x W float tensor; uint8 values / 255; a "
                            "PIL image or an H x W x C array as torchvision's ToTensor converts it), a one-channel "
                            "image repeated to 3 channels")


def test_bad_names_and_arguments_are_refused_before_anything_runs():
    with pytest.raises(dan.UserError, match="data.args"):
        dataset_info(_data(args={"nope": 1}))
    with pytest.raises(dan.UserError, match="cannot import"):
        dataset_info(_data("no_such_pkg.sets:make"))
    with pytest.raises(dan.UserError, match="has no 'nope'"):
        dataset_info(_data("tests.zoo_data:nope"))
    with pytest.raises(dan.UserError, match="package.module:function"):
        dataset_info(DataConfig(dataset="fashion-mnist"))  # unknown: the message names your own route
    with pytest.raises(dan.UserError, match="as Python objects"):
        dataset_info(DataConfig(dataset="<object Blobs>"))  # a search run from Python, resumed elsewhere
    with pytest.raises(dan.UserError, match=r"--data \(data.data\) does nothing for dataset tests.zoo_data:blobs "
                                            r"\(your own dataset takes its folder .* in data.args, e.g. "
                                            r"data.args.root=DIR\): drop it"):  # (from Python: the key alone)
        dataset_info(_data(data="/data/blobs"))  # a folder your function never sees
    with pytest.raises(dan.UserError, match="drop data.args"):  # arguments a built-in dataset would ignore
        Config.from_dict({"data": {"dataset": "synthetic", "args": {"n": 3}}}).validate()
    with pytest.raises(dan.UserError, match="would import and run the module evil"):
        dataset_info(DataConfig(dataset="evil.sets:make"))  # never named by the user: not imported


def test_a_function_dataset_searches_and_retrains_from_the_command_line_named_each_time(tmp_path):
    s, r = tmp_path / "s", tmp_path / "r"
    p = run_tool("search.py", "--dataset", FN, "--set", "data.args.n=96", *TINY, "--budget-flops", "40%",
                 "--out", str(s))
    assert p.returncode == 0, p.stderr[-2000:]
    arch = json.loads((s / "arch.json").read_text())
    assert arch["config"]["data"]["dataset"] == FN and arch["input_shape"] == [1, 3, 16, 16]
    assert arch["num_classes"] == 4
    assert f"next:       python tools/retrain.py {s}/arch.json --dataset {FN}" in p.stdout  # the command that works
    # the arch.json alone does not make the name trusted: retrain names it again
    p = run_tool("retrain.py", str(s), *TINY, "--out", str(r))
    assert_user_error(p, "tests.zoo_data", f"--dataset {FN}")
    assert not r.exists()
    p = run_tool("retrain.py", str(s), "--dataset", FN, *TINY, "--out", str(r))
    assert p.returncode == 0, p.stderr[-2000:]
    meta = json.loads((r / "small.json").read_text())
    assert meta["flops"] == arch["small"]["flops"]
    assert meta["preprocess"]["class_names"] == ["c0", "c1", "c2", "c3"]  # its `classes` (recorded null before)
    # the checkpoint says what its networks were built for: counted without the dataset's code
    p = run_tool("count.py", str(r / "checkpoints" / "last.pt"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "small" in p.stdout
    # a search's checkpoint (its supernet: a traceback), its arch.json and its folder (both "does
    # not exist" or "corrupt: delete it") count the found network; small.onnx is named as such
    for target in (s / "checkpoints" / "last.pt", s / "arch.json", s):
        p = run_tool("count.py", str(target), "--json")
        assert p.returncode == 0, (target, p.stderr[-2000:])
        assert json.loads(p.stdout)["small"]["flops"] == arch["small"]["flops"]
    assert_user_error(run_tool("count.py", str(r / "small.onnx")), "ONNX file", "small.pt")
    p = run_tool("count.py", str(r / "small.pt"))  # folded BatchNorm: fewer params than small.json says, said
    assert p.returncode == 0 and "small.json beside it says" in p.stdout, p.stderr[-2000:]
    p = run_tool("count.py", str(s / "config.yaml"))
    assert_user_error(p, "not a DAN checkpoint", "arch.json, small.pt")
    assert "delete" not in p.stderr
    os.remove(s / "arch.json")  # a search stopped before its end: nothing chosen to count yet
    assert_user_error(run_tool("count.py", str(s / "checkpoints" / "last.pt")), "unfinished search", "--resume")


def _net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4))


def test_the_python_api_searches_on_dataset_objects_and_on_a_function_it_names(tmp_path):
    cfg = tiny_config(str(tmp_path / "unused"), **{"train.epochs": 1, "train.limit_batches": 3,
                                                  "search.warmup_epochs": 0, "data.batch_size": 16})
    train, test = Blobs(96, jitter=True), Blobs(24, seed=1)
    arch = dan.search(_net(), (train, test), budget="40%", cfg=cfg, out=str(tmp_path / "api"))
    assert arch.num_classes == 4 and list(arch.input_shape) == [1, 3, 16, 16]
    assert "<object Blobs>" in (tmp_path / "api" / "config.yaml").read_text()
    again = dan.search(_net(), (train, test), budget="40%", cfg=cfg, out=str(tmp_path / "api"), resume=True)
    assert again.widths == arch.widths
    # a tool cannot rebuild the objects: it says how to go on
    p = run_tool("retrain.py", str(tmp_path / "api"), "--epochs", "1", "--quiet", "--out", str(tmp_path / "r"))
    assert_user_error(p, "as Python objects", "dan.search")
    # a function named in the call is trusted by that call
    named = dan.search(_net(), "tests.zoo_data:blobs", budget="40%", cfg=cfg, out=str(tmp_path / "named"))
    assert named.num_classes == 4
    with pytest.raises(dan.UserError, match="give \\(train, test\\)"):
        dan.search(_net(), (train,), cfg=cfg, out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not all(os.path.isfile(os.path.join(FASHION_MNIST_DIR, f)) for f in FASHION_MNIST_FILES),
                    reason="dataset-fashion-mnist is not installed")
def test_real_images_through_a_function_batch_as_the_built_in_reader_does():
    """The same 300 Fashion-MNIST images, no augmentation, the same seed: the user's Dataset route
    gives the built-in route's batches (same order, same held-out part, same values to float error)."""
    fields = {"train_subset": 300, "holdout": 0.25, "augment": False, "batch_size": 32}
    ours = build_data(DataConfig(dataset="fashion_mnist", **fields), seed=5)
    yours = build_data(_data("tests.zoo_data:fashion_mnist", **fields), seed=5)
    assert yours.info.num_classes == 10 and yours.info.image_size == 28 and yours.info.in_channels == 1
    for a, b in ((ours.train, yours.train), (ours.holdout, yours.holdout), (ours.test, yours.test)):
        a.set_epoch(2)
        b.set_epoch(2)
        for (xa, ya), (xb, yb), _ in zip(a, b, range(3)):
            assert torch.equal(ya, yb)
            assert torch.allclose(xa, xb, atol=1e-5)


def test_a_search_on_a_function_dataset_killed_and_resumed_ends_as_one_never_stopped(tmp_path):
    """Random transforms (the training Dataset's flips and noise) drawn per (seed, epoch, split,
    position): a resumed search reads the same images as an uninterrupted one."""
    models.trust(FN)

    def cfg(out):
        return tiny_config(out, **{"train.epochs": 3, "train.limit_batches": 4, "search.budget_flops": "35%",
                                   "search.warmup_epochs": 1, "data.dataset": FN, "data.args": {"n": 96},
                                   "data.image_size": None, "data.num_classes": None})

    a, c = str(tmp_path / "a"), str(tmp_path / "c")
    search(cfg(a), Monitor(a, tensorboard=False))
    with pytest.raises(KeyboardInterrupt):
        search(cfg(c), KillAt(c, 4 + 2))
    search(cfg(c), Monitor(c, tensorboard=False), resume=True)
    ja, jc = (json.load(open(os.path.join(d, "arch.json"))) for d in (a, c))
    ja["config"].pop("out"), jc["config"].pop("out")
    assert ja == jc


def test_a_tuning_file_may_choose_among_your_own_datasets(tmp_path):
    """Named in the user's own tuning file (a command-line argument, as --config), a choice of
    data.dataset is imported by the trials."""
    spec = tmp_path / "tune.yaml"
    spec.write_text(f"search_epochs: 1\nretrain_epochs: 1\nparams:\n  data.dataset: {{type: categorical, "
                    f"choices: ['{FN}']}}\n")
    p = run_tool("tune.py", "--dataset", "synthetic", "--image-size", "16", "--num-classes", "4", "--limit-batches",
                 "2", "--batch-size", "16", "--set", "model.args.width=8", "--set", "train.latency_batches=[]",
                 "--set", "search.warmup_epochs=0", "--budget-flops", "40%", "--out", str(tmp_path / "t"),
                 "--study", "s", "--trials", "1",
                 "--tune", str(spec), "--quiet")
    assert p.returncode == 0, p.stderr[-2000:]
    assert FN in (tmp_path / "t" / "best" / "arch.json").read_text()


def test_a_dataset_is_described_once_however_often_its_run_asks(tmp_path, monkeypatch):
    # a search described it up to three times (the search, its data, its retrain): 24 item reads
    # where 8 tell the shapes, felt by a slow remote dataset
    mod = tmp_path / "counted_sets.py"
    mod.write_text("import torch\nREADS = []\n"
                   "class Counted(torch.utils.data.Dataset):\n"
                   "    classes = ['a', 'b']\n"
                   "    def __len__(self):\n        return 40\n"
                   "    def __getitem__(self, i):\n        READS.append(i)\n        return torch.zeros(3, 6, 6), i % 2\n"
                   "def make():\n    return Counted(), Counted()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import counted_sets

    from dan.data import code
    from dan.data.code import SAMPLED_ITEMS

    code._LAST.clear()
    cfg = _data("counted_sets:make")
    first = dataset_info(cfg)
    assert len(counted_sets.READS) == SAMPLED_ITEMS
    assert dataset_info(cfg) == first and build_data(cfg, seed=0).info == first
    assert len(counted_sets.READS) == SAMPLED_ITEMS
    assert dataset_info(_data("counted_sets:make", image_size=4)).image_size == 4  # other settings: read again
    assert len(counted_sets.READS) == 2 * SAMPLED_ITEMS


class _Raises(Items):
    def __getitem__(self, i):
        if i == 3:
            raise KeyError("missing file")
        return super().__getitem__(i)


def test_a_dataset_that_raises_keeps_its_traceback_and_says_which_item_it_was():
    # the error is in the user's code (its traceback finds it), but nothing said which split and
    # item it was, nor that a run's finished epochs were kept
    with pytest.raises(KeyError) as e:
        _read_all(_Raises([(torch.zeros(3, 6, 6), i % 2) for i in range(6)]))
    notes = getattr(e.value, "__notes__", [])
    assert notes and "reading dataset '<object Items>', train item 3" in notes[0] and "your dataset's code" in notes[0]


def test_an_exception_note_is_kept_and_printed_after_the_traceback_on_python_3_10_too(capsys, monkeypatch):
    # Python 3.10 has no add_note and its printer shows no notes: the note naming the dataset's item was lost
    from dan.cli.common import print_exception_with_notes
    from dan.errors import add_note

    class Old(KeyError):  # as on 3.10: no add_note
        add_note = property(lambda self: (_ for _ in ()).throw(AttributeError("add_note")))

    for e in (KeyError("k"), Old("k")):
        add_note(e, "first")
        add_note(e, "second")
        assert e.__notes__ == ["first", "second"]
    monkeypatch.setattr(sys, "__excepthook__", lambda *a: print("Traceback ...", file=sys.stderr))
    print_exception_with_notes(KeyError, e, None)
    assert capsys.readouterr().err == "Traceback ...\nfirst\nsecond\n"
