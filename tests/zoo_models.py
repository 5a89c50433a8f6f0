"""A user's own CNN for the ``package.module:factory`` route (tests/test_models.py)."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConcatResNet(nn.Module):
    """A stem, two branches concatenated, a residual block over the concatenation's conv, a head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1, bias=False),
                                 nn.BatchNorm2d(2 * width), nn.ReLU())
        self.res = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width))
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        y = self.mix(torch.cat([self.a(x), self.b(x)], 1))
        y = F.relu(y + self.res(y))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def concat_resnet(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
    return ConcatResNet(num_classes, in_channels, width)


def three_convs(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Three convs, three coarse width groups of 8 candidates each: a user's small model, where
    one group's move changes the cost by more than the budget's band."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))


class ViewFlatten(nn.Module):
    """A LeNet-style network that flattens with ``x.view(x.size(0), -1)``: a view needs a contiguous
    tensor, so it cannot run channels-last."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(in_channels, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.c1(x)), 2)
        x = F.adaptive_avg_pool2d(torch.relu(self.bn(self.c2(x))), 4)
        return self.fc(x.view(x.size(0), -1))


def view_flatten(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return ViewFlatten(num_classes, in_channels)
