"""The search suite's page (``docs/search.md``), computed from the ledger of its runs.

:func:`write_report` first records every finished run folder of the plan
(:func:`dan.suite.search.plan`) in the ledger beside the page (:mod:`dan.suite.ledger`), then writes
from the ledger alone: per budget the top-1 mean ± std, cost and latency of every method with DAN's
two-standard-error verdicts (two-sample and paired by seed) against each baseline, how each DAN
search ended (argmax cost before repair, largest probabilities), the ablations, two plots (top-1
against FLOPs; the widths each method chose per group), and the other generations of the default
search in sections of their own. :func:`settings_text` is the page's settings paragraph.
"""

from __future__ import annotations

import math
import os
import statistics

from dan.report import counted, mean_std, median, paired_verdict, verdict, write_page
from dan.suite.ledger import Ledger, ledger_path
from dan.suite.plan import ROOT, Run, suite_config
from dan.suite.run import schedule_seconds, suite_root
from dan.suite.search import (ABLATION_OWN_BASELINES, ABLATIONS, ALL_ABLATION_BUDGETS, BUDGETS, CONFIG,
                              CONFIRMATIONS, FINISH_ABLATIONS, GENERATION, GENERATIONS, METHODS, RECIPES, SEEDS,
                              ablation_budgets, plan)


def collect(runs: list[Run], ledger: Ledger) -> dict:
    """{budget tag: {method: {"top1": [...], "flops": [...], ..., "archs": [...]}}} over seeds, from
    the runs' records in ``ledger``."""
    table: dict = {}
    arch_of = {r.out: r for r in runs if r.kind in ("search", "arch")}
    for r in runs:
        if r.tool != "retrain":
            continue
        tag, method = r.key.split("/", 1)
        small = ledger.small(r)
        arch = ledger.arch(os.path.dirname(r.args[0]))
        row = table.setdefault(tag, {}).setdefault(method, {k: [] for k in (
            "top1", "flops", "params", "lat1", "seconds", "archs", "seeds")})
        if small is None:
            continue
        row["top1"].append(small["top1"])
        row["flops"].append(small["flops"])
        row["params"].append(small["params"])
        row["lat1"].append((small.get("latency_ms") or {}).get("1"))
        src = arch_of.get(os.path.dirname(r.args[0]))
        t = ledger.seconds(r) or 0.0
        row["seconds"].append(t + ((ledger.seconds(src) or 0.0) if src is not None and src.seed == r.seed else 0.0))
        row["archs"].append(arch)
        row["seeds"].append(r.seed)
    return table


def _seed_diffs(rows: dict, method: str, suffix: str = "") -> list:
    """[(seed, DAN's top-1 minus ``method``'s)] over the seeds both finished (same recipe), by seed."""
    dan, other = rows.get("dan" + suffix), rows.get(method + suffix)
    if not dan or not other:
        return []
    mine = dict(zip(dan["seeds"], dan["top1"]))
    return sorted((s, mine[s] - v) for s, v in zip(other["seeds"], other["top1"]) if s in mine)


def _paired(rows: dict, method: str, suffix: str = "") -> str:
    """'uniform +0.63 / -0.87 / +0.62 (mean +0.13)' over the seeds both DAN and ``method`` finished
    (both retrained with the recipe whose label suffix is ``suffix``)."""
    diffs = [(s, 100 * d) for s, d in _seed_diffs(rows, method, suffix)]
    if not diffs:
        return ""
    return (f"{method} " + " / ".join(f"{d:+.2f}" for _, d in diffs)
            + f" (seeds {', '.join(str(s) for s, _ in diffs)}; mean {statistics.mean(d for _, d in diffs):+.2f})")


def _budget_text(tag: str) -> str:
    kind = "FLOPs" if tag.startswith("flops") else "params"
    return f"{tag[len(kind):] if kind == 'FLOPs' else tag[6:]} % of the widest small network's {kind}"


def search_end_table(runs: list[Run], ledger: Ledger) -> list[str]:
    lines = ["| budget | search | seed | argmax before repair / budget | in band before repair | "
             "mean largest probability | settle phase landed at step | groups moved by repair | search min |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if r.kind != "search" or not ledger.done(r):
            continue
        a = ledger.arch(r.out) or {}
        st = a.get("search", {})
        before = st.get("argmax_before_repair", {})
        tag, what = r.key.split("/", 1)
        t = ledger.seconds(r)
        lines.append(f"| {tag} | {what.replace(' search', '')} | {r.seed} | {before.get('over_budget', math.nan):.3f} | "
                     f"{'yes' if before.get('in_band') else 'no'} | {st.get('mean_max_prob', math.nan):.2f} | "
                     f"{_settled(st)} | {len(a.get('repaired', []))} | {(t or math.nan) / 60:.1f} |")
    return lines


def _settled(st: dict) -> str:
    """The step at which the settle phase stopped the search, '-' if it never landed (searches made
    before the settle phase existed have no such key)."""
    if "settled_at_step" not in st:
        return "(no settle phase)"
    vernier = st.get("settle_vernier_from")  # fine groups only from this step on (search.settle_vernier)
    tail = f" (vernier from {vernier})" if vernier is not None else ""
    if st["settled_at_step"] is None:
        return "-" + tail
    snapped = st.get("settle_snapped")  # landed by the deadline's move (search.settle_snap)
    return f"{st['settled_at_step']}" + (f" (deadline: {len(snapped)} moved)" if snapped else "") + tail


def convergence_summary(runs: list[Run], ledger: Ledger, prefix: str = "dan search") -> dict:
    """Per budget: (searches in band before repair, searches, mean of mean largest probability)."""
    out: dict = {}
    for r in runs:
        if r.kind != "search" or not ledger.done(r) or not r.key.endswith("/" + prefix):
            continue
        a = ledger.arch(r.out) or {}
        st = a.get("search", {})
        tag = r.key.split("/", 1)[0]
        row = out.setdefault(tag, {"in_band": 0, "n": 0, "max_prob": [], "snapped": 0})
        row["n"] += 1
        row["in_band"] += bool(st.get("argmax_before_repair", {}).get("in_band"))
        row["snapped"] += bool(st.get("settle_snapped")) and st.get("settled_at_step") is not None
        row["max_prob"].append(st.get("mean_max_prob", math.nan))
    return out


def suite_ledger(runs: list[Run], md_path: str) -> Ledger:
    """The ledger beside the page ``md_path`` (``docs/search-runs.json``), keyed from the suite's folder."""
    return Ledger(ledger_path(md_path), suite_root(runs) or ".")


def write_report(runs: list[Run], md_path: str, fig_dir: str, settings: str,
                 others: dict | None = None, confirmations: dict | None = None, related: list | None = None,
                 smoke: bool = False) -> str:
    """Write the search suite's page (``docs/search.md``) and its plots; returns the Markdown text.
    Every finished run folder is first recorded in the page's ledger (:mod:`dan.suite.ledger`), and
    the page is computed from the ledger, so runs whose folders are gone still count. ``others``
    ({generation: its runs}) are the other generations of the default search, each shown in a
    section of its own after the plots; ``confirmations`` ({budget tag: its runs},
    :func:`dan.suite.search.confirmation_plan`) the fresh samples fixed in advance, each in a section
    after the tables; ``related`` the runs outside them whose records may be built on them
    (:attr:`dan.suite.ledger.Ledger.related`). Hand-written text below :data:`dan.report.NOTES_MARK`
    in an existing page is kept. A ``smoke`` page (runs made with reproduce.py's --epochs/--set) has
    no time line: the full comparison's time estimated from smoke runs said nothing."""
    ledger = suite_ledger(runs, md_path)
    ledger.related = list(related or [])
    for rs in [runs, *(others or {}).values(), *(confirmations or {}).values()]:
        ledger.record(rs)
    ledger.save()
    table = collect(runs, ledger)
    lines = ["# Does the search search? DAN against uniform, random and greedy widths", "",
             "Generated by `python tools/reproduce.py --suite search` (`dan/suite/search.py` plans the runs, "
             "`dan/suite/search_report.py` writes this page); the numbers "
             f"below are computed from the runs' records in `{os.path.basename(ledger.path)}` beside this page "
             "(every finished run folder is recorded there first) each time the page is written.", "", settings, ""]
    lines += _progress_lines(runs, ledger)
    lines += [] if smoke else _time_lines(suite_root(runs) or ".", ledger)
    lines += _budget_lines(table)
    for tag, rs in (confirmations or {}).items():
        lines += _confirmation_lines(tag, rs, table.get(tag, {}), ledger)
    lines += _convergence_lines(runs, ledger)
    lines += _ablation_lines(runs, table, ledger)
    os.makedirs(fig_dir, exist_ok=True)
    rel = os.path.relpath(fig_dir, os.path.dirname(os.path.abspath(md_path)))
    for name, title in plot_report(table, fig_dir):
        lines += [f"![{title}]({rel}/{name})", ""]
    for name, rs in (others or {}).items():
        lines += _generation_lines(name, rs, ledger)
    return write_page(md_path, lines)


def _generation_lines(name: str, runs: list[Run], ledger: Ledger) -> list[str]:
    """Another generation of the default search (:data:`GENERATIONS`): its tables, one heading level down."""
    table = collect(runs, ledger)
    if not any(row.get("top1") for rows in table.values() for row in rows.values()):
        return []
    folder, _, desc = GENERATIONS[name]
    where = f"`<budget>/{folder}/`" if folder else "each budget's folder"
    body = (_budget_lines(table) + _convergence_lines(runs, ledger) + _ablation_lines(runs, table, ledger))
    return [f"## The {name} search, not the default: it {desc}", "",
            f"The same tables for the default search's generation `{name}` (its runs in {where}; uniform "
            f"and random widths shared), every row compared within it.", ""] + [
        "#" + line if line.startswith("#") else line for line in body]


def _progress_lines(runs: list[Run], ledger: Ledger) -> list[str]:
    """How many runs finished, their summed run time and the runner's elapsed wall time."""
    done = [r for r in runs if ledger.done(r)]
    secs = [ledger.seconds(r) for r in done]
    secs = [t for t in secs if t is not None]
    elapsed = ledger.elapsed_seconds()
    return [f"Finished runs: {len(done)} of the {len(runs)} the page's command plans (every row and ablation "
            f"it names at every seed; each table uses the runs that finished); their run times, summed: "
            f"{sum(secs) / 3600:.2f} h"
            + (f"; wall time of the suite runner's invocations, summed over every suite folder recorded: "
               f"**{elapsed / 3600:.2f} h** (runs made outside the runner are not in it)" if elapsed else "")
            + ".", ""]


def _time_lines(root: str, ledger: Ledger) -> list[str]:
    """What the suite's comparison costs at its default size (3 seeds, no ablations), per generation
    of the default search and retrain recipe: each planned run at the median time recorded for its
    kind (the same label in the same folder, e.g. ``flops25/search6`` + ``flops25/dan search``; else
    the same label anywhere; else the same method at any budget; else any retrain of the same recipe),
    two at once in the order ``--jobs 2`` starts them (:func:`~dan.suite.run.schedule_seconds`), beside
    the summed time over two (a lower bound)."""
    times: dict = {}
    for key, rec in ledger.runs.items():
        if rec.get("seconds") is not None:
            for bucket in _time_buckets(os.path.dirname(key), rec.get("label") or "", "small" in rec):
                times.setdefault(bucket, []).append(rec["seconds"])
    parts, unknown = [], 0
    for generation in GENERATIONS:
        for recipes, what in ((("inherit",), "inherit recipe"), (tuple(RECIPES), "both recipes")):
            runs, secs = plan(root, SEEDS, ablations=False, recipes=recipes, generation=generation), {}
            for r in runs:
                buckets = _time_buckets(os.path.dirname(ledger.key(r.out)), r.key, r.tool == "retrain")
                known = next((times[b] for b in buckets if b in times), None)
                secs[r.out] = statistics.median(known) if known else 0.0
                unknown += not known
            wall = schedule_seconds(runs, lambda r: secs[r.out], jobs=2)
            default = " (the default)" if generation == GENERATION and recipes == ("inherit",) else ""
            parts.append(f"{generation} search, {what}{default}: **{wall / 3600:.1f} h** "
                         f"({sum(secs.values()) / 2 / 3600:.1f})")
    if not times:
        return []
    return [f"Time of the comparison at its default size (`--no-ablations`, {SEEDS} seeds), each run at the "
            "median time recorded for its kind on this kind of machine (2 CPU cores), two at once in the order "
            "the suite runner starts them (`--jobs 2`: a run starts once its inputs are made), and in brackets "
            "the summed run time over two, which counts no wait: "
            + "; ".join(parts) + (f" ({unknown} planned runs have no recorded kind and count 0)" if unknown else "")
            + ".", ""]


def _time_buckets(folder: str, label: str, retrain: bool) -> list:
    """A run's kinds for :func:`_time_lines`, the closest first: its label in its folder, its label,
    its method at any budget, any retrain of its recipe."""
    return [(folder, label), label, label.split("/", 1)[-1]] + (
        [("retrain", label.endswith(RECIPES["inherit"]))] if retrain else [])


def _diff(d: float, se: float) -> str:
    """A difference of top-1 in points, with its standard error when there is one."""
    return "-" if math.isnan(d) else f"{100 * d:+.2f}" + ("" if math.isnan(se) else f" (se {100 * se:.2f})")


def _budget_lines(table: dict) -> list[str]:
    """Per budget and retrain recipe, every method's top-1, cost and time with DAN's verdict against it."""
    lines = ["## Top-1 at equal cost", "",
             "Verdict: DAN's mean minus the baseline's, against two standard errors over seeds "
             "(`sqrt(var_A/n_A + var_B/n_B)`): above is **supported** (DAN better), below minus two "
             "**not supported** (DAN worse), between is within seed noise. Paired verdict: the mean of "
             "the per-seed differences (both retrained with the same seed; under the inherit recipe also "
             "from the same supernet, so a seed's supernet quality cancels) against two standard errors "
             "of that mean (`stdev(d)/sqrt(n)`). With 3 to 5 seeds both tests are weak; both are shown. With one "
             "seed there is no standard error: the difference is shown, no verdict.", ""]
    for tag, _, _ in BUDGETS:
        rows = table.get(tag, {})
        if not any(rows.get(m, {}).get("top1") for m in rows):
            continue
        lines += [f"### {_budget_text(tag)}", ""]
        for recipe, suffix in RECIPES.items():
            if any(rows.get(m + suffix, {}).get("top1") for m in METHODS):
                lines += _recipe_table(rows, recipe, suffix)
    return lines


RECIPE_TEXT = {"scratch": "retrained from scratch (the paper's recipe)",
               "inherit": "retrained from that seed's DAN supernet (weight inheritance, every method alike)"}


def _confirmation_lines(tag: str, runs: list[Run], suite_rows: dict, ledger: Ledger) -> list[str]:
    """The fresh sample of budget ``tag`` (:data:`CONFIRMATIONS`): its table, with verdicts only
    once every seed is in, how its searches ended, and (for reference, no verdict) its rows pooled
    with the suite's own seeds of the same recipe (``suite_rows``: the budget's rows of the tables)."""
    spec = CONFIRMATIONS[tag]
    seeds, suffix = spec["seeds"], RECIPES[spec["recipe"]]
    rows = collect(runs, ledger).get(tag, {})
    both = set(rows.get("dan" + suffix, {}).get("seeds", []))
    for m in spec["methods"][1:]:
        both &= set(rows.get(m + suffix, {}).get("seeds", []))
    final = len(both) == len(seeds)
    versus = " and ".join(spec["methods"][1:])
    lines = [f"## A fresh sample fixed in advance: {_budget_text(tag)}, seeds {seeds.start}-{seeds.stop - 1}", "",
             f"Declared {spec['declared']}: DAN against {versus} widths, {RECIPE_TEXT[spec['recipe']]}, on "
             f"{len(seeds)} new seeds. The test is the verdict column over these seeds alone; no seed is added "
             "or dropped whatever the interim numbers (`CONFIRMATIONS` in `dan/suite/search.py`).", ""]
    if not final:
        lines += [f"**Incomplete: {len(both)} of {len(seeds)} seeds finished; no verdict is drawn until every "
                  "seed is in.**", ""]
    if rows.get("dan" + suffix, {}).get("top1"):
        # without the table's own heading: the section's declaration names the recipe
        lines += _recipe_table(rows, spec["recipe"], suffix, verdicts=final)[2:]
    conv = convergence_summary(runs, ledger).get(tag)
    if conv:
        mp = statistics.mean(conv["max_prob"])
        lines += [f"Its searches: {conv['in_band']} of {conv['n']} in the band before repair; mean largest "
                  f"probability {mp:.2f} (mean over seeds).", ""]
    pooled = []
    for m in spec["methods"][1:]:
        a, b = (rows.get(x + suffix, {}) for x in ("dan", m))
        sa, sb = (suite_rows.get(x + suffix, {}) for x in ("dan", m))
        if not (a.get("top1") and sa.get("top1") and b.get("top1") and sb.get("top1")):
            continue
        merged = {"dan" + suffix: {k: sa[k] + a[k] for k in ("seeds", "top1")},
                  m + suffix: {k: sb[k] + b[k] for k in ("seeds", "top1")}}
        d, se, _ = verdict(merged["dan" + suffix]["top1"], merged[m + suffix]["top1"], True, 0.0)
        pd, pse, _ = paired_verdict([x for _, x in _seed_diffs(merged, m, suffix)])
        pooled.append(f"DAN − {m} {_diff(d, se)}, paired {_diff(pd, pse)} over "
                      f"{len(merged['dan' + suffix]['top1'])} and {len(merged[m + suffix]['top1'])} seeds")
    if pooled:
        lines += ["Pooled with the suite's own seeds of this budget and recipe, for reference only (those seeds "
                  "were added in steps, so no verdict is drawn from the pool): " + "; ".join(pooled) + ".", ""]
    return lines


def _recipe_table(rows: dict, recipe: str, suffix: str, verdicts: bool = True) -> list[str]:
    """One budget's table for one retrain recipe: every method against DAN retrained the same way
    (the verdict columns read "incomplete" when ``verdicts`` is false)."""
    from dan.cost import format_count

    lines = [f"#### {RECIPE_TEXT[recipe]}", "",
             "| method | top-1 (%) | FLOPs | params | CPU ms, batch 1 | min/run (search + retrain) | seeds | "
             "DAN − method | verdict | paired by seed | paired verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    dan = rows.get("dan" + suffix, {}).get("top1", [])
    for method in METHODS:  # ablations have their own table below
        row = rows.get(method + suffix)
        if not row or not row["top1"]:
            continue
        if method == "dan":
            diff, v, pdiff, pv = "", "", "", ""
        else:
            d, se, v = verdict(dan, row["top1"], True, 0.0)
            diff = _diff(d, se)
            d, se, pv = paired_verdict([x for _, x in _seed_diffs(rows, method, suffix)])
            pdiff = _diff(d, se)
            if not verdicts:
                v = pv = "incomplete"
        lines.append(f"| {method} | {mean_std(row['top1'], 100, 2)} | {format_count(median(row['flops']))} | "
                     f"{format_count(median(row['params']))} | {median(row['lat1']):.2f} | "
                     f"{median(row['seconds']) / 60:.1f} | {len(row['top1'])} | {diff} | {v} | {pdiff} | {pv} |")
    lines.append("")
    paired = [p for p in (_paired(rows, m, suffix) for m in METHODS[1:]) if p]
    if paired:
        lines += ["Paired by retrain seed (DAN − method, each retrained with the same seed; the verdict "
                  "above does not use the pairing): " + "; ".join(paired) + ".", ""]
    return lines


def _convergence_lines(runs: list[Run], ledger: Ledger) -> list[str]:
    """Whether the searches landed in the band on their own, per budget, and how each ended."""
    conv = convergence_summary(runs, ledger)
    if not conv:
        return []
    lines = ["## Does the search converge and land on its own?", "",
             "Target: the argmax network inside the band *before* repair in at least 2 of 3 seeds at "
             "every budget, and the mean (over groups) largest probability at least 0.6.", "",
             "| budget | in band before repair | mean largest probability (mean over seeds) | target met |",
             "|---|---|---|---|"]
    for tag, c in conv.items():
        mp = statistics.mean(c["max_prob"]) if c["max_prob"] else math.nan
        ok = c["in_band"] >= math.ceil(2 * c["n"] / 3) and mp >= 0.6
        snap = f" ({c['snapped']} by the deadline's move)" if c.get("snapped") else ""
        lines.append(f"| {tag} | {c['in_band']} of {c['n']}{snap} | {mp:.2f} | {'yes' if ok else '**no**'} |")
    return lines + ["", "Every search, as it ended:", ""] + search_end_table(runs, ledger) + [""]


def _ablation_lines(runs: list[Run], table: dict, ledger: Ledger) -> list[str]:
    """Each ablation's top-1 and convergence against the default search and against the baselines
    retrained the same way (none before any ran)."""
    abl = [(name, desc, sfx, f"ablation {name} search") for name, desc, _ in ABLATIONS for sfx in RECIPES.values()]
    # the finish ablations refine the default search's own supernet: its convergence is the default's
    abl += [(name, desc, RECIPES["inherit"], "dan search") for name, desc, _ in FINISH_ABLATIONS]
    if not any(table.get(t, {}).get(f"ablation {n}{sfx}", {}).get("top1")
               for n, _, sfx, _ in abl for t in ablation_budgets(n)):
        return []
    others = METHODS[1:]
    lines = ["## Ablations of the search", "",
             "Each variant is a config option. A search variant searched and retrained like the default "
             "(same seeds; under the inherit recipe from its own supernet); a last-step variant (refine, "
             "no-refine, shortlist) started from the default search's own supernet and was retrained from it (inherit "
             "recipe). Each row compares with the default DAN row and the baselines retrained the same way "
             "(two-sample verdict over seeds; the paired one in brackets; under the inherit recipe a search "
             "variant's pairs do not share a supernet). A variant that trains its supernet differently "
             "(long-supernet) is compared with baselines retrained from its own supernet (marked \"vs its own "
             "supernet's\"; those pairs share it).", "",
             "| budget | variant | what it changes | recipe | top-1 (%) | seeds | in band before repair | "
             "mean largest probability | variant − default | " + " | ".join(f"variant − {m}" for m in others) + " |",
             "|---" * (9 + len(others)) + "|"]
    for tag in ALL_ABLATION_BUDGETS:
        rows = table.get(tag, {})
        for name, desc, sfx, conv_key in abl:
            row = rows.get(f"ablation {name}{sfx}")
            if not row or not row["top1"]:
                continue
            conv = convergence_summary(runs, ledger, conv_key).get(tag, {"in_band": 0, "n": 0, "max_prob": []})
            mp = statistics.mean(conv["max_prob"]) if conv["max_prob"] else math.nan
            cells = []
            for m in ("dan",) + others:
                own = m in ABLATION_OWN_BASELINES.get(name, ())  # retrained from the variant's supernet
                base = rows.get(f"ablation {name} {m}{sfx}" if own else m + sfx, {})
                if not base.get("top1"):
                    cells.append("-")
                    continue
                d, se, v = verdict(row["top1"], base["top1"], True, 0.0)
                mine = dict(zip(row["seeds"], row["top1"]))
                pd, pse, pv = paired_verdict([mine[s] - x for s, x in zip(base["seeds"], base["top1"]) if s in mine])
                cells.append(f"{_diff(d, se)} {v} ({pv})" + (" vs its own supernet's" if own else ""))
            recipe = "inherit" if sfx else "scratch"
            lines.append(f"| {tag} | {name} | {desc} | {recipe} | {mean_std(row['top1'], 100, 2)} | {len(row['top1'])} | "
                         f"{conv['in_band']} of {conv['n']} | {mp:.2f} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_report(table: dict, fig_dir: str) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    curves = [(m + suffix, marker, "--" if suffix else "-") for suffix in RECIPES.values()
              for m, marker in zip(METHODS, "o^sD")]
    for method, marker, style in curves:
        xs, ys, es = [], [], []
        for tag, _, _ in BUDGETS:
            row = table.get(tag, {}).get(method)
            if not tag.startswith("flops") or not row or not row["top1"]:
                continue
            xs.append(median(row["flops"]) / 1e6)
            ys.append(100 * statistics.mean(row["top1"]))
            es.append(100 * statistics.stdev(row["top1"]) if len(row["top1"]) > 1 else 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker=marker, linestyle=style, capsize=3, label=method)
            drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.set_xlabel("FLOPs (M multiply-accumulates), log scale")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title("retrained small networks at equal FLOPs (mean ± std over seeds)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(fig_dir, "search_top1_vs_flops.png"), dpi=110)
        made.append(("search_top1_vs_flops.png", "top-1 against FLOPs for every method and budget"))
    plt.close(fig)
    # widths chosen per group, seed 0, for each FLOPs budget that has them
    tags = [t for t, _, _ in BUDGETS if any(table.get(t, {}).get(m + sfx, {}).get("archs")
                                            for m in METHODS for sfx in RECIPES.values())]
    if tags:
        fig, axes = plt.subplots(1, len(tags), figsize=(4.2 * len(tags), 4), squeeze=False)
        for ax, tag in zip(axes[0], tags):
            groups = None
            for k, method in enumerate(METHODS):
                # the architectures are the same under every recipe: the first recipe that has them
                row = next((table[tag][method + sfx] for sfx in RECIPES.values()
                            if table.get(tag, {}).get(method + sfx, {}).get("archs")), None)
                if not row or not row["archs"] or row["archs"][0] is None:
                    continue
                arch = row["archs"][0]
                cands = arch.get("candidates", {})
                groups = groups or list(cands)
                full = {g: max(c) for g, c in cands.items()}
                ax.plot([arch["widths"][g] / full[g] for g in groups], range(len(groups)), marker="o^sD"[k],
                        label=method, alpha=0.8)
            if groups:
                ax.set_yticks(range(len(groups)))
                ax.set_yticklabels(groups, fontsize=6)
            ax.set_xlabel("width / full width")
            ax.set_xlim(0, 1.05)
            ax.set_title(tag, fontsize=9)
            ax.invert_yaxis()
        axes[0][0].legend(fontsize=7)
        fig.suptitle("widths each method chose (seed 0)", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(fig_dir, "search_widths.png"), dpi=110)
        plt.close(fig)
        made.append(("search_widths.png", "widths per group chosen by each method"))
    return made


# How the settle phase ends (search.settle_until), as the page's settings sentence says it.
SETTLE_UNTIL = {"landed": " (the architecture steps end at its first landing in the band)",
                "end": " (the architecture steps go on after the landing, unguarded)",
                "guarded": " (after the first landing in the band, an architecture step that takes the argmax "
                           "out of it is undone)"}


def _deadline_text(s) -> str:
    """The settle phase's deadlines (search.settle_snap, settle_vernier), as the settings sentence says them."""
    text = ""
    if s.settle_snap < 1:
        text += (f"; an argmax not landed {format(s.settle_snap, 'g')} of the way through it is landed there by "
                 "repair's move on the logits")
    if s.settle_vernier < 1:
        text += (f"; from {format(s.settle_vernier, 'g')} of the way through it, an argmax not landed yet is "
                 "steered by the groups whose one-candidate moves cannot jump over the band")
    return text


def settings_text(seeds: int | None = None, generation: str = GENERATION, sets: tuple = ()) -> str:
    """The page's settings paragraph, with the ``KEY=VALUE`` overrides ``sets`` every run was given
    (after the runs' own settings, as their commands give them)."""
    cfg = suite_config(os.path.join(ROOT, CONFIG), sets)
    epochs = cfg.train.epochs  # the retrain's
    for kv in [*GENERATIONS[generation][1], *sets]:  # the default search's own settings
        cfg.set(*kv.split("=", 1))
    args = ", ".join(f"{k}={v}" for k, v in (cfg.model.args or {}).items())
    s = cfg.search
    # runs limited to a few batches saw part of each split (the page said "the full 60k" of them too)
    n = cfg.train.limit_batches
    train, test = (("the full 60k training images", "the 10k test images") if not n else
                   (f"at most {n} batches per epoch of the 60k training images (only part of them: "
                    f"train.limit_batches)", f"at most {n} batches of the 10k test images"))
    return (f"Settings (`{CONFIG}`): base network `{cfg.model.space}`({args}) on `{cfg.data.dataset}` "
            f"(28×28, 10 classes). Every architecture is retrained by `tools/retrain.py` for "
            f"{counted(epochs, 'epoch')} on {train} (adjoint loss, {cfg.train.optimizer} lr "
            f"{cfg.train.lr}, batch {cfg.data.batch_size}) and tested on {test}, under each retrain "
            f"recipe the tables name: from random weights (scratch, the paper's recipe) or from that seed's DAN "
            f"supernet cut to its widths (inherited: `--set train.init_from=<search>/checkpoints/last.pt`, "
            f"the same supernet for all four methods); "
            f"seeds {', '.join(str(k) for k in range(seeds or SEEDS))} (each table's seeds column says how "
            f"many of them finished). DAN searches for {counted(cfg.train.epochs, 'epoch')} "
            f"({s.warmup_epochs:g} weight-only) on the training split, two thirds for the weights and "
            f"one third held out for the architecture (default search settings: τ {s.tau0:g} → {s.tau_min:g} "
            f"per step, architecture lr {s.arch_lr:g}, objective {s.arch_objective}, multiplier on the "
            f"{s.budget_control} cost, proportional gain {s.multiplier_p:g}, "
            f"{'a settle phase over the last ' + format(s.settle, 'g') + ' of the architecture steps' + SETTLE_UNTIL.get(s.settle_until, '') + _deadline_text(s) if s.settle else 'no settle phase'}, "
            f"{len(s.fractions or ())} candidate widths per group, weight-step widths drawn "
            f"{'uniformly' if s.weight_sampling == 'uniform' else 'from the distribution'}); greedy scores its moves on that same held-out third "
            f"with the same search's supernet. Width 8 (an eighth of ResNet-18's) keeps a run to minutes on "
            f"2 CPU cores; even so the comparison takes longer than the 3 hours the issue asked (the time line "
            f"below: the retrains are most of it); at 10 % of the FLOPs its first stage has 2-3 channels in the "
            f"uniform network, where how widths are spread matters most.")
