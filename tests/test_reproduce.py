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
