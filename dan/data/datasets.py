"""The datasets by name: file readers and one registered loader per dataset.

Each dataset is a function registered with its description, timm-style::

    @register_dataset("cifar10", info=fixed_info(10, 3, 32, IMAGENET_MEAN, IMAGENET_STD), reads=("data", "download"))
    def cifar10(cfg, info):
        return _cifar("cifar10", cfg)

``info(cfg)`` gives the :class:`DatasetInfo` without loading images (``dataset_info``); the function
itself loads the splits, as one of two kinds that :func:`dan.data.build_data` wraps in loaders:

* :class:`ArraySplits` (``fashion_mnist``, ``cifar10/100``, ``synthetic``): uint8 NCHW arrays and
  the dataset's :class:`AugmentRecipe`; they are put on the device whole.
* :class:`FolderSplits` (``imagefolder``): :class:`ImageFiles` (torchvision ImageFolder's listing,
  hidden files skipped), decoded per image by a DataLoader.

Every error a user can cause (missing or corrupt files, a bad folder layout) is a one-line
UserError that says how to fix it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import os
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dan.config import DataConfig
from dan.data.augment import CIFAR_RECIPE, FASHION_MNIST_RECIPE, GREY, SYNTHETIC_RECIPE, AugmentRecipe
from dan.data.info import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, apply_overrides, get_dataset, register_dataset
from dan.data.splits import generator
from dan.downloads import withholding, would_download
from dan.errors import UserError, out_of_memory, setting, spelt

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@dataclass
class ArraySplits:
    """An in-memory dataset: uint8 (N, C, H, W) images and integer labels of the train and test
    splits (possibly read-only arrays), and the augmentation of its training split."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    recipe: AugmentRecipe


@dataclass
class FolderSplits:
    """An image-folder dataset: the :class:`ImageFiles` of ``train/`` and ``val/`` (the test split),
    with the same classes, under ``root``."""

    train: Any
    test: Any
    root: str = ""

    def summary(self) -> str:
        """What was found, in one line: images per split, classes, and the files that are not
        images (no count was ever shown, and an audit's GIFs were left out unseen)."""
        skipped = self.train.skipped + self.test.skipped
        kinds = sorted({os.path.splitext(f)[1].lower() or os.path.basename(f) for f in skipped})
        other = f"{len(skipped)} other file{'s' * (len(skipped) != 1)} skipped"
        if kinds:
            other += ": " + ", ".join(kinds[:4]) + (", ..." if len(kinds) > 4 else "")
        return (f"imagefolder {self.root}: {len(self.train)} training images in {len(self.train.classes)} classes, "
                f"{len(self.test)} validation images ({other})")


# --------------------------------------------------------------------------- file formats

_IDX_DTYPES = {0x08: np.uint8}


def _data_dir() -> str:
    """The data folder's option as the caller gives it (:func:`dan.errors.spelt`)."""
    return spelt("--data DIR", "data.data=DIR")


def read_idx(path: str) -> np.ndarray:
    """Read a gzip-compressed IDX file (the MNIST format) into a uint8 array; corrupt -> UserError."""
    def bad(why: str) -> UserError:
        return UserError(f"{path} is corrupt ({why}): delete it and reinstall the dataset "
                         f"(`apt-get install --reinstall dataset-fashion-mnist`) or pass another {_data_dir()}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise bad(f"cannot decompress: {e}")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise bad("bad magic number")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise bad("truncated header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    start, n = 4 + 4 * ndim, int(np.prod(dims))
    if len(raw) - start != n:
        raise bad(f"header says {n} values for shape {dims}, file holds {len(raw) - start}")
    return np.frombuffer(raw, _IDX_DTYPES[raw[2]], n, start).reshape(dims)


_FMNIST_CACHE: dict = {}


def load_fashion_mnist(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x (60000, 28, 28), train_y, test_x, test_y) as uint8; cached per folder and mtime."""
    paths = [os.path.join(folder, f) for f in FASHION_MNIST_FILES]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserError(f"Fashion-MNIST not found in {folder} (no {os.path.basename(missing[0])}): install it "
                        f"with `apt-get install dataset-fashion-mnist` or pass {_data_dir()} holding "
                        f"{', '.join(FASHION_MNIST_FILES)}")
    key = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths)
    if key not in _FMNIST_CACHE:
        arrays = [read_idx(p) for p in paths]
        for (x, y), p in ((arrays[0:2], paths[0]), (arrays[2:4], paths[2])):
            if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y):
                raise UserError(f"{p} does not hold 28x28 images matching its labels file: "
                                f"reinstall dataset-fashion-mnist or pass another {_data_dir()}")
            if y.size and y.max() > 9:
                raise UserError(f"labels next to {p} go up to {y.max()} (Fashion-MNIST has 10 classes): "
                                f"reinstall dataset-fashion-mnist or pass another {_data_dir()}")
        _FMNIST_CACHE.clear()
        _FMNIST_CACHE[key] = arrays
    return tuple(_FMNIST_CACHE[key])


def load_cifar(name: str, root: str, download: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x NHWC uint8, train_y, test_x, test_y) through torchvision's CIFAR classes."""
    import torchvision
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    if download and withholding() and not _cifar_present(cls, root) and \
            would_download(f"{name} into {root} (about 170 MB)"):
        return _cifar_stand_in(10 if name == "cifar10" else 100)
    try:
        tr, te = (cls(root=root, train=t, download=download) for t in (True, False))
    except RuntimeError as e:
        if out_of_memory(e):
            raise
        raise UserError(f"{name} not found or corrupt in {root} ({e.args[0].split('.')[0]}): pass "
                        f"{spelt('--download', 'data.download=True')} (needs the network) or {_data_dir()} holding "
                        f"torchvision's extracted {name} batches")
    except OSError as e:  # network errors while downloading
        raise UserError(f"downloading {name} into {root} failed ({e}): check the network or pass {_data_dir()}")
    return tr.data, np.asarray(tr.targets), te.data, np.asarray(te.targets)


def _cifar_present(cls, root: str) -> bool:
    """Whether torchvision's ``cls`` (CIFAR10 or CIFAR100) finds its files, intact, under ``root``
    (its own check, without building the dataset)."""
    import types

    try:  # (a private method of torchvision's: where it changed, the files count as there and are read)
        return cls._check_integrity(types.SimpleNamespace(root=root, base_folder=cls.base_folder,
                                                          train_list=cls.train_list, test_list=cls.test_list))
    except (AttributeError, TypeError):
        return True


def _cifar_stand_in(classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Black images in CIFAR's shapes and split sizes (50k/10k, balanced labels) for a dry run that
    would download the dataset (:mod:`dan.downloads`): its checks read sizes and shapes only."""
    labels = lambda n: np.arange(n, dtype=np.int64) % classes
    return (np.zeros((50000, 32, 32, 3), np.uint8), labels(50000), np.zeros((10000, 32, 32, 3), np.uint8),
            labels(10000))


def synthetic_arrays(n_train: int, n_test: int, num_classes: int, size: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Learnable images: a smooth random template per class plus pixel noise, balanced labels.

    Everything comes from a seed fixed by the dataset definition (not the run seed), so train and
    test share templates and every run sees the same data.
    """
    g = generator(0x5E7, num_classes, size)
    low = torch.rand(num_classes, 3, 4, 4, generator=g) * 0.6 + 0.2
    templates = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)

    def split(n: int, tag: int):
        y = torch.arange(n) % num_classes
        gen = generator(0x5E7, num_classes, size, tag)
        x = templates[y] + 0.15 * torch.randn(n, 3, size, size, generator=gen)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), y.numpy()
    return (*split(n_train, 1), *split(n_test, 2))


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
MAX_IMAGE_PIXELS = DataConfig.max_image_pixels  # Pillow's own limit: 2 x PIL.Image.MAX_IMAGE_PIXELS


@contextlib.contextmanager
def pillow_limit_off():
    """Pillow's size check off inside (its opening, decoding and crops check): :func:`load_image`
    makes its own. Pillow's printed a two-line DecompressionBombWarning per image between 89 and
    179 Mpx and refused larger ones, which an audit's message followed with "delete or replace it"
    (wrong for satellite and pathology images); its limit is a module global no setting reached."""
    from PIL import Image

    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def open_image(f, path: str):
    """The image the open file ``f`` (of ``path``) holds, opened (its header read) by Pillow as one of
    :data:`IMAGE_FORMATS` only, else one :class:`UserError` line naming the file. Pillow tries every
    format it knows otherwise: an audit's EPS file named .jpg was opened as EPS, whose decoding runs
    Ghostscript (a PostScript interpreter) on the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(f, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise UserError(f"cannot read image {path} (not {', '.join(IMAGE_FORMATS[:-1])} or {IMAGE_FORMATS[-1]}: "
                        f"another format, or no image): delete or replace it") from None


def load_image(path: str, max_pixels: int = MAX_IMAGE_PIXELS):
    """An image file as a PIL image for :func:`dan.data.augment.folder_transforms`: 8-bit RGB, or
    for a high-bit-depth image one float channel (mode ``F``) in [0, 1] at its full precision.

    torchvision's default loader calls ``convert("RGB")``, which clips instead of scaling: a 16-bit
    greyscale PNG (mode ``I;16``: scientific and medical images) came out 99.6 % pure white and a
    float TIFF in [0, 1] all black, and the network trained on that without a word. Here 16-bit
    images (and 32-bit integer ones within 0..65535, as older Pillow opens 16-bit PNGs) are divided
    by 65535 and float images in [0, 1] kept as they are, in float, so 12-bit content keeps its
    4096 levels; other integer or float ranges are refused with a :class:`UserError` naming the
    file, since no one scaling of them is right for every set. A palette image with transparency
    goes through RGBA (the same pixels, without Pillow's warning per image). An image of more than
    ``max_pixels`` pixels (``data.max_image_pixels``) is refused, naming the setting, before it is
    decoded."""
    from PIL import Image

    with open(path, "rb") as f, pillow_limit_off():
        img = open_image(f, path)
        w, h = img.size
        refuse_too_large(path, w, h, max_pixels)
        img.load()
    if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if img.mode == "F":
            if not (np.isfinite(a).all() and lo >= 0.0 and hi <= 1.0):
                raise UserError(f"image {path} holds floats in [{lo:.4g}, {hi:.4g}], not [0, 1]: "
                                f"save it as 8- or 16-bit, or scaled to [0, 1]")
            return img
        if lo < 0 or hi > 65535:
            raise UserError(f"image {path} holds {img.mode} values in [{lo:.0f}, {hi:.0f}], beyond 16 bits: "
                            f"save it as 8- or 16-bit")
        return Image.fromarray((a / 65535.0).astype(np.float32), "F")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def data_dir(cfg: DataConfig, default: str | None = None) -> str | None:
    """The data folder ``cfg.data`` (else ``default``), a leading ``~`` expanded: a YAML config or the
    Python API (``{"data": "~/pets"}``) gets no shell to expand it."""
    path = cfg.data or default
    return os.path.expanduser(path) if path else path


def _hidden(name: str) -> bool:
    """A name no one means as a class or an image: ``.ipynb_checkpoints`` (Jupyter), ``.DS_Store`` and
    ``._photo.jpg`` (macOS metadata beside each file copied to a non-Mac disk), ``.git``..."""
    return name.startswith(".")


def _class_folders(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not _hidden(e.name))


def _missing_split(root: str, sub: str) -> UserError:
    """The error for an image folder without ``train/`` or ``val/``, with the fix for the layouts met
    (an audit's train/ + test/ folder was told only that val/ did not exist)."""
    path = os.path.join(root, sub)
    if sub == "val":
        for other in ("test", "validation", "valid"):
            if os.path.isdir(os.path.join(root, other)):
                return UserError(f"image folder {root} has {other}/ but no val/, which the test split is read from: "
                                 f"rename {other}/ to val/, or link it (ln -s {other} {path})")
        return UserError(f"image folder {path} does not exist: the test split is read from val/<class>/*.jpg, with the "
                         f"class folders of train/; make it (e.g. move a fifth of each class's images there)")
    return UserError(f"image folder {path} does not exist: pass {_data_dir()} holding train/<class>/*.jpg and "
                     f"val/<class>/*.jpg")


def _flat_val(root: str) -> None:
    """Refuse a ``val/`` that holds its images directly, as ImageNet's comes, naming the fix (it was
    "different class folders (1000 vs 0 ...)")."""
    val = os.path.join(root, "val")
    n = sum(1 for e in os.scandir(val) if e.is_file() and not _hidden(e.name)
            and e.name.lower().endswith(IMAGE_EXTENSIONS))
    if n:
        how = "; LOC_val_solution.csv beside it gives each image's class" \
            if os.path.isfile(os.path.join(root, "LOC_val_solution.csv")) else ""
        raise UserError(f"{val} holds {n} images directly, not in class folders: sort them into class folders "
                        f"named as train/'s (val/<class>/*.jpg){how}")


def _folder_classes(cfg: DataConfig) -> tuple[str, list[str]]:
    """(root, sorted class names) of the image folder ``cfg.data``, after checking its layout.
    Hidden folders (a leading dot) are not classes: torchvision's ImageFolder takes a Jupyter
    ``.ipynb_checkpoints`` folder for one (pytorch/vision#2831), and the class count is then wrong."""
    root = data_dir(cfg)
    if not root:
        raise UserError(f"dataset imagefolder needs {_data_dir()} holding train/ and val/ class folders")
    for sub in ("train", "val"):
        if not os.path.isdir(os.path.join(root, sub)):
            raise _missing_split(root, sub)
    classes = _class_folders(os.path.join(root, "train"))
    if not classes:
        raise UserError(f"{os.path.join(root, 'train')} holds no class folders: expected train/<class>/*.jpg")
    return root, classes


# torchvision's, and GIF (the first frame), which Pillow always reads: an audit's .gif files were
# left out without a word
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
# the Pillow formats of those extensions (JPEG covers a phone's MPO, PPM the PGM): the only ones an image
# is opened as, whatever its name says (open_image)
IMAGE_FORMATS = ("JPEG", "PNG", "PPM", "BMP", "GIF", "TIFF", "WEBP")


@dataclass
class ImageFiles:
    """The images of one split of an image folder, as torchvision's ImageFolder lists them
    (``samples``: (path, class index) pairs, classes in sorted order, each class's folder walked in
    sorted order, links followed, a loop refused) but with hidden files and folders skipped; read
    by ``loader``. A module-level class, not a subclass made where it is used: DataLoader workers
    started by spawn (macOS, Windows) must unpickle it."""

    samples: list
    classes: list
    loader: Any = load_image
    skipped: list = dataclasses.field(default_factory=list)  # the files that are not images

    def __len__(self) -> int:
        return len(self.samples)


def _refuse_link_loops(top: str, d: str, subs: list, c: str) -> None:
    """Refuse a link among ``d``'s sub-folders ``subs`` (``d`` walked from ``top``) to a folder the
    walk is inside of: followed, it walks the same images again at every level until the system's
    limit on links (an audit's ``ln -s .. train/cat/loop`` gave every image of train/ 81 times, all
    as ``cat``). A link to a folder elsewhere is followed."""
    rel = os.path.relpath(d, top).split(os.sep)
    inside = [os.path.realpath(os.path.join(top, *rel[:i])) for i in range(len(rel) + 1)]
    for x in subs:
        link = os.path.join(d, x)
        target = os.path.realpath(link)
        if os.path.islink(link) and any(p == target or p.startswith(target.rstrip(os.sep) + os.sep) for p in inside):
            raise UserError(f"{link} is a link to {target}, a folder that holds it: its images would be read again "
                            f"and again as class {c}; remove the link, or link the folder it should add")


def _image_files(folder: str, classes: list[str], loader=load_image) -> ImageFiles:
    """The images under ``folder/<class>/`` for each of ``classes``; an empty class is refused by
    name (torchvision's own error names neither the split nor what to do)."""
    samples, skipped = [], []
    for i, c in enumerate(classes):
        found, walk = [], []
        top = os.path.join(folder, c)
        for d, subs, files in os.walk(top, followlinks=True):
            subs[:] = [x for x in subs if not _hidden(x)]
            _refuse_link_loops(top, d, subs, c)
            walk.append((d, files))
        for d, files in sorted(walk):  # torchvision's order: folders by path, then files by name
            found += [(os.path.join(d, f), i) for f in sorted(files)
                      if not _hidden(f) and f.lower().endswith(IMAGE_EXTENSIONS)]
            skipped += [os.path.join(d, f) for f in files if not (_hidden(f) or f.lower().endswith(IMAGE_EXTENSIONS))]
        if not found:
            raise UserError(f"class folder {os.path.join(folder, c)} holds no image ({', '.join(IMAGE_EXTENSIONS)}): "
                            f"add images, or remove the class from train/ and val/")
        samples += found
    return ImageFiles(samples, list(classes), loader, skipped)


# --------------------------------------------------------------------------- descriptions

def fixed_info(num_classes: int, in_channels: int, image_size: int, mean: tuple, std: tuple):
    """``info(cfg)`` of a dataset whose images have fixed shapes. ``cfg.image_size`` resizes the
    batches (e.g. 32x32 Fashion-MNIST for ConvNeXt); ``cfg.num_classes`` and ``cfg.channels`` are
    checked and applied by :func:`apply_overrides`."""

    def info(cfg: DataConfig) -> DatasetInfo:
        out = DatasetInfo(cfg.dataset, num_classes, in_channels, image_size, mean, std)
        if cfg.image_size is not None:
            out = dataclasses.replace(out, image_size=cfg.image_size)
        return apply_overrides(out, cfg)

    return info


# The built-in datasets' class names, in label order (torchvision's and Zalando's)
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


def deploy_preprocess(info: DatasetInfo, cfg: DataConfig, class_names: list | None = None) -> dict:
    """How an image becomes the input a run's deployed network was trained and evaluated on (the
    ``"preprocess"`` of ``small.json``): the steps of the evaluation route, the per-channel
    ``mean`` and ``std`` of ``(x - mean) / std``, the side and channels, and the class names
    where the dataset has them, in label order: ``class_names`` (the loaded data's, :class:`Data`;
    your own dataset's ``classes``, which an audit found recorded as null), else the built-in
    dataset's or the image folder's. Found missing by an audit:
    ``small.onnx`` fed ``x / 255`` scored 11 % where the run measured 60 % (normalized: 59 %), and
    nothing beside the deployed files said so."""
    size, name = info.image_size, info.name
    if name == "imagefolder":
        steps = _folder_steps(info)
    elif ":" in name or name.startswith("<object "):  # your own dataset: its items as it gives them
        steps = _user_steps(info, cfg)
    else:
        steps = _array_steps(info, cfg)
    classes = [str(c) for c in class_names] if class_names else list(CLASS_NAMES.get(name, ())) or None
    if name == "imagefolder" and not classes:
        try:
            classes = _folder_classes(cfg)[1]
        except UserError:  # the data is gone since the run: the count is still right
            classes = None
    return {"input": "NCHW float32, (x - mean) / std per channel after the steps",
            "steps": steps, "mean": list(info.mean), "std": list(info.std), "image_size": size,
            "channels": info.in_channels, "num_classes": info.num_classes, "class_names": classes}


# The steps of small.json's "preprocess", one route each, as the loaders do them. An audit found
# them untrue: an image folder's 16-bit images, divided by 65535 in training, were said to be
# "RGB image (Pillow) ... values / 255" (Pillow's convert('RGB') clips them to white), Fashion-MNIST
# with data.channels 3 an "8-bit RGB image", and an image folder with data.channels 1 was told of
# "a grey one repeated to 3 channels".
_LUMA = "the luma " + " + ".join(f"{w} {c}" for w, c in zip(GREY, "RGB"))


def _folder_steps(info: DatasetInfo) -> str:
    """An image folder's evaluation route: :func:`load_image`, then ``folder_transforms``' eval."""
    size = info.image_size
    steps = ("read by Pillow: an 8-bit image converted to RGB (convert('RGB'); a palette image with transparency "
             "through RGBA), a 16-bit one (mode I;16) as one float channel divided by 65535, a float one (mode F, "
             f"in [0, 1]) as it is; shorter side resized to {int(size / 0.875)} keeping the aspect (bilinear), "
             f"center crop {size}x{size}; 8-bit values / 255")
    if info.in_channels == 1:  # data.channels: 1
        return steps + f"; made one channel: {_LUMA} of an RGB image, a one-channel image kept"
    return steps + "; a one-channel image repeated to 3 channels"


def _array_steps(info: DatasetInfo, cfg: DataConfig) -> str:
    """A built-in in-memory dataset's route (``TensorLoader``): 8-bit images of its own channels,
    made grey first for ``data.channels: 1``, repeated to 3 channels for ``data.channels: 3``."""
    own = get_dataset(info.name).info(dataclasses.replace(cfg, channels=None)).in_channels
    steps = f"8-bit {'grey' if own == 1 else 'RGB'} image"
    if own == 3 and info.in_channels == 1:
        steps += f" made grey as Pillow's convert('L') does ({_LUMA}, rounded to 8 bits)"
    steps += ", values / 255"
    if own == 1 and info.in_channels == 3:
        steps += ", repeated to 3 channels"
    return steps + (f", resized to {info.image_size}x{info.image_size} if it is another size (bilinear, antialiased "
                    f"when smaller)")


def _user_steps(info: DatasetInfo, cfg: DataConfig) -> str:
    """Your own dataset's route (:class:`dan.data.code.UserSplit`): its items, converted and resized."""
    size = info.image_size
    steps = ("your dataset's items as it gives them (a C x H x W float tensor; uint8 values / 255; a PIL image or "
             "an H x W x C array as torchvision's ToTensor converts it)")
    if cfg.image_size:
        steps += f", resized to {size}x{size} (bilinear, antialiased)"
    if info.in_channels == 1:
        return steps + (f", a colour image made grey ({_LUMA})" if cfg.channels == 1 else "")
    return steps + ", a one-channel image repeated to 3 channels"


def _folder_info(cfg: DataConfig) -> DatasetInfo:
    """Classes from the folder names under ``train/``; side ``cfg.image_size`` (default 224)."""
    k, size = len(_folder_classes(cfg)[1]), cfg.image_size or 224
    if k < 2:  # one class trains to a meaningless "100 %"
        raise UserError(f"{_folder_classes(cfg)[0]}/train holds {k} class folder: a classifier needs at "
                        f"least 2 (train/<class>/*.jpg for each class)")
    return apply_overrides(DatasetInfo(cfg.dataset, k, 3, size, IMAGENET_MEAN, IMAGENET_STD), cfg)


def _synthetic_info(cfg: DataConfig) -> DatasetInfo:
    """``cfg.image_size`` (default 32) and ``cfg.num_classes`` (default 10) define the data, so
    there is nothing to override."""
    size, k = cfg.image_size or 32, cfg.num_classes or 10
    if size < 4 or k < 2:
        raise UserError(f"synthetic data needs image_size >= 4 and num_classes >= 2 (got {size}, {k})")
    return DatasetInfo(cfg.dataset, k, 3, size, (0.5,) * 3, (0.2,) * 3)


# --------------------------------------------------------------------------- the datasets
# Registration order is the order of ``list_datasets()``, of ``--dataset``'s choices and of the
# unknown-dataset message.

@register_dataset("fashion_mnist", info=fixed_info(10, 1, 28, (0.2860,), (0.3530,)), reads=("data",))
def fashion_mnist(cfg: DataConfig, info: DatasetInfo) -> ArraySplits:
    """Fashion-MNIST: 60k/10k grey 28x28 garments, 10 classes, from the IDX files in ``--data``
    (default: the ``dataset-fashion-mnist`` package's folder)."""
    xtr, ytr, xte, yte = load_fashion_mnist(data_dir(cfg, FASHION_MNIST_DIR))
    return ArraySplits(xtr[:, None], ytr, xte[:, None], yte, FASHION_MNIST_RECIPE)


def _cifar(name: str, cfg: DataConfig) -> ArraySplits:
    xtr, ytr, xte, yte = load_cifar(name, data_dir(cfg, os.path.join("data", name)), cfg.download)
    return ArraySplits(xtr.transpose(0, 3, 1, 2), ytr, xte.transpose(0, 3, 1, 2), yte, CIFAR_RECIPE)


# CIFAR is normalized with ImageNet statistics, as in the paper.
@register_dataset("cifar10", info=fixed_info(10, 3, 32, IMAGENET_MEAN, IMAGENET_STD), reads=("data", "download"))
def cifar10(cfg: DataConfig, info: DatasetInfo) -> ArraySplits:
    """CIFAR-10: 50k/10k colour 32x32 images, 10 classes (``--data``, default data/cifar10)."""
    return _cifar("cifar10", cfg)


@register_dataset("cifar100", info=fixed_info(100, 3, 32, IMAGENET_MEAN, IMAGENET_STD), reads=("data", "download"))
def cifar100(cfg: DataConfig, info: DatasetInfo) -> ArraySplits:
    """CIFAR-100: 50k/10k colour 32x32 images, 100 classes (``--data``, default data/cifar100)."""
    return _cifar("cifar100", cfg)


@register_dataset("imagefolder", info=_folder_info, reads=("data",))
def imagefolder(cfg: DataConfig, info: DatasetInfo) -> FolderSplits:
    """Any image set as ``--data DIR`` holding train/<class>/*.jpg and val/<class>/*.jpg."""
    root, classes = _folder_classes(cfg)
    val_classes = _class_folders(os.path.join(root, "val"))
    if not val_classes:
        _flat_val(root)
    if val_classes != classes:
        only = [f"train/{c}" for c in classes if c not in val_classes] + [f"val/{c}" for c in val_classes
                                                                           if c not in classes]
        raise UserError(f"{root}/train and {root}/val hold different class folders ({len(classes)} vs "
                        f"{len(val_classes)}: {', '.join(only[:3])}{' ...' if len(only) > 3 else ''} has no "
                        f"counterpart): make them the same")
    loader = functools.partial(load_image, max_pixels=cfg.max_image_pixels)  # module-level: pickles for workers
    try:
        val = _image_files(os.path.join(root, "val"), classes, loader)
        check_headers(val, cfg.max_image_pixels)
        return FolderSplits(_image_files(os.path.join(root, "train"), classes, loader), val, root)
    except OSError as e:
        raise UserError(f"cannot read image folder {root} ({str(e).splitlines()[0]}): fix its layout")


def refuse_too_large(path: str, w: int, h: int, max_pixels: int) -> None:
    """An image of more than ``max_pixels`` (``data.max_image_pixels``) is refused, naming the key."""
    if w * h > max_pixels:
        raise UserError(f"image {path} is {w}x{h}, {w * h:,} pixels, above data.max_image_pixels ({max_pixels:,}, "
                        f"a guard against decompression bombs): if you trust it, raise the limit "
                        f"({setting(f'data.max_image_pixels={w * h}')}), or downscale the image")


def check_headers(files: ImageFiles, max_pixels: int) -> None:
    """Open the header of every image of ``files`` (the evaluation split: a few percent of an
    epoch's reading, without decoding): one that is no image (empty, garbage, a wrong header), too
    large or cut short is refused before training. Found first at the end of epoch 1's training, it
    lost that epoch (the evaluation comes before the checkpoint); a training image is read in the
    first epoch's first pass anyway. A cut-short file is told by its last bytes (:func:`_ends_whole`);
    only a file whose end does not look whole is decoded, and refused if that fails."""
    # Pillow's warnings off: a cut TIFF printed "Corrupt EXIF data" (two lines) before the refusal
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="PIL")
        for path, _ in files.samples:
            _check_header(path, max_pixels)


def _check_header(path: str, max_pixels: int) -> None:
    from PIL import UnidentifiedImageError

    try:
        with open(path, "rb") as f, pillow_limit_off():
            img = open_image(f, path)
            w, h = img.size
            refuse_too_large(path, w, h, max_pixels)
            if not _ends_whole(f, img):
                img.load()  # a cut-short file raises here ("image file is truncated")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise UserError(f"cannot read image {path} ({type(e).__name__}: {' '.join(str(e).split())[:120]}): "
                        f"delete or replace it") from None


# the bytes a whole file of each format ends with (JPEG and MPO, Pillow's name for a phone's JPEG
# with a second picture: within the last 64 bytes, as a camera may append a few; PNG: within them,
# after chunks an editor appends)
_TRAILERS = {"JPEG": b"\xff\xd9", "MPO": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


def _ends_whole(f, img) -> bool:
    """Whether an opened image file's end looks whole: its format's trailer in its last 64 bytes
    (JPEG, MPO, PNG), a GIF's last bytes its block terminator and trailer (0x00 0x3B: a lone 0x3B in
    the last 64 bytes let a cut GIF in 42 of 305 times), a BMP's size field (0, "unknown", is
    decoded), a TIFF's strips or tiles (of the first picture, the one read) inside the file, a
    PPM/PGM decoded (raw samples: as cheap as reading them); other formats are taken as whole (Pillow
    refuses a cut WebP when opening it). A file that fails is decoded by the caller, so a whole file
    with a strange end is accepted, only more slowly."""
    fmt = img.format
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - 64))
    tail = f.read()
    if fmt in _TRAILERS:
        return _TRAILERS[fmt] in tail
    if fmt == "GIF":
        return tail.endswith(b"\x00;")
    if fmt == "PPM":  # raw samples (PPM, PGM, PBM): decoding them is reading them, so they are read
        return False
    if fmt == "BMP":  # bytes 2-5: the file's size
        f.seek(2)
        declared = int.from_bytes(f.read(4), "little")
        return 0 < declared <= size
    if fmt == "TIFF":  # (a cut one was found when decoded, after epoch 1's training)
        tags = img.tag_v2
        offsets, counts = tags.get(273) or tags.get(324), tags.get(279) or tags.get(325)  # strips, or tiles
        if not offsets or not counts or len(offsets) != len(counts):
            return False  # nothing to tell by: decoded
        return max(o + c for o, c in zip(offsets, counts)) <= size
    return True


@register_dataset("synthetic", info=_synthetic_info)
def synthetic(cfg: DataConfig, info: DatasetInfo) -> ArraySplits:
    """Generated class templates plus noise (:func:`synthetic_arrays`): ``cfg.synthetic_size``
    training images, a quarter as many test images; for smoke runs and tests."""
    if cfg.synthetic_size < 2:
        raise UserError(f"synthetic_size must be at least 2, got {cfg.synthetic_size}")
    xtr, ytr, xte, yte = synthetic_arrays(cfg.synthetic_size, max(1, cfg.synthetic_size // 4),
                                          info.num_classes, info.image_size)
    return ArraySplits(xtr, ytr, xte, yte, SYNTHETIC_RECIPE)
