"""The reproduction suites: many runs of the same commands a user types, one results page.

A suite is a list of runs (``dan`` command + arguments + run folder). :func:`plan` lists the runs of the
papers' suites (every method, several seeds), :mod:`dan.suite.search` those of the width-search
suite (DAN against uniform, random and greedy widths); :func:`run` executes the unfinished ones
(a run is finished when its folder holds ``summary.json``, a search when it holds ``arch.json``;
an interrupted run is resumed), each as a ``python -m dan <command>`` subprocess; :func:`write_results` turns the finished
runs into ``docs/results.md`` and :func:`dan.suite.search_report.write_report` into ``docs/search.md``.

Modules: :mod:`~dan.suite.plan` (the :class:`Run` record, ``SUITES``, the plans),
:mod:`~dan.suite.run` (the runner and its time bookkeeping), :mod:`~dan.suite.report` (the
results page, the papers' claims, the curves), :mod:`~dan.suite.search` (the search suite's plan),
:mod:`~dan.suite.search_report` (its page), :mod:`~dan.suite.ledger` (the search suite's committed record of every finished run,
from which its page is computed: run folders do not outlive the machine that made them),
:mod:`~dan.suite.files` (reading and checking the run folders' files the runner and the pages read). The
names ``plan`` and ``run`` below are the functions; reach the modules with
``from dan.suite.plan import ...`` / ``from dan.suite.run import ...``.
"""

from __future__ import annotations

from dan.suite.plan import ROOT, SUITES, Run, alpha4_flops, plan
from dan.suite.run import elapsed_seconds, run, run_seconds
from dan.suite.report import CLAIMS, claims_table, collect, plot_curves, suite_settings, write_results
from dan.suite import search, search_report  # noqa: E402  (the search suite: search.plan, search_report.write_report)

__all__ = ["CLAIMS", "ROOT", "SUITES", "Run", "alpha4_flops", "claims_table", "collect", "elapsed_seconds",
           "plan", "plot_curves", "run", "run_seconds", "search", "search_report", "suite_settings", "write_results"]
