"""The search suite's plan (issue 9): do DAN's widths beat uniform, random and greedy widths at equal cost?

For every budget (FLOPs 10 %, 25 %, 50 % of the widest small network, params 25 %) and seed, four
architectures are retrained with the identical recipe (``tools/retrain.py arch.json --seed s``:
adjoint training, the config's epochs, the whole training split) and tested on the test split:

* **dan**: ``tools/search.py`` with the default search settings, searched for as long as the
  suite's generation of the default search says (:data:`GENERATIONS`: the 3-epoch search, as
  long as the retrain, or the 6-epoch one; each generation's runs have their own folders);
* **uniform**: one width fraction for every group (``tools/baseline.py uniform``; the same
  architecture for every seed, retrained per seed);
* **random**: a uniformly drawn in-band architecture per seed (``baseline.py random --seed s``);
* **greedy**: AutoSlim-style slimming of the *same* trained supernet as that seed's DAN search
  (``baseline.py greedy --supernet <search>/checkpoints/last.pt``).

:func:`plan` lists the runs (budgets 10 % and 25 % first: they carry the targets), with the
ablations of the search (:data:`ABLATIONS`, :data:`FINISH_ABLATIONS`); :func:`dan.suite.run` runs
them, recording each finished one in the ledger beside the page (``docs/search-runs.json``,
:mod:`dan.suite.ledger`); :func:`dan.suite.search_report.write_report` computes ``docs/search.md``
from that ledger. The plan and the page are two modules: what to run (this one) changes with each
new variant, how the page reads the records does not.
"""

from __future__ import annotations

import functools
import os

from dan.errors import UserError
from dan.suite.plan import ROOT, Run

CONFIG = "configs/fashion_mnist_suite.yaml"
SEEDS = 3
# (tag, flag, value): the budgets of the suite, the ones with targets first
BUDGETS = [("flops10", "--budget-flops", "10%"), ("flops25", "--budget-flops", "25%"),
           ("flops50", "--budget-flops", "50%"), ("params25", "--budget-params", "25%")]
METHODS = ("dan", "uniform", "random", "greedy")
# Ablations of the search: (tag, description, --set overrides); each is searched and retrained at
# the listed budgets like "dan", so its row compares with the same baselines.
ABLATIONS = [
    ("sample-from-p", "weight steps draw widths from the architecture distribution, not uniformly",
     ["search.weight_sampling=distribution"]),
    ("first-design", "the first search: KL-only objective, tau 5 halving per epoch, arch lr 0.01, "
                     "multiplier on the argmax cost",
     ["search.arch_objective=kl", "search.tau_anneal=epoch", "search.tau0=5.0", "search.tau_decay=0.5",
      "search.tau_min=0.2", "search.arch_lr=0.01", "search.budget_control=argmax",
      "search.weight_sampling=distribution", "search.settle=0"]),
    ("kl-only", "default, but the architecture objective without the labels' CE", ["search.arch_objective=kl"]),
    ("argmax-control", "default, but the multiplier watches the argmax cost", ["search.budget_control=argmax"]),
    ("pi-control", "default plus a proportional term on the expected cost (multiplier_p 5)",
     ["search.multiplier_p=5"]),
    ("blend-control", "default, but the multiplier watches E[cost] blended into the argmax cost by the "
                      "mean largest probability, driven to the budget", ["search.budget_control=blend"]),
    ("sandwich", "default, but every weight step also trains the narrowest small network, distilled "
                 "from the big one (the sandwich rule)", ["search.weight_sampling=sandwich"]),
    ("no-settle", "default, but without the settle phase (tau annealed to the last step, the multiplier "
                  "on E[cost] to the end)", ["search.settle=0"]),
    ("settle-to-end", "default, but the architecture steps go on after the settle phase lands (to the last "
                      "step, the multiplier moving only outside the band)", ["search.settle_until=end"]),
    # "settle-guarded" (a step after the landing that takes the argmax out of the band is undone) was
    # an ablation in the fourteenth session and is the default since; "settle-landed" is the old default.
    ("settle-landed", "default, but the architecture steps end at the settle phase's first landing (the "
                      "default until the fifteenth session)", ["search.settle_until=landed"]),
    ("settle-regrow", "default, but a settle step that finds the argmax on the same side of the band as the "
                      "last one regrows the halved steps by 1.1 (Rprop's rule)", ["search.settle_regrow=1.1"]),
    ("settle-snap", "default, but if the argmax has not landed half-way through the settle phase, repair's "
                    "move lands it there and the guarded steps go on", ["search.settle_snap=0.5"]),
    ("settle-fine", "default, but in the settle phase the cost penalty reaches only the groups whose "
                    "one-candidate moves cost less than the band's width", ["search.settle_fine=true"]),
    # The vernier deadline (search.settle_vernier 0.5) was the ablation "settle-vernier" and is the
    # default since the twenty-second session; "no-vernier" is the old default. It changes only the
    # searches not landed half-way through the settle phase, so its runs are those seeds' only.
    ("no-vernier", "default, but without the vernier deadline: an argmax not landed half-way through the "
                   "settle phase is left to the whole penalty and to repair (the default until the "
                   "twenty-second session)", ["search.settle_vernier=1"]),
    # Past the vernier's deadline the coarse groups took the accuracy objective's steps with no cost
    # against them and widened (`make demo`, thirty-ninth session: 1.1 -> 1.30 B). Like no-vernier, it
    # changes only searches not landed half-way through the settle phase: its runs are those seeds'.
    ("settle-hold", "default, but past the vernier deadline the groups the cost penalty does not reach "
                    "are held (no architecture step moves them)", ["search.settle_hold=true"]),
    # Issue 9's candidate "architecture steps on the weights' own batch vs the held-out split"
    # (forty-fifth session): the weight steps are the default's (the held-out third stays out of
    # them), only the images the architecture steps score the widths on change.
    ("arch-on-weight-batch", "default, but each architecture step scores the widths on the weight step's own "
                             "batch (its first half) instead of a held-out batch (single-level)",
     ["search.arch_data=train"]),
    # The sixth and tenth sessions found the supernet's ranking of good widths does not survive
    # retraining; its small networks score 76-80 % held-out after 3 search epochs against 88 % retrained.
    # A supernet trained twice as long (OFA and BigNAS train theirs far longer than one network) is
    # the plainest way to make that ranking more faithful.
    ("long-supernet", "default, but the search runs twice as long: 6 epochs, 2 of them weight-only (4 "
                      "architecture epochs); retrained for the suite's 3 epochs like every row",
     ["train.epochs=6", "search.warmup_epochs=2"]),
]
# Search ablations whose supernet differs from the default's in its weights, not only in its
# architecture logits: under the inherit recipe a baseline retrained from the *default* supernet
# is no control for them (a better-trained supernet starts every architecture higher), so these
# baselines are also retrained from the variant's own supernet, and the ablation table compares
# with those (paired by seed and supernet).
ABLATION_OWN_BASELINES = {"long-supernet": ("uniform", "random", "greedy")}
# Ablations of the search's last step, on the *same* supernet as the default search of that seed
# (``baseline.py refine --supernet <search>/checkpoints/last.pt``, which is what the search's finish
# does; tests/test_refine.py checks both give the same widths; ``baseline.py shortlist``, the same
# for dan/shortlist.py): (tag, description, [baseline.py method, its flags]).
# They retrain under the inherit recipe only, from that supernet like every inherited row, so each
# compares with the default row and the baselines of the same supernets, paired by seed.
FINISH_ABLATIONS = [
    ("refine", "the repaired argmax refined by held-out swaps at equal cost (search.refine_rounds=8)",
     ["refine", "--rounds", "8"]),
    ("no-refine", "the repaired argmax as the search found it (search.refine_rounds=0)", ["refine", "--rounds", "0"]),
    ("shortlist", "the repaired argmax and 5 draws from the final distributions, each fine-tuned from the "
                  "supernet for 150 batches and scored on the held-out split; the best kept",
     ["shortlist", "--candidates", "6", "--steps", "150"]),
]
ABLATION_BUDGETS = ("flops10", "flops25")
# Search ablations that also run at other budgets: settle-fine, the landing variant, runs at every
# budget (the default missed the landing at the params budget, seventeenth session; the eighteenth
# measured it everywhere: it lands more, retrains lower, and stays an ablation).
# no-vernier differs from the default only on searches not landed half-way through the settle phase,
# wherever they are.
ABLATION_MORE_BUDGETS = {"settle-fine": ("flops50", "params25"), "no-vernier": ("flops50", "params25"),
                         "settle-hold": ("flops50", "params25")}


def ablation_budgets(name: str) -> tuple:
    """The budgets at which the ablation ``name`` runs."""
    return ABLATION_BUDGETS + ABLATION_MORE_BUDGETS.get(name, ())


# Every budget some ablation runs at, in the page's order.
ALL_ABLATION_BUDGETS = ABLATION_BUDGETS + tuple(t for t, _, _ in BUDGETS if t not in ABLATION_BUDGETS
                                                and any(t in v for v in ABLATION_MORE_BUDGETS.values()))

ABLATION_NAMES = tuple(n for n, _, _ in ABLATIONS + FINISH_ABLATIONS)
# Retrain recipes, each applied to every method alike: "scratch" (the paper's: the searched widths
# retrained from random weights) and "inherit" (weight inheritance, as OFA and BigNAS deploy supernet
# weights: every method's retrain starts from that seed's DAN supernet, cut to its widths by
# ``train.init_from``). The value is the suffix of the method's label in the tables.
RECIPES = {"scratch": "", "inherit": " inherited"}
# Extra settings of the suite's searches (none: the full training split, 40k images drive the
# weights and 20k held out drive the architecture). A 30k subset halved the search time but also
# the architecture steps, and the distributions did not commit (mean largest probability 0.47 at
# 10 %, 0.71 at 25 %, one seed each); every retrain uses all 60k images either way.
SEARCH_SETS: list = []
# The suite's default search, by generation: {name: (folder under each budget, --set overrides of the
# default search, what it is)}. A finished run is recorded by its folder, so a changed default needs
# folders of its own; uniform and random widths do not depend on a supernet and are shared. A
# generation that changes the training settings stored in the search's arch.json retrains every row
# with the config's epochs (``--epochs``), the suite's recipe.
GENERATIONS = {
    # made before the vernier deadline was the default (twenty-second session): it stays as measured
    "3-epoch": ("", ["search.settle_vernier=1"], "searches as long as the retrain: 3 epochs, 1 weight-only"),
    # the long-supernet ablation of the nineteenth session, made the default in the twentieth
    "6-epoch": ("search6", ["train.epochs=6", "search.warmup_epochs=2"],
                "searches twice as long as the retrain: 6 epochs, 2 weight-only"),
}
GENERATION = "6-epoch"  # the suite's default search
# Fresh samples fixed in advance, each to settle one verdict that the suite's own seeds (added in
# steps, session by session) left within noise: {budget tag: its seeds, the rows, the retrain recipe and
# when it was declared}. The verdict is drawn from the sample's seeds alone, once all of them are in
# (the page shows the numbers as incomplete until then); no seed is added or dropped after the
# declaration, whatever the interim numbers say. Its runs are the suite's own runs for those seeds,
# so a run is one record whichever plan makes it.
CONFIRMATIONS = {
    # DAN vs uniform widths at 25 % FLOPs: seeds 0-15 gave +0.19 (se 0.11), within noise by the
    # two-sample test; 32 new seeds (power about 2 in 3 if the gap is 0.19, 1 in 2 if it is 0.15)
    "flops25": {"seeds": range(16, 48), "methods": ("dan", "uniform"), "recipe": "inherit",
                "declared": "2026-12-04, twenty-ninth session, before any of its runs had finished"},
}


def plan(out: str, seeds: int | None = None, extra: list | None = None, ablations: bool | tuple = True,
         recipes: tuple = tuple(RECIPES), budgets: list | None = None,
         methods: tuple = METHODS, generation: str = GENERATION, first_seed: int = 0) -> list[Run]:
    """The suite's runs in dependency order; ``recipes`` are the retrain recipes (:data:`RECIPES`),
    ``budgets`` the budget tags to plan (default: all of :data:`BUDGETS`), ``methods`` the rows to
    retrain (default all of :data:`METHODS`; DAN's search is planned whatever they are, as every
    inherited retrain and greedy start from its supernet), ``ablations`` all (True), none (False)
    or the names of those to plan (:data:`ABLATION_NAMES`); ``generation`` the default search's
    (:data:`GENERATIONS`), whose runs live in its folder under each budget. Seeds ``first_seed`` to
    ``seeds - 1`` are planned (more seeds for a verdict, or a method added on new seeds only, without
    the runs of the first ones, whose folders may be gone: every finished run is in the ledger)."""
    if not isinstance(ablations, bool):
        odd = [a for a in ablations if a not in ABLATION_NAMES]
        if odd:
            raise UserError(f"unknown ablation '{odd[0]}': choose from {', '.join(ABLATION_NAMES)}")
    wanted = lambda name: ablations if isinstance(ablations, bool) else name in ablations  # noqa: E731
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise UserError(f"unknown retrain recipe '{unknown[0]}': choose from {', '.join(RECIPES)}")
    odd = [m for m in methods if m not in METHODS]
    if odd or not methods:
        raise UserError((f"unknown method '{odd[0]}'" if odd else "no method given")
                        + f": choose from {', '.join(METHODS)}")
    tags = [t for t, _, _ in BUDGETS]
    bad = [b for b in budgets or () if b not in tags]
    if bad:
        raise UserError(f"unknown budget '{bad[0]}': choose from {', '.join(tags)}")
    if generation not in GENERATIONS:
        raise UserError(f"unknown search generation '{generation}': choose from {', '.join(GENERATIONS)}")
    chosen = [b for b in BUDGETS if budgets is None or b[0] in budgets]
    out = os.path.abspath(out)
    config = os.path.join(ROOT, CONFIG)
    n = seeds or SEEDS
    if not 0 <= first_seed < n:
        raise UserError(f"first seed {first_seed} is not below the number of seeds ({n}): give --seeds above it")
    planned = range(first_seed, n)
    gen = _generation(generation, config)
    extra = list(extra or [])
    runs: list[Run] = []
    for tag, flag, value in chosen:
        # a baseline's arch.json is made when its row is retrained or an ablation retrains it too
        made = set(methods) | {m for name, ms in ABLATION_OWN_BASELINES.items()
                               if ablations and wanted(name) and tag in ablation_budgets(name) for m in ms
                               if m != "greedy"}
        runs += _default_runs(out, tag, [flag, value], planned, extra, config, recipes, methods, made, gen)
    if ablations:
        runs += _ablation_runs(out, chosen, planned, extra, config, recipes, wanted, gen)
    for r in runs:  # one elapsed time for the suite, whichever budgets an invocation runs
        r.root = out
    return runs


def confirmation_plan(out: str, extra: list | None = None, generation: str = GENERATION) -> dict[str, list[Run]]:
    """{budget tag: the runs of its fresh sample (:data:`CONFIRMATIONS`)}: the suite's runs for those
    seeds, rows and recipe with the default search of ``generation``."""
    return {tag: plan(out, c["seeds"].stop, extra, ablations=False, recipes=(c["recipe"],), budgets=[tag],
                      methods=c["methods"], generation=generation, first_seed=c["seeds"].start)
            for tag, c in CONFIRMATIONS.items()}


def related_runs(out: str, runs: list[Run], extra: list | None = None) -> list[Run]:
    """Every run of the suite at the seeds of the searches in ``runs`` (every budget, row, recipe
    and ablation, under every generation of the default search): the runs whose records may be
    built on one of ``runs``, planned this time or not (:attr:`dan.suite.ledger.Ledger.related`)."""
    seeds = {r.seed for r in runs if r.kind == "search"}  # (uniform's arch is seed 0 whatever is planned)
    if not seeds:
        return []
    first, last = min(seeds), max(seeds)
    found: dict = {}
    for g in GENERATIONS:
        for r in plan(out, last + 1, extra, generation=g, first_seed=first):
            if r.seed in seeds:  # the searches' own seeds, not every seed between them
                found.setdefault(os.path.abspath(r.out), r)  # uniform and random widths are every generation's
    return list(found.values())


def _generation(name: str, config: str) -> dict:
    """A search generation's folder, its default search's flags and the retrains' flags."""
    folder, sets, _ = GENERATIONS[name]
    return {"folder": folder, "sets": sets,
            "search": [a for kv in sets for a in ("--set", kv)], "retrain": _retrain_flags(sets, config)}


def _retrain_flags(sets: list, config: str) -> list:
    """A search that changes training settings (``train.*``) stores them in its arch.json, which a
    retrain starts from: its rows (and every row built on its supernet) keep the suite's recipe by
    being retrained with the config's epochs."""
    if not any(kv.startswith("train.") for kv in sets):
        return []
    return ["--epochs", str(_config_epochs(config))]


@functools.lru_cache(maxsize=None)
def _config_epochs(config: str) -> int:
    """The config file's ``train.epochs``, read once (planning read it for every ablation run:
    2,282 YAML parses, 25 of 46 s of ``--seeds 60 --dry-run``)."""
    from dan.config import Config

    return Config.from_file(config).train.epochs


def _default_runs(out: str, tag: str, budget: list, seeds: range, extra: list, config: str, recipes: tuple,
                  methods: tuple, made: set, gen: dict) -> list[Run]:
    """One budget's default runs: DAN's searches, the baselines' architectures, every retrain."""
    runs: list[Run] = []
    u = os.path.join(out, tag, "uniform-arch")
    if "uniform" in made:
        runs.append(Run(f"{tag}/uniform arch", 0, "baseline",
                        ["uniform", "--config", config, *budget, "--quiet", *extra, "--out", u], u, kind="arch"))
    for seed in seeds:
        d = lambda name: os.path.join(out, tag, gen["folder"], f"{name}-s{seed}")  # noqa: E731
        base = ["--config", config, "--seed", str(seed), "--quiet", *extra]
        s = d("dan-search")
        runs.append(Run(f"{tag}/dan search", seed, "search",
                        base + [*budget, *SEARCH_SETS, *gen["search"], "--out", s], s, kind="search"))
        r_arch = os.path.join(out, tag, f"random-arch-s{seed}")
        if "random" in made:
            runs.append(Run(f"{tag}/random arch", seed, "baseline", ["random", *base, *budget, "--out", r_arch],
                            r_arch, kind="arch"))
        g_arch = d("greedy-arch")
        if "greedy" in methods:
            runs.append(Run(f"{tag}/greedy arch", seed, "baseline",
                            ["greedy", "--supernet", os.path.join(s, "checkpoints", "last.pt"), "--quiet",
                             *extra, "--out", g_arch], g_arch, kind="arch", after=[s]))
        for recipe in recipes:
            inherit = recipe == "inherit"
            # explicit both ways: retrain's default (--init auto) would start DAN's own architecture
            # (its arch.json sits beside the supernet) from the supernet under the scratch recipe too
            init = (["--set", f"train.init_from={os.path.join(s, 'checkpoints', 'last.pt')}"] if inherit
                    else ["--init", "scratch"])
            for method, arch_dir in (("dan", s), ("uniform", u), ("random", r_arch), ("greedy", g_arch)):
                if method not in methods:
                    continue
                o = d(method + ("-inherit" if inherit else ""))
                runs.append(Run(f"{tag}/{method}{RECIPES[recipe]}", seed, "retrain",
                                [os.path.join(arch_dir, "arch.json"), "--seed", str(seed), "--quiet", *init,
                                 *gen["retrain"], *extra, "--out", o], o,
                                after=[arch_dir] + ([s] if inherit else []),
                                arch_only=[] if inherit and arch_dir == s else [arch_dir]))
    return runs


def _ablation_runs(out: str, chosen: list, seeds: range, extra: list, config: str, recipes: tuple, wanted,
                   gen: dict) -> list[Run]:
    """The ablations' runs at the chosen budgets that have them, in the generation ``gen``'s folder:
    each search variant's searches and retrains (per recipe), then the last-step variants on the
    default searches' supernets. A variant that only sets what the generation sets is its default."""
    runs: list[Run] = []
    for tag, flag, value in chosen:
        for name, _, sets in ABLATIONS:
            if not wanted(name) or tag not in ablation_budgets(name) or set(sets) <= set(gen["sets"]):
                continue
            for seed in seeds:
                d = lambda what: os.path.join(out, tag, gen["folder"], f"ablation-{name}-{what}-s{seed}")  # noqa: E731
                s = d("search")
                args = ["--config", config, "--seed", str(seed), "--quiet", *extra, flag, value, *SEARCH_SETS,
                        *gen["search"]]
                for kv in sets:
                    args += ["--set", kv]
                retrain = _retrain_flags([*gen["sets"], *sets], config)
                runs.append(Run(f"{tag}/ablation {name} search", seed, "search", args + ["--out", s], s,
                                kind="search"))
                # retrained by each recipe like the "dan" row it compares with: from scratch, or
                # from the variant's own supernet (as "dan inherited" starts from the default's)
                if "scratch" in recipes:
                    o = d("retrain")
                    runs.append(Run(f"{tag}/ablation {name}", seed, "retrain",
                                    [os.path.join(s, "arch.json"), "--seed", str(seed), "--quiet", "--init",
                                     "scratch", *retrain, *extra, "--out", o], o, after=[s], arch_only=[s]))
                if "inherit" in recipes:
                    o = d("inherit")
                    init = f"train.init_from={os.path.join(s, 'checkpoints', 'last.pt')}"
                    runs.append(Run(f"{tag}/ablation {name}{RECIPES['inherit']}", seed, "retrain",
                                    [os.path.join(s, "arch.json"), "--seed", str(seed), "--quiet", "--set", init,
                                     *retrain, *extra, "--out", o], o, after=[s]))
                    for method in ABLATION_OWN_BASELINES.get(name, ()):
                        # the baseline's own arch.json (uniform: one per budget, random: per seed;
                        # greedy ranks its moves on a supernet, so it is made again from the variant's)
                        a = os.path.join(out, tag, f"{method}-arch" + ("" if method == "uniform" else f"-s{seed}"))
                        if method == "greedy":
                            a = d("greedy-arch")
                            runs.append(Run(f"{tag}/ablation {name} greedy arch", seed, "baseline",
                                            ["greedy", "--supernet", os.path.join(s, "checkpoints", "last.pt"),
                                             "--quiet", *extra, "--out", a], a, kind="arch", after=[s]))
                        o = d(f"{method}-inherit")  # the suite's recipe (greedy's arch.json holds the search's)
                        runs.append(Run(f"{tag}/ablation {name} {method}{RECIPES['inherit']}", seed, "retrain",
                                        [os.path.join(a, "arch.json"), "--seed", str(seed), "--quiet", "--set",
                                         init, *retrain, *extra, "--out", o], o, after=[a, s]))
        if "inherit" not in recipes or tag not in ABLATION_BUDGETS:
            continue
        for name, _, flags in FINISH_ABLATIONS:
            if not wanted(name):
                continue
            for seed in seeds:
                s = os.path.join(out, tag, gen["folder"], f"dan-search-s{seed}")
                last = os.path.join(s, "checkpoints", "last.pt")
                d = lambda what: os.path.join(out, tag, gen["folder"], f"ablation-{name}-{what}-s{seed}")  # noqa: E731
                a = d("arch")
                runs.append(Run(f"{tag}/ablation {name} arch", seed, "baseline",
                                [flags[0], "--supernet", last, *flags[1:], "--quiet", *extra, "--out", a], a,
                                kind="arch", after=[s]))
                o = d("inherit")
                runs.append(Run(f"{tag}/ablation {name}{RECIPES['inherit']}", seed, "retrain",
                                [os.path.join(a, "arch.json"), "--seed", str(seed), "--quiet", "--set",
                                 f"train.init_from={last}", *gen["retrain"], *extra, "--out", o], o, after=[a, s]))
    return runs
