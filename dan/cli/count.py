"""FLOPs and parameters of a network, layer by layer.

Usage:
    python tools/count.py resnet50                         # torchvision model (224x224)
    python tools/count.py timm.mixnet_s --alpha 4          # timm (pip install 'dan[timm]'), or my_pkg.nets:build
    python tools/count.py resnet18_small --arg width=16 --in-channels 1 --input-size 28
    python tools/count.py runs/demo/small.pt --input-size 28 --in-channels 1   # extracted network
    python tools/count.py runs/demo/checkpoints/last.pt    # every network of a training run
    python tools/count.py runs/search/arch.json            # big and found small network of a search
    python tools/count.py runs/x                           # a run folder: its arch.json, checkpoint or small.pt
    python tools/count.py runs/x/checkpoints/last.pt --model my_pkg.nets:build   # a run on your own builder
    python tools/count.py resnet50 --json                  # machine-readable
    python tools/count.py resnet50 --alpha 4               # big and small network of an adjoint conversion
    python tools/count.py resnet50 --alpha 4 --batch-size 128   # and the memory its adjoint training needs

FLOPs are multiply-accumulates of conv, linear and matmul layers (K, M, G = powers of 10); "nonzero"
counts parameters that are not exactly zero (r_beta masks make it differ), shown for trained networks
(a checkpoint, a deployed file) only. With --batch-size, the
least memory one training step at that batch needs (what autograd keeps for the backward pass and
Adam's state, computed without allocating it: dan/memory.py, the check every run makes first).
"""

from __future__ import annotations

import json
import os

from dan.cli.common import Parser, number, positive_int
from dan.errors import UserError

PROG = "count.py"  # the tool's name in usage and error lines (tools/count.py)
# what Ctrl-C leaves and how to go on (dan.cli.common.interrupted_line)
INTERRUPTED = "interrupted: nothing to continue; run the command again"


def load_networks(args) -> tuple[dict, tuple, dict]:
    """Resolve the target into {name: module}, the input shape and {name: the module that trains}
    (the adjoint network of ``--alpha`` or of a checkpoint; none for a deployed file)."""
    import torch
    import torchvision

    import search_spaces

    target = run_file(args.target) if os.path.isdir(args.target) else args.target
    size = args.input_size
    if target.endswith(".onnx"):
        raise UserError(f"{target} is an ONNX file: count.py reads PyTorch networks; count small.pt or small.pt2 "
                        f"beside it (the same network)")
    if not os.path.isfile(target) and (os.sep in target or target.endswith((".pt", ".pt2", ".pth", ".json"))):
        raise UserError(f"{target} does not exist: pass a run folder, its arch.json or checkpoint, small.pt or "
                        f"small.pt2, or a model name")
    if os.path.isfile(target):
        from dan.checkpoint import is_torchscript

        deployed = target.endswith((".pt2",)) or is_torchscript(target)
        refuse_unused(args, target, deployed)
        if deployed:
            from dan.deploy import load_deployable

            meta = _sidecar(target)  # its small.json's shape; a flag given replaces its part only
            _, c, h, w = meta["input_shape"] if meta else (1, 3, 224, 224)
            shape = (1, args.in_channels or c, size or h, size or w)
            return {"network": load_deployable(target)}, shape, {}
        from dan import models

        models.trust(args.space)  # named on this command line
        if target.endswith(".json"):
            return _from_arch(target)
        return _from_checkpoint(target)
    if target in search_spaces.list_spaces():
        kw = dict(num_classes=args.num_classes, in_channels=args.in_channels, **_kv(args.arg, target))
        model = search_spaces.create(target, **kw)
        default = 32 if target.endswith("_small") else 224
        shape = (1, args.in_channels or 3, size or default, size or default)
    else:
        from dan import models

        name = target
        if ":" not in target and not target.startswith(("torchvision.", "timm.")):
            name = f"torchvision.{target}"  # a bare torchvision name (resnet50)
        models.trust(name)  # typed on this command line
        channels = args.in_channels or 3
        model = models.create(name, _kv(args.arg, name), num_classes=args.num_classes or 1000, in_channels=channels)
        shape = (1, channels, size or 224, size or 224)
    if args.alpha:
        import dan

        anet = dan.to_adjoint(model, alpha=args.alpha, beta=args.beta or 0.0, input_shape=shape).eval()
        return _fresh({"big": dan.extract_big(anet), "small": dan.extract_small(anet)}), shape, {"adjoint": anet}
    del torch
    return _fresh({"network": model}), shape, {"network": model}


def refuse_unused(args, target: str, deployed: bool) -> None:
    """Refuse a flag the file ``target`` makes count.py ignore (they were dropped silently: a
    checkpoint counted at its recorded 28 px under ``--input-size 32``): a run's checkpoint or
    arch.json records its networks and their input; a deployed file is one network, whose recorded
    input ``--input-size``/``--in-channels`` may replace."""
    flags = {"--alpha": args.alpha, "--beta": args.beta, "--arg": args.arg, "--num-classes": args.num_classes}
    if not deployed:
        flags.update({"--input-size": args.input_size, "--in-channels": args.in_channels})
    given = [flag for flag, value in flags.items() if value]
    if given:
        what = "a deployed network (its own widths and classes)" if deployed else \
            "a run's networks at the input they were built for"
        raise UserError(f"{target} is {what}: drop {', '.join(given)}, which count.py would ignore")


def _sidecar(path: str):
    meta = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(meta):
        return None
    try:
        with open(meta, encoding="utf-8") as f:
            data = json.load(f)
        shape = [int(v) for v in data["input_shape"]]
        if len(shape) != 4 or min(shape) < 1:
            raise ValueError(shape)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{meta} is corrupt ({type(e).__name__}): delete it and pass --input-size and "
                        f"--in-channels instead")
    return data


# what count.py reads in a run folder, in this order: a search's answer, a run's networks, a
# deployed network
RUN_FILES = ("arch.json", os.path.join("checkpoints", "last.pt"), "small.pt", "model.pt")


def run_file(folder: str) -> str:
    """The file of a run folder count.py reads (:data:`RUN_FILES`)."""
    for name in RUN_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise UserError(f"{folder} holds none of {', '.join(RUN_FILES)}: pass a run folder, a file, or a model name")


def _from_arch(path: str):
    """The big network and the found small network of a search's ``arch.json``."""
    import dan
    from dan.arch import build_adjoint, load_arch

    arch = load_arch(path)
    anet = build_adjoint(arch).eval()
    return _fresh({"big": dan.extract_big(anet), "small": dan.extract_small(anet)}), tuple(arch.input_shape), \
        {"adjoint": anet}


def _fresh(nets: dict) -> dict:
    """``nets``, marked as freshly initialised: their "nonzero" count would only count the zeros
    an initialisation sets (BatchNorm biases: 56,090 of 56,447 read as if pruned), so it is not
    printed for them."""
    for net in nets.values():
        net._dan_fresh = True
    return nets


def _from_checkpoint(path: str):
    import torch

    from dan.checkpoint import load_checkpoint
    from dan.config import Config
    from dan.data import checkpoint_info
    from dan.methods import get_method

    state = load_checkpoint(path, fix="count.py reads a run's checkpoint, a search's arch.json, small.pt or small.pt2")
    if state.get("kind") == "search":  # a supernet: its small path has every candidate width
        arch = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "arch.json")
        if os.path.isfile(arch):
            return _from_arch(arch)
        raise UserError(f"{path} is an unfinished search's supernet, whose widths are not chosen yet: count the "
                        f"arch.json the search writes when it ends (or --resume it)")
    cfg = Config.from_dict(state["config"])
    info = checkpoint_info(state, cfg.data)  # the data itself need not be on this machine
    method = get_method(cfg.train.method)(cfg, info, torch.device("cpu"))
    method.build()
    method.model.load_state_dict(state["model"])
    method.load_extra_state(state.get("method", {}))
    method.model.eval()
    # a kd or ksanc run's teacher lives in its own run, not in this checkpoint (it was a NoneType error)
    nets = {name: net for name, net in method.networks().items() if net is not None}
    return nets, method.input_shape, {cfg.train.method: method.model}


def _kv(items, space: str) -> dict:
    """``--arg NAME=VALUE`` items (values read as YAML), checked as a config's ``model.args`` of
    ``space`` would be (``--arg width=abc`` reached the builder and ended in a TypeError)."""
    import yaml

    from dan.config import Config

    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--arg takes NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        flag = {"num_classes": "--num-classes", "in_channels": "--in-channels"}.get(k.strip())
        if flag:  # a TypeError ("multiple values for keyword argument") for a registered space
            raise UserError(f"--arg {k.strip()}=...: give it as {flag} {v}")
        try:
            out[k] = yaml.safe_load(v)
        except yaml.YAMLError:
            out[k] = v  # a plain word, as --set reads it
    Config.from_dict({"model": {"space": space, "args": out}}).validate()
    return out


def get_args_parser(prog: str = PROG):
    p = Parser(prog=prog, description=__doc__)
    p.add_argument("target", help="torchvision model name, search space, run folder, arch.json, checkpoint (.pt) or "
                                  "small.pt/.pt2")
    p.add_argument("--input-size", type=positive_int, help="input height = width (default 224, 32 for *_small)")
    p.add_argument("--in-channels", type=positive_int)
    p.add_argument("--num-classes", type=positive_int)
    p.add_argument("--arg", action="append", default=[], help="builder argument NAME=VALUE (repeatable)")
    p.add_argument("--model", "--space", dest="space", metavar="NAME",
                   help="with a checkpoint of a run on your own model builder (package.module:function): name it "
                        "again to allow importing it, as for retrain.py")
    p.add_argument("--alpha", type=number(1.0), help="also convert to adjoint and show big and small")
    p.add_argument("--beta", type=number(0.0, 1.0, hi_open=True))
    p.add_argument("--top", type=positive_int, help="only the N layers with most FLOPs")
    p.add_argument("--batch-size", type=positive_int,
                   help="also the least memory a training step at this batch needs (Adam)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return p


def count_at(net, shape: tuple, target: str, *, others_ran: bool = False):
    """``dan.count`` of ``net`` at ``shape``; a network that does not run on that input (a
    deployed file counted at the default 224x224) is the user's to give its shape. When another
    network of the same target already ran at ``shape`` (the big network before the small one),
    the input is not what is wrong: the failure keeps its traceback (an extracted small network
    that failed where its big one ran was blamed on --input-size)."""
    import dan
    from dan.errors import out_of_memory, raised_in_dan

    try:
        try:
            return dan.count(net, shape)
        except UserError as refused:  # dan.count's own line for an input the network refused: the cause
            if not isinstance(refused.__cause__, (RuntimeError, ValueError, AssertionError)):
                raise  # not about the input (a shape that is no shape)
            raise refused.__cause__ from None  # judged here, with the flags that give another input
    except (RuntimeError, ValueError, AssertionError) as e:  # a model's own shape asserts (a ViT's)
        if out_of_memory(e) or others_ran or (isinstance(e, AssertionError) and raised_in_dan(e)):
            raise  # the machine's memory, or a bug (DAN's own assert, a network its sibling ran beside)
        lines = [l.strip() for l in str(e).splitlines() if l.strip() and "Traceback" not in l]
        raise UserError(f"{target} does not run on input {'x'.join(map(str, shape))} "
                        f"({(lines or [type(e).__name__])[-1][:160]}): pass its --input-size and --in-channels") from e


def training_memory(trains: dict, shape: tuple, batch: int) -> dict:
    """{name: the least bytes one training step at ``batch`` needs, by part}, for each module that
    trains (:mod:`dan.memory`); a network that cannot run without real tensors is left out."""
    from dan import memory

    out = {}
    for name, model in trains.items():
        need = memory.training_need(model, (batch,) + tuple(shape[1:]))
        if need is not None:
            out[name] = {"batch": batch, "kept_for_backward": need.kept, "adam_state": need.state,
                         "weights": memory.parameter_bytes(model), "least": need.least,
                         "available": memory.available_bytes()}
    return out


def main(argv, prog: str = PROG) -> int:
    args = get_args_parser(prog).parse_args(argv)
    import dan

    from dan.errors import out_of_memory

    try:
        nets, shape, trains = load_networks(args)
        if args.batch_size and not trains:
            raise UserError(f"{args.target} is a deployed network, which does not train: --batch-size needs a "
                            f"model name or a run's checkpoint")
        costs = {}
        for name, net in nets.items():
            costs[name] = count_at(net, shape, args.target, others_ran=bool(costs))
    except (MemoryError, RuntimeError) as e:  # the run tools' line named --image-size and checkpoints
        if not out_of_memory(e):
            raise
        raise UserError(f"out of memory counting {args.target}"
                        + (f" at input size {args.input_size}: lower --input-size" if args.input_size else
                           ": the network is too large for this machine's memory")) from e
    mem = training_memory(trains, shape, args.batch_size) if args.batch_size else {}
    if args.json:
        out = {name: c.to_dict() for name, c in costs.items()}
        if mem:
            out["training_memory"] = mem
        print(json.dumps(out, indent=2))
        return 0
    for name, c in costs.items():
        nonzero = "" if getattr(nets[name], "_dan_fresh", False) else f" ({dan.format_count(c.nonzero_params)} nonzero)"
        print(f"== {name}: {dan.format_count(c.flops)} FLOPs (MACs), {dan.format_count(c.params)} params{nonzero}, "
              f"input {'x'.join(map(str, shape))}")
        print(c.table(top=args.top))
        print()
    meta = _sidecar(args.target) if not trains and os.path.isfile(args.target) else None
    if meta and isinstance(meta.get("params"), int) and meta["params"] != costs["network"].params:
        print(f"{os.path.splitext(os.path.basename(args.target))[0]}.json beside it says {meta['params']:,} params: "
              f"it counts the network before its BatchNorms were folded into the convs, as this file has them")
    if "big" in costs and len(costs) > 1:
        b = costs["big"]
        for name, c in costs.items():
            if name != "big":
                print(f"big/{name}: {b.flops / c.flops:.2f}x fewer FLOPs, {b.params / c.params:.2f}x fewer params")
    from dan.memory import gib

    for name, m in mem.items():
        have = f"; this machine has {gib(m['available'])} available" if m["available"] is not None else ""
        print(f"training memory ({name}, batch {m['batch']}): at least {gib(m['least'])} "
              f"({gib(m['kept_for_backward'])} kept for the backward pass, {gib(m['adam_state'])} of Adam state) "
              f"beside its {gib(m['weights'])} of weights{have}")
    return 0
