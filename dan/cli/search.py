"""DAN search: find the small network's widths under a FLOPs, params or latency budget -> arch.json.

Usage:
    python tools/search.py --budget-flops 1.6G          # the paper's setting: configs/imagenet_resnet50.yaml
                                                        # (used when neither --config nor --dataset is given)
    python tools/search.py --config configs/fashion_mnist_resnet18.yaml --budget-flops 25%
    python tools/search.py --config configs/imagenet_resnet50.yaml --budget-flops 1.6G   # the paper's setting
    python tools/search.py --config ... --budget-params 1.8M --epochs 10
    python tools/search.py --config ... --out runs/s --resume        # continue an interrupted search
    python tools/search.py --config ... --budget-flops 25% --dry-run # check the command, print its plan, run nothing

A budget is absolute (1.6G, 500M, 1.8M) or relative (25% of the small network at full width).
Writes runs/<name>/: arch.json (docs/arch-json.md), widths.png, config.yaml, TensorBoard events,
metrics.jsonl, checkpoints/last.pt. Then: python tools/retrain.py runs/<name>/arch.json
"""

from __future__ import annotations

import os

from dan.cli.common import (common_parser, number, positive_int, print_plan, resolve_config, retrain_hint,
                            run_monitored, tensorboard_hint)
from dan.errors import UserError

PROG = "search.py"  # the tool's name in usage and error lines (tools/search.py)


def get_args_parser(prog: str = PROG):
    p = common_parser(prog, __doc__, dry_run=True)
    g = p.add_argument_group("search")
    b = g.add_mutually_exclusive_group()
    b.add_argument("--budget-flops", help="FLOPs (MACs) budget of the small network: 1.6G, 500M or 25%%")
    b.add_argument("--budget-params", help="parameter budget of the small network: 1.8M or 40%%")
    b.add_argument("--budget-latency", help="latency budget on this device: 2.5ms, or 40%% of the widest small "
                                            "network's (a latency model is measured first, then cached)")
    g.add_argument("--latency-batch", type=positive_int, help="batch size of the latency budget (default 1)")
    g.add_argument("--latency-runtime", choices=["torch", "onnxruntime"],
                   help="runtime of the latency budget: torch (eager, default) or onnxruntime (small.onnx)")
    g.add_argument("--latency-threads", type=positive_int, help="intra-op threads of the latency budget (default 1)")
    g.add_argument("--band", type=number(0.001, 0.5), help="tolerance around the budget (default 0.03)")
    g.add_argument("--warmup-epochs", type=number(0.0), help="weight-only epochs before architecture steps")
    g.add_argument("--arch-lr", type=number(0.0), help="Adam learning rate of the architecture logits")
    g.add_argument("--tau0", type=number(0.0), help="initial Gumbel-softmax temperature")
    g.add_argument("--tau-decay", type=number(0.0, 1.0),
                   help="temperature decay per epoch, with --set search.tau_anneal=epoch (the default anneals "
                        "per step from --tau0 to search.tau_min)")
    g.add_argument("--arch-samples", type=int, help="candidates mixed per group in an architecture step (0: all)")
    g.add_argument("--lr", type=number(0.0), help="peak learning rate of the weights")
    g.add_argument("--lam-scale", type=number(0.0), help="scale c of lambda(t)")
    return p


EXTRA = {"budget_flops": "search.budget_flops", "budget_params": "search.budget_params",
         "budget_latency": "search.budget_latency", "latency_batch": "search.latency_batch",
         "latency_runtime": "search.latency_runtime", "latency_threads": "search.latency_threads", "band": "search.band",
         "warmup_epochs": "search.warmup_epochs", "arch_lr": "search.arch_lr", "tau0": "search.tau0",
         "tau_decay": "search.tau_decay", "arch_samples": "search.arch_samples", "lr": "train.lr",
         "lam_scale": "adjoint.c"}


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository (configs/)
PAPER_CONFIG = "configs/imagenet_resnet50.yaml"  # the default when no --config is given
DEMO = "python tools/search.py --config configs/fashion_mnist_resnet18.yaml --budget-flops 25%"


def main(argv, prog: str = PROG) -> int:
    args = get_args_parser(prog).parse_args(argv)
    bare = not args.config and not args.dataset  # the bare command: the paper's setting
    if bare:
        args.config = os.path.join(ROOT, PAPER_CONFIG)
    cfg = resolve_config(args, EXTRA, tool=PROG)
    # it changed nothing, silently (the config key's twin: dan.config.check_tau_decay); a resume compares it
    # with the run's own instead, which an older DAN annealed per epoch (dan.config.BEFORE_KEY)
    if args.tau_decay is not None and cfg.search.tau_anneal != "epoch" and not args.resume:
        raise UserError("--tau-decay decays the temperature per epoch, with --set search.tau_anneal=epoch; the "
                        "default anneals per step from --tau0 to search.tau_min: set that instead")
    from dan.cost import format_count
    from dan.search import check_paper_setting, search

    if bare:
        check_paper_setting(cfg, PAPER_CONFIG, DEMO)
    if args.dry_run:
        from dan.dry_run import plan_search

        return print_plan(cfg, args, plan_search)

    arch = run_monitored(cfg, args, search)
    if arch is None:
        return 0
    b = arch.budget
    kind = "flops" if "flops" in b else "params"
    print(f"search space {arch.space}: small network {format_count(arch.small['flops'])} FLOPs, "
          f"{format_count(arch.small['params'])} params; big network {format_count(arch.big['flops'])} FLOPs, "
          f"{format_count(arch.big['params'])} params")
    moved = f" (repair moved {len(arch.repaired)} group(s))" if arch.repaired else ""
    step = next((k for k in ("shortlist", "refine") if (arch.search or {}).get(k)), None)
    if step and arch.probabilities and arch.candidates:  # the last step moves groups too: say how many
        away = sum(1 for g, p in arch.probabilities.items()
                   if arch.widths.get(g) != arch.candidates[g][max(range(len(p)), key=p.__getitem__)])
        moved = f" ({away} group(s) away from the argmax after the {step} step; repair had moved {len(arch.repaired)})"
    if "latency" in b:
        lat = arch.latency
        # "measured" is on the latency table's scale (the machine's speed when the table was made);
        # the time taken now is beside it: they differ when the machine's speed does
        print(f"budget {b['latency']:.3g} ms at batch {lat['device']['batch']}, {lat['device']['threads']} thread(s): "
              f"predicted {lat['predicted_ms']:.3g} ms, measured {lat['measured_ms']:.3g} ms on the table's scale "
              f"({lat['measured_raw_ms']:.3g} ms as timed now; {100 * lat['measured_over_budget']:.1f}% of the budget, "
              f"{'inside' if lat['in_band'] else 'OUTSIDE'} the ±{100 * b['band']:g}% band){moved}")
        if lat.get("table_note"):
            print(f"note: {lat['table_note']}")
    else:
        ratio = arch.small[kind] / b[kind]
        outside = "" if abs(ratio - 1) <= b["band"] * (1 + 1e-9) else (
            f", OUTSIDE the ±{100 * b['band']:g}% band: repair found no network of this space inside it "
            f"(coarse widths; widen --set search.band= or move the budget)")
        print(f"budget {format_count(b[kind])} {kind}: small network at {100 * ratio:.1f}% of it{moved}{outside}")
    near_uniform = uncommitted(arch)
    if near_uniform:
        print(f"note: {near_uniform}")
    path = os.path.join(cfg.run_dir, "arch.json")
    print(f"arch.json:  {path}\nnext:       {retrain_hint(path, cfg)}")
    print(f"monitor:    {tensorboard_hint(cfg.run_dir)}")
    return 0


# below this mean commitment (a group's largest probability from uniform's 1/n, 0, to one-hot, 1) a
# search's distributions count as near uniform; make demo's searches end near 0.5
UNCOMMITTED = 0.1


def uncommitted(arch) -> str | None:
    """What to say of a search whose width distributions ended near uniform, or None: the mean over
    groups of more than one candidate of ``(p_max - 1/n) / (1 - 1/n)`` below :data:`UNCOMMITTED`
    (a ratio to uniform's ``1/n`` could not be met by groups of two candidates). An audit's 2-epoch
    ResNet-50 search ended at 0.135 against 0.125 uniform, and said only that its network was at
    97.7 % of the budget."""
    s, cands = arch.search or {}, arch.candidates or {}
    top, mean = s.get("max_prob"), s.get("mean_max_prob")
    groups = [g for g, c in cands.items() if len(c) > 1 and isinstance(top, dict) and g in top]
    if mean is None or not groups:
        return None
    commit = sum((top[g] - 1 / len(cands[g])) / (1 - 1 / len(cands[g])) for g in groups) / len(groups)
    if commit >= UNCOMMITTED:
        return None
    uniform = sum(1 / len(c) for c in cands.values()) / len(cands)
    return (f"the width distributions stayed near uniform (mean largest probability {mean:.3f}; {uniform:.3f} if "
            f"uniform): the widths are the repair pass's more than the search's; search longer (--epochs, or more "
            f"images per epoch)")
