"""``standard``: the base network trained alone with cross-entropy (the paper's baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dan.methods import register_method
from dan.methods.base import Method


@register_method("standard")
class Standard(Method):
    outputs = ("big",)
    deployed = "big"

    def build(self):
        if self.cfg.model.arch:  # the small network DAN found, trained alone
            self.outputs, self.deployed = ("small",), "small"
        self.model = self.base_network().to(self.device)
        return self.model

    def train_step(self, x, y, progress):
        logits = self.fwd(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.train.label_smoothing)
        return loss, {"loss": loss.detach(), "ce": loss.detach(), f"top1_{self.outputs[0]}": _top1(logits, y)}

    @torch.no_grad()
    def eval_logits(self, x):
        return {self.outputs[0]: self.model(x)}

    def networks(self):
        return {self.deployed: self.model}


def _top1(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == y).float().mean()
