"""Retrain the architecture DAN search found, from scratch, and extract the small network.

Usage:
    python tools/retrain.py runs/<search>/arch.json                      # adjoint retrain (default)
    python tools/retrain.py runs/<search>/arch.json --method standard    # the found small network alone
    python tools/retrain.py runs/<search>/arch.json --epochs 30 --out runs/r --resume

The search's own config (stored in arch.json) is the starting point: same data, model and
training settings, but the whole training split (no held-out part). Flags override it as in
train.py. Writes the same run folder as train.py (default: <search folder>/retrain-<method>) and
prints the summary table with the budget.
"""

import os
import sys

# The repository root replaces this folder on the path (see tools/profile.py).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dan.cli import common_parser, number, open_monitor, resolve_config, run_tool, tensorboard_hint  # noqa: E402


def get_args_parser():
    p = common_parser("retrain.py", __doc__)
    p.add_argument("arch", help="arch.json written by tools/search.py")
    g = p.add_argument_group("retrain")
    g.add_argument("--method", choices=["adjoint", "standard"], default="adjoint",
                   help="adjoint: big + found small network with the adjoint loss; standard: the "
                        "found small network alone (ablation)")
    g.add_argument("--lr", type=number(0.0))
    g.add_argument("--lam-scale", type=number(0.0), help="adjoint: scale c of lambda(t)")
    return p


def main(argv):
    args = get_args_parser().parse_args(argv)
    from dan.arch import load_arch
    from dan.config import Config

    arch_path = os.path.abspath(args.arch)
    arch = load_arch(arch_path)
    base = None
    if not args.config:
        base = Config.from_dict(arch.config) if arch.config else Config()
        # the search held out part of a (maybe smaller) training set; retrain uses all of it
        base.data.holdout, base.data.train_subset = 0.0, None
    cfg = resolve_config(args, {"lr": "train.lr", "lam_scale": "adjoint.c"}, base=base)
    cfg.model.space = arch.space
    cfg.model.args = {k: v for k, v in arch.space_args.items() if k not in ("num_classes", "in_channels")}
    cfg.data.holdout = 0.0
    cfg.train.method = args.method
    if args.method == "adjoint":
        cfg.adjoint.arch, cfg.model.arch = arch_path, None
    else:
        cfg.model.arch, cfg.adjoint.arch = arch_path, None
    if not args.out:
        cfg.out = os.path.join(os.path.dirname(arch_path), f"retrain-{args.method}")
    from dan.cost import format_count
    from dan.engine import format_summary, train

    monitor, dist = open_monitor(cfg, args)
    try:
        summary = train(cfg, monitor, resume=args.resume)
    finally:
        monitor.close()
    if not dist.main:
        return 0
    print(format_summary(summary))
    deployed = summary.rows["small"]
    if "latency" in arch.budget:  # times at the search's batch are in the summary table above
        print(f"budget: {arch.budget['latency']:.3g} ms (searched on {arch.latency.get('device', {}).get('cpu', '?')}); "
              f"the search measured {arch.latency.get('measured_ms', float('nan')):.3g} ms for this network")
    else:
        kind = "flops" if "flops" in arch.budget else "params"
        print(f"budget: {format_count(arch.budget[kind])} {kind}; deployable network: "
              f"{format_count(deployed[kind])} {kind} ({100 * deployed[kind] / arch.budget[kind]:.1f}% of budget)")
    print(f"\nrun folder: {cfg.run_dir}    deployable network: {summary.files['torchscript']}")
    print(f"monitor:    {tensorboard_hint(cfg.run_dir)}")
    return 0


if __name__ == "__main__":
    run_tool(main)
