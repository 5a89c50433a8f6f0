"""The papers' comparisons in one table: every method, several seeds, results in docs/results.md.

Usage:
    python tools/reproduce.py --suite fashion-mnist --dry-run     # list the runs it would start
    python tools/reproduce.py --suite fashion-mnist               # run them (skips finished ones)
    python tools/reproduce.py --suite fashion-mnist --report-only # rewrite docs/results.md
    python tools/reproduce.py --suite cifar100 --data ~/data/cifar100 --download   # on a GPU machine
    python tools/reproduce.py --suite search --dry-run            # DAN vs uniform/random/greedy widths
    python tools/reproduce.py --suite search                      # -> docs/search.md

Runs per seed: standard, dropout, adjoint (alpha 2, 4, 8; alpha 4 with beta 0.5), KD into the
alpha-4 small network (teacher: the standard run), DAN search at the FLOPs of the alpha-4 small
network + adjoint retrain, ExpandNet of the alpha-4 small network, low-rank, KSANC. Each run is the
same train.py / search.py / retrain.py command a user would type; an interrupted suite continues
where it stopped (finished runs are skipped, a half-done run is resumed); `touch <out>/suite_stop`
stops it between runs, the runs in progress finished and kept.

The search suite (dan/suite/search.py; its page: dan/suite/search_report.py) asks whether DAN's
widths beat uniform, random and greedy widths at the same cost: FLOPs budgets of 10/25/50 % and a
params budget of 25 %, 3 seeds, every architecture retrained with the same recipe (--recipe: from
that seed's supernet, the default, from scratch, or both); then the ablations of the search.
--no-ablations leaves those out; --confirmation runs the fresh samples fixed in advance instead.

Where the page goes: --results, else docs/results.md (fashion-mnist) or docs/search.md (search) when
the runs are in the suite's default folder (no --out, or --out runs/suite-<suite>), else
<out>/results.md or <out>/search.md. The search suite's ledger of finished runs sits beside its
page (docs/search-runs.json, or <out>/search-runs.json). A suite tried under another --out (a
smoke run in /tmp) wrote over the committed page and its records; to update docs/ from runs kept
elsewhere, give --results docs/search.md (or docs/results.md).

Smoke runs: --epochs N and --set KEY=VALUE (repeatable) are given to every run, after its own
settings (as --set train.epochs=N and --set KEY=VALUE: the last --set of a key wins, so they override
a search generation's own epochs too), to try a suite small, e.g. (one command)
    python tools/reproduce.py --suite search --seeds 1 --budgets flops10 --methods dan,uniform
        --no-ablations --epochs 1 --set search.warmup_epochs=0 --set train.limit_batches=2 --out /tmp/smoke
Their runs are not the suite's: they go in a folder of their own named by those flags,
<out>/smoke-<digest>/, with their own page and ledger there, and --results is refused with them (a
finished 1-epoch run in the suite's folder was taken for a full run's, and its record in the
suite's ledger would have replaced the full run's record under the same key). The same flags find
the same folder again, so a smoke suite resumes like any other.
"""

from __future__ import annotations

import os

from dan.cli.common import Parser, nonnegative_int, positive_int
from dan.errors import UserError

PROG = "reproduce.py"  # the tool's name in usage and error lines (tools/reproduce.py)
# what Ctrl-C leaves and how to go on (dan.cli.common.interrupted_line)
INTERRUPTED = ("interrupted: finished runs are recorded and a half-done run is resumed: run the same command "
               "to continue")


def get_args_parser(prog: str = PROG):
    from dan.suite.search import GENERATION, GENERATIONS

    p = Parser(prog=prog, description=__doc__)
    p.add_argument("--suite", required=True, help="fashion-mnist, cifar100, imagenet or search")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="runs at once, one thread each (default 1: one run on all cores)")
    p.add_argument("--no-ablations", action="store_true", help="search suite: leave out the ablations")
    p.add_argument("--ablations", help="search suite: comma-separated ablations to plan (default all; e.g. "
                                       "refine,no-refine: the search's last step on the default searches' supernets)")
    # inherit by default: every budget's verdicts are drawn under it (a seed's supernet is shared by
    # every method, so the seeds spread less), and both recipes make the comparison 1.4 times as long
    # (docs/search.md: the time line, from the recorded runs)
    p.add_argument("--recipe", choices=("scratch", "inherit", "both"), default="inherit",
                   help="search suite: retrain every method from that seed's DAN supernet (weight inheritance, "
                        "the default), from scratch (the paper's recipe), or both")
    p.add_argument("--budgets", help="search suite: comma-separated budget tags to run (default all: "
                                     "flops10,flops25,flops50,params25)")
    p.add_argument("--methods", help="search suite: comma-separated methods to retrain (default all: "
                                     "dan,uniform,random,greedy; DAN's search runs whatever they are)")
    p.add_argument("--generation", choices=tuple(GENERATIONS), default=GENERATION,
                   help=f"search suite: which default search DAN runs (default {GENERATION}; 3-epoch searches as "
                        "long as the retrain and keeps the suite within about 3 hours; each has its own folders)")
    p.add_argument("--out", help="folder of the suite's runs (default runs/suite-<suite>)")
    p.add_argument("--seeds", type=positive_int, help="number of seeds (default: the suite's)")
    p.add_argument("--first-seed", type=nonnegative_int, default=0,
                   help="search suite: plan seeds from this one up to --seeds (default 0), e.g. to add seeds or a "
                        "method on new seeds only")
    p.add_argument("--confirmation", action="store_true",
                   help="search suite: run the fresh samples fixed in advance (CONFIRMATIONS in dan/suite/search.py) "
                        "instead of the planned runs; the page is written as the other flags say")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their commands, run nothing")
    p.add_argument("--report-only", action="store_true", help="only write the results page")
    p.add_argument("--results", help="results page (default: docs/results.md for fashion-mnist and docs/search.md "
                                     "for search when the runs are in the default folder runs/suite-<suite>, "
                                     "else <out>/results.md or <out>/search.md); the search suite's ledger of "
                                     "finished runs is kept beside it (<page>-runs.json)")
    p.add_argument("--epochs", type=positive_int,
                   help="smoke runs: every run trains (and searches) N epochs (--set train.epochs=N after its own "
                        "settings); the runs, page and ledger go in <out>/smoke-<digest>/, apart from the suite's")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="smoke runs: a config override given to every run as its own --set, after its settings "
                        "(repeatable; e.g. train.limit_batches=2, search.warmup_epochs=0); in <out>/smoke-<digest>/ "
                        "like --epochs")
    p.add_argument("--data", help="dataset folder, passed to every run")
    p.add_argument("--download", action="store_true", help="passed to every run")
    p.add_argument("--device", help="passed to every run")
    return p


# The suites whose page is committed in docs/ (the search suite's ledger beside it: docs/search-runs.json)
COMMITTED_PAGES = {"fashion-mnist": "docs/results.md", "search": "docs/search.md"}


def default_out(suite: str) -> str:
    """The suite's default folder of runs."""
    return os.path.join("runs", f"suite-{suite}")


def page_path(suite: str, out: str, results: str | None) -> str:
    """The results page: ``results`` when given; the committed page in docs/ only when the runs are
    in the suite's default folder (the page and the search suite's ledger are the committed record
    of those runs: a smoke suite under ``--out /tmp/x`` overwrote them); else beside the runs."""
    if results:
        return results
    committed = COMMITTED_PAGES.get(suite)
    if committed and os.path.abspath(out) == os.path.abspath(default_out(suite)):
        return committed
    return os.path.join(out, os.path.basename(committed or "results.md"))


def names(flag: str, value: str | None) -> tuple | None:
    """A comma-separated flag's names (None: not given, all of them). An empty list is refused, not
    read as "all": `--methods ""` (a shell variable left empty) planned every method."""
    if value is None:
        return None
    found = tuple(n.strip() for n in value.split(","))
    if not any(found):
        raise UserError(f"{flag} is empty: give comma-separated names, or leave {flag} out for all of them")
    if not all(found):
        raise UserError(f"{flag} {value!r} has an empty name: separate the names by single commas")
    return found


def _run_flags(args) -> list:
    """The flags every run is given: --data (absolute: the runs start in the repository), --download, --device."""
    for flag, value in (("--out", args.out), ("--results", args.results), ("--data", args.data),
                        ("--device", args.device)):
        if value is not None and not value.strip():  # "" was read as "not given"
            raise UserError(f"{flag} is empty: give a value, or leave {flag} out")
    extra = ["--data", os.path.abspath(os.path.expanduser(args.data))] if args.data else []
    return extra + (["--download"] if args.download else []) + (["--device", args.device] if args.device else [])


def _search_choice(args) -> dict:
    """The search suite's rows, recipes, budgets and ablations, as :func:`dan.suite.search.plan` takes them."""
    from dan.suite.search import METHODS

    if args.ablations is not None and args.no_ablations:
        raise UserError("give --ablations or --no-ablations, not both")
    ablations = names("--ablations", args.ablations)
    budgets, methods = names("--budgets", args.budgets), names("--methods", args.methods)
    return dict(ablations=ablations if ablations is not None else not args.no_ablations,
                recipes=("scratch", "inherit") if args.recipe == "both" else (args.recipe,),
                budgets=list(budgets) if budgets is not None else None, methods=methods or METHODS)


def _refuse_search_flags(args) -> None:
    """The search suite's flags given to another suite: each was accepted and ignored."""
    from dan.suite.search import GENERATION

    only = [flag for flag, given in (("--confirmation", args.confirmation), ("--no-ablations", args.no_ablations),
                                     ("--ablations", args.ablations is not None),
                                     ("--recipe", args.recipe != "inherit"),
                                     ("--budgets", args.budgets is not None), ("--methods", args.methods is not None),
                                     ("--generation", args.generation != GENERATION),
                                     ("--first-seed", args.first_seed)) if given]
    if only:
        raise UserError(f"{only[0]} is for the search suite: add --suite search, or drop it")


def smoke_sets(args) -> list:
    """The ``KEY=VALUE`` overrides of a smoke suite (--epochs, then every --set), checked against the
    suite's config before any run starts (a typo failed in the first run, after the plan was made)."""
    from dan.suite.plan import ROOT, SUITES, suite_config
    from dan.suite.search import CONFIG, GENERATIONS

    sets = ([f"train.epochs={args.epochs}"] if args.epochs else []) + list(args.set)
    bad = next((kv for kv in sets if "=" not in kv or not kv.split("=", 1)[0].strip()), None)
    if bad is not None:
        raise UserError(f"--set takes KEY=VALUE, got {bad!r}")
    # one spelling (the digest names the folder: "k = v" and "k=v" found two folders for one suite;
    # and the page's settings read the key unstripped)
    sets = [f"{k.strip()}={v.strip()}" for k, _, v in (kv.partition("=") for kv in sets)]
    if sets and args.results is not None:
        raise UserError("--epochs and --set make smoke runs, whose page and ledger stay beside them in "
                        "<out>/smoke-<digest>/ (their records would replace the full runs' in another ledger): "
                        "drop --results")
    if sets and args.suite in (*SUITES, "search"):
        config = CONFIG if args.suite == "search" else SUITES[args.suite]["config"]
        suite_config(os.path.join(ROOT, config), tuple(sets)).validate()
        # and as the suite's searches resolve them, after their generation's own settings: --epochs 1
        # passed the check above and then every search was refused (its warm-up took all its epochs)
        own = GENERATIONS[args.generation][1] if args.suite == "search" else []
        search = suite_config(os.path.join(ROOT, config), (*own, *sets))
        if all(getattr(search.search, f"budget_{k}") is None for k in ("flops", "params", "latency")):
            search.search.budget_flops = "25%"  # the suite gives each search its budget
        search.resolve("search")
    return sets


def smoke_folder(sets: list) -> str:
    """The folder, under --out, of the runs made with the overrides ``sets``: named by a digest of
    them, so runs made with other flags, or none, are never taken for these (module doc)."""
    import hashlib

    return "smoke-" + hashlib.sha256("\n".join(sets).encode()).hexdigest()[:10]


def main(argv, prog: str = PROG) -> int:
    args = get_args_parser(prog).parse_args(argv)
    from dan import suite
    from dan.suite.plan import add_sets

    sets = smoke_sets(args)
    extra = _run_flags(args)  # (checked before the smoke note: it was printed above a refusal)
    out = args.out or default_out(args.suite)
    if sets:
        out = os.path.join(out, smoke_folder(sets))
        print(f"smoke runs ({' '.join('--set ' + kv for kv in sets)}): their folders, page and ledger in {out}")
    if args.suite == "search":
        chosen = _search_choice(args)
        runs = suite.search.plan(out, args.seeds, extra, generation=args.generation, first_seed=args.first_seed,
                                 **chosen)
        confirm = suite.search.confirmation_plan(out, extra, args.generation)
    else:
        _refuse_search_flags(args)
        runs, confirm = suite.plan(args.suite, out, args.seeds, extra, dry_run=args.dry_run, sets=tuple(sets)), {}
    add_sets([*runs, *(r for rs in confirm.values() for r in rs)], sets)
    todo = [r for rs in confirm.values() for r in rs] if args.confirmation else runs
    results = page_path(args.suite, out, args.results)
    # the search suite's ledger (beside its page) keeps every finished run's record: a run recorded
    # there is not made again unless a run to be made needs its folder
    ledger = suite.search_report.suite_ledger(runs, results) if args.suite == "search" else None
    if ledger is not None and not ledger.runs and not sets and results != COMMITTED_PAGES["search"]:
        _say_committed_records(runs, out)
    if ledger is not None:  # a record not planned this time can be built on a planned search
        # (the confirmation's seeds only when it runs: else 16k related runs over seeds 0-47 were
        # scanned for each record)
        ledger.related = suite.search.related_runs(out, todo if args.confirmation else runs, extra)
    if args.dry_run:
        return dry_run(todo, ledger)
    if not args.report_only:
        suite.run(todo, log=lambda m: print(m, flush=True), jobs=args.jobs, ledger=ledger)
    fig_dir = os.path.join(os.path.dirname(results) or ".", "figures")
    if args.suite == "search":
        # the default search's other generations are reported (never run) beside the current one
        others = {g: add_sets(suite.search.plan(out, args.seeds, extra, generation=g, **chosen), sets)
                  for g in suite.search.GENERATIONS if g != args.generation}
        page = suite.search_report
        settings = _smoke_note(sets) + page.settings_text(args.seeds, args.generation, tuple(sets))
        # a smoke page shows the fixed samples only when it ran them (their empty sections said nothing)
        page.write_report(runs, results, fig_dir, settings, others, confirm if args.confirmation or not sets else {},
                          related=ledger.related, smoke=bool(sets))
        print(f"results: {results}")
        return 0
    header = f"# Results: {args.suite} suite\n\nGenerated by `python tools/reproduce.py --suite {args.suite}`."
    settings = _smoke_note(sets) + suite.suite_settings(args.suite, args.seeds, tuple(sets))
    suite.write_results(runs, results, fig_dir, header, settings)
    print(f"results: {results}")
    return 0


def _say_committed_records(runs: list, out: str) -> None:
    """A note (stdout) when the committed ledger holds records of the runs planned under another
    ``--out``, whose own ledger is empty: they would all be made again (hours), silently, where the
    default folder's command builds on them."""
    from dan.suite.ledger import ledger_path
    from dan.suite.search_report import suite_ledger

    committed = COMMITTED_PAGES["search"]
    if not os.path.isfile(ledger_path(committed)):
        return
    held = sum(suite_ledger(runs, committed).done(r) for r in runs)
    if held:
        print(f"note: {held} of these runs are recorded in {ledger_path(committed)}, and "
              f"{out} has no ledger yet: a run of this command makes them again; give --results {committed} to "
              f"build on those records (the page and its ledger there are then updated)")


def _smoke_note(sets: list) -> str:
    """The page's warning that its runs are smoke runs ('' for the suite's own)."""
    if not sets:
        return ""
    return (f"**Smoke runs, not the suite's:** every run was given `{' '.join('--set ' + kv for kv in sets)}` after "
            "its own settings; these numbers say nothing about the methods at the suite's size. ")


def dry_run(runs: list, ledger) -> int:
    """List each run with its state and command, then the count of each state: ``done`` (finished in
    its folder), ``restore`` (its arch.json written from the ledger's record), ``recorded`` (in the
    ledger, its folder gone and not needed), and the runs to make: ``todo`` (a new folder),
    ``resume`` (a half-done folder with a checkpoint: continued with --resume) and ``clear`` (a
    folder killed before its first checkpoint, or restored from the ledger: the runner clears it and
    starts again; one it would refuse to clear says why). The dry run said "todo" for all three."""
    from dan.suite.run import check_clearable, clear_reason, needed_folders, restore_command, start_state, suite_root

    make, restore = needed_folders(runs, ledger)
    # by identity: `r in make` compared runs field by field, 24M comparisons for --seeds 60
    make, restore = {id(r) for r in make}, {id(r) for r in restore}
    states = []
    for r in runs:
        state = ("done" if r.done else "restore" if id(r) in restore else
                 {"new": "todo"}.get(start_state(r), start_state(r)) if id(r) in make else "recorded")
        states.append(state)
        # a restored folder's arch.json is written from its record, not by the run's own command
        line = " ".join(["python", *restore_command(r, runs)[1:]]) if id(r) in restore else r.command_line()
        if state == "resume":
            line += " --resume"
        elif state == "clear":
            try:
                check_clearable(r.out, suite_root(runs))
                line += f"  (its folder is cleared first: {clear_reason(r)})"
            except UserError as e:
                line += f"  (the runner will stop here: {e})"
        print(f"[{state}] {r.key:22s} seed {r.seed}: {line}")
    # each state counted as listed ("102 more recorded" counted 6 recorded runs listed as todo,
    # made again because a run to be made needs their folder)
    again = sum(s in ("todo", "resume", "clear") and ledger is not None and ledger.done(r)
                for s, r in zip(states, runs))
    parts = [f"{states.count('todo')} to make" + (f" ({again} of the runs to make recorded, made again for a "
                                                   f"folder a run to be made needs)" if again else ""),
             f"{states.count('resume')} to resume from their last checkpoint",
             f"{states.count('clear')} to clear and start again (killed before their first checkpoint, or restored)",
             f"{states.count('restore')} restored from their records",
             f"{states.count('recorded')} recorded" + (f" in {ledger.path} (folders gone)" if ledger else ""),
             f"{states.count('done')} finished"]
    print(f"{len(runs)} runs: " + ", ".join(p for p in parts if not p.startswith("0 ")))
    return 0
