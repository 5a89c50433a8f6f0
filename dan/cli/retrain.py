"""Retrain the architecture DAN search found and extract the small network.

Usage:
    python tools/retrain.py runs/<search>/arch.json                      # adjoint retrain (default)
    python tools/retrain.py runs/<search>/arch.json --method standard    # the found small network alone
    python tools/retrain.py runs/<search>/arch.json --epochs 30 --out runs/r --resume
    python tools/retrain.py runs/<search>/arch.json --init scratch      # the paper's recipe
    python tools/retrain.py runs/<search>                               # the folder: its arch.json
    python tools/retrain.py runs/<search> --dry-run                     # check the command, print its plan

The weights start from the search's supernet (its checkpoint beside arch.json, cut to the found
widths) when it is there (--init auto, the default), else from scratch.

The search's own config (stored in arch.json) is the starting point: same data, model and
training settings, but the whole training split (no held-out part). Flags override it as in
train.py. Writes the same run folder as train.py (default: <search folder>/retrain-<method>, and
retrain-adjoint-scratch with --init scratch) and prints the summary table with the budget.
"""

from __future__ import annotations

import os

from dan.cli.common import common_parser, number, print_plan, print_run_end, resolve_config, run_monitored
from dan.config import DEFAULT_RETRAIN_INIT, RETRAIN_INITS
from dan.errors import UserError

PROG = "retrain.py"  # the tool's name in usage and error lines (tools/retrain.py)


def get_args_parser(prog: str = PROG):
    p = common_parser(prog, __doc__, out_help="run folder (default <the search's folder>/retrain-<method>)",
                      name_help=None, dry_run=True)
    p.add_argument("arch", help="arch.json written by tools/search.py")
    g = p.add_argument_group("retrain")
    g.add_argument("--method", choices=["adjoint", "standard"], default="adjoint",
                   help="adjoint: big + found small network with the adjoint loss; standard: the "
                        "found small network alone (ablation)")
    g.add_argument("--init", choices=RETRAIN_INITS, default=DEFAULT_RETRAIN_INIT,
                   help="where the weights start: scratch (random, the paper's recipe), supernet "
                        "(the search's trained supernet, checkpoints/last.pt beside arch.json, cut to "
                        "the found widths) or auto (supernet when that checkpoint is there, else "
                        f"scratch); default {DEFAULT_RETRAIN_INIT}")
    g.add_argument("--lr", type=number(0.0))
    g.add_argument("--lam-scale", type=number(0.0), help="adjoint: scale c of lambda(t)")
    return p


def main(argv, prog: str = PROG) -> int:
    args = get_args_parser(prog).parse_args(argv)
    from dan.arch import arch_file, load_arch
    from dan.retrain import retrain_base, retrain_config

    arch_path = os.path.abspath(arch_file(args.arch))
    arch = load_arch(arch_path)
    if args.space and args.space != arch.space:  # the widths are the groups of the network searched
        raise UserError(f"--model {args.space}: {args.arch} holds widths of {arch.space}, the network it searched; "
                        f"drop --model, or pass --model {arch.space} (needed when it is your own code)")
    # the search's own config (or --config), then the flags; the architecture decides the model
    cfg = resolve_config(args, {"lr": "train.lr", "lam_scale": "adjoint.c"},
                         base=None if args.config else retrain_base(arch, arch_path), tool="retrain.py")
    cfg = retrain_config(arch_path, args.method, cfg, out=args.out, init=args.init)
    if args.dry_run:
        from dan.dry_run import plan_train

        return print_plan(cfg, args, plan_train)
    from dan.cost import format_count
    from dan.engine import format_summary, train

    summary = run_monitored(cfg, args, train)
    if summary is None:
        return 0
    print(format_summary(summary))
    deployed = summary.rows["small"]
    if "latency" in arch.budget:  # times at the search's batch are in the summary table above (retrain_config)
        dev = arch.latency.get("device", {})
        print(f"budget: {arch.budget['latency']:.3g} ms at batch {dev.get('batch', '?')}, {dev.get('threads', '?')} "
              f"thread(s), {dev.get('runtime', '?')} (searched on {dev.get('cpu', '?')}); "
              f"the search measured {arch.latency.get('measured_ms', float('nan')):.3g} ms for this network on its "
              f"latency table's scale ({arch.latency.get('measured_raw_ms', float('nan')):.3g} ms as timed then)"
              + _band_text(arch))
    else:
        kind = "flops" if "flops" in arch.budget else "params"
        print(f"budget: {format_count(arch.budget[kind])} {kind}; deployable network: "
              f"{format_count(deployed[kind])} {kind} ({100 * deployed[kind] / arch.budget[kind]:.1f}% of budget)")
    print(f"weights started from: {cfg.train.init_from + ' (the search supernet, cut to these widths)' if cfg.train.init_from else 'scratch'}")
    print_run_end(cfg, summary)
    return 0


def _band_text(arch) -> str:
    """The measured latency's share of the budget and whether it is in the band: the line repeated
    the search's milliseconds, and an audit's network at 122 % of its budget read as if it had landed."""
    measured, budget = arch.latency.get("measured_ms"), arch.budget.get("latency")
    if not isinstance(measured, (int, float)) or not budget:
        return ""
    share, band = measured / budget, arch.budget.get("band", 0.03)
    where = "inside" if abs(share - 1) <= band + 1e-9 else "OUTSIDE"
    return f": {100 * share:.1f}% of the budget, {where} the ±{100 * band:g}% band"
