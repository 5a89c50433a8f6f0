"""Build and check the latency model of a search space on this device.

Usage:
    python tools/latency.py                                        # the demo network -> docs/latency.md
    python tools/latency.py --config configs/fashion_mnist_resnet18.yaml --threads 1 --samples 50
    python tools/latency.py --config C --no-cache --out /tmp/latency.md
    python tools/latency.py --model torchvision.mobilenet_v2 --set data.image_size=32 --set data.channels=3
    python tools/latency.py --arch runs/s/arch.json                # re-measure a latency-budget search's result

Measures every conv / linear layer of the space's small network at every pair of candidate widths,
fits the whole-network correction, then checks predicted against measured latency on --samples
architectures drawn from the space (--checks independent draws), with FLOPs as the baseline
predictor (dan/latency.py). The table is cached per device, runtime, threads, batch and PyTorch
version; the page and a JSON of every measured row are written: docs/latency.md is the project's
page of the demo network at its settings (no --config, --model, --set, --batch, --threads or
--runtime given); any other network's or setting's page goes to runs/latency-<model>[-<digest>]/latency.md
unless --out says where (it wrote over the project's measured page and its JSON).
"""

from __future__ import annotations

import json
import os
import time

from dan.cli.common import Parser
from dan.errors import UserError

PROG = "latency.py"  # the tool's name in usage and error lines (tools/latency.py)
# what Ctrl-C leaves and how to go on (dan.cli.common.interrupted_line)
INTERRUPTED = "interrupted: nothing to continue; run the command again"
DEFAULT_CONFIG = os.path.join("configs", "fashion_mnist_resnet18.yaml")  # the demo network: docs/latency.md's


def get_args_parser(prog: str = PROG):
    p = Parser(prog=prog, description=__doc__)
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--model", "--space", dest="space", help="base network (as in tools/search.py)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--batch", type=int, default=1, help="batch size the latency is for (default 1)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as latency budgets)")
    p.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"], help="runtime the tables are for")
    p.add_argument("--samples", type=int, default=50, help="architectures per check (default 50)")
    p.add_argument("--checks", type=int, default=2, help="independent checks (default 2)")
    p.add_argument("--no-cache", action="store_true", help="measure afresh even if a table is cached")
    p.add_argument("--out", help="page to write (default docs/latency.md for the demo network at its settings, "
                                 "else runs/latency-<model>[-<digest of the settings>]/latency.md)")
    p.add_argument("--arch", help="instead: measure again the network of an arch.json searched with --budget-latency")
    p.add_argument("--repeats", type=int, default=3, help="with --arch: independent measurements, the median "
                                                          "reported (default 3)")
    return p


def main(argv, prog: str = PROG) -> int:
    args = get_args_parser(prog).parse_args(argv)
    if args.repeats < 1:
        raise UserError("--repeats must be >= 1")
    if args.arch:
        from dan import models
        from dan.arch import arch_file, load_arch
        from dan.latency import remeasure

        given = [f for f, v, d in (("--batch", args.batch, 1), ("--threads", args.threads, 1),
                                     ("--runtime", args.runtime, "torch")) if v != d]
        if given:  # they were silently ignored: an onnxruntime reading printed eager PyTorch's
            raise UserError(f"--arch times the network as its search did (the batch, threads and runtime in its "
                            f"arch.json): drop {', '.join(given)}")
        if args.arch.endswith((".pt", ".pt2", ".onnx", ".pth")):  # was "is not UTF-8 text"
            raise UserError(f"{args.arch} is a network file: --arch re-times a latency search's arch.json (time a "
                            f"deployed network with the run's summary, or count it with count.py)")
        models.trust(args.space)  # your own model's builder, named here (as retrain.py takes it)
        # independent readings, the median one reported (dan.latency.measure_found): one slow spell
        # of a shared machine moves one reading by up to 20 %, rarely two of three
        r = remeasure(load_arch(arch_file(args.arch)), args.repeats)
        if r["note"]:
            print(r["note"])
        print(f"measured {r['measured_ms']:.3g} ms: {100 * r['measured_over_budget']:.1f}% of the budget "
              f"({r['budget_ms']:.3g} ms), {'inside' if r['in_band'] else 'OUTSIDE'} its band"
              + ("" if r["same_device"] else " (this machine differs from the one that searched)"))
        print(json.dumps(r))
        return 0
    if args.batch < 1 or args.samples < 3 or args.checks < 1 or (args.threads is not None and args.threads < 1):
        raise UserError("--batch and --threads must be >= 1, --samples >= 3, --checks >= 1")
    from dan import latency
    from dan.cli.common import resolve_config
    from dan.data import dataset_info
    from dan.search import describe_model
    from dan.supernet import build_supernet

    cfg = resolve_config(args)
    out = args.out or page_path(args)
    sn = build_supernet(cfg, dataset_info(cfg.data))
    start = time.perf_counter()
    model = latency.build(sn, batch=args.batch, threads=args.threads, runtime=args.runtime,
                          cache=not args.no_cache, say=print)
    print(f"latency model: fit on {model.fit['architectures']} architectures, median error "
          f"{100 * model.fit['median_abs_rel_error']:.1f} %")
    checks = []
    for k in range(args.checks):
        c = latency.evaluate(sn, model, args.samples, seed=k)
        checks.append(c)
        print(f"check {k + 1}: Spearman {c['spearman']:.3f} (FLOPs {c['spearman_flops']:.3f}), median error "
              f"{100 * c['median_abs_rel_error']:.1f} %, 90th percentile {100 * c['p90_abs_rel_error']:.1f} %")
    seconds = time.perf_counter() - start
    folder = os.path.dirname(os.path.abspath(out))
    stem = os.path.splitext(out)[0]
    figure = os.path.join(folder, "figures", os.path.basename(stem) + "_predictor.png")
    latency.plot(checks, figure)
    pred = {"what": network_words(describe_model(cfg), args, sn.input_shape),
            "seconds": seconds, "model": latency.summary(model), "checks": checks}
    os.makedirs(folder, exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump(pred, f, indent=1)
        f.write("\n")
    latency.write_docs(out)
    print(f"wrote {out}")
    return 0


def network_words(name: str, args, input_shape) -> str:
    """The page's "Network:" words: the network measured (``name``, from the resolved config) and
    what chose it. With --model the config lends its data settings only: an audit's
    ``--model torchvision.*`` page named `configs/fashion_mnist_resnet18.yaml` beside the network
    as if the config's ResNet-18 had been measured."""
    sets = "".join(f", --set {kv}" for kv in args.set)
    given = (f"--model {args.space}{sets}; the data settings of `{args.config}`" if args.space else
             f"`{args.config}`{sets}")
    return f"{name} ({given}), input {'x'.join(map(str, input_shape[1:]))}"


def page_path(args) -> str:
    """Where the page goes without --out: docs/latency.md for the demo network at the page's own
    settings, else ``runs/latency-<model>[-<digest of the settings>]/latency.md`` (module
    docstring): the whole model name (torchvision.mobilenet_v2 and timm.mobilenet_v2 are two
    networks), and the other settings in a digest, so no two pages of different networks or
    settings share a folder."""
    import hashlib

    settings = [*args.set, *(f"--{k} {v}" for k, v, d in (("batch", args.batch, 1), ("threads", args.threads, 1),
                                                            ("runtime", args.runtime, "torch")) if v != d)]
    demo = os.path.normpath(args.config) == os.path.normpath(DEFAULT_CONFIG)
    if demo and not args.space and not settings:
        return os.path.join("docs", "latency.md")
    name = args.space or os.path.splitext(os.path.basename(args.config))[0]
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if not demo and not args.space:  # another config: its path in the digest too
        settings.insert(0, os.path.abspath(args.config))
    if settings:
        slug += "-" + hashlib.sha256("\n".join(settings).encode()).hexdigest()[:8]
    return os.path.join("runs", f"latency-{slug}", "latency.md")
