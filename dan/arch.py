"""``arch.json``: the architecture DAN search found, as data that round-trips.

:class:`Arch` ⇄ JSON, validated on load (:func:`load_arch` names the bad field). The schema is
documented in ``docs/arch-json.md``; numbers are plain integers (FLOPs, not GFLOPs).
:func:`build_adjoint` turns an ``Arch`` into a fresh adjoint network whose small path has exactly
the found widths; ``dan.count(dan.extract_small(build_adjoint(arch)))`` equals ``arch.small``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import torch.nn as nn

from dan import models
from dan.adjoint import AdjointNet, to_adjoint
from dan.errors import UserError

SCHEMA_VERSION = 1


@dataclass
class Arch:
    space: str
    space_args: dict
    input_shape: list
    num_classes: int
    widths: dict  # every width group (fixed ones at full width) -> channels
    small: dict  # {"flops": int, "params": int}
    big: dict
    budget: dict  # {"flops" or "params": int, or "latency": ms, "relative": float|None, "band": float}
    seed: int
    version: int = SCHEMA_VERSION
    adjoint: dict = field(default_factory=lambda: {"stem": 1, "unmasked": []})
    candidates: dict = field(default_factory=dict)  # searchable group -> candidate widths
    probabilities: dict = field(default_factory=dict)  # searchable group -> final probabilities
    repaired: list = field(default_factory=list)  # groups the repair pass moved
    # how the search ended: the argmax cost before repair (and whether it was in the band), the
    # largest probability and entropy of every group's distribution, and their means
    search: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # the resolved config of the search
    # a latency budget's outcome: predicted and measured ms of the found network, the device
    latency: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        order = ["version", "space", "space_args", "input_shape", "num_classes", "adjoint", "widths",
                 "small", "big", "budget", "seed", "candidates", "probabilities", "repaired", "search", "config"]
        return {k: d[k] for k in order + (["latency"] if self.latency else [])}

    def save(self, path: str) -> None:
        from dan.checkpoint import atomic_write, write_json

        atomic_write(lambda p: write_json(self.to_dict(), p), path)


_REQUIRED = {"version": int, "space": str, "space_args": dict, "input_shape": list, "num_classes": int,
             "widths": dict, "small": dict, "big": dict, "budget": dict, "seed": int}
_OPTIONAL = {"adjoint": dict, "candidates": dict, "probabilities": dict, "repaired": list, "search": dict,
             "config": dict, "latency": dict}


def arch_from_dict(d, where: str = "arch.json") -> Arch:
    """Validate a parsed ``arch.json``; a :class:`UserError` names the first bad field."""
    def bad(field_name, what):
        raise UserError(f"{where}: field '{field_name}' {what}: fix the file or search again")

    if not isinstance(d, dict):
        raise UserError(f"{where}: must hold a JSON object")
    if "widths" not in d and "version" not in d:  # "field 'version' is missing" for a small.json
        what = "a deployed network's small.json" if "input_shape" in d and "flops" in d else "another file"
        raise UserError(f"{where} is {what}, not an arch.json: pass the arch.json a search wrote "
                        f"(runs/<search>/arch.json)")
    for k, t in _REQUIRED.items():
        if k not in d:
            bad(k, "is missing")
        if not isinstance(d[k], t) or (t is int and isinstance(d[k], bool)):
            bad(k, f"must be {t.__name__}, got {type(d[k]).__name__}")
    for k, t in _OPTIONAL.items():
        if k in d and not isinstance(d[k], t):
            bad(k, f"must be {t.__name__}, got {type(d[k]).__name__}")
    unknown = sorted(set(d) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        bad(unknown[0], "is not part of the schema (docs/arch-json.md)")
    if d["version"] != SCHEMA_VERSION:
        bad("version", f"is {d['version']}; this DAN reads version {SCHEMA_VERSION}")
    try:  # the name's form only: nothing is imported here (see dan.models: trust)
        models.kind(d["space"])
    except UserError as e:
        bad("space", f"is not a model name ({e})")
    for key in ("width", "in_channels", "num_classes"):  # sizes that allocate memory
        v = d["space_args"].get(key)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8192):
            bad(f"space_args.{key}", f"must be an integer in [1, 8192], got {v!r}")
    shape = d["input_shape"]
    if len(shape) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 8192 for v in shape):
        bad("input_shape", f"must be 4 integers in [1, 8192] (N, C, H, W), got {shape}")
    if d["num_classes"] < 1:
        bad("num_classes", "must be >= 1")
    if not d["widths"]:
        bad("widths", "is empty")
    for name, w in d["widths"].items():
        if not isinstance(w, int) or isinstance(w, bool) or w < 1:
            bad(f"widths.{name}", f"must be a positive integer, got {w!r}")
    # keys inside these objects are checked as the top level's: "unmaskd" or "relatve" passed silently
    for part, allowed in (("small", ("flops", "params")), ("big", ("flops", "params")),
                          ("budget", ("flops", "params", "latency", "relative", "band")),
                          ("adjoint", ("stem", "unmasked"))):
        odd = sorted(set(d.get(part, {})) - set(allowed))
        if odd:
            bad(f"{part}.{odd[0]}", f"is not part of the schema (it takes {', '.join(allowed)}: docs/arch-json.md)")
    for part in ("small", "big"):
        for k in ("flops", "params"):
            v = d[part].get(k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(f"{part}.{k}", f"must be a non-negative integer, got {v!r}")
    b = d["budget"]
    if not any(k in b for k in ("flops", "params", "latency")):
        bad("budget", "must hold 'flops', 'params' or 'latency'")
    if "latency" in b and (not isinstance(b["latency"], (int, float)) or isinstance(b["latency"], bool)
                           or not math.isfinite(b["latency"]) or b["latency"] <= 0):
        bad("budget.latency", f"must be a positive number of milliseconds, got {b['latency']!r}")
    for k in ("flops", "params"):
        if k in b and (not isinstance(b[k], int) or isinstance(b[k], bool) or b[k] <= 0):
            bad(f"budget.{k}", f"must be a positive integer, got {b[k]!r}")
    adj = d.get("adjoint", {"stem": 1, "unmasked": []})
    if not isinstance(adj.get("stem", 1), int) or not isinstance(adj.get("unmasked", []), list):
        bad("adjoint", "must be {\"stem\": int, \"unmasked\": [prefixes]}")
    _check_choices(d, bad)
    return Arch(**{k: d[k] for k in list(_REQUIRED) + [k for k in _OPTIONAL if k in d]})


def _check_choices(d: dict, bad) -> None:
    """``candidates``, ``probabilities`` and ``repaired`` name groups of ``widths`` and agree with
    each other; probabilities are a distribution. An audit's arch.json with probabilities
    ``[0.9] * 8``, a list longer than its candidates and a repaired group that does not exist
    loaded without a word. (A width need not be a candidate: uniform and fixed widths are not.)"""
    widths, cands = d["widths"], d.get("candidates", {})
    for name, c in cands.items():
        if name not in widths:
            bad(f"candidates.{name}", "names no group of 'widths'")
        if not (isinstance(c, list) and c and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in c)):
            bad(f"candidates.{name}", f"must be a list of positive integers, got {c!r:.80}")
    for name, p in d.get("probabilities", {}).items():
        if name not in widths:
            bad(f"probabilities.{name}", "names no group of 'widths'")
        if not (isinstance(p, list) and p and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  and math.isfinite(v) and 0 <= v <= 1 for v in p)):
            bad(f"probabilities.{name}", f"must be a list of numbers in [0, 1], got {p!r:.80}")
        if name in cands and len(p) != len(cands[name]):
            bad(f"probabilities.{name}", f"has {len(p)} entries for {len(cands[name])} candidates")
        if abs(sum(p) - 1) > 1e-3:
            bad(f"probabilities.{name}", f"must sum to 1 (a distribution over the candidates), sums to {sum(p):.4g}")
    for name in d.get("repaired", []):
        if not isinstance(name, str) or name not in widths:
            bad("repaired", f"names {name!r}, which is no group of 'widths'")


def arch_file(path: str) -> str:
    """``path``, or the ``arch.json`` inside it when it names a search's folder (``retrain.py runs/s``
    for ``retrain.py runs/s/arch.json``: the folder is what a user has in hand)."""
    inside = os.path.join(path, "arch.json")
    return inside if os.path.isdir(path) and os.path.isfile(inside) else path


def load_arch(path: str) -> Arch:
    """Read and validate ``arch.json`` (or the one in the search's folder ``path``, as
    :func:`build_adjoint` and the tools take it)."""
    if not isinstance(path, (str, os.PathLike)):  # a raw TypeError from os.path
        raise UserError(f"load_arch takes the path of an arch.json or of a search's folder, got a "
                        f"{type(path).__name__}" + (" (a parsed file: dan.arch.arch_from_dict)" if isinstance(path, dict)
                                                    else ""))
    path = arch_file(os.fspath(path))
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder without an arch.json: pass the arch.json a search wrote "
                        f"(runs/<search>/arch.json)")
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist: pass the arch.json a search wrote (runs/<search>/arch.json)")
    return arch_from_dict(read_json(path, "fix the file or pass the arch.json a search wrote"), path)


def read_json(path: str, fix: str):
    """A JSON file a user names, or one :class:`UserError` line ending in ``fix`` (not UTF-8, not
    JSON, nested too deeply to parse, unreadable)."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}): {fix}")
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): {fix}")
    except RecursionError:
        raise UserError(f"{path} is nested too deeply to parse: {fix}")
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}): check the path and its permissions")


def check_fits(arch: Arch, info, where: str) -> None:
    """The data must be what the architecture was searched for (classes, input shape)."""
    if arch.num_classes != info.num_classes:
        raise UserError(f"{where}: field 'num_classes' is {arch.num_classes} but the data has "
                        f"{info.num_classes} classes: retrain on the data it was searched on")
    shape = [1, info.in_channels, info.image_size, info.image_size]
    if list(arch.input_shape) != shape:
        raise UserError(f"{where}: field 'input_shape' is {arch.input_shape} but the data gives {shape}")


def small_network(path: str, info=None):
    """The small network of an arch.json as a plain, freshly initialised ``torch.nn`` model."""
    import torch.nn as nn

    from dan.adjoint import extract_small

    arch = load_arch(path)
    if info is not None:
        check_fits(arch, info, path)
    net = extract_small(build_adjoint(arch)).train()
    for m in net.modules():  # a fresh init for its own widths, not the slice of a wider one
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
        elif isinstance(m, nn.Linear):
            m.reset_parameters()
    return net


def build_base(arch: Arch):
    """The big (base) network of an architecture: its model with its arguments. A
    ``package.module:factory`` model is built only if the user trusted that name (dan.models)."""
    args = {k: v for k, v in arch.space_args.items() if k not in ("num_classes", "in_channels")}
    try:
        return models.create(arch.space, args, num_classes=arch.num_classes,
                             in_channels=arch.space_args.get("in_channels", arch.input_shape[1]))
    except UserError as e:
        raise UserError(f"arch.json: {arch.space} with space_args {args} cannot be built: {e}") from e


def as_arch(arch, who: str) -> Arch:
    """``arch``, or the one :func:`load_arch` reads from an ``arch.json`` path (or its search's
    folder); anything else a user error naming ``who`` (the function that takes it)."""
    if isinstance(arch, (str, os.PathLike)):
        return load_arch(os.fspath(arch))
    if not isinstance(arch, Arch):
        raise UserError(f"{who} takes an Arch (dan.load_arch) or an arch.json path, got a {type(arch).__name__}")
    return arch


def build_adjoint(arch: Arch | str, *, mask_seed: int = 0, model=None) -> AdjointNet:
    """A fresh adjoint network whose small path has exactly ``arch.widths``: of the network the
    architecture names, or of a copy of ``model`` (a network searched as a Python object, or any
    network with the same width groups). ``arch`` may be the path of an ``arch.json`` (or of the
    search's folder)."""
    import copy

    arch = as_arch(arch, "build_adjoint")

    if model is not None and not isinstance(model, nn.Module):  # was blamed on the file's widths
        raise UserError(f"build_adjoint's model is the network object the architecture was searched on, got a "
                        f"{type(model).__name__}: pass the nn.Module, or leave model out to build {arch.space}")
    base = copy.deepcopy(model) if model is not None else build_base(arch)
    adj = arch.adjoint or {}
    try:
        anet = to_adjoint(base, widths=arch.widths, stem=adj.get("stem", 1),
                          unmasked=tuple(adj.get("unmasked", [])), input_shape=tuple(arch.input_shape),
                          mask_seed=mask_seed, copy_model=False)
    except UserError as e:
        on = f"the model given ({type(model).__name__})" if model is not None else arch.space
        raise UserError(f"arch.json's 'widths' (of {arch.space}, input {'x'.join(map(str, arch.input_shape))}) do "
                        f"not fit {on}: {e}") from e
    require_every_group(anet, arch.widths, "arch.json")
    return anet


def require_every_group(anet: AdjointNet, widths: dict, where: str) -> None:
    """The schema requires a width for every group: a missing one must not silently take α's."""
    missing = [g.name for g in anet.groups if g.name not in widths]
    if missing:
        raise UserError(f"{where}: field 'widths' has no width for group '{missing[0]}' "
                        f"({len(missing)} missing): every width group needs one; search again")
