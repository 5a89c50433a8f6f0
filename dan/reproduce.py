"""The reproduction suite: every method of the papers on one dataset, several seeds, one table.

A suite is a list of runs (tool + arguments + run folder). :func:`plan` lists them; :func:`run`
executes the unfinished ones in order (a run is finished when its folder holds ``summary.json``,
a search when it holds ``arch.json``; an interrupted run is resumed), each as a subprocess of the
same tools a user types; :func:`write_results` turns the finished runs into ``docs/results.md``
(mean ± std over seeds) and validation cross-entropy curves (the paper's Figs. 3–4) as PNG files.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field

from dan.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Run:
    key: str  # method label in the table, e.g. "adjoint a=4"
    seed: int
    tool: str  # train.py | search.py | retrain.py
    args: list
    out: str
    kind: str = "train"  # train | search
    after: list = field(default_factory=list)  # run folders that must be finished first

    @property
    def done(self) -> bool:
        marker = "arch.json" if self.kind == "search" else "summary.json"
        return os.path.isfile(os.path.join(self.out, marker))

    def command(self) -> list:
        return [sys.executable, os.path.join(ROOT, "tools", self.tool), *self.args]


# Each suite: the config, its epochs, and the budget of the DAN run (the FLOPs of the α = 4 small
# network, measured by dan.count at plan time).
SUITES = {
    "fashion-mnist": {"config": "configs/fashion_mnist_suite.yaml", "seeds": 3},
    "cifar100": {"config": "configs/cifar100_resnet50.yaml", "seeds": 3},
    "imagenet": {"config": "configs/imagenet_resnet50.yaml", "seeds": 1},
}


def alpha4_flops(config_path: str) -> int:
    """FLOPs of the small network AN extracts at α = 4 from the config's base network."""
    import dan
    from dan.config import Config
    from dan.data import dataset_info
    from dan.models import build_model, input_shape

    cfg = Config.from_file(config_path)
    info = dataset_info(cfg.data)
    shape = input_shape(info)
    a = cfg.adjoint
    anet = dan.to_adjoint(build_model(cfg.model, info), alpha=4, stem=a.stem, unmasked=tuple(a.unmasked),
                          input_shape=shape)
    return dan.count(dan.extract_small(anet), shape).flops


def plan(suite: str, out: str, seeds: int | None = None, extra: list | None = None) -> list[Run]:
    """The runs of a suite, in an order that respects dependencies (teachers first)."""
    if suite not in SUITES:
        raise UserError(f"unknown suite '{suite}': choose one of {', '.join(SUITES)}")
    spec = SUITES[suite]
    config = os.path.join(ROOT, spec["config"])
    out = os.path.abspath(out)  # runs start in the repository root, teachers are found by path
    n = seeds or spec["seeds"]
    extra = list(extra or [])
    budget = alpha4_flops(config)
    runs: list[Run] = []
    for seed in range(n):
        base = ["--config", config, "--seed", str(seed), "--quiet", *extra]
        d = lambda name: os.path.join(out, f"{name}-s{seed}")
        std = d("standard")
        runs.append(Run("standard", seed, "train.py", base + ["--method", "standard", "--out", std], std))
        runs.append(Run("dropout", seed, "train.py", base + ["--method", "dropout", "--out", d("dropout")], d("dropout")))
        for alpha in (2, 4, 8):
            o = d(f"adjoint-a{alpha}")
            runs.append(Run(f"adjoint a={alpha}", seed, "train.py",
                            base + ["--method", "adjoint", "--alpha", str(alpha), "--out", o], o))
        o = d("adjoint-a4-b0.5")
        runs.append(Run("adjoint a=4 b=0.5", seed, "train.py",
                        base + ["--method", "adjoint", "--alpha", "4", "--beta", "0.5", "--out", o], o))
        o = d("kd")
        runs.append(Run("kd (a=4 student)", seed, "train.py",
                        base + ["--method", "kd", "--set", f"methods.kd.teacher={std}", "--out", o], o, after=[std]))
        s = d("dan-search")
        runs.append(Run("dan search", seed, "search.py", base + ["--budget-flops", str(budget), "--out", s], s,
                        kind="search"))
        r = d("dan")
        runs.append(Run("dan (a=4 FLOPs)", seed, "retrain.py",
                        [os.path.join(s, "arch.json"), "--seed", str(seed), "--quiet", *extra, "--out", r], r,
                        after=[s]))
        o = d("expandnet")
        runs.append(Run("expandnet (a=4 net)", seed, "train.py", base + ["--method", "expandnet", "--out", o], o))
        o = d("lowrank")
        runs.append(Run("lowrank", seed, "train.py", base + ["--method", "lowrank", "--out", o], o))
        o = d("ksanc")
        runs.append(Run("ksanc (a=4 student)", seed, "train.py",
                        base + ["--method", "ksanc", "--set", f"methods.ksanc.teacher={std}", "--out", o], o,
                        after=[std]))
    return runs


def run(runs: list[Run], log=print) -> None:
    """Run every unfinished run in order; resume the ones a previous call left half-done."""
    for r in runs:
        if r.done:
            log(f"[skip] {r.out} (finished)")
            continue
        cmd = r.command()
        started = os.path.isfile(os.path.join(r.out, "checkpoints", "last.pt"))
        if started:
            cmd.append("--resume")
        log(f"[run] {' '.join(cmd)}")
        os.makedirs(os.path.dirname(os.path.abspath(r.out)) or ".", exist_ok=True)
        with open(r.out.rstrip("/") + ".log", "a") as f:
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        if p.returncode != 0:
            raise UserError(f"run failed (exit {p.returncode}): see {r.out}.log; fix it and run again "
                            f"(finished runs are kept)")


# ------------------------------------------------------------------------------------ results
def _summary(run: Run) -> dict | None:
    path = os.path.join(run.out, "summary.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _curve(run: Run, key: str) -> list:
    path = os.path.join(run.out, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line).get(key) for line in f]


def _ms(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def collect(runs: list[Run]) -> dict:
    """Per method label: lists over seeds of the deployable's and the big network's numbers."""
    table: dict = {}
    for r in runs:
        if r.kind == "search":
            continue
        s = _summary(r)
        if s is None:
            continue
        nets = s["networks"]
        method = s["method"]
        deployed = {"standard": "big", "dropout": "big", "lowrank": "lowrank"}.get(method, "small")
        if deployed not in nets:
            deployed = next(iter(nets))
        row = table.setdefault(r.key, {"top1": [], "flops": [], "params": [], "nonzero": [], "lat1": [],
                                       "lat64": [], "big_top1": [], "runs": []})
        d = nets[deployed]
        row["top1"].append(d["top1"])
        row["flops"].append(d["flops"])
        row["params"].append(d["params"])
        row["nonzero"].append(d["nonzero_params"])
        row["lat1"].append(d["latency_ms"].get("1"))
        row["lat64"].append(d["latency_ms"].get("64"))
        if "big" in nets and deployed != "big" and method in ("adjoint",):
            row["big_top1"].append(nets["big"]["top1"])
        row["runs"].append(r.out)
    return table


def write_results(runs: list[Run], md_path: str, fig_dir: str, header: str) -> str:
    """Write the results page and the curves; returns the Markdown text."""
    from dan.cost import format_count

    table = collect(runs)
    os.makedirs(fig_dir, exist_ok=True)
    lines = [header, "", "## Deployable networks", "",
             "| method | top-1 (%) | FLOPs | params | nonzero params | CPU ms, batch 1 | CPU ms, batch 64 | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    med = lambda xs: statistics.median([x for x in xs if x is not None]) if any(x is not None for x in xs) else math.nan
    for key, row in table.items():
        lines.append(f"| {key} | {_ms(row['top1'])} | {format_count(med(row['flops']))} | "
                     f"{format_count(med(row['params']))} | {format_count(med(row['nonzero']))} | "
                     f"{med(row['lat1']):.2f} | {med(row['lat64']):.2f} | {len(row['top1'])} |")
    lines += ["", "## Big networks (regularization)", "",
              "| network | top-1 (%) | seeds |", "|---|---|---|"]
    for key in ("standard", "dropout"):
        if key in table:
            lines.append(f"| {key} | {_ms(table[key]['top1'])} | {len(table[key]['top1'])} |")
    for key, row in table.items():
        if row["big_top1"]:
            lines.append(f"| big network of {key} | {_ms(row['big_top1'])} | {len(row['big_top1'])} |")
    figs = plot_curves(runs, fig_dir)
    rel = os.path.relpath(fig_dir, os.path.dirname(os.path.abspath(md_path)))
    if figs:
        lines += ["", "## Validation cross-entropy of the big networks (paper Figs. 3–4)", ""]
        for name, title in figs:
            lines.append(f"![{title}]({rel}/{name})")
            lines.append("")
    text = "\n".join(lines) + "\n"
    with open(md_path, "w") as f:
        f.write(text)
    return text


def plot_curves(runs: list[Run], fig_dir: str) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("ce_adjoint_vs_standard.png", "adjoint-full vs standard",
               [("standard", "val/ce_big"), ("adjoint a=4", "val/ce_big"), ("adjoint a=8", "val/ce_big")]),
              ("ce_adjoint_vs_dropout.png", "adjoint-full vs standard + dropout",
               [("dropout", "val/ce_big"), ("adjoint a=4", "val/ce_big"), ("adjoint a=8", "val/ce_big")])]
    made = []
    for fname, title, series in groups:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        drawn = False
        for key, metric in series:
            curves = [c for c in (_curve(r, metric) for r in runs if r.key == key) if c and None not in c]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            mean = [statistics.mean(c[i] for c in curves) for i in range(n)]
            ax.plot(range(1, n + 1), mean, marker="o", label=f"{key} (mean of {len(curves)})")
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation cross-entropy, big network")
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(fig_dir, fname), dpi=110)
        plt.close(fig)
        made.append((fname, title))
    return made
