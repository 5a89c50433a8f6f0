"""The reproduction suite's results page: :func:`write_results` turns the finished runs into
``docs/results.md`` (mean ± std over seeds, the papers' claims against the numbers) and
validation cross-entropy curves (the paper's Figs. 3–4) as PNG files.
"""

from __future__ import annotations

import math
import os
import statistics

from dan.errors import UserError
from dan.methods import get_method
from dan.report import counted, mean_std, median, verdict, write_page
from dan.suite.files import network, read_curve, read_summary
from dan.suite.plan import ROOT, SUITES, Run, alpha4_flops, suite_config
from dan.suite.run import run_seconds


def _ms(values) -> str:
    """Top-1 over seeds in percent: mean ± std (one value alone when one seed)."""
    return mean_std(values, 100, 2)


def _deployed(method: str, nets: dict) -> str:
    """The network a run deployed: its method's :attr:`~dan.methods.Method.deployed`, else (a
    method that deploys another network in some settings, e.g. ``standard`` with
    ``methods.standard.network=small`` holds only ``small``) the run's first network."""
    try:
        deployed = get_method(method).deployed
    except UserError:  # a method this version does not know
        deployed = "small"
    return deployed if deployed in nets else next(iter(nets))


def collect(runs: list[Run]) -> dict:
    """Per method label: lists over seeds of the deployable's and the big network's numbers."""
    table: dict = {}
    for r in runs:
        if r.kind == "search":
            continue
        s = read_summary(r.out)  # (a truncated or hand-edited file is one line naming it: dan.suite.files)
        if s is None:
            continue
        nets = s["networks"]
        method = s.get("method", "")
        row = table.setdefault(r.key, {"top1": [], "flops": [], "params": [], "nonzero": [], "lat1": [],
                                       "lat64": [], "big_top1": [], "big_ce": [], "seconds": [], "runs": []})
        d = network(s, r.out, _deployed(method, nets), ("top1", "flops", "params", "nonzero_params"), latency=True)
        row["top1"].append(d["top1"])
        row["flops"].append(d["flops"])
        row["params"].append(d["params"])
        row["nonzero"].append(d["nonzero_params"])
        row["lat1"].append(d["latency_ms"].get("1"))
        row["lat64"].append(d["latency_ms"].get("64"))
        if "big" in nets and method in ("adjoint", "standard", "dropout"):  # big networks trained here
            big = network(s, r.out, "big", ("top1",), optional=("ce",))
            row["big_top1"].append(big["top1"])
            row["big_ce"].append(big.get("ce"))
        row["seconds"].append(run_seconds(r))
        row["runs"].append(r.out)
    return table


def split_text(limit_batches: int | None) -> str:
    """How much of the data the runs saw: the whole splits, or (``train.limit_batches``) at most that
    many batches of each (the page called such runs "the full training split")."""
    if not limit_batches:
        return "full training split, evaluation on the test split"
    return (f"only part of each split: at most {limit_batches} batches of the training split per epoch and of the "
            f"test split per evaluation (train.limit_batches)")


def suite_settings(suite: str, seeds: int | None = None, sets: tuple = ()) -> str:
    """One paragraph that says what the suite's runs are: network, data, epochs, batch, seeds (with
    the ``KEY=VALUE`` overrides ``sets`` every run was given)."""
    spec = SUITES[suite]
    config = os.path.join(ROOT, spec["config"])
    cfg = suite_config(config, sets)
    args = ", ".join(f"{k}={v}" for k, v in (cfg.model.args or {}).items())
    return (f"Settings (`{spec['config']}`): base network `{cfg.model.space}`({args}), dataset "
            f"`{cfg.data.dataset}` ({split_text(cfg.train.limit_batches)}), "
            f"{counted(cfg.train.epochs, 'epoch')} per run, batch {cfg.data.batch_size}, {cfg.train.optimizer} "
            f"lr {cfg.train.lr} with cosine decay, {counted(seeds or spec['seeds'], 'seed')} "
            f"({', '.join(str(k) for k in range(min(3, seeds or spec['seeds'])))}"
            f"{', …' if (seeds or spec['seeds']) > 3 else ''}) per method; "
            f"DAN searches for {counted(cfg.train.epochs, 'epoch')} ({cfg.search.warmup_epochs:g} weight-only) at the "
            f"FLOPs of the α = 4 "
            f"small network ({alpha4_flops(config, sets=sets):,} FLOPs), then retrains "
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


def claims_table(table: dict) -> list[str]:
    """The Markdown table of :data:`CLAIMS`, each with its verdict computed from ``table``
    (as :func:`collect` returns it)."""
    lines = ["| claim | source | A | B | A − B | verdict |", "|---|---|---|---|---|---|"]
    for text, source, ka, fa, kb, fb, margin, *flags in CLAIMS:
        ra, rb = table.get(ka, {}), table.get(kb, {})
        a, b = ra.get(fa, []), rb.get(fb, [])
        higher = fa != "big_ce"
        d, se, v = verdict(a, b, higher, margin)
        pa, pb = median(ra.get("params", [])), median(rb.get("params", []))
        if "smaller" in flags and not math.isnan(d) and not pa < pb:
            v = f"not tested: {ka} was not compressed ({pa:,.0f} vs {pb:,.0f} params)"
        fmt = _ms if higher else (lambda xs: mean_std(xs, 1, 4))
        if math.isnan(d):
            diff = "-"
        elif higher:  # points of top-1
            diff = f"{100 * (d - margin):+.2f}" + ("" if math.isnan(se) else f" (se {100 * se:.2f})")
        else:  # cross-entropy, A − B as it is (negative is better)
            diff = f"{margin - d:+.4f}" + ("" if math.isnan(se) else f" (se {se:.4f})")
        lines.append(f"| {text} | {source} | {ka}: {fmt(a)} | {kb}: {fmt(b)} | {diff} | {v} |")
    return lines


def write_results(runs: list[Run], md_path: str, fig_dir: str, header: str, settings: str = "") -> str:
    """Write the results page and the curves; returns the Markdown text. Hand-written text below
    :data:`dan.report.NOTES_MARK` in an existing page is kept."""
    from dan.cost import format_count

    table = collect(runs)
    os.makedirs(fig_dir, exist_ok=True)
    lines = [header, ""]
    if settings:
        lines += [settings, ""]
    lines += _wall_time(runs, table)
    lines += ["## Deployable networks", "",
              "| method | top-1 (%) | FLOPs | params | nonzero params | CPU ms, batch 1 | CPU ms, batch 64 | min/run | seeds |",
              "|---|---|---|---|---|---|---|---|---|"]
    med = median
    for key, row in table.items():
        lines.append(f"| {key} | {_ms(row['top1'])} | {format_count(med(row['flops']))} | "
                     f"{format_count(med(row['params']))} | {format_count(med(row['nonzero']))} | "
                     f"{med(row['lat1']):.2f} | {med(row['lat64']):.2f} | {med(row['seconds']) / 60:.1f} | "
                     f"{len(row['top1'])} |")
    lines += ["", "Top-1: mean ± standard deviation over seeds on the test split (the settings above say how much of it); "
              "FLOPs and params by "
              "`dan.count`; latency: median over seeds of the measured CPU time of the saved network.",
              "", "## Big networks (regularization)", "",
              "| network | top-1 (%) | final validation CE | seeds |", "|---|---|---|---|"]
    for key, row in table.items():
        if row["big_top1"]:
            name = key if key in ("standard", "dropout") else f"big network of {key}"
            lines.append(f"| {name} | {_ms(row['big_top1'])} | {mean_std(row['big_ce'], 1, 4)} | "
                         f"{len(row['big_top1'])} |")
    lines += ["", "## The papers' claims against these numbers", "",
              "Verdict rule: the difference of the means (A − B, in points of top-1, or in "
              "cross-entropy where lower is better) against two standard errors over seeds "
              "(`sqrt(var_A/n_A + var_B/n_B)`): above is **supported**, below minus two is "
              "**not supported**, between is within seed noise. \"Within one point\" claims add one "
              "point to the difference before the test; with one seed there is no standard error and no "
              "verdict. Computed by `dan/suite/report.py` from the "
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


def _wall_time(runs: list[Run], table: dict) -> list[str]:
    """The paragraph on the summed wall time of the finished runs (none before any finished)."""
    seconds = [t for row in table.values() for t in row["seconds"] if t is not None]
    searches = [run_seconds(r) for r in runs if r.kind == "search" and r.done]
    seconds += [t for t in searches if t is not None]
    if not seconds:
        return []
    n_done = sum(r.done for r in runs)
    return [f"Wall time of the {n_done} finished runs (of {len(runs)}), summed: "
            f"**{sum(seconds) / 3600:.2f} h** on this machine (each run's time as the suite "
            f"recorded it, or from its first TensorBoard event to its summary).", ""]


def plot_curves(runs: list[Run], fig_dir: str) -> list:
    """The big networks' validation cross-entropy per epoch (mean over seeds), adjoint against
    standard and against dropout, as PNG files in ``fig_dir``; returns (file name, title) of
    the figures drawn (none without curves)."""
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
            curves = [c for c in (read_curve(r.out, metric) for r in runs if r.key == key) if c and None not in c]
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
