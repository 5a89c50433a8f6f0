"""The reproduction suites' runs: a :class:`Run` is one ``dan`` command with its run folder, and
:func:`plan` lists every run of a suite (every method of the papers, several seeds) in an order
that respects dependencies (teachers and searches first).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from dan.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# The marker of a search folder whose arch.json was written from its ledger record (the widths only:
# no checkpoint, no traces): enough for a retrain from scratch; not a finished search.
RESTORED = "restored.json"


@dataclass
class Run:
    key: str  # method label in the table, e.g. "adjoint a=4"
    seed: int
    tool: str  # the command (python -m dan <tool>): train | search | retrain | baseline
    args: list
    out: str
    kind: str = "train"  # train | search | arch (a width baseline: dan baseline)
    after: list = field(default_factory=list)  # run folders that must be finished first
    # the folders of ``after`` the run reads only the arch.json of (a retrain from scratch reads its
    # search's widths, not its checkpoint): a recorded search or width baseline whose folder is gone
    # is restored from its ledger record for such a run instead of made again
    # (dan.suite.run.needed_folders)
    arch_only: list = field(default_factory=list)
    # the suite's folder, where its runner's elapsed wall time is kept (None: the runs' common folder,
    # which for a subset of a suite's runs, e.g. one budget, would be a subfolder)
    root: str | None = None

    @property
    def done(self) -> bool:
        """Finished in its folder: a search or width baseline holds its arch.json (not one restored
        from the ledger: :data:`RESTORED`), any other run its summary.json."""
        if self.kind in ("search", "arch"):
            return (os.path.isfile(os.path.join(self.out, "arch.json"))
                    and not os.path.isfile(os.path.join(self.out, RESTORED)))
        return os.path.isfile(os.path.join(self.out, "summary.json"))

    def command(self) -> list:
        """The subprocess that runs it: ``python -m dan <tool> args`` (the library's entry point,
        in its own process; the runner starts it in the repository, so it is this ``dan``)."""
        return [sys.executable, "-m", "dan", self.tool, *self.args]

    def command_line(self) -> str:
        """The command as a user would type it (``python -m dan train --config …``)."""
        return " ".join(["python", "-m", "dan", self.tool, *self.args])


# Each suite: the config, its epochs, and the budget of the DAN run (the FLOPs of the α = 4 small
# network, measured by dan.count at plan time).
SUITES = {
    "fashion-mnist": {"config": "configs/fashion_mnist_suite.yaml", "seeds": 3},
    "cifar100": {"config": "configs/cifar100_resnet50.yaml", "seeds": 3},
    "imagenet": {"config": "configs/imagenet_resnet50.yaml", "seeds": 1},
}


def suite_config(config_path: str, sets: tuple = ()):
    """The suite's config file with the ``KEY=VALUE`` overrides ``sets`` every run is given (a
    smoke suite's ``--set``, ``--epochs``): what its runs and its page's settings are."""
    from dan.config import Config

    cfg = Config.from_file(config_path)
    for kv in sets:
        key, _, value = kv.partition("=")
        cfg.set(key.strip(), value)
    return cfg


def alpha4_flops(config_path: str, data: str | None = None, sets: tuple = ()) -> int:
    """FLOPs of the small network AN extracts at α = 4 from the config's base network (its data
    folder ``data``, the runs' ``--data``, when given: an image folder's classes are read there;
    with the runs' ``--set`` overrides ``sets``)."""
    from dan.adjoint import extract_small, to_adjoint
    from dan.cost import count_layers
    from dan.data import dataset_info
    from dan.models import build_model, input_shape

    cfg = suite_config(config_path, sets)
    if data:
        cfg.data.data = data
    info = dataset_info(cfg.data)
    shape = input_shape(info)
    a = cfg.adjoint
    anet = to_adjoint(build_model(cfg.model, info), alpha=4, stem=a.stem, unmasked=tuple(a.unmasked),
                      input_shape=shape)
    return count_layers(extract_small(anet), shape).flops


def add_sets(runs: list[Run], sets: list) -> list[Run]:
    """Give every run the ``KEY=VALUE`` overrides ``sets`` (a smoke suite's) as ``--set`` flags after
    its own, just before its ``--out``: the last ``--set`` of a key wins, so they override the run's
    own settings (a search generation's ``train.epochs=6`` too). Returns ``runs``."""
    flags = [a for kv in sets for a in ("--set", kv)]
    for r in runs if flags else ():
        if r.args[-2:-1] != ["--out"]:  # every plan ends a run's flags with its folder
            raise ValueError(f"{r.key}: its arguments do not end with --out: {r.args}")
        r.args = r.args[:-2] + flags + r.args[-2:]
    return runs


def plan(suite: str, out: str, seeds: int | None = None, extra: list | None = None,
         dry_run: bool = False, sets: tuple = ()) -> list[Run]:
    """The runs of a suite, in an order that respects dependencies (teachers first). A ``dry_run``
    plans without the data: the DAN search's budget (the α = 4 network's FLOPs, which an image
    folder's class count changes) is then shown as counted when the suite runs. ``sets``: the
    overrides the runs will be given (:func:`add_sets`), which the budget is counted with."""
    if suite not in SUITES:
        # "search" is planned by dan.suite.search (tools/reproduce.py sends it there): named here too
        raise UserError(f"unknown suite '{suite}': choose one of {', '.join(SUITES)} or search")
    spec = SUITES[suite]
    config = os.path.join(ROOT, spec["config"])
    out = os.path.abspath(out)  # runs start in the repository root, teachers are found by path
    n = seeds or spec["seeds"]
    extra = list(extra or [])
    try:
        budget = alpha4_flops(config, extra[extra.index("--data") + 1] if "--data" in extra[:-1] else None, sets)
    except UserError:
        if not dry_run:
            raise
        budget = "<the α = 4 network's FLOPs, counted from the data when the suite runs>"  # its dry run refused
    runs: list[Run] = []
    for seed in range(n):
        base = ["--config", config, "--seed", str(seed), "--quiet", *extra]
        d = lambda name: os.path.join(out, f"{name}-s{seed}")
        std = d("standard")
        runs.append(Run("standard", seed, "train", base + ["--method", "standard", "--out", std], std))
        runs.append(Run("dropout", seed, "train", base + ["--method", "dropout", "--out", d("dropout")], d("dropout")))
        for alpha in (2, 4, 8):
            o = d(f"adjoint-a{alpha}")
            runs.append(Run(f"adjoint a={alpha}", seed, "train",
                            base + ["--method", "adjoint", "--alpha", str(alpha), "--out", o], o))
        o = d("adjoint-a4-b0.5")
        runs.append(Run("adjoint a=4 b=0.5", seed, "train",
                        base + ["--method", "adjoint", "--alpha", "4", "--beta", "0.5", "--out", o], o))
        o = d("small-alone")
        runs.append(Run("small alone (a=4 net)", seed, "train",
                        base + ["--method", "standard", "--set", "methods.standard.network=small", "--out", o], o))
        o = d("kd")
        runs.append(Run("kd (a=4 student)", seed, "train",
                        base + ["--method", "kd", "--set", f"methods.kd.teacher={std}", "--out", o], o, after=[std]))
        s = d("dan-search")
        runs.append(Run("dan search", seed, "search", base + ["--budget-flops", str(budget), "--out", s], s,
                        kind="search"))
        r = d("dan")
        runs.append(Run("dan (a=4 FLOPs)", seed, "retrain",
                        [os.path.join(s, "arch.json"), "--seed", str(seed), "--quiet", "--init", "scratch", *extra,
                         "--out", r], r,
                        after=[s]))
        o = d("expandnet")
        runs.append(Run("expandnet (a=4 net)", seed, "train", base + ["--method", "expandnet", "--out", o], o))
        o = d("lowrank")
        runs.append(Run("lowrank", seed, "train", base + ["--method", "lowrank", "--out", o], o))
        o = d("ksanc")
        runs.append(Run("ksanc (a=4 student)", seed, "train",
                        base + ["--method", "ksanc", "--set", f"methods.ksanc.teacher={std}", "--out", o], o,
                        after=[std]))
    return runs
