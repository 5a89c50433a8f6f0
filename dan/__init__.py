"""DAN: Adjoined Networks training and Differentiable Adjoined Networks width search.

Public API (the README's "Python API" section)::

    anet = dan.to_adjoint(model, alpha=4, beta=0.0)
    big_logits, small_logits = anet(x)
    loss = dan.adjoint_loss(big_logits, small_logits, y, lam)
    small = dan.extract_small(anet)
    cost = dan.count(small, (1, 3, 224, 224))
    arch = dan.load_arch("runs/x/arch.json")
    anet = dan.build_adjoint(arch)
    arch = dan.search(model, {"dataset": "imagefolder", "data": "~/pets"}, budget="25%")
    anet = dan.build_adjoint(arch, model=model)
"""

from dan.adjoint import AdjointNet, extract_big, extract_small, to_adjoint
from dan.arch import Arch, build_adjoint, load_arch
from dan.cost import Cost, count, format_count, parse_count
from dan.errors import UnsupportedModelError, UserError
from dan.loss import adjoint_loss, schedule
# ``dan.search`` is the function (the public API); the module stays importable: from dan.search import ...
from dan.search import search_model as search  # noqa: E402

__all__ = [
    "AdjointNet", "Arch", "build_adjoint", "load_arch", "Cost", "UnsupportedModelError", "UserError", "adjoint_loss", "count",
    "extract_big", "extract_small", "format_count", "parse_count", "schedule", "search", "to_adjoint",
]
__version__ = "0.1.0"
