"""The paper's training augmentations (appendix B).

In-memory datasets (:class:`dan.data.loaders.TensorLoader`) augment a whole batch at once with ONE
batched ``F.grid_sample``: flip, rotation, zoom/translation and perspective warp are composed into
one 3x3 homography per image (:func:`random_homographies`); contrast and brightness are a per-image
affine map of the values (:func:`random_lighting`). No per-image Python, no worker processes
(~100k augmented Fashion-MNIST images/s on 2 CPU cores). The randomness comes from a
``torch.Generator`` the caller passes in and the draws per image are fixed, so a batch's
augmentation is a pure function of that generator's state.

Image folders use torchvision transforms instead (:func:`folder_transforms`): RandomResizedCrop +
flip for training, Resize + CenterCrop for evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentRecipe:
    """The in-memory augmentation of appendix B; each ``p_*`` is the chance per image.

    Rotation by d ~ U(-max_rotate, max_rotate) degrees. Lighting: contrast factor
    U(1 - max_contrast, 1 + max_contrast) around the image mean, then a brightness shift
    U(-max_brightness, max_brightness) of the value range, clamped to the range. Warp/zoom: zoom
    U(1, max_zoom) towards a random point that keeps the view inside the image, and a perspective
    tilt whose bottom-row coefficients are U(-max_warp, max_warp) in [-1, 1] image coordinates.
    """
    p_flip: float = 0.5
    p_rotate: float = 0.75
    max_rotate: float = 25.0
    p_lighting: float = 0.75
    max_contrast: float = 0.2
    max_brightness: float = 0.1
    p_warp: float = 0.75
    max_zoom: float = 1.2
    max_warp: float = 0.2
    padding: str = "reflection"  # grid_sample padding_mode outside the image


CIFAR_RECIPE = AugmentRecipe()  # max_rotate 25 as in the paper
# Fashion-MNIST: max_rotate 10 (the paper's value for its smaller-image set); black background, so
# zero padding; milder zoom/warp because 28x28 garments fill the frame.
FASHION_MNIST_RECIPE = AugmentRecipe(max_rotate=10.0, max_zoom=1.1, max_warp=0.1, padding="zeros")
SYNTHETIC_RECIPE = AugmentRecipe(max_rotate=10.0, max_zoom=1.1, max_warp=0.1)


def _identity_like(b: int) -> torch.Tensor:
    return torch.eye(3).expand(b, 3, 3).clone()


def random_homographies(b: int, recipe: AugmentRecipe, g: torch.Generator) -> torch.Tensor:
    """(b, 3, 3) maps from output to input coordinates in [-1, 1]: translate . zoom . rotate . flip
    . perspective. Always draws the same amount of randomness per image."""
    u = torch.rand(b, 8, generator=g)
    on = torch.rand(b, 3, generator=g) < torch.tensor([recipe.p_flip, recipe.p_rotate, recipe.p_warp])
    flip = torch.where(on[:, 0], -1.0, 1.0)
    ang = torch.where(on[:, 1], (2 * u[:, 0] - 1) * math.radians(recipe.max_rotate), 0.0)
    zoom = torch.where(on[:, 2], 1 + u[:, 1] * (recipe.max_zoom - 1), 1.0)
    room = 1 - 1 / zoom  # translation that keeps the zoomed view inside the image
    tx, ty = (2 * u[:, 2] - 1) * room, (2 * u[:, 3] - 1) * room
    px = torch.where(on[:, 2], (2 * u[:, 4] - 1) * recipe.max_warp, 0.0)
    py = torch.where(on[:, 2], (2 * u[:, 5] - 1) * recipe.max_warp, 0.0)
    c, s = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    k = _identity_like(b)
    k[:, 0, 0], k[:, 0, 1], k[:, 0, 2] = c * flip, -s, tx
    k[:, 1, 0], k[:, 1, 1], k[:, 1, 2] = s * flip, c, ty
    p = _identity_like(b)
    p[:, 2, 0], p[:, 2, 1] = px, py
    return k @ p


def random_lighting(b: int, recipe: AugmentRecipe, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image contrast factors and brightness shifts (fraction of the range), shape (b,)."""
    u = torch.rand(b, 3, generator=g)
    on = u[:, 0] < recipe.p_lighting
    contrast = torch.where(on, 1 + (2 * u[:, 1] - 1) * recipe.max_contrast, 1.0)
    bright = torch.where(on, (2 * u[:, 2] - 1) * recipe.max_brightness, 0.0)
    return contrast, bright


def pixel_grid(h: int, w: int, device) -> torch.Tensor:
    """Homogeneous pixel-centre coordinates (h*w, 3) for ``align_corners=False``."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(-1, 3)


def augment_batch(x: torch.Tensor, recipe: AugmentRecipe, g: torch.Generator,
                  base_grid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """uint8/float (B, C, H, W) in [0, 255] -> augmented float32 in [0, 255], on x's device.

    ``base_grid``: :func:`pixel_grid` of the images' size, when the caller keeps one.
    """
    b, _, h, w = x.shape
    m = random_homographies(b, recipe, g).to(x.device)
    contrast, bright = (t.to(x.device).view(b, 1, 1, 1) for t in random_lighting(b, recipe, g))
    if base_grid is None:
        base_grid = pixel_grid(h, w, x.device)
    pts = base_grid @ m.transpose(1, 2)  # (B, HW, 3)
    grid = (pts[..., :2] / pts[..., 2:]).view(b, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=recipe.padding, align_corners=False)
    mean = out.mean((1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean + bright * 255.0).clamp_(0.0, 255.0)


# ITU-R 601-2 luma: the weights of Pillow's convert("L") and torchvision's rgb_to_grayscale
GREY = (0.299, 0.587, 0.114)


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """Colour images (``3 x H x W``, or a batch ``N x 3 x H x W``) as one luma channel (:data:`GREY`)."""
    w = torch.tensor(GREY, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * w).sum(-3, keepdim=True)


def _one_channel(x: torch.Tensor) -> torch.Tensor:
    """An image as one channel (``data.channels: 1``): colour made grey, grey kept."""
    return x if x.shape[0] == 1 else to_grey(x)


def _three_channels(x: torch.Tensor) -> torch.Tensor:
    """A one-channel image (a high-bit-depth one, :func:`dan.data.datasets.load_image`) repeated to
    three channels, as Pillow's ``convert("RGB")`` does for 8-bit greyscale."""
    return x if x.shape[0] == 3 else x.repeat(3, 1, 1)


def folder_transforms(size: int, mean: tuple, std: tuple, augment: bool):
    """(train, eval) torchvision transforms of an image folder, PIL image -> normalized tensor with
    as many channels as ``mean`` has (3, or 1: ``data.channels: 1``, colour made grey).

    Training: RandomResizedCrop(size) + horizontal flip (the eval transform when not ``augment``);
    evaluation: Resize(size / 0.875) + CenterCrop(size).
    """
    from torchvision import transforms as T
    norm = T.Normalize(mean, std)
    channels = _one_channel if len(mean) == 1 else _three_channels
    train_tf = T.Compose([T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
                          T.RandomHorizontalFlip(), T.ToTensor(), channels, norm])
    eval_tf = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size), T.ToTensor(), channels, norm])
    return (train_tf if augment else eval_tf), eval_tf
