"""ResNet-18/34/50 with the ImageNet stem and with a small-image stem.

Module names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
``fc``), so ImageNet checkpoints of torchvision load into the ``resnet*`` variants at width 64.
``width`` scales every stage (64 is the standard network; the CPU-sized configs use 16 or 32).

* ImageNet stem: 7×7 stride-2 conv + 3×3 stride-2 max-pool (224×224 inputs).
* Small-image stem (``*_small``): one 3×3 stride-1 conv, no pooling (CIFAR 32×32,
  Fashion-MNIST 28×28), as in the CIFAR ResNets of the adjoint paper's experiments.

The forward passes are plain tensor code so that ``torch.fx`` traces them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from search_spaces import register_space


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(width, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # stride on the 3×3 (v1.5)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_ch: int, out_ch: int, stride: int):
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


class ResNet(nn.Module):
    def __init__(self, block, layers, *, num_classes: int = 1000, in_channels: int = 3,
                 width: int = 64, stem: str = "imagenet", zero_init_residual: bool = False):
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        elif stem == "small":
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"stem must be 'imagenet' or 'small', not {stem!r}")
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        in_ch = width
        for i, n in enumerate(layers):
            stage_width = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(in_ch, stage_width, stride=2 if (i > 0 and j == 0) else 1))
                in_ch = stage_width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each block starts as the identity (Goyal et al., 2017)
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _resnet(block, layers, stem, **kw) -> ResNet:
    return ResNet(block, layers, stem=stem, **kw)


@register_space()
def resnet18(num_classes: int = 1000, in_channels: int = 3, width: int = 64, zero_init_residual: bool = False):
    """ResNet-18, ImageNet stem (224×224)."""
    return _resnet(BasicBlock, [2, 2, 2, 2], "imagenet", num_classes=num_classes, in_channels=in_channels,
                   width=width, zero_init_residual=zero_init_residual)


@register_space()
def resnet34(num_classes: int = 1000, in_channels: int = 3, width: int = 64, zero_init_residual: bool = False):
    """ResNet-34, ImageNet stem (224×224)."""
    return _resnet(BasicBlock, [3, 4, 6, 3], "imagenet", num_classes=num_classes, in_channels=in_channels,
                   width=width, zero_init_residual=zero_init_residual)


@register_space()
def resnet50(num_classes: int = 1000, in_channels: int = 3, width: int = 64, zero_init_residual: bool = False):
    """ResNet-50 (v1.5, stride on the 3×3), ImageNet stem (224×224)."""
    return _resnet(Bottleneck, [3, 4, 6, 3], "imagenet", num_classes=num_classes, in_channels=in_channels,
                   width=width, zero_init_residual=zero_init_residual)


@register_space()
def resnet18_small(num_classes: int = 10, in_channels: int = 3, width: int = 64, zero_init_residual: bool = False):
    """ResNet-18, small-image stem (CIFAR 32×32, Fashion-MNIST 28×28)."""
    return _resnet(BasicBlock, [2, 2, 2, 2], "small", num_classes=num_classes, in_channels=in_channels,
                   width=width, zero_init_residual=zero_init_residual)


@register_space()
def resnet34_small(num_classes: int = 10, in_channels: int = 3, width: int = 64, zero_init_residual: bool = False):
    """ResNet-34, small-image stem."""
    return _resnet(BasicBlock, [3, 4, 6, 3], "small", num_classes=num_classes, in_channels=in_channels,
                   width=width, zero_init_residual=zero_init_residual)


@register_space()
def resnet50_small(num_classes: int = 10, in_channels: int = 3, width: int = 64, zero_init_residual: bool = False):
    """ResNet-50, small-image stem."""
    return _resnet(Bottleneck, [3, 4, 6, 3], "small", num_classes=num_classes, in_channels=in_channels,
                   width=width, zero_init_residual=zero_init_residual)
