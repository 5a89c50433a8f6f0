"""Width baselines at a search's budget -> arch.json (retrain it like a search's).

Usage:
    python tools/baseline.py uniform --config configs/fashion_mnist_suite.yaml --budget-flops 10% --out runs/u10
    python tools/baseline.py random  --config configs/fashion_mnist_suite.yaml --budget-flops 10% --seed 1 --out runs/r10
    python tools/baseline.py fixed   --config configs/fashion_mnist_suite.yaml --budget-flops 25% --widths w.json --out runs/f25
    python tools/baseline.py greedy  --supernet runs/<search>/checkpoints/last.pt --out runs/g10
    python tools/baseline.py refine  --supernet runs/<search>/checkpoints/last.pt --out runs/f10
    python tools/baseline.py shortlist --supernet runs/<search>/checkpoints/last.pt --out runs/s10
    python tools/retrain.py runs/u10/arch.json

uniform: one width fraction for every group, cost closest to the budget. random: every group
draws a candidate width uniformly, redrawn until the cost is inside the band (seeded by --seed).
fixed: the widths in --widths (a JSON object of group -> channels, or an arch.json, e.g. one whose
run folder is gone), checked against the network and the budget's band.
greedy: AutoSlim-style slimming of the trained supernet of a DAN search, narrowing the group
whose narrowing costs the least held-out cross-entropy per FLOP saved (the search's budget unless
--budget-* is given); far above the budget its moves are coarser (--coarse-above, --coarse-step).
refine: not a baseline but DAN's own last step (search.refine_rounds, dan/refine.py) for a search
that ran without it: the search's answer refined by held-out swaps at equal cost, its budget kept.
shortlist: DAN's answer and draws from its final distributions, each fine-tuned from the supernet
for --steps batches and scored on the held-out split; the best is kept (dan/shortlist.py).
Writes <out>/arch.json and <out>/config.yaml; refuses a folder that already holds an arch.json, a
config.yaml or a run.
"""

from __future__ import annotations

import os

from dan.cli.common import common_parser, positive_int, resolve_config, retrain_hint
from dan.errors import UserError

PROG = "baseline.py"  # the tool's name in usage and error lines (tools/baseline.py)
# what Ctrl-C leaves and how to go on (dan.cli.common.interrupted_line): arch.json is written at the end
INTERRUPTED = ("interrupted: nothing was written; run the same command again (a shortlist reuses the "
               "fine-tunes it finished)")


def get_args_parser(prog: str = PROG):
    p = common_parser(prog, __doc__, out_help="the folder that receives arch.json and config.yaml (required)",
                      name_help=None)
    from dan.pick_widths import METHODS

    p.add_argument("method", choices=METHODS)
    g = p.add_argument_group("baseline")
    b = g.add_mutually_exclusive_group()
    b.add_argument("--budget-flops", help="FLOPs (MACs) budget of the small network: 1.6G, 500M or 25%%")
    b.add_argument("--budget-params", help="parameter budget of the small network: 1.8M or 40%%")
    g.add_argument("--widths", help="fixed: a JSON file of group name -> channels, or an arch.json (its widths)")
    g.add_argument("--supernet", help="greedy, refine, shortlist: checkpoints/last.pt of the DAN search they pick "
                                      "from; uniform, random, fixed: the one their retrain starts from, as a DAN "
                                      "search's retrain does (without it they retrain from scratch)")
    g.add_argument("--recal-batches", type=positive_int,
                   help="greedy, refine: training batches that re-estimate BatchNorm statistics per trial "
                        "(default 4; refine: search.refine_recal_batches' default)")
    g.add_argument("--eval-batches", type=positive_int,
                   help="greedy, refine: held-out batches that score each trial (default 8; refine: "
                        "search.refine_batches' default)")
    g.add_argument("--rounds", type=positive_int, default=8, help="refine: at most this many rounds of swaps")
    g.add_argument("--candidates", type=positive_int, default=6,
                   help="shortlist: widths fine-tuned (the search's answer and draws from its distributions)")
    g.add_argument("--steps", type=positive_int, default=150,
                   help="shortlist: batches each candidate is fine-tuned for and scored on (held-out split)")
    g.add_argument("--coarse-above", type=float, default=1.5,
                   help="greedy: while the cost is above this many times the budget, moves are coarse")
    g.add_argument("--coarse-step", type=positive_int, default=2,
                   help="greedy: candidates a coarse move narrows a group by, scored on half the "
                        "held-out batches (1: every move one candidate, the first design)")
    return p


def _refuse_a_run_folder(out: str) -> None:
    """A baseline writes arch.json and config.yaml into ``out``: a folder that holds a run (a
    training's summary, checkpoints or metrics) or a config.yaml (a run's, or the user's own) would
    lose that config.yaml, so it is refused before anything is computed. A folder with neither (new,
    empty, or one the suite runner restores an arch.json into) is fine, and so is a shortlist's own
    unfinished work (``shortlist/`` beside its config.yaml: the fine-tunes it finished are reused).
    tools/fuzz.py found this: a valid widths file with --out naming a finished training's folder
    overwrote its config.yaml."""
    from dan.loop import check_not_a_file, held_run

    check_not_a_file(out)
    shortlist_own = os.path.isdir(os.path.join(out, "shortlist"))
    if not shortlist_own and os.path.isfile(os.path.join(out, "config.yaml")):
        held = "config.yaml"  # named first: it is the file this tool would overwrite
    else:
        held = held_run(out)
    if held:
        raise UserError(f"{out} already holds a run ({held}): choose another --out (nothing was overwritten)")


def main(argv, prog: str = PROG) -> int:
    args = get_args_parser(prog).parse_args(argv)
    cfg = resolve_config(args, {"budget_flops": "search.budget_flops", "budget_params": "search.budget_params"})
    if not args.out:
        raise UserError("give --out DIR: the folder that receives arch.json")
    if args.method in ("refine", "shortlist") and (args.budget_flops or args.budget_params):  # was ignored
        raise UserError(f"{args.method} moves the search's own widths within its budget: drop --budget-flops/"
                        f"--budget-params (greedy slims a supernet to a budget you give)")
    path = os.path.join(args.out, "arch.json")
    if os.path.exists(path):
        raise UserError(f"{path} exists: choose another --out or delete it")
    _refuse_a_run_folder(args.out)
    from dan.cost import format_count
    from dan.pick_widths import baseline_arch

    from dan.config import SearchConfig

    widths = _read_widths(args.widths) if args.method == "fixed" else None
    refine = args.method == "refine"
    recal = args.recal_batches or (SearchConfig.refine_recal_batches if refine else 4)
    batches = args.eval_batches or (SearchConfig.refine_batches if refine else 8)
    arch = baseline_arch(cfg, args.method, supernet=args.supernet, recal_batches=recal, eval_batches=batches,
                         coarse_above=args.coarse_above, coarse_step=args.coarse_step, rounds=args.rounds,
                         candidates=args.candidates, steps=args.steps, out=args.out, widths=widths,
                         log=None if args.quiet else print)
    os.makedirs(args.out, exist_ok=True)
    from dan.checkpoint import atomic_write
    from dan.config import Config

    atomic_write(Config.from_dict(arch.config).save, os.path.join(args.out, "config.yaml"))  # greedy: the search's
    arch.save(path)
    b = arch.budget
    kind = "flops" if "flops" in b else "params" if "params" in b else None
    share = f" ({100 * arch.small[kind] / b[kind]:.1f}% of the {kind} budget)" if kind else \
        f" (predicted {arch.search['over_budget_after']:.3f} of the latency budget)"
    print(f"{args.method} widths: {format_count(arch.small['flops'])} FLOPs, {format_count(arch.small['params'])} "
          f"params{share}")
    print(f"arch.json:  {path}\nnext:       {retrain_hint(path, Config.from_dict(arch.config))}")
    return 0


def _read_widths(path: str | None) -> dict:
    """``--widths``: a JSON object of group -> channels, or a file with one under "widths" (arch.json)."""
    from dan.arch import read_json

    if not path:
        raise UserError("fixed needs --widths FILE: a JSON object of group name -> channels, or an arch.json")
    data = read_json(path, "give a JSON object of group name -> channels, or an arch.json")
    if isinstance(data, dict) and isinstance(data.get("widths"), dict):
        data = data["widths"]
    return data
