"""A latency-budget search against a FLOPs-budget search whose network has the same measured latency.

Usage:
    python tools/latency_compare.py                         # 3 seeds, the demo network -> docs/latency.md
    python tools/latency_compare.py --seeds 0 --search-epochs 2 --retrain-epochs 1 --out /tmp/lc --page /tmp/l.md
    python tools/latency_compare.py --latency-runtime onnxruntime --out runs/latency-compare-ort --page /tmp/o.md

Per seed: (1) `tools/search.py --budget-latency B`; (2) `tools/search.py --budget-flops F` with F the
FLOPs of (1)'s network; its network and (1)'s are timed together, and if the FLOPs search's network is
more than --match off in latency, F is moved once along the latency model's elasticity (d log ms /
d log FLOPs of uniform-width networks near F) and (2) runs again; (3) both networks are retrained
with `tools/retrain.py` (same epochs and seed). At the end every final network is timed together,
and the comparison is written to docs/latency_search.json and into docs/latency.md (beside the
predictor of tools/latency.py). The latency budget and every timing are in the runtime of
--latency-runtime (default: the config's search.latency_runtime, else eager PyTorch); the FLOPs
search takes none of the config's latency settings (a search without a latency budget refuses
them). Resumable: a finished step (its arch.json or summary.json) is kept.
About 10 minutes per seed on 2 CPU cores with the defaults; run it on an otherwise idle machine
(latencies are measured).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

from dan.cli.common import Parser
from dan.errors import UserError

PROG = "latency_compare.py"  # the tool's name in usage and error lines (tools/latency_compare.py)
# what Ctrl-C leaves and how to go on (dan.cli.common.interrupted_line)
INTERRUPTED = "interrupted: finished steps are kept: run the same command to continue"


def _run(command: str, *args: str) -> None:
    """Run ``python -m dan <command> args`` in a subprocess (its own process: a search's threads
    and memory end with it)."""
    proc = subprocess.run([sys.executable, "-m", "dan", command, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit status {proc.returncode}"
        # the command's own line starts "error: ", and run_tool puts one before this one: said once
        # (an audit read "... failed: error: search.latency_runtime ...")
        raise UserError(f"dan {command} {' '.join(args)} failed: {last.removeprefix('error: ')}")


def _clear(out: str, root: str) -> None:
    """Remove the unfinished run folder ``out`` (inside ``--out``'s ``root``): not through a link."""
    import shutil

    from dan.checkpoint import check_no_links

    check_no_links(out, root)
    shutil.rmtree(out)


def _search(out: str, cfg: str, budget: list, seed: int, epochs: int, subset: int, root: str) -> str:
    path = os.path.join(out, "arch.json")
    if not os.path.isfile(path):
        if os.path.isdir(out):  # an unfinished search: start it again
            _clear(out, root)
        _run("search", "--config", cfg, *budget, "--seed", str(seed), "--epochs", str(epochs),
             "--set", f"data.train_subset={subset}", "--out", out, "--quiet", "--no-tensorboard")
    return path


# the search settings that measure a latency budget, with their defaults (dan.config.SearchConfig)
LATENCY_KEYS = {"budget_latency": None, "latency_batch": 1, "latency_runtime": "torch", "latency_threads": 1}


def _budget_args(config: str, budget: str, runtime: str | None) -> tuple[list, list, str]:
    """The latency search's budget flags, the FLOPs search's extra flags (without its budget) and
    the runtime of the comparison. The FLOPs search sets the config's latency settings back to
    their defaults: a search without a latency budget refuses them (an audit: a config with
    ``search.latency_runtime: onnxruntime`` stopped the comparison at its first FLOPs search)."""
    from dan.config import Config

    s = Config.from_file(config).search
    lat = ["--budget-latency", budget] + (["--latency-runtime", runtime] if runtime else [])
    flops = []
    for key, default in LATENCY_KEYS.items():
        if getattr(s, key) != default:
            flops += ["--set", f"search.{key}={'null' if default is None else default}"]
    return lat, flops, runtime or s.latency_runtime


def _retrain(arch: str, out: str, seed: int, epochs: int, root: str) -> float:
    path = os.path.join(out, "summary.json")
    if not os.path.isfile(path):
        if os.path.isdir(out):
            _clear(out, root)
        _run("retrain", arch, "--seed", str(seed), "--epochs", str(epochs), "--out", out, "--quiet",
             "--no-tensorboard")
    with open(path) as f:
        return json.load(f)["networks"]["small"]["top1"]


def _elasticity(arch, threads: int, batch: int, runtime: str) -> float:
    """d log(predicted ms) / d log(FLOPs) over uniform-width networks around ``arch``'s FLOPs."""
    from dan import latency

    sn = latency.arch_supernet(arch)  # from what the arch.json records, as latency.py --arch does
    model = latency.build(sn, batch=batch, threads=threads, runtime=runtime, progress=False)
    pts = []
    for k in range(min(len(c) for c in sn.cands)):
        choice = [min(k, len(c) - 1) for c in sn.cands]
        pts.append((math.log(sn.cost_of(choice)[0]), math.log(model.predict(sn.widths_of(choice)))))
    target = math.log(arch.small["flops"])
    pts.sort(key=lambda p: abs(p[0] - target))
    (x0, y0), (x1, y1) = pts[0], pts[1]
    return max(0.05, (y1 - y0) / (x1 - x0)) if x1 != x0 else 1.0


def get_args_parser(prog: str = PROG):
    p = Parser(prog=prog, description=__doc__)
    p.add_argument("--config", default=os.path.join("configs", "fashion_mnist_resnet18.yaml"))
    p.add_argument("--budget", default="50%", help="latency budget (default 50%% of the widest small network)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--search-epochs", type=int, default=2)
    p.add_argument("--retrain-epochs", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=30000, help="training images of each search")
    p.add_argument("--match", type=float, default=0.03, help="latency match tolerance of the FLOPs search")
    p.add_argument("--latency-runtime", choices=["torch", "onnxruntime"],
                   help="runtime of the latency budget and of every timing: torch (eager) or onnxruntime "
                        "(default: the config's search.latency_runtime, else torch)")
    p.add_argument("--out", default=os.path.join("runs", "latency-compare"))
    p.add_argument("--page", default=os.path.join("docs", "latency.md"))
    return p


def main(argv, prog: str = PROG) -> int:
    args = get_args_parser(prog).parse_args(argv)
    if args.search_epochs < 2:  # the first epoch is the searches' weight-only warm-up
        raise UserError(f"--search-epochs must be >= 2 (a search's first epoch trains weights only), got "
                        f"{args.search_epochs}")
    if min(args.retrain_epochs, args.train_subset) < 1 or not 0 < args.match < 0.5:
        raise UserError("--retrain-epochs and --train-subset must be >= 1, --match in (0, 0.5)")
    if min(args.seeds) < 0:  # else the first search refuses it, quoted inside a long "failed:" line
        raise UserError(f"--seeds must be >= 0, got {min(args.seeds)}")
    from dan.arch import load_arch
    from dan.latency import measure_archs, write_docs

    lat_args, flops_args, runtime = _budget_args(args.config, args.budget, args.latency_runtime)
    start = time.perf_counter()
    rows, finals = [], []
    for seed in args.seeds:
        base = os.path.join(args.out, f"seed{seed}")
        lat_path = _search(os.path.join(base, "latency", "search"), args.config, lat_args,
                           seed, args.search_epochs, args.train_subset, args.out)
        lat = load_arch(lat_path)
        dev = lat.latency["device"]
        if dev["runtime"] != runtime:  # a kept search of another runtime: its timings are not this comparison's
            raise UserError(f"{lat_path} was searched with latencies in {dev['runtime']}, this comparison's are in "
                            f"{runtime}: give another --out, or --latency-runtime {dev['runtime']}")
        budget = lat.small["flops"]
        fl_path = _search(os.path.join(base, "flops0", "search"), args.config,
                          ["--budget-flops", str(budget), *flops_args], seed, args.search_epochs, args.train_subset,
                          args.out)
        ms_lat, ms_fl = measure_archs([lat, load_arch(fl_path)], batch=dev["batch"], threads=dev["threads"],
                                      runtime=dev["runtime"])
        print(f"seed {seed}: latency search {ms_lat:.3f} ms at {budget / 1e6:.2f}M FLOPs; FLOPs search at that "
              f"budget {ms_fl:.3f} ms", flush=True)
        if abs(ms_fl / ms_lat - 1) > args.match:
            e = _elasticity(lat, dev["threads"], dev["batch"], dev["runtime"])
            budget = int(budget * (ms_lat / ms_fl) ** (1 / e))
            fl_path = _search(os.path.join(base, "flops1", "search"), args.config,
                              ["--budget-flops", str(budget), *flops_args], seed, args.search_epochs,
                              args.train_subset, args.out)
            print(f"seed {seed}: FLOPs budget moved to {budget / 1e6:.2f}M (elasticity {e:.2f})", flush=True)
        top_lat = _retrain(lat_path, os.path.join(base, "latency", "retrain"), seed, args.retrain_epochs, args.out)
        top_fl = _retrain(fl_path, os.path.join(base, "flops", "retrain"), seed, args.retrain_epochs, args.out)
        print(f"seed {seed}: top-1 latency search {100 * top_lat:.2f}, FLOPs search {100 * top_fl:.2f}", flush=True)
        rows.append({"seed": seed, "lat_flops": lat.small["flops"], "lat_top1": top_lat, "flops_budget": budget,
                     "flops_flops": load_arch(fl_path).small["flops"], "flops_top1": top_fl,
                     "lat_arch": lat_path, "flops_arch": fl_path})
        finals += [lat_path, fl_path]
    # every final network timed together: one phase, one machine state
    ms = measure_archs([load_arch(f) for f in finals], batch=dev["batch"], threads=dev["threads"],
                       runtime=dev["runtime"])
    for k, r in enumerate(rows):
        r["lat_ms"], r["flops_ms"] = ms[2 * k], ms[2 * k + 1]
    compare = {"settings": {"config": args.config, "budget": args.budget, "batch": dev["batch"],
                            "threads": dev["threads"], "runtime": dev["runtime"], "search_epochs": args.search_epochs,
                            "retrain_epochs": args.retrain_epochs, "train_subset": args.train_subset,
                            "match": args.match},
               "seconds": time.perf_counter() - start, "rows": rows}
    stem = os.path.splitext(args.page)[0]
    with open(stem + "_search.json", "w") as f:
        json.dump(compare, f, indent=1)
        f.write("\n")
    if os.path.isfile(stem + ".json"):
        write_docs(args.page)
        print(f"wrote {args.page}")
    else:
        print(f"wrote {stem}_search.json (run tools/latency.py to write the page with the predictor)")
    return 0
