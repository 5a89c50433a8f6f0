"""``standard``: a network trained alone with cross-entropy (the papers' baselines).

Which network: the base network (default); with ``model.arch`` the small network DAN found; with
``methods.standard.network: small`` the small network AN extracts at ``adjoint.alpha`` — the
"same small network trained alone" that the AN paper compares its adjoint-trained one against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dan.errors import UserError
from dan.methods.base import Method
from dan.methods.common import method_config, student_network, top1_accuracy
from dan.methods.registry import register_method


@dataclass
class StandardConfig:
    network: str = "big"  # big | small (the AN small network at adjoint.alpha, freshly initialised)

    def check(self):
        if self.network not in ("big", "small"):
            raise UserError(f"methods.standard.network must be big or small, got {self.network!r}")


@register_method("standard")
class Standard(Method):
    config = StandardConfig
    outputs = ("big",)
    deployed = "big"

    def build(self):
        network = method_config(self.cfg, "standard", StandardConfig).network
        if self.cfg.model.arch or network == "small":  # a small network trained alone
            self.outputs, self.deployed = ("small",), "small"
        self.model = (student_network(self) if network == "small" else self.base_network()).to(self.device)
        return self.model

    def train_step(self, x, y, progress):
        logits = self.fwd(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.train.label_smoothing)
        return loss, {"loss": loss.detach(), "ce": loss.detach(), f"top1_{self.outputs[0]}": top1_accuracy(logits, y)}

    @torch.no_grad()
    def eval_logits(self, x):
        return {self.outputs[0]: self.model(x)}

    def networks(self):
        return {self.deployed: self.model}
