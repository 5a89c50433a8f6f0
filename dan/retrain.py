"""The config of a retrain: the architecture a search found, trained from scratch or from the
search's supernet.

``tools/retrain.py`` and every tuning trial (:mod:`dan.tune`) retrain a found ``arch.json``; both
build the run's config here, so they differ only in what they pass:

* ``tools/retrain.py`` starts from :func:`retrain_base` (the search's own config, stored in
  ``arch.json``, on the whole training split) or the user's ``--config``, applies the flags, and
  evaluates on the test split (``validation=0``);
* a tuning trial starts from its search's config (the trial's training subset kept) and evaluates
  on a ``validation`` part of the training split, never on the test split.

>>> cfg = retrain_config("runs/s/arch.json", "adjoint", base, validation=0.1)   # doctest: +SKIP
>>> cfg.train.eval_split, cfg.data.holdout, cfg.adjoint.arch                     # doctest: +SKIP
('holdout', 0.1, 'runs/s/arch.json')
"""

from __future__ import annotations

import copy
import os

from dan.arch import Arch, load_arch
from dan.config import DEFAULT_RETRAIN_INIT, RETRAIN_INITS, Config, SearchConfig
from dan.errors import UserError
from dan.saved import newer_key, read_former, refusal, refused

METHODS = ("adjoint", "standard")


def supernet_checkpoint(arch: str, required: bool = True, recorded: str | None = None) -> str | None:
    """The search's supernet checkpoint beside ``arch.json``, else the one the architecture records
    (``recorded``: greedy, refine and shortlist widths name the supernet they were picked on, so
    their retrain starts where DAN's does); without one a :class:`UserError` (``required``) or None."""
    path = os.path.join(os.path.dirname(os.path.abspath(arch)), "checkpoints", "last.pt")
    if not os.path.isfile(path) and recorded and os.path.isfile(recorded):
        path = recorded
    if not os.path.isfile(path):
        if not required:
            return None
        raise UserError(f"no search checkpoint at {path} to start the retrain from: retrain with "
                        f"--init scratch, or start from another with --set train.init_from=PATH")
    return path


def retrain_base(arch: Arch, path: str = "arch.json") -> Config:
    """The config a retrain of ``arch`` (read from ``path``) starts from when the user names none:
    the search's own (stored in ``arch.json``; defaults for an ``arch.json`` without one) on its
    whole training split: no training subset, no held-out part.

    An older DAN's values are read as it ran them (:func:`dan.saved.read_former`), and the sections
    a retrain does not read are not held against it: the ``methods`` sections are left out (a
    retrain runs adjoint or standard, which take no options) and a search section today's checks
    refuse is replaced by the defaults. An upgrade audit's retrains of a 6c13876 search with
    ``search.arch_samples: 1`` and of a 4b14b54 one with ``methods.kd.teacher_epochs: 0`` were
    refused over values they never use. A key this DAN does not know names the file and the DAN
    that wrote it (:func:`dan.saved.newer_key`). The config records the file and its DAN (``saved``,
    ``saved_from``, not saved) for :func:`dan.saved.refusal`."""
    if not arch.config:
        cfg = Config()
    else:
        code = (arch.search or {}).get("code")
        d, _ = read_former(arch.config)
        d = {k: v for k, v in d.items() if k != "methods"}
        try:
            cfg = Config.from_dict(d)
        except UserError as e:
            raise (newer_key(e, path, code) if str(e).startswith("unknown config key") else refusal(e, path, code))
        if refused(Config(search=cfg.search)):
            cfg.search = SearchConfig()
        cfg.saved, cfg.saved_from = copy.deepcopy(cfg), (path, code)
    cfg.data.holdout, cfg.data.train_subset = 0.0, None
    return cfg


def retrain_config(arch: str, method: str, base: Config, *, validation: float = 0.0,
                   out: str | None = None, init: str = DEFAULT_RETRAIN_INIT) -> Config:
    """The resolved config of a retrain of ``arch`` by ``method``.

    Args:
        arch: path of the ``arch.json`` (stored as given in ``adjoint.arch`` or ``model.arch``).
        method: ``"adjoint"`` (big network + the found small network, adjoint loss) or
            ``"standard"`` (the found small network alone: the ablation).
        base: the data and training settings (not changed). Its model is replaced by the
            architecture's search space and arguments.
        validation: 0 evaluates on the test split; a fraction in (0, 1) holds that part of the
            training split out and evaluates on it (``train.eval_split: holdout``, batches of
            ``data.batch_size``: tuning, which never sees the test split).
        out: the run folder; default ``<folder of arch.json>/retrain-<method>`` (``retrain-adjoint-scratch``
            for ``init="scratch"``).
        init: ``"auto"`` (an adjoint retrain starts from the supernet when the search's
            checkpoint is beside ``arch``, else from scratch), ``"scratch"`` or ``"supernet"``
            (:data:`dan.config.RETRAIN_INITS`); a ``train.init_from`` already in ``base`` (the
            user's ``--set``) wins over all three.
    Returns:
        a new config, resolved for a ``"retrain"`` run (:meth:`Config.resolve`).
    """
    if method not in METHODS:
        raise UserError(f"unknown retrain method '{method}': choose adjoint or standard")
    if init not in RETRAIN_INITS:
        raise UserError(f"unknown retrain start '{init}': choose {' or '.join(RETRAIN_INITS)}")
    found = load_arch(arch)
    cfg = copy.deepcopy(base)
    if init == "supernet" and method != "adjoint":
        raise UserError("--init supernet starts the adjoint network (big + found small) from the search's "
                        "supernet: use it with --method adjoint, or --init scratch")
    if init != "scratch" and method == "adjoint" and not cfg.train.init_from:
        cfg.train.init_from = supernet_checkpoint(arch, required=init == "supernet",
                                                  recorded=(found.search or {}).get("supernet"))
    if cfg.train.deploy_memory_format is None and (found.latency or {}).get("memory_format"):
        # the layout the latency search measured this network fastest in (dan.latency)
        cfg.train.deploy_memory_format = found.latency["memory_format"]
    batch = ((found.latency or {}).get("device") or {}).get("batch")
    if "latency" in found.budget and isinstance(batch, int) and batch not in cfg.train.latency_batches:
        # the summary times the batch the budget is for too: a --latency-batch 4 search's network
        # was timed at batches 1 and 64 only, beside a budget that did not say it was batch 4's
        cfg.train.latency_batches = tuple(sorted((*cfg.train.latency_batches, batch)))
    cfg.model.space = found.space
    # the class count and input channels come from the data, as in any run
    cfg.model.args = {k: v for k, v in found.space_args.items() if k not in ("num_classes", "in_channels")}
    cfg.train.method = method
    if method == "adjoint":
        cfg.adjoint.arch, cfg.model.arch = arch, None
    else:
        cfg.model.arch, cfg.adjoint.arch = arch, None
    cfg.data.holdout = validation
    cfg.train.eval_split = "holdout" if validation else "test"
    if validation:  # the search's held-out batches were its architecture batches: not these
        cfg.data.holdout_batch_size = None
    # the paper's recipe beside the default one: README's two commands one after the other
    scratch = "-scratch" if method == "adjoint" and init == "scratch" else ""
    cfg.out = out or os.path.join(os.path.dirname(arch), f"retrain-{method}{scratch}")
    if not out:  # a folder of the search's the user did not name: not a link out of it (the search may be another's)
        from dan.checkpoint import check_no_links

        check_no_links(cfg.out, os.path.dirname(arch) or ".")
    return cfg.resolve("retrain")
