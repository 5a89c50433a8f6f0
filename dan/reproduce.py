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
import shutil
import statistics
import subprocess
import sys
import time
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
    kind: str = "train"  # train | search | arch (a width baseline: tools/baseline.py)
    after: list = field(default_factory=list)  # run folders that must be finished first

    @property
    def done(self) -> bool:
        marker = "arch.json" if self.kind in ("search", "arch") else "summary.json"
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
        o = d("small-alone")
        runs.append(Run("small alone (a=4 net)", seed, "train.py",
                        base + ["--method", "standard", "--set", "methods.standard.network=small", "--out", o], o))
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


def run(runs: list[Run], log=print, jobs: int = 1) -> None:
    """Run every unfinished run, each after the runs it depends on; resume the ones a previous
    call left half-done. ``jobs > 1`` runs that many at once, each on one thread
    (``OMP_NUM_THREADS=1``: small CPU networks gain more from two processes than from two threads
    in one; latencies measured meanwhile share the machine)."""
    pending = [r for r in runs if not r.done]
    for r in runs:
        if r.done:
            log(f"[skip] {r.out} (finished)")
    env = dict(os.environ, OMP_NUM_THREADS="1") if jobs > 1 else None
    active: list = []  # (run, process, log file, start time)
    started = time.time()
    try:
        _run_loop(pending, active, env, jobs, log)
    finally:
        add_elapsed(runs, time.time() - started)


def elapsed_seconds(runs: list[Run]) -> float:
    """Wall time the suite runner has spent on these runs, summed over its invocations."""
    path = _elapsed_path(runs)
    if path and os.path.isfile(path):
        with open(path) as f:
            return float(json.load(f).get("seconds", 0.0))
    return 0.0


def add_elapsed(runs: list[Run], seconds: float) -> None:
    path = _elapsed_path(runs)
    if not path or not os.path.isdir(os.path.dirname(path)):
        return
    total = elapsed_seconds(runs) + seconds
    with open(path, "w") as f:
        json.dump({"seconds": total}, f)


def _elapsed_path(runs: list[Run]) -> str | None:
    if not runs:
        return None
    return os.path.join(os.path.commonpath([os.path.abspath(r.out) for r in runs]), "suite_elapsed.json")


def _run_loop(pending: list, active: list, env, jobs: int, log) -> None:
    failed = None
    while (pending and failed is None) or active:
        ready = [r for r in pending if all(os.path.isfile(os.path.join(a, "arch.json")) or
                                           os.path.isfile(os.path.join(a, "summary.json")) for a in r.after)]
        blocked = [r for r in pending if r not in ready]
        while failed is None and ready and len(active) < max(1, jobs):
            r = ready.pop(0)
            pending.remove(r)
            cmd = r.command()
            if os.path.isfile(os.path.join(r.out, "checkpoints", "last.pt")):
                cmd.append("--resume")
            elif os.path.isdir(r.out):
                # an attempt killed before its first checkpoint: nothing finished is in it (finished
                # runs were skipped), and the tools refuse a new run over its events and
                # metrics.jsonl, so the suite clears its own folder (as loop.start_managed does)
                log(f"[restart] {r.out} (killed before its first checkpoint)")
                shutil.rmtree(r.out)
            log(f"[run] {' '.join(cmd)}")
            os.makedirs(os.path.dirname(os.path.abspath(r.out)) or ".", exist_ok=True)
            f = open(r.out.rstrip("/") + ".log", "a")
            active.append((r, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env), f,
                           time.time()))
        if not active:
            if blocked and failed is None:
                raise UserError(f"{blocked[0].out} waits for {blocked[0].after}, which no run produces")
            break
        time.sleep(0.5)
        for item in list(active):
            r, p, f, t0 = item
            if p.poll() is None:
                continue
            active.remove(item)
            f.close()
            _add_seconds(r, time.time() - t0)
            if p.returncode != 0 and failed is None:
                failed = (r, p.returncode)
    if failed is not None:
        r, code = failed
        raise UserError(f"run failed (exit {code}): see {r.out}.log; fix it and run again (finished runs are kept)")


def _add_seconds(run: Run, seconds: float) -> None:
    """Add one invocation's wall time to the run's ``suite_time.json`` (all invocations summed)."""
    path = os.path.join(run.out, "suite_time.json")
    if not os.path.isdir(run.out):
        return
    total = run_seconds(run) if os.path.isfile(path) else 0.0
    with open(path, "w") as f:
        json.dump({"seconds": total + seconds}, f)


def run_seconds(run: Run) -> float | None:
    """Wall time of a finished run: what :func:`run` recorded, else (runs started before it
    recorded times) from the first TensorBoard event file's creation to the run's last file."""
    path = os.path.join(run.out, "suite_time.json")
    if os.path.isfile(path):
        with open(path) as f:
            return float(json.load(f)["seconds"])
    marker = os.path.join(run.out, "arch.json" if run.kind in ("search", "arch") else "summary.json")
    if not os.path.isfile(marker):
        return None
    starts = []
    for name in os.listdir(run.out):
        if name.startswith("events.out.tfevents."):
            try:
                starts.append(float(name.split(".")[3]))
            except (IndexError, ValueError):
                pass
    return os.path.getmtime(marker) - min(starts) if starts else None


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
    """Top-1 over seeds in percent: mean ± std (one value alone when one seed)."""
    return _mean_std(values, 100, 2)


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
                                       "lat64": [], "big_top1": [], "big_ce": [], "seconds": [], "runs": []})
        d = nets[deployed]
        row["top1"].append(d["top1"])
        row["flops"].append(d["flops"])
        row["params"].append(d["params"])
        row["nonzero"].append(d["nonzero_params"])
        row["lat1"].append(d["latency_ms"].get("1"))
        row["lat64"].append(d["latency_ms"].get("64"))
        if "big" in nets and method in ("adjoint", "standard", "dropout"):  # big networks trained here
            row["big_top1"].append(nets["big"]["top1"])
            row["big_ce"].append(nets["big"].get("ce"))
        row["seconds"].append(run_seconds(r))
        row["runs"].append(r.out)
    return table


def suite_settings(suite: str, seeds: int | None = None) -> str:
    """One paragraph that says what the suite's runs are: network, data, epochs, batch, seeds."""
    from dan.config import Config

    spec = SUITES[suite]
    cfg = Config.from_file(os.path.join(ROOT, spec["config"]))
    args = ", ".join(f"{k}={v}" for k, v in (cfg.model.args or {}).items())
    return (f"Settings (`{spec['config']}`): base network `{cfg.model.space}`({args}), dataset "
            f"`{cfg.data.dataset}` (full training split, evaluation on the test split), "
            f"{cfg.train.epochs} epochs per run, batch {cfg.data.batch_size}, {cfg.train.optimizer} "
            f"lr {cfg.train.lr} with cosine decay, {seeds or spec['seeds']} seeds (0, 1, 2, …) per method; "
            f"DAN searches for {cfg.train.epochs} epochs ({cfg.search.warmup_epochs:g} weight-only) at the FLOPs of the α = 4 "
            f"small network ({alpha4_flops(os.path.join(ROOT, spec['config'])):,} FLOPs), then retrains "
            f"for {cfg.train.epochs}.")


# The papers' claims the suite can test: (claim, source, A, field of A, B, field of B, margin).
# A claim is "A − B > −margin" in the field's better direction (top-1 higher, cross-entropy lower):
# margin 0 means "A beats B", margin 0.01 means "A is within one point of B".
CLAIMS = [
    ("The adjoint-trained small network beats the same network trained alone", "AN §1, §5.1",
     "adjoint a=4", "top1", "small alone (a=4 net)", "top1", 0.0),
    ("The adjoint-trained small network beats teacher–student distillation into it", "AN Table 1",
     "adjoint a=4", "top1", "kd (a=4 student)", "top1", 0.0),
    ("The adjoint small network (α = 4) loses less than one point against the standard big network",
     "AN abstract (\"without any significant drop\")", "adjoint a=4", "top1", "standard", "top1", 0.01),
    ("The big network trained adjointly (α = 4) beats standard training", "AN §5.2, Table 2",
     "adjoint a=4", "big_top1", "standard", "big_top1", 0.0),
    ("The big network trained adjointly (α = 8) beats standard training", "AN §5.2, Table 2",
     "adjoint a=8", "big_top1", "standard", "big_top1", 0.0),
    ("Adjoint training ends with a lower validation cross-entropy of the big network than standard",
     "AN §5.2, Fig. 3", "adjoint a=4", "big_ce", "standard", "big_ce", 0.0),
    ("The big network trained adjointly beats standard training with dropout", "AN §5.3, Table 3",
     "adjoint a=4", "big_top1", "dropout", "big_top1", 0.0),
    ("DAN's searched widths beat AN's uniform α = 4 widths at the same FLOPs", "DAN abstract",
     "dan (a=4 FLOPs)", "top1", "adjoint a=4", "top1", 0.0),
    ("ExpandNet training beats training the compact network alone", "ExpandNets",
     "expandnet (a=4 net)", "top1", "small alone (a=4 net)", "top1", 0.0),
    ("The adjoint small network beats the KSANC student (same network)", "AN vs KSANC",
     "adjoint a=4", "top1", "ksanc (a=4 student)", "top1", 0.0),
    ("Compression-aware (low-rank) training loses less than one point against standard", "Alvarez & Salzmann",
     "lowrank", "top1", "standard", "top1", 0.01, "smaller"),
]
# A claim marked "smaller" is about a compressed network: when A ended with at least B's
# parameters (nothing was compressed), the accuracy comparison says nothing about the claim, and
# the verdict says so instead of reporting a vacuous "supported".

NOTES_MARK = "<!-- notes: everything below this line is written by hand and kept when the page is regenerated -->"


def verdict(a: list, b: list, higher: bool, margin: float) -> tuple[float, float, str]:
    """Difference of means (in the better direction, plus the margin), its standard error over
    seeds, and the verdict: supported when the difference exceeds two standard errors, not
    supported when it is below minus two, else within seed noise."""
    a = [x for x in a if x is not None]
    b = [x for x in b if x is not None]
    if not a or not b:
        return math.nan, math.nan, "not run"
    d = (statistics.mean(a) - statistics.mean(b)) * (1 if higher else -1) + margin
    if len(a) < 2 or len(b) < 2:
        return d, math.nan, ("supported (one seed)" if d > 0 else "not supported (one seed)")
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    if d > 2 * se:
        return d, se, "**supported**"
    if d < -2 * se:
        return d, se, "**not supported**"
    return d, se, "within seed noise"


def claims_table(table: dict) -> list[str]:
    lines = ["| claim | source | A | B | A − B | verdict |", "|---|---|---|---|---|---|"]
    for text, source, ka, fa, kb, fb, margin, *flags in CLAIMS:
        ra, rb = table.get(ka, {}), table.get(kb, {})
        a, b = ra.get(fa, []), rb.get(fb, [])
        higher = fa != "big_ce"
        d, se, v = verdict(a, b, higher, margin)
        pa, pb = _median(ra.get("params", [])), _median(rb.get("params", []))
        if "smaller" in flags and not math.isnan(d) and not pa < pb:
            v = f"not tested: {ka} was not compressed ({pa:,.0f} vs {pb:,.0f} params)"
        fmt = _ms if higher else (lambda xs: _mean_std(xs, 1, 4))
        if math.isnan(d):
            diff = "-"
        elif higher:  # points of top-1
            diff = f"{100 * (d - margin):+.2f}" + ("" if math.isnan(se) else f" (se {100 * se:.2f})")
        else:  # cross-entropy, A − B as it is (negative is better)
            diff = f"{margin - d:+.4f}" + ("" if math.isnan(se) else f" (se {se:.4f})")
        lines.append(f"| {text} | {source} | {ka}: {fmt(a)} | {kb}: {fmt(b)} | {diff} | {v} |")
    return lines


def _median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else math.nan


def _mean_std(values, scale: float, digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{scale * values[0]:.{digits}f}"
    return f"{scale * statistics.mean(values):.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"


def write_results(runs: list[Run], md_path: str, fig_dir: str, header: str, settings: str = "") -> str:
    """Write the results page and the curves; returns the Markdown text. Hand-written text below
    :data:`NOTES_MARK` in an existing page is kept."""
    from dan.cost import format_count

    table = collect(runs)
    os.makedirs(fig_dir, exist_ok=True)
    lines = [header, ""]
    if settings:
        lines += [settings, ""]
    seconds = [t for row in table.values() for t in row["seconds"] if t is not None]
    searches = [run_seconds(r) for r in runs if r.kind == "search" and r.done]
    seconds += [t for t in searches if t is not None]
    if seconds:
        n_done = sum(r.done for r in runs)
        lines += [f"Wall time of the {n_done} finished runs (of {len(runs)}), summed: "
                  f"**{sum(seconds) / 3600:.2f} h** on this machine (each run's time as the suite "
                  f"recorded it, or from its first TensorBoard event to its summary).", ""]
    lines += ["## Deployable networks", "",
              "| method | top-1 (%) | FLOPs | params | nonzero params | CPU ms, batch 1 | CPU ms, batch 64 | min/run | seeds |",
              "|---|---|---|---|---|---|---|---|---|"]
    med = _median
    for key, row in table.items():
        lines.append(f"| {key} | {_ms(row['top1'])} | {format_count(med(row['flops']))} | "
                     f"{format_count(med(row['params']))} | {format_count(med(row['nonzero']))} | "
                     f"{med(row['lat1']):.2f} | {med(row['lat64']):.2f} | {med(row['seconds']) / 60:.1f} | "
                     f"{len(row['top1'])} |")
    lines += ["", "Top-1: mean ± standard deviation over seeds on the 10k test images; FLOPs and params by "
              "`dan.count`; latency: median over seeds of the measured CPU time of the saved network.",
              "", "## Big networks (regularization)", "",
              "| network | top-1 (%) | final validation CE | seeds |", "|---|---|---|---|"]
    for key, row in table.items():
        if row["big_top1"]:
            name = key if key in ("standard", "dropout") else f"big network of {key}"
            lines.append(f"| {name} | {_ms(row['big_top1'])} | {_mean_std(row['big_ce'], 1, 4)} | "
                         f"{len(row['big_top1'])} |")
    lines += ["", "## The papers' claims against these numbers", "",
              "Verdict rule: the difference of the means (A − B, in points of top-1, or in "
              "cross-entropy where lower is better) against two standard errors over seeds "
              "(`sqrt(var_A/n_A + var_B/n_B)`): above is **supported**, below minus two is "
              "**not supported**, between is within seed noise. \"Within one point\" claims add one "
              "point to the difference before the test. Computed by `dan/reproduce.py` from the "
              "table above, so it stays true when the suite is re-run.", ""]
    lines += claims_table(table)
    figs = plot_curves(runs, fig_dir)
    rel = os.path.relpath(fig_dir, os.path.dirname(os.path.abspath(md_path)))
    if figs:
        lines += ["", "## Validation cross-entropy of the big networks (paper Figs. 3–4)", ""]
        for name, title in figs:
            lines.append(f"![{title}]({rel}/{name})")
            lines.append("")
    return write_page(md_path, lines)


def write_page(md_path: str, lines: list) -> str:
    """Write a generated page; hand-written text below :data:`NOTES_MARK` in the old page is kept."""
    notes = ""
    if os.path.isfile(md_path):
        with open(md_path, encoding="utf-8") as f:
            old = f.read()
        if NOTES_MARK in old:
            notes = old[old.index(NOTES_MARK) + len(NOTES_MARK):]
    text = "\n".join(lines).rstrip() + "\n\n" + NOTES_MARK + (notes if notes else "\n")
    with open(md_path, "w", encoding="utf-8") as f:
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
