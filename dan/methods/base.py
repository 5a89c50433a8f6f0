"""The interface every training method implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import torch
import torch.nn as nn

from dan.config import Config
from dan.data import DatasetInfo
from dan.errors import UserError
from dan.methods.common import read_section
from dan.methods.registry import get_method, list_methods
from dan.models import build_model, input_shape


@dataclass(frozen=True)
class TeacherRequest:
    """The teacher a method learns from, as the method asks for it; the run layer
    (:func:`dan.engine.resolve_teacher`) turns it into a frozen network before
    :meth:`Method.prepare`.

    Attributes:
        path: run folder or checkpoint of a finished run whose big network teaches; None: the
            base network is trained the standard way first, in ``<run>/teacher``.
        epochs: epochs of that first training (None: ``train.epochs``); unused with ``path``.
    """

    path: Optional[str] = None
    epochs: Optional[int] = None


class Method:
    """One way of training. Subclasses set ``outputs`` and implement the hooks below.

    Attributes:
        outputs: names of the networks evaluated every epoch (e.g. ``("big", "small")``).
        deployed: which of them is the deployable network (its top-1 picks ``best.pt``).
        model: the module being trained (built by :meth:`build`); its state dict is checkpointed.
    """

    name = "base"
    config = None  # the dataclass of its ``methods.<name>`` options (None: it takes none)
    outputs: tuple = ("big",)
    deployed: str = "big"
    final_eval: tuple = ()  # networks evaluated again at the end (they change when finished)

    def __init__(self, cfg: Config, info: DatasetInfo, device: torch.device):
        check_sections(cfg.methods)
        self.cfg, self.info, self.device = cfg, info, device
        self.input_shape = input_shape(info)
        self.model: nn.Module | None = None
        self.optimizer = None  # set by the engine once it exists (for methods that read the lr)
        self.wrapped = None  # the model under DistributedDataParallel, when distributed

    @property
    def fwd(self) -> nn.Module:
        """What a training step calls: the model, or its DistributedDataParallel wrapper."""
        return self.wrapped if self.wrapped is not None else self.model

    # --- building --------------------------------------------------------------------------
    def base_network(self) -> nn.Module:
        """The network this method trains: the config's model, or, when ``model.arch`` names an
        arch.json, the small network found by DAN search (freshly initialised)."""
        if self.cfg.model.arch:
            from dan.arch import small_network

            return small_network(self.cfg.model.arch, self.info)
        return build_model(self.cfg.model, self.info)

    def build(self) -> nn.Module:
        raise NotImplementedError

    def parameters(self) -> Iterable[nn.Parameter]:
        """Parameters the engine's optimizer updates."""
        return self.model.parameters()

    def teacher_request(self) -> TeacherRequest | None:
        """The teacher this method learns from (called after :meth:`build`), or None."""
        return None

    def prepare(self, data, monitor, teacher: nn.Module | None = None) -> None:
        """Work before the first epoch. ``teacher`` is the frozen network :meth:`teacher_request`
        asked for, resolved by the engine (None when none was asked for). Runs again after a
        resume."""

    # --- training --------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor, progress: float):
        """Return ``(loss, scalars)`` for one batch; ``progress`` is t in [0, 1]."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called after each optimizer step (proximal updates and the like)."""

    @torch.no_grad()
    def eval_logits(self, x: torch.Tensor) -> dict:
        """Logits of every evaluated network for a batch (eval mode)."""
        raise NotImplementedError

    # --- the end ---------------------------------------------------------------------------
    def networks(self) -> dict:
        """The finished networks by name (plain modules) for counting and timing: ``big`` when
        the method has one, and the deployable under ``self.deployed``."""
        raise NotImplementedError

    def summary_extra(self) -> dict:
        """Method-specific facts for ``summary.json`` (called after :meth:`networks`)."""
        return {}

    def extra_state(self) -> dict:
        """Method state beyond ``model`` that a checkpoint must hold (e.g. a teacher)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def check_sections(methods) -> None:
    """``methods``: a section per known method, each a mapping of its options, every one read with
    its method's config class whether or not that method is the one run. A typo's section
    (``methods.dk.teacher``) was kept and never read, ``methods.kd=5`` ended in a TypeError, and a
    wrong option of a method not run (``methods.kd.temprature`` in a config for the adjoint method,
    kept for a later ``--method kd``) was accepted until the later run."""
    if not isinstance(methods, dict):
        raise UserError(f"config key 'methods' must be a mapping of method sections, got {methods!r:.60}")
    for name, section in methods.items():
        if name not in list_methods():
            raise UserError(f"unknown config section 'methods.{name}' (the methods: {', '.join(list_methods())})")
        if section is not None and not isinstance(section, dict):
            raise UserError(f"config key 'methods.{name}' must be a mapping of its options (e.g. "
                            f"methods.{name}.<option>=...), got {section!r:.60}")
        if name == "adjoint" and section:  # its options were kept and never read (alpha=8 trained 4)
            raise UserError(f"methods.adjoint takes no options (got {', '.join(map(str, section))}): the adjoint "
                            f"settings are adjoint.* (--alpha, --beta, --set adjoint.c=...)")
        cls = get_method(name).config
        if cls is not None:
            read_section(name, section, cls)
        elif section:
            raise UserError(f"methods.{name} takes no options (got {', '.join(map(str, section))})")
