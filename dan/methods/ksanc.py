"""``ksanc``: Knowledge Squeezed Adversarial Network Compression (Shu et al., 2019).

A frozen teacher (as in ``kd``: ``methods.ksanc.teacher`` or trained first) and the student (the
small network AN extracts at the same α, or ``model.arch``'s network) with three terms:

* ``L_b = ‖l_S − l_T‖²`` on the logits (mean over the batch);
* intermediate supervision with task-driven attention ("squeezed knowledge"): at the end of each
  stage (the last feature map before each spatial downsampling, and the last one before pooling)
  a 1×1 conv lifts the student's features to the teacher's width; the stage's global descriptor
  (the network's pooled last features, projected to the stage width) is added to the stage
  features, a 1×1 conv gives a spatial attention map (softmax over positions) and the
  attention-weighted average is the stage descriptor: ``L_is = Σ_i ‖d_S,i − d_T,i‖²``;
* adversarial: a discriminator on logits (BN → FC → BN-ReLU → FC → BN-ReLU → FC with 1 real/fake
  + C class outputs) learns to tell teacher from student logits (and to classify the teacher's);
  the student learns to fool it.

``L = λ1·L_b + λ2·L_adv + λ3·L_is (+ ce·CE(y, s))``. The weights are not public: ``lambda_b``
(1), ``lambda_adv`` (0.1), ``lambda_is`` (1), ``ce`` (0) are exposed in ``methods.ksanc``, with the
discriminator's ``disc_hidden`` (256) and ``disc_lr`` (2e-4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from dan.config import int_range, num_range
from dan.errors import UserError
from dan.methods.base import Method, TeacherRequest
from dan.methods.common import check_teacher_epochs, method_config, student_network, top1_accuracy, traced
from dan.methods.registry import register_method


@dataclass
class KSANCConfig:
    teacher: Optional[str] = None
    teacher_epochs: Optional[int] = None
    lambda_b: float = 1.0
    lambda_adv: float = 0.1
    lambda_is: float = 1.0
    ce: float = 0.0
    disc_hidden: int = 256
    disc_lr: float = 2e-4

    def check(self):
        # checked before the teacher trains, not when the discriminator is built after it
        for key in ("lambda_b", "lambda_adv", "lambda_is", "ce"):
            num_range(f"methods.ksanc.{key}", getattr(self, key), 0.0, 1e6)
        int_range("methods.ksanc.disc_hidden", self.disc_hidden, 1, 1 << 16)
        num_range("methods.ksanc.disc_lr", self.disc_lr, 0.0, 10.0, lo_open=True)
        check_teacher_epochs("ksanc", self.teacher_epochs)


def stage_nodes(gm: fx.GraphModule, example: torch.Tensor) -> list[str]:
    """Names of the nodes ending each stage: the last 4-D feature map before each spatial
    downsampling, and the last 4-D feature map of the network."""
    was = gm.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    gm.train(was)
    maps = [n for n in gm.graph.nodes if n.op != "placeholder" and _shape(n) is not None and len(_shape(n)) == 4]
    ends = []
    for a, b in zip(maps, maps[1:]):
        if _shape(b)[2] < _shape(a)[2] and a.name not in ends:
            ends.append(a.name)
    if maps and maps[-1].name not in ends:
        ends.append(maps[-1].name)
    return ends


def _shape(n):
    tm = n.meta.get("tensor_meta")
    return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None


def _node(gm, name):
    return next(n for n in gm.graph.nodes if n.name == name)


def tap(gm: fx.GraphModule, names: list[str]) -> fx.GraphModule:
    """A module returning ``(logits, [features at names])`` (same parameters)."""
    g = fx.Graph()
    env = {}
    for n in gm.graph.nodes:
        if n.op == "output":
            g.output((env[n.args[0]], [env[_node(gm, k)] for k in names]))
        else:
            env[n] = g.node_copy(n, lambda a: env[a])
    return fx.GraphModule(gm, g)


class SqueezedAttention(nn.Module):
    """Stage descriptor: softmax-over-positions attention from (features + projected global
    descriptor), then the attention-weighted average of the features."""

    def __init__(self, channels: int, global_dim: int):
        super().__init__()
        self.proj = nn.Linear(global_dim, channels)
        self.att = nn.Conv2d(channels, 1, 1)

    def forward(self, feats: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        a = self.att(feats + self.proj(glob)[:, :, None, None]).flatten(1).softmax(1)  # (B, HW)
        return torch.einsum("bchw,bhw->bc", feats, a.view(a.shape[0], *feats.shape[2:]))


def discriminator(num_classes: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm1d(num_classes), nn.Linear(num_classes, hidden), nn.BatchNorm1d(hidden),
                         nn.ReLU(), nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, 1 + num_classes))


@register_method("ksanc")
class KSANC(Method):
    config = KSANCConfig
    outputs = ("small",)
    deployed = "small"

    def build(self):
        from dan import distributed

        if distributed.info().enabled:
            raise UserError("ksanc runs in one process (its discriminator and attention modules are "
                            "not distributed): start it without torchrun")
        self.kcfg = method_config(self.cfg, "ksanc", KSANCConfig)
        self.student = traced(student_network(self)).to(self.device)
        self.model = self.student
        self.teacher = None
        self.aux = nn.ModuleDict()
        self.disc = discriminator(self.info.num_classes, self.kcfg.disc_hidden).to(self.device)
        self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=self.kcfg.disc_lr, betas=(0.5, 0.999))
        self._build_taps(self.base_for_shapes())
        return self.model

    def base_for_shapes(self) -> fx.GraphModule:
        """The teacher's architecture (the base network) for stage shapes before the teacher exists."""
        return traced(self.base_network())

    def _build_taps(self, teacher_like: fx.GraphModule) -> None:
        example = torch.zeros(self.input_shape, device=self.device)
        t_names = stage_nodes(teacher_like.to(self.device), example)
        s_names = stage_nodes(self.student, example)
        if len(t_names) != len(s_names):
            raise UserError("ksanc: teacher and student have different stage structures")
        self.t_names, self.s_names = t_names, s_names
        t_ch = [_shape(_node(teacher_like, n))[1] for n in t_names]
        s_ch = [_shape(_node(self.student, n))[1] for n in s_names]
        self.s_tap = tap(self.student, s_names)
        glob = t_ch[-1]
        self.aux["lift"] = nn.ModuleList([nn.Conv2d(s, t, 1, bias=False) for s, t in zip(s_ch, t_ch)])
        self.aux["attend"] = nn.ModuleList([SqueezedAttention(t, glob) for t in t_ch])
        self.aux.to(self.device)

    def parameters(self):
        return list(self.student.parameters()) + list(self.aux.parameters())

    def teacher_request(self):
        return TeacherRequest(self.kcfg.teacher, self.kcfg.teacher_epochs)

    def prepare(self, data, monitor, teacher=None):
        self.teacher = traced(teacher).eval()
        names = stage_nodes(self.teacher, torch.zeros(self.input_shape, device=self.device))
        if [_shape(_node(self.teacher, n))[1] for n in names] != [m.out_channels for m in self.aux["lift"]]:
            raise UserError("ksanc: the teacher's stages differ from the base network's")
        self.t_tap = tap(self.teacher, names)
        if self.cfg.train.channels_last:
            self.teacher.to(memory_format=torch.channels_last)

    def _descriptors(self, feats, lift: bool):
        if lift:
            feats = [m(f) for m, f in zip(self.aux["lift"], feats)]
        glob = feats[-1].mean((2, 3))
        return [att(f, glob) for att, f in zip(self.aux["attend"], feats)]

    def train_step(self, x, y, progress):
        k = self.kcfg
        with torch.no_grad():
            lt, ft = self.t_tap(x)
        ls, fs = self.s_tap(x)
        # discriminator step: teacher logits are "real" (and classified), student logits "fake"
        self.disc.train()
        d_real, d_fake = self.disc(lt), self.disc(ls.detach())
        d_loss = F.binary_cross_entropy_with_logits(d_real[:, 0], torch.ones_like(d_real[:, 0])) + \
            F.binary_cross_entropy_with_logits(d_fake[:, 0], torch.zeros_like(d_fake[:, 0])) + \
            F.cross_entropy(d_real[:, 1:], y)
        self.disc_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.disc_opt.step()
        # student step
        l_b = (ls - lt).pow(2).sum(1).mean()
        adv_out = self.disc(ls)
        l_adv = F.binary_cross_entropy_with_logits(adv_out[:, 0], torch.ones_like(adv_out[:, 0]))
        dt = self._descriptors([f.detach() for f in ft], lift=False)
        ds = self._descriptors(fs, lift=True)
        l_is = sum((a - b).pow(2).sum(1).mean() for a, b in zip(ds, dt))
        loss = k.lambda_b * l_b + k.lambda_adv * l_adv + k.lambda_is * l_is
        if k.ce:
            loss = loss + k.ce * F.cross_entropy(ls, y, label_smoothing=self.cfg.train.label_smoothing)
        return loss, {"loss": loss.detach(), "logit_l2": l_b.detach(), "adv": l_adv.detach(),
                      "intermediate": l_is.detach(), "disc": d_loss.detach(), "top1_small": top1_accuracy(ls, y)}

    @torch.no_grad()
    def eval_logits(self, x):
        return {"small": self.student(x)}

    def networks(self):
        return {"big": self.teacher, "small": self.student}

    def extra_state(self) -> dict:
        return {"aux": self.aux.state_dict(), "disc": self.disc.state_dict(), "disc_opt": self.disc_opt.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        if state:
            self.aux.load_state_dict(state["aux"])
            self.disc.load_state_dict(state["disc"])
            self.disc_opt.load_state_dict(state["disc_opt"])
