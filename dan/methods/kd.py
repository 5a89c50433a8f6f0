"""``kd``: teacher–student knowledge distillation (Hinton et al., 2015).

The teacher is the big network of a finished run (``methods.kd.teacher``: its run folder or
checkpoint) or, when none is given, the base network trained the standard way first for
``teacher_epochs`` epochs (default: ``train.epochs``) in ``<run>/teacher``. It is frozen. The
student is the small network AN extracts at the same α (or ``model.arch``'s network), freshly
initialised. Loss: ``(1−a)·CE(y, s) + a·T²·KL(softmax(t/T) ‖ softmax(s/T))``; defaults T = 4,
a = 0.9 (the values of the common CIFAR-100 distillation benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from dan.errors import UserError
from dan.methods import register_method
from dan.methods.base import Method
from dan.methods.common import load_teacher, method_config, student_network, train_teacher
from dan.methods.standard import _top1


@dataclass
class KDConfig:
    teacher: Optional[str] = None
    teacher_epochs: Optional[int] = None
    temperature: float = 4.0
    alpha: float = 0.9


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, T: float, a: float):
    ce = F.cross_entropy(student, target)
    kl = F.kl_div(F.log_softmax(student / T, 1), F.log_softmax(teacher / T, 1), reduction="batchmean",
                  log_target=True)
    return (1 - a) * ce + a * T * T * kl, ce.detach(), kl.detach()


@register_method("kd")
class KD(Method):
    outputs = ("small",)
    deployed = "small"

    def build(self):
        self.kcfg = method_config(self.cfg, "kd", KDConfig)
        if self.kcfg.temperature <= 0 or not 0 <= self.kcfg.alpha <= 1:
            raise UserError("methods.kd.temperature must be > 0 and methods.kd.alpha in [0, 1]")
        self.model = student_network(self).to(self.device)
        self.teacher = None
        return self.model

    def prepare(self, data, monitor):
        k = self.kcfg
        if k.teacher:
            self.teacher, info = load_teacher(k.teacher, self.device)
            if info.num_classes != self.info.num_classes:
                raise UserError(f"teacher {k.teacher} has {info.num_classes} classes, the data {self.info.num_classes}")
        else:
            self.teacher = train_teacher(self, data, monitor, k.teacher_epochs or self.cfg.train.epochs)
        if self.cfg.train.channels_last:
            self.teacher.to(memory_format=torch.channels_last)

    def train_step(self, x, y, progress):
        with torch.no_grad():
            t = self.teacher(x)
        s = self.fwd(x)
        loss, ce, kl = kd_loss(s, t, y, self.kcfg.temperature, self.kcfg.alpha)
        return loss, {"loss": loss.detach(), "ce": ce, "kl": kl, "top1_small": _top1(s, y)}

    @torch.no_grad()
    def eval_logits(self, x):
        return {"small": self.model(x)}

    def networks(self):
        return {"big": self.teacher, "small": self.model}
