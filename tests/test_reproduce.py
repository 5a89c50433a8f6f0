"""The suite runner's command (tools/reproduce.py = dan reproduce), as an audit found it: where its
page and ledger go, what its dry run says, the flags it refuses, smoke-size runs; and the suite
modules behind it (dan/suite/): corrupt files, superseded records, one-seed verdicts."""

import hashlib
import os

from tests.helpers import ROOT, assert_user_error, run_tool


def _digest(path: str) -> str:
    with open(os.path.join(ROOT, path), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_a_suite_under_another_out_writes_its_page_and_ledger_there_not_in_docs(tmp_path):
    # a smoke suite run from the repository with --out /tmp/x wrote over docs/search.md and the
    # committed ledger docs/search-runs.json (and docs/results.md)
    from dan.cli.reproduce import page_path

    committed = {p: _digest(p) for p in ("docs/search.md", "docs/search-runs.json", "docs/results.md")}
    for suite, page in (("search", "search.md"), ("fashion-mnist", "results.md")):
        out = tmp_path / suite
        p = run_tool("reproduce.py", "--suite", suite, "--report-only", "--out", str(out), "--seeds", "1")
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip().endswith(f"results: {out / page}") and (out / page).is_file()
    assert (tmp_path / "search" / "search-runs.json").is_file()
    assert {p: _digest(p) for p in committed} == committed
    # the default command still reads (and writes) the committed ledger: its dry run counts its records
    p = run_tool("reproduce.py", "--suite", "search", "--dry-run", "--no-ablations")
    assert p.returncode == 0, p.stderr
    assert "recorded in docs/search-runs.json" in p.stdout.splitlines()[-1]
    assert page_path("search", "runs/suite-search", None) == "docs/search.md"
    assert page_path("search", os.path.abspath("runs/suite-search"), None) == "docs/search.md"
    assert page_path("fashion-mnist", "runs/suite-fashion-mnist", None) == "docs/results.md"
    assert page_path("cifar100", "runs/suite-cifar100", None) == os.path.join("runs/suite-cifar100", "results.md")
    assert page_path("search", "/tmp/x", "docs/search.md") == "docs/search.md"  # given: as given


def _fake_arch(run, widths=4, weights=None):
    """A finished search or width baseline: its arch.json (and a search's checkpoint, ``weights``)."""
    import json

    os.makedirs(run.out, exist_ok=True)
    with open(os.path.join(run.out, "arch.json"), "w") as f:
        json.dump({"widths": {"g": widths}, "candidates": {"g": [2, 4, 8]}, "repaired": [],
                   "search": {"argmax_before_repair": {"over_budget": 1.0, "in_band": True}, "mean_max_prob": 0.8}}, f)
    if weights is not None:
        os.makedirs(os.path.join(run.out, "checkpoints"), exist_ok=True)
        with open(os.path.join(run.out, "checkpoints", "last.pt"), "wb") as f:
            f.write(weights)


def _fake_retrain(run, top1=0.88):
    import json

    os.makedirs(run.out, exist_ok=True)
    with open(os.path.join(run.out, "summary.json"), "w") as f:
        json.dump({"networks": {"small": {"top1": top1, "flops": 700_000, "params": 1000, "latency_ms": {"1": 1.0}}}}, f)


def test_a_search_made_again_supersedes_the_records_built_on_it_planned_or_not(tmp_path):
    # the ledger looked only at the runs the command planned: a search made again with other widths
    # under --methods dan --recipe inherit left greedy's and the scratch rows' records from the old
    # answer in the tables; and a search made again on the same widths (other weights) dropped the
    # scratch retrains, which read only its widths
    import shutil

    from dan.suite import search as search_suite
    from dan.suite.ledger import Ledger

    out = str(tmp_path / "suite")
    full = search_suite.plan(out, seeds=2, ablations=False, budgets=["flops10"])
    for r in full:
        if r.kind in ("search", "arch"):
            _fake_arch(r, weights=b"old" if r.kind == "search" else None)
        else:
            _fake_retrain(r)
    path = str(tmp_path / "search-runs.json")
    first = Ledger(path, out)
    assert first.record(full) == []
    first.save()
    recorded = set(first.runs)
    shutil.rmtree(out)  # another machine: the folders are gone, the records stay
    kw = dict(ablations=False, budgets=["flops10"], methods=("dan",), recipes=("inherit",))
    planned = search_suite.plan(out, seeds=2, **kw)
    s0 = next(r for r in planned if r.kind == "search" and r.seed == 0)
    s1 = next(r for r in planned if r.kind == "search" and r.seed == 1)
    _fake_arch(s0, widths=8, weights=b"new")  # seed 0: made again, other widths
    _fake_arch(s1, weights=b"new")  # seed 1: the same widths, other weights
    ledger = Ledger(path, out)
    ledger.related = search_suite.related_runs(out, planned)
    dropped = set(ledger.record(planned))
    stale0 = {f"flops10/search6/{m}-s0" for m in ("dan", "dan-inherit", "greedy-arch", "greedy", "greedy-inherit",
                                                  "uniform-inherit", "random-inherit")}
    # seed 1's weights only: every inherited row and greedy (ranked on the supernet), not the scratch rows
    stale1 = {f"flops10/search6/{m}-s1" for m in ("dan-inherit", "greedy-arch", "greedy", "greedy-inherit",
                                                  "uniform-inherit", "random-inherit")}
    assert dropped == stale0 | stale1
    kept = recorded - dropped
    assert {"flops10/search6/dan-s1", "flops10/search6/uniform-s0", "flops10/search6/random-s1",
            "flops10/uniform-arch", "flops10/random-arch-s0"} <= kept
    assert set(ledger.runs) == kept and set(ledger.superseded) == dropped
