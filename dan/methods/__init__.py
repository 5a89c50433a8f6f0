"""Training methods, one file each, selected by name (``tools/train.py --method NAME``).

Every method runs through the same engine (:mod:`dan.engine`): same data, optimizer, schedule,
logging, checkpoints and cost model. A method says how to build the trained module, what one
training step computes, which outputs to evaluate, and which network is deployed at the end.
A method that learns from a teacher only asks for one (:meth:`Method.teacher_request`): the
engine resolves it (loads a finished run or trains one) and hands it in; methods never import
the engine.

Layout: :mod:`~dan.methods.registry` holds the table (each method module registers itself there),
:mod:`~dan.methods.base` the interface, :mod:`~dan.methods.common` the shared pieces; importing
this package imports every method, so the table is complete.
"""

from __future__ import annotations

from dan.methods.base import Method, TeacherRequest
from dan.methods.registry import get_method, list_methods, register_method
from dan.methods import adjoint, dropout, expandnet, kd, ksanc, lowrank, standard  # noqa: F401  (registers them)

__all__ = ["Method", "TeacherRequest", "get_method", "list_methods", "register_method"]
