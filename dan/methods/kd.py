"""``kd``: teacher–student knowledge distillation (Hinton et al., 2015).

The teacher is the big network of a finished run (``methods.kd.teacher``: its run folder or
checkpoint) or, when none is given, the base network trained the standard way first for
``teacher_epochs`` epochs (default: ``train.epochs``) in ``<run>/teacher``; the engine resolves it
(:func:`dan.engine.resolve_teacher`) and hands it in, frozen. The student is the small network AN
extracts at the same α (or ``model.arch``'s network), freshly initialised. Loss:
``(1−a)·CE(y, s) + a·T²·KL(softmax(t/T) ‖ softmax(s/T))``; defaults T = 4, a = 0.9 (the values of
the common CIFAR-100 distillation benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from dan.errors import UserError
from dan.methods.base import Method, TeacherRequest
from dan.methods.common import check_teacher_epochs, method_config, student_network, top1_accuracy
from dan.methods.registry import register_method


@dataclass
class KDConfig:
    teacher: Optional[str] = None
    teacher_epochs: Optional[int] = None
    temperature: float = 4.0
    alpha: float = 0.9

    def check(self):
        if self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise UserError("methods.kd.temperature must be > 0 and methods.kd.alpha in [0, 1]")
        check_teacher_epochs("kd", self.teacher_epochs)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, T: float, a: float,
            label_smoothing: float = 0.0):
    # train.label_smoothing as every other method's CE takes it (it was left out here and in ksanc)
    ce = F.cross_entropy(student, target, label_smoothing=label_smoothing)
    kl = F.kl_div(F.log_softmax(student / T, 1), F.log_softmax(teacher / T, 1), reduction="batchmean",
                  log_target=True)
    return (1 - a) * ce + a * T * T * kl, ce.detach(), kl.detach()


@register_method("kd")
class KD(Method):
    config = KDConfig
    outputs = ("small",)
    deployed = "small"

    def build(self):
        self.kcfg = method_config(self.cfg, "kd", KDConfig)
        self.model = student_network(self).to(self.device)
        self.teacher = None
        return self.model

    def teacher_request(self):
        return TeacherRequest(self.kcfg.teacher, self.kcfg.teacher_epochs)

    def prepare(self, data, monitor, teacher=None):
        self.teacher = teacher
        if self.cfg.train.channels_last:
            self.teacher.to(memory_format=torch.channels_last)

    def train_step(self, x, y, progress):
        with torch.no_grad():
            t = self.teacher(x)
        s = self.fwd(x)
        loss, ce, kl = kd_loss(s, t, y, self.kcfg.temperature, self.kcfg.alpha, self.cfg.train.label_smoothing)
        return loss, {"loss": loss.detach(), "ce": ce, "kl": kl, "top1_small": top1_accuracy(s, y)}

    @torch.no_grad()
    def eval_logits(self, x):
        return {"small": self.model(x)}

    def networks(self):
        return {"big": self.teacher, "small": self.model}
