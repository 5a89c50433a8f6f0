"""A user's own dataset for the ``data.dataset: package.module:function`` route (tests/test_user_data.py):
class templates plus noise, as torch Datasets whose training transform draws from torch's generator."""

import random

import numpy as np
import torch


class Blobs(torch.utils.data.Dataset):
    """``n`` 3 x ``size`` x ``size`` float images of ``classes`` classes; ``jitter``: a random flip
    and random noise per read (drawn from torch's generator, as torchvision's transforms draw)."""

    def __init__(self, n: int, size: int = 16, classes: int = 4, jitter: bool = False, seed: int = 0,
                 draws: str = "torch"):
        g = torch.Generator().manual_seed(seed)
        templates = torch.randn(classes, 3, size, size, generator=torch.Generator().manual_seed(1234))
        self.targets = torch.arange(n) % classes
        self.images = templates[self.targets] + 0.8 * torch.randn(n, 3, size, size, generator=g)
        self.classes = [f"c{i}" for i in range(classes)]
        self.jitter, self.draws = jitter, draws

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = self.images[i]
        if self.jitter and self.draws == "torch":
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            x = x + 0.1 * torch.randn_like(x)
        elif self.jitter:  # as albumentations draws, or a user's own np.random / random
            flip, noise = ((np.random.rand() < 0.5, np.random.randn(*x.shape)) if self.draws == "numpy" else
                           (random.random() < 0.5, [random.gauss(0, 1) for _ in range(x.numel())]))
            x = (x.flip(-1) if flip else x) + 0.1 * torch.tensor(noise, dtype=x.dtype).reshape(x.shape)
        return x, int(self.targets[i])


def blobs(n: int = 192, size: int = 16, classes: int = 4, draws: str = "torch"):
    """(train, test): ``n`` training images with random jitter, a quarter as many test images.
    ``draws``: the generator the jitter draws from (``torch``, ``numpy``: NumPy's global one,
    ``python``: Python's ``random``)."""
    return Blobs(n, size, classes, jitter=True, seed=0, draws=draws), Blobs(max(1, n // 4), size, classes, seed=1)


class Arrays(torch.utils.data.Dataset):
    """uint8 N x C x H x W images and labels, normalized as the network sees them: a user's own reader."""

    def __init__(self, images, labels, mean: float, std: float):
        self.images, self.targets, self.mean, self.std = images, labels, mean, std
        self.classes = [str(c) for c in range(int(labels.max()) + 1)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return (torch.tensor(self.images[i]).float() / 255 - self.mean) / self.std, int(self.targets[i])


def fashion_mnist(folder: str = "/usr/share/datasets/fashion-mnist"):
    """Debian's Fashion-MNIST files read as a user would (normalized with dan's statistics, no augmentation)."""
    from dan.data import load_fashion_mnist

    xtr, ytr, xte, yte = load_fashion_mnist(folder)
    return Arrays(xtr, ytr, 0.2860, 0.3530), Arrays(xte, yte, 0.2860, 0.3530)
