"""Which models the adjoint conversion handles: the torchvision zoo and a fixed timm list.

Usage:
    python tools/coverage.py                          # torchvision + timm (if installed) -> docs/coverage.md
    python tools/coverage.py --source torchvision     # one zoo
    python tools/coverage.py --model densenet121 --model mobilenet_v2 --out /tmp/c.md

Each model: convert (alpha 4) -> one adjoint training step -> extract -> the extracted network
equals the small path (eval, relative error <= 1e-4) -> FLOPs and params counted (dan/coverage.py).
Prints one line per model; writes the page (default docs/coverage.md) and a JSON of the rows
next to it. The whole torchvision zoo takes tens of minutes on 2 CPU cores (its largest RegNets
and ViTs dominate).
"""

from __future__ import annotations

import json
import os
import time

from dan.cli.common import Parser
from dan.errors import UserError

PROG = "coverage.py"  # the tool's name in usage and error lines (tools/coverage.py)
# what Ctrl-C leaves and how to go on (dan.cli.common.interrupted_line)
INTERRUPTED = "interrupted: nothing to continue; run the command again"


def get_args_parser(prog: str = PROG):
    p = Parser(prog=prog, description=__doc__)
    p.add_argument("--source", action="append", choices=["torchvision", "timm"],
                   help="zoo to run (default: both; timm only when installed)")
    p.add_argument("--model", action="append", help="run only this model (repeatable)")
    p.add_argument("--out", default=os.path.join("docs", "coverage.md"), help="page to write")
    return p


def main(argv, prog: str = PROG) -> int:
    args = get_args_parser(prog).parse_args(argv)
    from dan import coverage

    sources = args.source or ["torchvision", "timm"]
    rows, notes = [], []
    start = time.perf_counter()
    if "torchvision" in sources:
        rows += coverage.run_zoo(coverage.torchvision_models(), "torchvision", log=print,
                                 only=set(args.model or []))
    if "timm" in sources:
        try:
            import timm
        except ImportError:
            if args.source:
                raise UserError("timm is not installed: pip install 'dan[timm]' (or leave out --source timm)")
            notes.append("timm is not installed here (`pip install 'dan[timm]'`): its list was not run.")
            print("timm is not installed: pip install 'dan[timm]' to run its models too")
        else:
            notes.append(f"timm {timm.__version__}.")
            rows += coverage.run_zoo(coverage.timm_models(), "timm", log=print, only=set(args.model or []))
    if not rows:
        raise UserError("no model matched --model: give torchvision.models.list_models() or timm names")
    import torch
    import torchvision

    wall = time.perf_counter() - start
    header = (f"torch {torch.__version__}, torchvision {torchvision.__version__}; {' '.join(notes)} "
              f"Wall time of this run: {wall / 60:.1f} min on this machine.")
    page = coverage.markdown(rows, header=header)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    from dan.report import write_page

    write_page(args.out, page.splitlines())  # hand-written notes below the marker are kept
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump([r.to_dict() for r in rows], f, indent=1)
        f.write("\n")
    for line in page.splitlines():
        if line.startswith("- **"):
            print(line[2:].replace("**", ""))
    print(f"written: {args.out}")
    return 1 if any(r.status in ("wrong", "crash") for r in rows) else 0
