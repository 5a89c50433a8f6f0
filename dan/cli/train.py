"""Train a network with one of the engine's methods and extract the deployable network.

Usage:
    python tools/train.py --config configs/fashion_mnist_resnet18.yaml --method adjoint --alpha 4
    python tools/train.py --config configs/fashion_mnist_resnet18.yaml --method standard --epochs 5
    python tools/train.py --dataset synthetic --epochs 1 --limit-batches 5 --out runs/smoke
    python tools/train.py --config ... --out runs/x --resume      # continue an interrupted run
    python tools/train.py --config ... --dry-run                  # check the command, print its plan, run nothing

Writes runs/<name>/: config.yaml, TensorBoard events, metrics.jsonl, checkpoints/{last,best}.pt,
small.pt (TorchScript; model.* when the method deploys the base network itself), small.pt2
(torch.export), small.onnx (with onnx and onnxruntime installed), small_state.pt, small.json,
summary.json; prints a summary
table (top-1, FLOPs, params, latency of the big and the deployable network).
"""

from __future__ import annotations


from dan.cli.common import common_parser, number, print_plan, print_run_end, resolve_config, run_monitored

PROG = "train.py"  # the tool's name in usage and error lines (tools/train.py)


def get_args_parser(prog: str = PROG):
    from dan.loss import SCHEDULES
    from dan.methods import list_methods

    p = common_parser(prog, __doc__, dry_run=True)
    g = p.add_argument_group("training")
    g.add_argument("--method", choices=list_methods(), help="training method (default: the config's)")
    g.add_argument("--alpha", type=number(1.0),
                   help="the small network keeps 1/alpha of each width (adjoint, and the student of kd, ksanc, "
                        "expandnet, standard network=small)")
    g.add_argument("--beta", type=number(0.0, 1.0, hi_open=True),
                   help="adjoint: fraction of the small network's weights r_beta zeros (the other methods' "
                        "students are dense)")
    g.add_argument("--schedule", choices=SCHEDULES, help="adjoint: lambda(t) schedule")
    g.add_argument("--lam-scale", type=number(0.0), help="adjoint: scale c of lambda(t)")
    g.add_argument("--lr", type=number(0.0), help="peak learning rate")
    g.add_argument("--optimizer", choices=["adam", "adamw", "sgd"])
    g.add_argument("--weight-decay", type=number(0.0))
    return p


EXTRA = {"method": "train.method", "alpha": "adjoint.alpha", "beta": "adjoint.beta",
         "schedule": "adjoint.schedule", "lam_scale": "adjoint.c", "lr": "train.lr",
         "optimizer": "train.optimizer", "weight_decay": "train.weight_decay"}


def main(argv, prog: str = PROG) -> int:
    args = get_args_parser(prog).parse_args(argv)
    cfg = resolve_config(args, EXTRA, tool=PROG)
    if args.dry_run:
        from dan.dry_run import plan_train

        return print_plan(cfg, args, plan_train)
    from dan.engine import format_summary, train

    summary = run_monitored(cfg, args, train)
    if summary is None:
        return 0
    print(format_summary(summary))
    print_run_end(cfg, summary)
    return 0
