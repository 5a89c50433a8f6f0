"""``adjoint``: the big and the small network trained together with the adjoint loss (AN).

The small network is the base network at 1/α of every width (``adjoint.alpha``), or the widths of
an ``arch.json`` found by DAN search (``adjoint.arch``: then the engine retrains it). The loss is
``CE(y, p) + λ(t)·KL(p‖q)`` with the λ schedule of ``adjoint.schedule`` scaled by ``adjoint.c``.
"""

from __future__ import annotations

import torch

from dan.adjoint import extract_big, extract_small, to_adjoint
from dan.errors import UserError
from dan.loss import adjoint_loss, schedule
from dan.methods.base import Method
from dan.methods.common import top1_accuracy
from dan.methods.registry import register_method


@register_method("adjoint")
class Adjoint(Method):
    outputs = ("big", "small")
    deployed = "small"

    def build(self):
        a = self.cfg.adjoint
        self.lam = schedule(a.schedule, a.c)
        widths, stem, unmasked = None, a.stem, tuple(a.unmasked)
        if a.arch:  # DAN retrain: the small path takes the searched widths
            from dan.arch import check_fits, load_arch

            arch = load_arch(a.arch)
            check_fits(arch, self.info, a.arch)
            if arch.space != self.cfg.model.space:
                raise UserError(f"{a.arch}: field 'space' is {arch.space} but model.space is "
                                f"{self.cfg.model.space}: use the search's model")
            widths, stem = arch.widths, arch.adjoint.get("stem", 1)
            unmasked = tuple(arch.adjoint.get("unmasked", []))
        self.model = to_adjoint(self.base_network(), alpha=a.alpha, beta=a.beta, widths=widths,
                                stem=stem, unmasked=unmasked, input_shape=self.input_shape,
                                mask_seed=a.mask_seed, copy_model=False).to(self.device)
        if a.arch:
            from dan.arch import require_every_group

            require_every_group(self.model, widths, a.arch)
        return self.model

    def train_step(self, x, y, progress):
        big, small = self.fwd(x)
        lam = self.lam(progress)
        loss, ce, kl = adjoint_loss(big, small, y, lam, detach_teacher=self.cfg.adjoint.detach_teacher,
                                    label_smoothing=self.cfg.train.label_smoothing, return_terms=True)
        return loss, {"loss": loss.detach(), "ce": ce, "kl": kl, "lambda": lam,
                      "top1_big": top1_accuracy(big, y), "top1_small": top1_accuracy(small, y)}

    @torch.no_grad()
    def eval_logits(self, x):
        big, small = self.model(x)
        return {"big": big, "small": small}

    def networks(self):
        return {"big": extract_big(self.model), "small": extract_small(self.model)}
